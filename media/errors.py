"""Error types that say who caused a problem (after h11's Local/RemoteProtocolError)."""


class LocalProtocolError(Exception):
    """We were asked to do something the protocol does not allow: a bug on our side."""


class RemoteProtocolError(Exception):
    """A peer sent something invalid. Count it, log it once with the call id, drop or answer it."""

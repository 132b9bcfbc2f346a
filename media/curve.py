"""ZeroMQ CURVE for the wire between media processes and inference workers (RFC 26 CurveZMQ):
encryption, and only clients holding an authorised key get in.

One key pair for every socket that binds (workers' audio and heartbeat sockets, media
processes' result sockets: the *server* pair) and one for every socket that connects (the
*client* pair). ``sip-bridge keys DIR`` makes both, in pyzmq's certificate format, and puts the
client's public key in ``DIR/authorized``; a binding socket's process runs a ZAP authenticator
that admits exactly the public keys found there. Copy DIR to every host; to admit another
client key, add its ``.key`` file to ``authorized`` and restart.

Sans-IO but for reading the key files at start-up: no ZeroMQ import here. The files are
pyzmq's certificate format (``zmq.auth``), read as text; the key pairs are made, and the ZAP
authenticator started, at the edges that own the sockets (``sip-bridge keys``, the worker, the
media process). Applying keys to a socket is four option assignments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SERVER, CLIENT, AUTHORIZED = "server", "client", "authorized"


# A ZeroMQ socket's CURVE options, as pyzmq exposes them (attribute assignment = setsockopt).
_Opt = int | bytes | str


class CurveSocket(Protocol):
    curve_secretkey: _Opt
    curve_publickey: _Opt
    curve_serverkey: _Opt
    curve_server: _Opt


class CurveError(Exception):
    """The keys directory is missing a file, or holds something that is not a key."""


@dataclass(frozen=True, slots=True)
class CurveKeys:
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes
    authorized: Path  # public keys a binding socket lets in

    @classmethod
    def load(cls, keys_dir: str | Path) -> CurveKeys:
        d = Path(keys_dir).expanduser()
        pairs = []
        for name in (SERVER, CLIENT):
            path = d / f"{name}.key_secret"
            try:
                public, secret = read_certificate(path)
            except (OSError, ValueError) as exc:
                raise CurveError(
                    f"{path}: {exc} (make the keys with `sip-bridge keys {d}`)"
                ) from exc
            if secret is None:
                raise CurveError(f"{path}: no secret key in it")
            pairs.append((public, secret))
        if not (d / AUTHORIZED).is_dir():
            raise CurveError(f"{d / AUTHORIZED}: missing (the public keys of allowed clients)")
        (sp, ss), (cp, cs) = pairs
        return cls(sp, ss, cp, cs, d / AUTHORIZED)

    def bind_side(self, sock: CurveSocket) -> None:
        """Before ``bind``: this socket is a CURVE server."""
        sock.curve_secretkey = self.server_secret
        sock.curve_publickey = self.server_public
        sock.curve_server = True

    def connect_side(self, sock: CurveSocket) -> None:
        """Before ``connect``: this socket is a CURVE client of our servers."""
        sock.curve_secretkey = self.client_secret
        sock.curve_publickey = self.client_public
        sock.curve_serverkey = self.server_public


def read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    """The Z85 public and (if there) secret key of a pyzmq certificate file, as
    ``zmq.auth.load_certificate`` reads them: ``public-key = "..."`` lines in its ``curve``
    section. Raises OSError, or ValueError when there is no well-formed public key."""
    public = secret = None
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        value = value.strip().strip("'\"")
        if key.strip() == "public-key":
            public = _z85_key(path, value)
        elif key.strip() == "secret-key":
            secret = _z85_key(path, value)
    if public is None:
        raise ValueError("no public key found")
    return public, secret


def _z85_key(path: Path, text: str) -> bytes:
    # A CURVE key is 32 bytes, 40 characters in Z85 (ZeroMQ RFC 32).
    if len(text) != 40 or not text.isascii() or not text.isprintable():
        raise ValueError("not a Z85-encoded 32-byte key")
    return text.encode("ascii")

"""A call's SIP dialog as the UAS (us) holds it, enough to end the call from outside PJSIP.

When a media process dies, PJSIP's dialogs die with it, and its calls would stay up at the PBX
(and hold their slot at the front) until some timer there notices. The process that takes its
place reads each dialog from the call journal and sends the BYE itself (RFC 3261 §12.2.1.1):
Request-URI the remote target, Route the record-route set in order, From our tag, To theirs,
a CSeq above any we used. As the BYE passes the front, Kamailio releases the call's load.

Sans-IO: messages in, :class:`Dialog` and request bytes out. No sockets, no PJSUA2.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sip_bridge import sip_headers

_TAG = re.compile(r";\s*tag=([^;>\s]+)", re.I)
_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")
_HOSTPORT = re.compile(r"^sips?:(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>]+)(?::(\d+))?", re.I)


class DialogError(ValueError):
    """The INVITE or our answer lacks what a dialog needs (Call-ID, tags, a target)."""


@dataclass(frozen=True, slots=True)
class Dialog:
    call_id: str
    local: str  # our To header value as answered, with our tag
    remote: str  # the caller's From header value, with its tag
    remote_target: str  # the caller's Contact URI
    route_set: tuple[str, ...]  # Record-Route URIs of the INVITE, top first

    @property
    def local_tag(self) -> str:
        return _tag(self.local)

    @property
    def remote_tag(self) -> str:
        return _tag(self.remote)

    def as_dict(self) -> dict[str, object]:
        return {
            "call_id": self.call_id,
            "local": self.local,
            "remote": self.remote,
            "remote_target": self.remote_target,
            "route_set": list(self.route_set),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Dialog:
        routes = d.get("route_set")
        if not isinstance(routes, list):
            raise DialogError("route_set missing")
        fields = [d.get(k) for k in ("call_id", "local", "remote", "remote_target")]
        if not all(isinstance(f, str) and f for f in fields):
            raise DialogError(f"incomplete dialog record: {sorted(d)}")
        call_id, local, remote, target = (str(f) for f in fields)
        return cls(call_id, local, remote, target, tuple(str(r) for r in routes))


def _tag(header_value: str) -> str:
    m = _TAG.search(header_value.split(">", 1)[-1] if ">" in header_value else header_value)
    return m[1] if m else ""


def _uri(header_value: str) -> str:
    m = _URI_IN_BRACKETS.search(header_value)
    return (m[1] if m else header_value.split(";", 1)[0]).strip()


def _split_list(value: str) -> list[str]:
    """``<a>, <b;lr>`` → ``["a", "b;lr"]`` (commas inside angle brackets are kept)."""
    return [m.strip() for m in _URI_IN_BRACKETS.findall(value)]


def from_messages(invite: str, answer: str) -> Dialog:
    """The dialog made by ``invite`` (as received) and our 2xx ``answer`` to it (as sent)."""
    req = sip_headers.parse_headers(invite)
    resp = sip_headers.parse_headers(answer)
    call_id = sip_headers.value(req, "Call-ID") or ""
    remote = sip_headers.value(req, "From") or ""
    local = sip_headers.value(resp, "To") or ""
    contact = sip_headers.value(req, "Contact") or ""
    if not call_id or not _tag(remote) or not _tag(local) or not contact:
        raise DialogError("Call-ID, both tags and the caller's Contact are needed")
    routes: list[str] = []
    for name, value in req:
        if name.lower() == "record-route":
            routes += _split_list(value)
    return Dialog(call_id, local, remote, _uri(contact), tuple(routes))


def next_hop(dialog: Dialog) -> tuple[str, int]:
    """Where the BYE goes: the first route if there is one (loose routing), else the target."""
    uri = dialog.route_set[0] if dialog.route_set else dialog.remote_target
    m = _HOSTPORT.match(uri)
    if m is None:
        raise DialogError(f"no host in {uri!r}")
    host = m[1].strip("[]")
    return host, int(m[2] or 5060)


def bye(
    dialog: Dialog, via_host: str, via_port: int, cseq: int, reason: str | None = None
) -> tuple[str, bytes]:
    """A BYE for ``dialog`` sent from ``via_host:via_port``; returns (branch, request bytes)."""
    branch = "z9hG4bK" + secrets.token_hex(8)
    lines = [
        f"BYE {dialog.remote_target} SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host}:{via_port};branch={branch};rport",
        "Max-Forwards: 70",
        *(f"Route: <{r}>" for r in dialog.route_set),
        f"From: {dialog.local}",
        f"To: {dialog.remote}",
        f"Call-ID: {dialog.call_id}",
        f"CSeq: {cseq} BYE",
        "User-Agent: sip-bridge",
    ]
    if reason:
        lines.append(f"Reason: {reason}")
    lines.append("Content-Length: 0")
    return branch, ("\r\n".join(lines) + "\r\n\r\n").encode()


def ack_for_caller(dialog: Dialog, cseq: int, target: str, via_host: str, via_port: int) -> bytes:
    """The ACK the caller owed our 2xx (same CSeq number as its INVITE, §13.2.2.4), as the
    caller would send it to ``target``: From the caller's tag, To ours. For a media process to
    hand its own PJSIP, whose dialog must be confirmed before it will end it with a BYE."""
    lines = [
        f"ACK {target} SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host}:{via_port};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: {dialog.remote}",
        f"To: {dialog.local}",
        f"Call-ID: {dialog.call_id}",
        f"CSeq: {cseq} ACK",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def invite_cseq(invite: str) -> int | None:
    """The CSeq number of an INVITE as received (None: missing or not a number)."""
    value = sip_headers.value(sip_headers.parse_headers(invite), "CSeq") or ""
    number = value.split(" ", 1)[0].strip()
    return int(number) if number.isdigit() else None


def response_status(message: bytes, branch: str) -> int | None:
    """The status of ``message`` if it is a response to our request with ``branch``."""
    if not message.startswith(b"SIP/2.0 ") or branch.encode() not in message:
        return None
    try:
        return int(message[8:11])
    except ValueError:
        return None

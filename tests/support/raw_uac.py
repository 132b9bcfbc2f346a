"""A caller written with a bare UDP socket, for the flows sipp cannot script cleanly: an INVITE
cancelled at once, whose 200 may cross the CANCEL (RFC 3261 §9.1: the caller then ACKs and hangs
up with BYE), and a single INVITE whose answer is all a test wants. Test support only; it
follows the front's Record-Route like any UAC."""

from __future__ import annotations

import hashlib
import re
import socket
import time
import uuid
from dataclasses import dataclass, field

from sip_bridge.sip_headers import parse_headers


@dataclass
class Exchange:
    invite_status: int = 0  # the INVITE's final answer
    cancel_status: int = 0
    bye_status: int = 0
    call_id: str = field(default_factory=lambda: f"raw-{uuid.uuid4().hex}@127.0.0.1")


def _status(msg: str) -> tuple[int, str]:
    code = int(msg.split(" ", 2)[1])
    cseq = next((v for k, v in parse_headers(msg) if k == "CSeq"), "")
    return code, cseq.split()[-1] if cseq else ""


def _branch() -> str:
    return f"z9hG4bK{uuid.uuid4().hex[:16]}"


class _Caller:
    """One call's requests from one socket on ``local_ip``."""

    def __init__(self, host: str, port: int, user: str, local_ip: str, call_id: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_ip, 0))
        self.target = (host, port)
        self.local_ip = local_ip
        self.me = f"{local_ip}:{self.sock.getsockname()[1]}"
        self.tag = uuid.uuid4().hex[:8]
        self.call_id = call_id
        self.ruri = f"sip:{user}@{host}:{port}"
        self.invite_branch = _branch()

    def send(self, method: str, uri: str, cseq: int, branch: str, to: str, extra: str = "",
             body: str = "", content_type: str = "application/sdp") -> None:  # fmt: skip
        ctype = f"Content-Type: {content_type}\r\n" if body else ""
        self.sock.sendto(
            (
                f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {self.me};branch={branch};rport\r\n"
                f"From: <sip:raw@{self.local_ip}>;tag={self.tag}\r\nTo: {to}\r\n"
                f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:raw@{self.me}>\r\nMax-Forwards: 70\r\n"
                f"{extra}{ctype}Content-Length: {len(body)}\r\n\r\n{body}"
            ).encode(),
            self.target,
        )

    def invite(self, extra: str = "", body: tuple[str, str] | None = None) -> None:
        """The INVITE: an SDP offer of PCMU, or ``body`` as (Content-Type, text)."""
        ip, port = self.local_ip, int(self.me.rsplit(":", 1)[1])
        sdp = (
            f"v=0\r\no=raw 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        ctype, text = body or ("application/sdp", sdp)
        self.send("INVITE", self.ruri, 1, self.invite_branch, f"<{self.ruri}>", extra, text, ctype)

    def cancel(self) -> None:
        self.send("CANCEL", self.ruri, 1, self.invite_branch, f"<{self.ruri}>")

    def responses(self, deadline: float) -> tuple[int, str, str] | None:
        """The next response before ``deadline``: (status, CSeq method, the message)."""
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(max(0.01, left))
            try:
                msg = self.sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                return None
            if msg.startswith("SIP/2.0"):
                return (*_status(msg), msg)
        return None

    def conclude(self, code: int, answer: str) -> None:
        """ACK a final answer to the INVITE; after a 2xx, also hang up (BYE)."""
        fields = parse_headers(answer)
        to = next(v for k, v in fields if k == "To")
        if code >= 300:  # the ACK of a failure goes hop by hop, with the INVITE's branch
            self.send("ACK", self.ruri, 1, self.invite_branch, to)
            return
        routes = [v for k, v in fields if k == "Record-Route"]
        route_set = [r.strip() for line in reversed(routes) for r in reversed(line.split(","))]
        contact = next(v for k, v in fields if k == "Contact").strip("<>").split(">")[0]
        route = "".join(f"Route: {r}\r\n" for r in route_set)
        self.send("ACK", contact, 1, _branch(), to, route)
        self.send("BYE", contact, 2, _branch(), to, route)

    def close(self) -> None:
        self.sock.close()


def invite_then_cancel(host: str, port: int, timeout: float = 10.0) -> Exchange:
    ex = Exchange()
    caller = _Caller(host, port, "transcribe", "127.0.0.1", ex.call_id)
    deadline = time.monotonic() + timeout
    try:
        caller.invite()
        caller.cancel()
        # A CANCEL that reaches the front before its INVITE does matches nothing and gets no
        # answer (a real UAC would retransmit it): the INVITE's final answer is what counts.
        answer = ""
        while not ex.invite_status and (got := caller.responses(deadline)) is not None:
            code, method, msg = got
            if method == "INVITE" and code >= 200:
                ex.invite_status, answer = code, msg
        if not ex.invite_status:
            return ex
        caller.conclude(ex.invite_status, answer)
        if ex.invite_status >= 300:
            return ex
        while not ex.bye_status and (got := caller.responses(deadline)) is not None:
            code, method, _ = got
            if method == "CANCEL" and code >= 200:
                ex.cancel_status = code
            if method == "BYE" and code >= 200:
                ex.bye_status = code
        return ex
    finally:
        caller.close()


def invite_answer(
    host: str, port: int, user: str = "transcribe", local_ip: str = "127.0.0.1",
    extra: str = "", timeout: float = 10.0, body: tuple[str, str] | None = None,
) -> tuple[int, str]:  # fmt: skip
    """Send one INVITE (from ``local_ip``, to ``user``, ``extra`` header lines ending in CRLF,
    ``body`` as (Content-Type, text) instead of a PCMU offer) and return its final answer
    (status, message); a failure is ACKed, a 200 is ACKed and hung up. (0, "") when none
    came."""
    caller = _Caller(host, port, user, local_ip, f"raw-{uuid.uuid4().hex}@{local_ip}")
    deadline = time.monotonic() + timeout
    try:
        caller.invite(extra, body)
        while (got := caller.responses(deadline)) is not None:
            code, method, msg = got
            if method == "INVITE" and code >= 200:
                caller.conclude(code, msg)
                return code, msg
        return 0, ""
    finally:
        caller.close()


def invite_status(
    host: str, port: int, user: str = "transcribe", local_ip: str = "127.0.0.1",
    extra: str = "", timeout: float = 10.0,
) -> int:  # fmt: skip
    """:func:`invite_answer`'s status alone (0: none came)."""
    return invite_answer(host, port, user, local_ip, extra, timeout)[0]


def digest_authorization(
    challenge: str, user: str, password: str, method: str, uri: str, header: str = "Proxy"
) -> str:
    """The ``Proxy-Authorization`` line (CRLF-ended) answering ``challenge`` (the value of a
    Proxy-Authenticate header: Digest realm, nonce, qop=auth) as RFC 2617 says."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.split(" ", 1)[1]))
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce, nc = uuid.uuid4().hex[:16], "00000001"
    response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'{header}-Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}",'
        f' uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={nc},'
        f' cnonce="{cnonce}"\r\n'
    )

"""A caller written with a bare UDP socket, for the one flow sipp cannot script cleanly: an INVITE
cancelled at once, whose 200 may cross the CANCEL (RFC 3261 §9.1: the caller then ACKs and hangs
up with BYE). Test support only; it follows the front's Record-Route like any UAC."""

from __future__ import annotations

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


def invite_then_cancel(host: str, port: int, timeout: float = 10.0) -> Exchange:
    ex = Exchange()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    lport = sock.getsockname()[1]
    me = f"127.0.0.1:{lport}"
    branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
    tag = uuid.uuid4().hex[:8]
    ruri = f"sip:transcribe@{host}:{port}"
    sdp = (
        f"v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {lport + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )

    def request(method: str, uri: str, cseq: int, via_branch: str, to: str, extra: str = "",
                body: str = "") -> bytes:  # fmt: skip
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return (
            f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={via_branch};rport\r\n"
            f"From: <sip:raw@127.0.0.1>;tag={tag}\r\nTo: {to}\r\nCall-ID: {ex.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:raw@{me}>\r\nMax-Forwards: 70\r\n"
            f"{extra}{ctype}Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    to_plain = f"<{ruri}>"
    target = (host, port)
    sock.sendto(request("INVITE", ruri, 1, branch, to_plain, body=sdp), target)
    sock.sendto(request("CANCEL", ruri, 1, branch, to_plain), target)
    deadline = time.monotonic() + timeout
    ok_msg = ""
    try:
        # A CANCEL that reaches the front before its INVITE does matches nothing and gets no
        # answer (a real UAC would retransmit it): the INVITE's final answer is what counts.
        while time.monotonic() < deadline and not ex.invite_status:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            msg = sock.recv(65535).decode(errors="replace")
            if not msg.startswith("SIP/2.0"):
                continue
            code, method = _status(msg)
            if method == "INVITE" and code >= 200 and not ex.invite_status:
                ex.invite_status = code
                ok_msg = msg
        if not ex.invite_status:
            return ex
        fields = parse_headers(ok_msg)
        to = next(v for k, v in fields if k == "To")
        if ex.invite_status >= 300:  # 487: the ACK of a failure goes hop by hop, same branch
            sock.sendto(request("ACK", ruri, 1, branch, to), target)
            return ex
        routes = [v for k, v in fields if k == "Record-Route"]
        route_set = [r.strip() for line in reversed(routes) for r in reversed(line.split(","))]
        contact = next(v for k, v in fields if k == "Contact").strip("<>").split(">")[0]
        route = "".join(f"Route: {r}\r\n" for r in route_set)
        new = f"z9hG4bK{uuid.uuid4().hex[:16]}"
        sock.sendto(request("ACK", contact, 1, new, to, route), target)
        bye_branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
        sock.sendto(request("BYE", contact, 2, bye_branch, to, route), target)
        while time.monotonic() < deadline and not ex.bye_status:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            msg = sock.recv(65535).decode(errors="replace")
            if msg.startswith("SIP/2.0"):
                code, method = _status(msg)
                if method == "CANCEL" and code >= 200:
                    ex.cancel_status = code
                if method == "BYE" and code >= 200:
                    ex.bye_status = code
        return ex
    except TimeoutError:
        return ex
    finally:
        sock.close()


def invite_status(
    host: str,
    port: int,
    user: str = "transcribe",
    local_ip: str = "127.0.0.1",
    extra: str = "",
    timeout: float = 10.0,
) -> int:
    """Send one INVITE (from ``local_ip``, to ``user``, ``extra`` header lines ending in CRLF)
    and return its final status; a failure is ACKed, a 200 is ACKed and hung up. 0: none came."""
    call_id = f"raw-{uuid.uuid4().hex}@{local_ip}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_ip, 0))
        me = f"{local_ip}:{sock.getsockname()[1]}"
        branch, tag = f"z9hG4bK{uuid.uuid4().hex[:16]}", uuid.uuid4().hex[:8]
        ruri = f"sip:{user}@{host}:{port}"
        sdp = (
            f"v=0\r\no=raw 1 1 IN IP4 {local_ip}\r\ns=-\r\nc=IN IP4 {local_ip}\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )

        def request(method: str, uri: str, cseq: int, via: str, to: str, route: str = "",
                    body: str = "") -> bytes:  # fmt: skip
            ctype = "Content-Type: application/sdp\r\n" if body else ""
            return (
                f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={via};rport\r\n"
                f"From: <sip:raw@{local_ip}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:raw@{me}>\r\nMax-Forwards: 70\r\n"
                f"{route}{extra if method == 'INVITE' else ''}{ctype}"
                f"Content-Length: {len(body)}\r\n\r\n{body}"
            ).encode()

        sock.sendto(request("INVITE", ruri, 1, branch, f"<{ruri}>", body=sdp), (host, port))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                msg = sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                return 0
            if not msg.startswith("SIP/2.0"):
                continue
            code, method = _status(msg)
            if method != "INVITE" or code < 200:
                continue
            fields = parse_headers(msg)
            to = next(v for k, v in fields if k == "To")
            if code >= 300:
                sock.sendto(request("ACK", ruri, 1, branch, to), (host, port))
                return code
            routes = [v for k, v in fields if k == "Record-Route"]
            route_set = [r.strip() for line in reversed(routes) for r in reversed(line.split(","))]
            route = "".join(f"Route: {r}\r\n" for r in route_set)
            contact = next(v for k, v in fields if k == "Contact").strip("<>").split(">")[0]
            for method, cseq in (("ACK", 1), ("BYE", 2)):
                via = f"z9hG4bK{uuid.uuid4().hex[:16]}"
                sock.sendto(request(method, contact, cseq, via, to, route), (host, port))
            return code
    return 0

"""A caller that sends INVITEs from an address of its choice and never ACKs the 200 OK: the
half-open calls of an attacker (or a broken trunk), watched from the attacker's side.

Each INVITE goes from its own UDP socket bound to ``source`` (any 127.x.y.z address reaches the
loopback). The caller records every final answer, when the 200 came, and when the media process
gave up on the ACK and sent its BYE (RFC 3261 §13.3.1.4), which it answers 200 OK (or not)."""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass

from sip_bridge.sip_headers import parse_headers

SDP = (
    "v=0\r\no=attacker 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass(slots=True)
class HalfOpen:
    sock: socket.socket
    call_id: str
    sent_at: float
    final: int | None = None
    answered_at: float | None = None  # the first 200 OK
    retry_after: str | None = None
    bye_at: float | None = None

    @property
    def held_s(self) -> float | None:
        """From our 200 OK to the BYE that gave the call up."""
        if self.answered_at is None or self.bye_at is None:
            return None
        return self.bye_at - self.answered_at


def invite(source: str, host: str, port: int) -> HalfOpen:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    local = sock.getsockname()[1]
    call_id = f"half-open-{uuid.uuid4().hex[:12]}@{source}"
    body = SDP.format(ip=source, rtp=40000 + local % 1000 * 2).encode()
    msg = (
        f"INVITE sip:transcribe@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{local};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:attacker@{source}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:transcribe@{host}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:attacker@{source}:{local}>\r\n"
        "User-Agent: half-open-test\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    sock.sendto(msg, (host, port))
    return HalfOpen(sock, call_id, time.monotonic())


def poll(calls: list[HalfOpen], answer_bye: bool = True) -> None:
    """Read what came back to each call's socket (non-blocking)."""
    for call in calls:
        while True:
            try:
                raw, peer = call.sock.recvfrom(65535)
            except (BlockingIOError, ConnectionRefusedError):
                break
            text = raw.decode(errors="replace")
            if text.startswith("SIP/2.0 "):
                status = int(text.split(" ", 2)[1])
                if status >= 200 and call.final is None:
                    call.final = status
                    headers = {k.lower(): v for k, v in parse_headers(text)}
                    call.retry_after = headers.get("retry-after")
                if status == 200 and call.answered_at is None:
                    call.answered_at = time.monotonic()
            elif text.startswith("BYE "):
                if call.bye_at is None:
                    call.bye_at = time.monotonic()
                if answer_bye:
                    call.sock.sendto(_ok(text), peer)


def wait(calls: list[HalfOpen], until: object, within_s: float, answer_bye: bool = True) -> None:
    assert callable(until)
    deadline = time.monotonic() + within_s
    while True:
        poll(calls, answer_bye)
        if until():
            return
        assert time.monotonic() < deadline, f"not within {within_s} s: {calls}"
        time.sleep(0.01)


def close(calls: list[HalfOpen]) -> None:
    for call in calls:
        call.sock.close()


def _ok(request: str) -> bytes:
    """200 OK to a request, its headers copied as RFC 3261 §8.2.6.2 says."""
    keep = ("via", "from", "to", "call-id", "cseq")
    lines = [f"{k}: {v}" for k, v in parse_headers(request) if k.lower() in keep]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

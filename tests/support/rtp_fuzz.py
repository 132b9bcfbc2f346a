"""Garbage RTP, deterministic: what a broken or hostile peer sends into a call's RTP port, next to
the real audio. Test support only.

Classes: wrong payload types (known but not negotiated, unassigned, RTCP's range), short packets
(under the 12-byte fixed header), bad version bits, lying header fields (CSRC count, extension
length, padding length longer than the packet), huge packets, random bytes, and other protocols
(STUN, a SIP message, DTLS). An SSRC change mid-call is not garbage but a new source (RFC 3550
§8.2): the caller of :func:`garbage` sends the rest of its audio with another SSRC for that.

:class:`Caller` places one call from bare sockets, so that a test knows the RTP port the answer
names and can send whatever it likes there.
"""

from __future__ import annotations

import random
import socket
import struct
import time
import uuid

from sip_bridge.sip_headers import parse_headers


def _header(pt: int, seq: int, ts: int, ssrc: int, first: int = 0x80) -> bytes:
    return struct.pack("!BBHII", first, pt & 0x7F, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)


def garbage(seq: int, ts: int, ssrc: int, seed: int = 3550) -> list[tuple[str, bytes]]:
    """(name, datagram) pairs; ``seq``/``ts``/``ssrc`` are the live stream's, so that the lying
    packets look like they belong to it."""
    rng = random.Random(seed)
    body = bytes(160)
    out: list[tuple[str, bytes]] = []
    for pt in (8, 9, 18, 13, 3, 34, 96, 101, 127, 72, 77):  # not negotiated (only PCMU, 0, is)
        out.append((f"payload-type-{pt}", _header(pt, seq, ts, ssrc) + body))
    for size in range(12):
        out.append((f"short-{size}", _header(0, seq, ts, ssrc)[:size]))
    for version in (0, 1, 3):
        out.append((f"version-{version}", _header(0, seq, ts, ssrc, first=version << 6) + body))
    out.append(("csrc-count-15-short", _header(0, seq, ts, ssrc, first=0x8F) + bytes(8)))
    out.append(
        (
            "extension-length-huge",
            _header(0, seq, ts, ssrc, first=0x90) + struct.pack("!HH", 0xBEDE, 0xFFFF) + body,
        )
    )
    out.append(("extension-cut", _header(0, seq, ts, ssrc, first=0x90) + b"\xbe"))
    out.append(
        ("padding-longer-than-packet", _header(0, seq, ts, ssrc, first=0xA0) + body[:-1] + b"\xff")
    )
    out.append(("padding-zero", _header(0, seq, ts, ssrc, first=0xA0) + body[:-1] + b"\x00"))
    out.append(("header-only", _header(0, seq, ts, ssrc)))
    out.append(("same-seq-again-other-payload", _header(0, seq, ts, ssrc) + bytes([0x7F]) * 160))
    out.append(("seq-far-ahead", _header(0, seq + 30000, ts + 4_000_000, ssrc) + body))
    out.append(("timestamp-backwards", _header(0, seq + 1, ts - 1_000_000, ssrc) + body))
    for size in (1400, 9000, 65000):
        out.append((f"huge-{size}", _header(0, seq, ts, ssrc) + bytes(size)))
    for i, size in enumerate((1, 13, 172, 500, 1500, 4000)):
        out.append((f"random-{i}", rng.randbytes(size)))
    out.append(("stun-binding", b"\x00\x01\x00\x00\x21\x12\xa4\x42" + rng.randbytes(12)))
    out.append(("sip-message", b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n"))
    out.append(("dtls-hello", b"\x16\xfe\xff" + rng.randbytes(60)))
    out.append(("rtcp-sr-garbage", b"\x80\xc8\x00\x06" + rng.randbytes(24)))
    out.append(("rtcp-length-lies", b"\x81\xc9\xff\xff" + rng.randbytes(8)))
    out.append(("other-ssrc-one-packet", _header(0, seq, ts, ssrc ^ 0xFFFF) + body))
    return out


def _branch() -> str:
    return f"z9hG4bK{uuid.uuid4().hex[:12]}"


class Caller:
    """One call from bare sockets: SIP on one, RTP from another (the port our offer names)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.me = self.sip.getsockname()[1]
        self.call_id = f"rtpfuzz-{uuid.uuid4().hex}@127.0.0.1"
        self.tag = uuid.uuid4().hex[:8]
        self.to = f"<sip:transcribe@127.0.0.1:{port}>"
        self.media: tuple[str, int] = ("", 0)

    def _send(self, method: str, cseq: int, body: str = "", branch: str = "") -> None:
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        msg = (
            f"{method} sip:transcribe@127.0.0.1:{self.target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.me};branch={branch or _branch()};rport\r\n"
            f"From: <sip:fuzz@127.0.0.1>;tag={self.tag}\r\nTo: {self.to}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:fuzz@127.0.0.1:{self.me}>\r\nMax-Forwards: 70\r\n"
            f"{ctype}Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.sip.sendto(msg.encode(), self.target)

    def _final(self, method: str, timeout_s: float = 10.0) -> str:
        self.sip.settimeout(timeout_s)
        while True:
            msg = self.sip.recv(65535).decode(errors="replace")
            cseq = next((v for k, v in parse_headers(msg) if k == "CSeq"), "")
            if msg.startswith("SIP/2.0 ") and cseq.endswith(method) and msg[8] != "1":
                return msg

    def invite(self, direction: str = "") -> None:
        """INVITE with a PCMU offer (``direction``: e.g. ``sendonly``), ACK its 200."""
        rtp_port = self.rtp.getsockname()[1]
        sdp = (
            "v=0\r\no=fuzz 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            + (f"a={direction}\r\n" if direction else "")
        )
        branch = _branch()
        for _ in range(20):  # retransmitted (RFC 3261 timer A) until the process is up
            self._send("INVITE", 1, sdp, branch)
            try:
                answer = self._final("INVITE", 0.5)
                break
            except TimeoutError:
                continue
        else:
            raise TimeoutError("no answer to the INVITE")
        assert answer.startswith("SIP/2.0 200"), answer
        self.to = next(v for k, v in parse_headers(answer) if k == "To")
        body = answer.split("\r\n\r\n", 1)[1]
        address = next(line.split()[-1] for line in body.splitlines() if line.startswith("c="))
        port = next(int(line.split()[1]) for line in body.splitlines() if line.startswith("m="))
        self.media = (address, port)
        self._send("ACK", 1)

    def play(self, packets: list[bytes], start: float) -> float:
        """Send at 20 ms a packet from ``start`` (monotonic); returns when the next would go."""
        at = start
        for packet in packets:
            time.sleep(max(0.0, at - time.monotonic()))
            self.rtp.sendto(packet, self.media)
            at += 0.02
        return at

    def bye(self) -> int:
        self._send("BYE", 2)
        return int(self._final("BYE").split(" ", 2)[1])

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

"""A SIPREC SRC (RFC 7866) for tests: sipp does the signalling, this module sends the audio.

sipp sends the INVITE (``Require: siprec``, ``+sip.src``, a ``multipart/mixed`` body: an SDP
of one ``a=sendonly`` stream per participant, each labelled, and optionally the rs-metadata),
any re-INVITEs the test scripts (new metadata, a stream put on hold), then the BYE. sipp can
play audio on one stream only, so the streams' RTP comes from here: when the 200 arrives, sipp
logs the ports the bridge answered on each ``m=audio``, and a thread sends each stream's G.711
packets, paced at 20 ms, from the port the offer named, optionally as SRTP (SDES, AES_CM_128
HMAC_SHA1_80, encrypted with pylibsrtp). Test support only; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.support.ports import free_udp_port
from tests.support.procs import kill, wait_or_kill
from tests.support.rtp_pcap import PT_PCMU, rtp_packets
from tests.support.sipp import SIPP, SipMessage, parse_trace

_FROM = "From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
_CONTACT = "Contact: <sip:src@[local_ip]:[local_port]>;+sip.src"
BOUNDARY = "siprecBoundary42"


@dataclass(frozen=True, slots=True)
class SrcStream:
    label: str
    pcm: np.ndarray  # 8 kHz int16: this participant's voice, silence while the other talks
    port: int = field(default_factory=lambda: free_udp_port("127.0.0.1"))
    key: bytes = field(default_factory=lambda: os.urandom(30))  # SRTP master key + salt


def offer(streams: list[SrcStream], srtp: bool = False, inactive: frozenset[str] = frozenset(),
          version: int = 1) -> str:  # fmt: skip
    """The SDP: one PCMU ``m=audio`` per stream, ``a=sendonly`` (``a=inactive`` for the labels
    in ``inactive``), labelled, with an SDES key when ``srtp``."""
    lines = [
        "v=0",
        f"o=SRC 2890844526 {2890844526 + version} IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
    ]
    for s in streams:
        profile = "RTP/SAVP" if srtp else "RTP/AVP"
        lines += [f"m=audio {s.port} {profile} 0", "a=rtpmap:0 PCMU/8000", f"a=label:{s.label}"]
        if srtp:
            inline = base64.b64encode(s.key).decode()
            lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}")
        lines.append("a=inactive" if s.label in inactive else "a=sendonly")
    return "\n".join(lines) + "\n"


def body(sdp: str, metadata: str | None) -> tuple[str, str]:
    """``(Content-Type, body)``: multipart with the metadata, or the SDP alone."""
    if metadata is None:
        return "application/sdp", sdp
    text = (
        f"--{BOUNDARY}\nContent-Type: application/sdp\n\n{sdp}\n"
        f"--{BOUNDARY}\nContent-Type: application/rs-metadata+xml\n"
        f"Content-Disposition: recording-session\n\n{metadata}\n--{BOUNDARY}--\n"
    )
    return f"multipart/mixed;boundary={BOUNDARY}", text


def _check(text: str) -> str:
    """``text`` for a sipp message: sipp reads ``[`` as the start of a keyword and has no
    escape, so each one becomes ``[field0]``, field 0 of the injection file, which is "["."""
    if "]]>" in text:
        raise ValueError("]]> would end sipp's CDATA")
    return text.replace("[", "[field0]")


@dataclass
class SiprecCall:
    """One recording session: INVITE, then ``steps`` (from :meth:`pause`, :meth:`reinvite`),
    then BYE. ``require`` False leaves out ``Require: siprec`` (some SRCs send only the tag)."""

    target_port: int
    streams: list[SrcStream]
    metadata: str | None
    srtp: bool = False
    require: bool = True
    raw_body: tuple[str, str] | None = None  # (Content-Type, body) instead of offer + metadata
    steps: list[str] = field(default_factory=list)
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="siprec-")))
    local_port: int = field(default_factory=lambda: free_udp_port("127.0.0.1"))
    _cseq: int = 1
    _proc: subprocess.Popen[bytes] | None = None
    _sender: threading.Thread | None = None
    ports: list[int] = field(default_factory=list)  # the bridge's, per stream, from its 200

    def pause(self, seconds: float) -> SiprecCall:
        self.steps.append(f'<pause milliseconds="{round(seconds * 1000)}"/>')
        return self

    def reinvite(self, metadata: str | None, inactive: frozenset[str] = frozenset()) -> SiprecCall:
        """A re-INVITE with the same streams (those in ``inactive`` on hold) and ``metadata``
        (multipart) or none, then 200 and ACK."""
        self._cseq += 1
        ctype, text = body(offer(self.streams, self.srtp, inactive, self._cseq), metadata)
        self.steps.append(
            f'<send retrans="500">{self._request("INVITE", ctype, text)}</send>\n'
            '<recv response="100" optional="true"/>\n<recv response="200"/>\n'
            f"<send>{self._request('ACK', '', '', cseq=self._cseq)}</send>"
        )
        return self

    def update(self, metadata: str) -> SiprecCall:
        """An UPDATE with the same offer and ``metadata`` (multipart), then its 200. (PJSIP
        takes an UPDATE's body for an offer: one of metadata alone gets 488.)"""
        self._cseq += 1
        ctype, text = body(offer(self.streams, self.srtp, version=self._cseq), metadata)
        request = self._request("UPDATE", ctype, text)
        self.steps.append(f'<send retrans="500">{request}</send>\n<recv response="200"/>')
        return self

    def _request(self, method: str, ctype: str, text: str, cseq: int | None = None) -> str:
        n = self._cseq if cseq is None else cseq
        typed = f"Content-Type: {ctype}\n" if text else ""
        if method in ("INVITE", "UPDATE") and self.require:
            typed = "Require: siprec\n" + typed  # the front must take it off in-dialog too
        length = "[len]" if text else "0"
        return f"""<![CDATA[
{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_FROM}
To:[$remote_to]
[routes]
Call-ID: [call_id]
CSeq: {n} {method}
{_CONTACT}
Max-Forwards: 70
{typed}Content-Length: {length}

{_check(text)}]]>"""

    def scenario(self) -> str:
        ctype, text = self.raw_body or body(offer(self.streams, self.srtp), self.metadata)
        require = "Require: siprec\n" if self.require else ""
        count = len(self.streams)
        ports = "m=audio ([0-9]+)" + ".*m=audio ([0-9]+)" * (count - 1)
        names = ",".join(f"p{i}" for i in range(count))
        logged = " ".join(f"[$p{i}]" for i in range(count))
        self._cseq += 1
        bye = self._request("BYE", "", "")
        return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="siprec">
<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_FROM}
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
{_CONTACT}
Max-Forwards: 70
{require}Accept: application/sdp, application/rs-metadata+xml
Content-Type: {ctype}
Content-Length: [len]

{_check(text)}]]></send>
<recv response="100" optional="true"/>
<recv response="200" rrs="true">
  <action>
    <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="remote_to"/>
    <ereg regexp="{ports}" search_in="body" check_it="true" assign_to="all,{names}"/>
    <log message="PORTS {logged}"/>
  </action>
</recv>
<Reference variables="all"/>
<send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_FROM}
To:[$remote_to]
[routes]
Call-ID: [call_id]
CSeq: 1 ACK
{_CONTACT}
Max-Forwards: 70
Content-Length: 0

]]></send>
{chr(10).join(self.steps)}
<send retrans="500">{bye}</send>
<recv response="200"/>
</scenario>
"""

    def refused_scenario(self) -> str:
        """The INVITE alone, expecting a final answer >= 300 (then ACK by sipp's auto-ACK)."""
        full = self.scenario()
        head = full[: full.index('<recv response="100"')]
        return head + '<recv response="100" optional="true"/>\n<recv response="*"/>\n</scenario>\n'

    # -- running ------------------------------------------------------------------------------

    def start(self, refused: bool = False) -> SiprecCall:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "src.xml").write_text(self.refused_scenario() if refused else
                                               self.scenario())  # fmt: skip
        audio_s = max((s.pcm.size / 8000 for s in self.streams), default=0.0)
        cmd = [
            SIPP, f"127.0.0.1:{self.target_port}", "-sf", str(self.work_dir / "src.xml"),
            "-s", "srs", "-i", "127.0.0.1", "-p", str(self.local_port), "-m", "1",
            "-inf", str(self._injection()),
            "-timeout", f"{round(audio_s + 60)}s", "-timeout_error", "-nostdin", "-aa",
            "-trace_msg", "-message_file", str(self.work_dir / "messages.log"),
            "-trace_logs", "-log_file", str(self.work_dir / "log.log"),
            "-trace_err", "-error_file", str(self.work_dir / "errors.log"),
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, cwd=self.work_dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not refused:
            self._sender = threading.Thread(target=self._send, daemon=True)
            self._sender.start()
        return self

    def _injection(self) -> Path:
        path = self.work_dir / "brackets.csv"
        path.write_text("SEQUENTIAL\n[;\n")
        return path

    def _wait_ports(self, timeout: float = 15.0) -> list[int] | None:
        deadline = time.monotonic() + timeout
        path = self.work_dir / "log.log"
        while time.monotonic() < deadline:
            found = re.search(r"PORTS ([0-9 ]+)", path.read_text()) if path.exists() else None
            if found:
                return [int(p) for p in found.group(1).split()]
            if self._proc is not None and self._proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def _send(self) -> None:
        ports = self._wait_ports()
        if ports is None:
            return
        self.ports = ports
        socks, trains = [], []
        for n, s in enumerate(self.streams):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", s.port))
            packets = rtp_packets(s.pcm, PT_PCMU, ssrc=0x51C0 + n, first_seq=100 * n)
            if self.srtp:
                packets = _protect(packets, s.key)
            socks.append(sock)
            trains.append(packets)
        start = time.monotonic()
        for i in range(max(len(t) for t in trains)):
            wait = start + i * 0.02 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            for sock, train, port in zip(socks, trains, ports, strict=True):
                if i < len(train):
                    sock.sendto(train[i], ("127.0.0.1", port))
        for sock in socks:
            sock.close()

    def wait(self, timeout: float) -> tuple[int, list[SipMessage]]:
        """sipp's exit code (0: every step as scripted) and the messages it traced."""
        assert self._proc is not None
        code, _ = wait_or_kill(self._proc, timeout)
        if self._sender is not None:
            self._sender.join(timeout=5)
        try:
            trace = (self.work_dir / "messages.log").read_text(errors="replace")
        except OSError:
            trace = ""
        return code, parse_trace(trace)

    def errors(self) -> str:
        try:
            return (self.work_dir / "errors.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        kill(self._proc)
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _protect(packets: list[bytes], key: bytes) -> list[bytes]:
    from pylibsrtp import Policy, Session

    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                    srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)  # fmt: skip
    session = Session(policy)
    return [session.protect(p) for p in packets]

"""sipp as a scripted caller: one G.711 call that plays a pcap and collects the INFOs sent back.

Owns: generating the UAC scenario XML, running one ``sipp -m 1`` process per call (several can run
at once, each on its own SIP and media port, all on 127.0.0.1), and reading back from sipp's message
trace the Call-ID and the bodies of the in-dialog INFO requests the far end sent. Test support only.

The scenario: INVITE (SDP offering one codec) → optional 100/180/183 → 200 (record the route
set) → ACK to ``[next_url]`` with ``[routes]``. The pcap starts playing as the 200 arrives (sipp
plays it on a thread of its own and goes on at once). Then it receives any number of INFO,
answering each with 200, until ``linger_s`` seconds have passed both since the audio ended and
since the last INFO → BYE → 200 (an INFO that crosses the BYE is answered too). A ``<pause>``
cannot receive, so the waiting is a ``recv`` with a short timeout that jumps to a clock check:
sipp's ``gettimeofday`` and arithmetic actions keep the two deadlines.
An INFO that lands while the call sits on any other step (sipp runs each ``nop`` on a later pass of
its loop, so there are such windows) would abort the call as unexpected; ``-aa`` answers those with
200 instead, and they still appear in the trace, which is where the bodies are read from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_tcp_port, free_udp_port, free_udp_ports
from tests.support.procs import kill, wait_or_kill

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
CODECS = {"PCMU": 0, "PCMA": 8}
_TICK_MS = 200  # how often the receive loop looks at the clock


class SippError(RuntimeError):
    """sipp could not be started, or was asked for something it cannot do."""


@dataclass(frozen=True, slots=True)
class SipMessage:
    """One message from sipp's trace, as sipp saw it."""

    direction: str  # "sent" or "received"
    first_line: str
    headers: tuple[tuple[str, str], ...]
    body: str

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        return None if self.first_line.startswith("SIP/2.0") else self.first_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        if not self.first_line.startswith("SIP/2.0"):
            return None
        return int(self.first_line.split(" ", 2)[1])


@dataclass(frozen=True, slots=True)
class SippResult:
    """What one sipp call did.

    ``exit_code``: sipp's (0: the call succeeded; 1: it failed; 97/99/255 and negative: sipp itself
    stopped or was killed; -9 after a timeout kill). ``timed_out``: we had to kill it.
    ``call_id``: the SIP Call-ID of the call. ``info_bodies``: bodies of the INFO requests received,
    in arrival order (retransmissions dropped by CSeq). ``info_content_types``: their Content-Type.
    ``final_status``: the status of the INVITE's final answer (0 if none arrived). ``bye_status``:
    the status of the answer to our BYE (0 if none). ``messages``: every traced message.
    ``stdout``/``stderr``: sipp's own output (tails); ``errors``: its unexpected-message log.
    """

    exit_code: int
    timed_out: bool
    call_id: str
    info_bodies: tuple[str, ...]
    info_content_types: tuple[str, ...]
    final_status: int
    bye_status: int
    messages: tuple[SipMessage, ...]
    stdout: str
    stderr: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def free_media_port(host: str = "127.0.0.1") -> int:
    """An even port P with P..P+3 free: sipp binds -mp and -mp + 2 (audio and video)."""
    return free_udp_ports(4, host, align=2)


def can_play_pcap() -> bool:
    """sipp sends pcap audio through a raw socket: root or CAP_NET_RAW is needed."""
    if os.geteuid() == 0:
        return True
    try:
        out = subprocess.run(["getcap", SIPP], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "cap_net_raw" in out


def uac_scenario(
    codec: str, pcap: Path, audio_s: float, linger_s: float, extra_headers: str = ""
) -> str:
    """The scenario XML (see the module docstring for its flow); ``extra_headers``: more
    INVITE header lines, each ending in a newline."""
    if codec not in CODECS:
        raise SippError(f"sipp can play {sorted(CODECS)}, not {codec!r}")
    pt = CODECS[codec]
    audio_ms = round(audio_s * 1000)
    linger_ms = round(linger_s * 1000)
    if '"' in str(pcap) or "<" in str(pcap) or "&" in str(pcap):
        raise SippError(f"pcap path needs XML escaping: {pcap}")
    ok_to_info = """<![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_play_collect_info">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "sipp" <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Subject: harness call
      Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO
      {extra_headers}Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP {pt}
      a=rtpmap:{pt} {codec}/8000
      a=ptime:20
      a=sendrecv

    ]]>
  </send>

  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="remote_to"/>
      <exec play_pcap_audio="{pcap}"/>
      <gettimeofday assign_to="t_s,t_us"/>
      <assign assign_to="audio_end" value="{(audio_ms + linger_ms) / 1000:.3f}"/>
      <add assign_to="audio_end" variable="t_s"/>
      <divide assign_to="t_us" value="1000000"/>
      <add assign_to="audio_end" variable="t_us"/>
      <assign assign_to="info_end" value="0"/>
    </action>
  </recv>


  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "sipp" <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To:[$remote_to]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <label id="wait"/>
  <recv request="INFO" timeout="{_TICK_MS}" ontimeout="tick">
    <action>
      <gettimeofday assign_to="i_s,i_us"/>
      <assign assign_to="info_end" value="{linger_ms / 1000:.3f}"/>
      <add assign_to="info_end" variable="i_s"/>
      <divide assign_to="i_us" value="1000000"/>
      <add assign_to="info_end" variable="i_us"/>
    </action>
  </recv>
  <send next="wait">
    {ok_to_info}
  </send>

  <label id="tick"/>
  <nop>
    <action>
      <gettimeofday assign_to="n_s,n_us"/>
      <divide assign_to="n_us" value="1000000"/>
      <assign assign_to="left_a" value="0"/>
      <add assign_to="left_a" variable="audio_end"/>
      <subtract assign_to="left_a" variable="n_s"/>
      <subtract assign_to="left_a" variable="n_us"/>
      <assign assign_to="left_i" value="0"/>
      <add assign_to="left_i" variable="info_end"/>
      <subtract assign_to="left_i" variable="n_s"/>
      <subtract assign_to="left_i" variable="n_us"/>
      <test assign_to="wait_a" variable="left_a" compare="greater_than" value="0"/>
      <test assign_to="wait_i" variable="left_i" compare="greater_than" value="0"/>
    </action>
  </nop>
  <nop test="wait_a" next="wait"/>
  <nop test="wait_i" next="wait"/>

  <label id="bye"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "sipp" <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To:[$remote_to]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <label id="bye_wait"/>
  <recv request="INFO" optional="true" next="bye_info"/>
  <recv response="200" next="done"/>

  <label id="bye_info"/>
  <send next="bye_wait">
    {ok_to_info}
  </send>

  <label id="done"/>
</scenario>
"""


# sipp logs each recv timeout that jumps to its ontimeout label as an error: that is our clock tick.
_TICK_NOISE = re.compile(
    r"[^\n]*?Call-Id: \S+, receive timeout on message \S+, jumping to label \S+"
)
_SEPARATOR = re.compile(r"^-{20,}.*$", re.M)
_DIRECTION = re.compile(r"message (sent|received)", re.I)


def parse_trace(text: str) -> list[SipMessage]:
    """Messages of a sipp ``-trace_msg`` file, in order.

    Each entry is a dashed separator line with a timestamp, a line saying "UDP message sent"
    or "... received", a blank line, then the message with sipp's line endings.
    """
    messages = []
    for block in _SEPARATOR.split(text):
        block = block.replace("\r\n", "\n")
        found = _DIRECTION.search(block[:200])
        if not found or "unexpected" in block[: found.start()].lower():
            # sipp logs an unexpected message twice; the plain "received" entry is kept.
            continue
        rest = block[found.end() :]
        rest = rest.split("\n", 1)[1] if "\n" in rest else ""
        rest = rest.lstrip("\n")
        head, _, body = rest.partition("\n\n")
        lines = head.split("\n")
        if not lines or not lines[0].strip():
            continue
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.append((name.strip(), value.strip()))
        length = next((v for k, v in headers if k.lower() in ("content-length", "l")), None)
        if length is not None and length.isdigit():
            body = body.encode()[: int(length)].decode(errors="replace")
        else:
            body = body.rstrip("\n")
        messages.append(SipMessage(found.group(1).lower(), lines[0].strip(), tuple(headers), body))
    return messages


class SippCall:
    """One sipp UAC call to ``target_host:target_port``, playing ``pcap`` (G.711 ``codec``).

    ``audio_s``: the pcap's duration (as returned by ``write_rtp_pcap``); ``linger_s``: how long
    to stay after both the audio's end and the last INFO; ``service``: the request-URI user part;
    ``guard_s``: sipp's own ``-timeout`` (defaults to audio + linger + 30 s); ``scenario``: XML
    to run instead (see ``sipp_steps``), when the call must do more than play and hang up.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        pcap: Path,
        codec: str = "PCMU",
        local_port: int = 0,
        *,
        audio_s: float,
        linger_s: float = 2.0,
        media_port: int = 0,
        service: str = "transcribe",
        guard_s: float | None = None,
        work_dir: Path | None = None,
        scenario: str | None = None,
        local_ip: str = "127.0.0.1",
        extra_headers: str = "",
        priority: int = 0,
        transport: str = "u1",
    ) -> None:
        """``priority``: a nice value for sipp (negative needs root), for benches where sipp
        stands in for a PBX on its own machine and must not queue behind the bridge for CPU.
        ``transport``: sipp's ``-t`` (``u1``: UDP, one socket; ``t1``: one TCP connection)."""
        if codec not in CODECS and scenario is None:
            raise SippError(f"sipp can play {sorted(CODECS)}, not {codec!r}")
        self.target = f"{target_host}:{target_port}"
        self.pcap = Path(pcap).resolve()
        self.codec = codec
        self.local_ip = local_ip
        self.extra_headers = extra_headers
        self.transport = transport
        free_port = free_tcp_port if transport.startswith("t") else free_udp_port
        self.local_port = local_port or free_port(local_ip)
        self.media_port = media_port or free_media_port(local_ip)
        self.audio_s = audio_s
        self.linger_s = linger_s
        self.service = service
        self.guard_s = guard_s if guard_s is not None else audio_s + linger_s + 30.0
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="sipp-"))
        self.call_id = f"harness-{uuid.uuid4().hex[:16]}-1@{local_ip}"
        self.scenario = scenario  # XML to run instead of the play-and-collect flow
        self.priority = priority
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def scenario_path(self) -> Path:
        return self.work_dir / "uac.xml"

    @property
    def trace_path(self) -> Path:
        return self.work_dir / "messages.log"

    def command(self) -> list[str]:
        cid_prefix = self.call_id.removesuffix(f"-1@{self.local_ip}")
        nice = ["nice", "-n", str(self.priority)] if self.priority else []
        return [
            *nice, SIPP, self.target,
            "-sf", str(self.scenario_path),
            "-s", self.service,
            "-i", self.local_ip,
            "-p", str(self.local_port),
            "-mi", self.local_ip,
            "-mp", str(self.media_port),
            "-t", self.transport,
            "-m", "1",
            "-cid_str", f"{cid_prefix}-%u@%s",
            "-timeout", f"{round(self.guard_s)}s",
            "-timeout_error",
            "-nostdin",
            "-aa",
            "-trace_msg", "-message_file", str(self.trace_path),
            "-trace_err", "-error_file", str(self.work_dir / "errors.log"),
        ]  # fmt: skip

    def start(self) -> SippCall:
        if self._proc is not None:
            raise SippError("already started")
        if self.scenario is None and not self.pcap.is_file():
            raise SippError(f"no pcap at {self.pcap}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.scenario_path.write_text(
            self.scenario
            or uac_scenario(self.codec, self.pcap, self.audio_s, self.linger_s, self.extra_headers)
        )
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.work_dir,
            stdin=subprocess.DEVNULL,
            stdout=open(self.work_dir / "stdout.log", "wb"),  # noqa: SIM115 - owned by the child
            stderr=open(self.work_dir / "stderr.log", "wb"),  # noqa: SIM115
        )
        return self

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for sipp to end (killing it after ``timeout``, default guard + 10 s) and report."""
        if self._proc is None:
            raise SippError("not started")
        limit = timeout if timeout is not None else self.guard_s + 10.0
        return self._result(*wait_or_kill(self._proc, limit))

    def kill(self) -> None:
        kill(self._proc)

    def cleanup(self) -> None:
        """Remove the work dir if this object made it."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _read(self, name: str, tail: int = 4000) -> str:
        try:
            return (self.work_dir / name).read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def _result(self, code: int, timed_out: bool) -> SippResult:
        try:
            messages = parse_trace(self.trace_path.read_text(errors="replace"))
        except OSError:
            messages = []
        invite = next((m for m in messages if m.direction == "sent" and m.method == "INVITE"), None)
        call_id = (invite.header("Call-ID") if invite else None) or self.call_id
        bodies, types, seen = [], [], set()
        final = bye = 0
        for m in messages:
            cseq = m.header("CSeq") or ""
            if m.direction == "received" and m.method == "INFO":
                if cseq in seen:
                    continue  # a retransmission
                seen.add(cseq)
                bodies.append(m.body)
                types.append(m.header("Content-Type") or "")
            elif m.direction == "received" and m.status is not None:
                if cseq.endswith("INVITE") and m.status >= 200:
                    final = final or m.status
                elif cseq.endswith("BYE") and m.status >= 200:
                    bye = bye or m.status
        return SippResult(
            exit_code=code,
            timed_out=timed_out,
            call_id=call_id,
            info_bodies=tuple(bodies),
            info_content_types=tuple(types),
            final_status=final,
            bye_status=bye,
            messages=tuple(messages),
            stdout=self._read("stdout.log"),
            stderr=self._read("stderr.log"),
            errors=_TICK_NOISE.sub("", self._read("errors.log", tail=200_000))[-4000:],
        )


def run_calls(calls: list[SippCall], timeout: float | None = None) -> list[SippResult]:
    """Start every call, then wait for each; results in the same order."""
    for call in calls:
        call.start()
    return [call.wait(timeout) for call in calls]

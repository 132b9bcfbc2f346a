"""linphonec as a scripted caller: one call playing a wav file, held and resumed on command.

Owns: a throw-away home directory with a private ``linphonerc`` (never the user's ~/.linphonerc),
running ``linphonec -c RC`` on 127.0.0.1 with its commands fed through stdin, waiting (bounded) for
what it prints, and reading the SIP it sent back from its log. Test support only.

What linphonec 5.1.65 (Debian ``linphone-cli``) needs, found by trying it:
- Commands go to stdin one per line. readline reads the pipe a character at a time, so nothing is
  lost when several lines are queued; it prints the prompt ``linphonec> `` each time it starts
  reading a command, so a new prompt means the command before it has run. ``--pipe`` also reads
  stdin, but keeps only the latest line (and opens a shared /tmp/linphonec-UID socket): not used.
- The core never leaves ``LinphoneGlobalStartup`` here and opens no SIP socket at start, whatever
  ``sip_port`` says; the ``ports sip N`` command applies the transports (only if N differs from the
  configured port, hence ``sip_port=-1`` in the file). With IPv6 on, binding 127.0.0.1 fails, and
  ``use_ipv6=0`` alone is deleted by a one-off migration unless ``ipv6_migration_done=1`` is set.
- ``[sip]``/``[rtp]`` ``bind_address=127.0.0.1`` keep SIP and RTP on loopback; ``contact`` sets the
  From (otherwise ``linphone@<the host's address>``).
- Codecs: every ``[audio_codec_N]`` the build knows is written, only the chosen one enabled; a codec
  left out of the file is appended with its default (opus, speex, PCMA, G729 on) and offered.
  telephone-event is always offered as well.
- ``soundcard use files`` then ``play FILE.wav``: the call's audio stream reads that file. The file
  is opened anew whenever the stream restarts: at the answer, at ``pause`` (hold: re-INVITE with
  ``a=sendonly``, the file becomes the music on hold) and at ``resume`` (re-INVITE without a
  direction attribute). ``play`` between them picks what the next restart plays.
- linphonec answers an in-dialog INFO with 200. It prints call states (``Call 1 ... connected.``,
  ``Media streams established ...``, ``... is now paused.``, ``... ended (REASON).``).
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support import speech
from tests.support.ports import free_udp_port, free_udp_ports
from tests.support.procs import kill, wait_or_kill

LINPHONEC = shutil.which("linphonec") or "/usr/bin/linphonec"
PROMPT = "linphonec> "

# Every audio codec linphonec 5.1.65 lists (``codec list``), as (mime, clock rate, channels).
# G722 has an RTP clock rate of 8000 (RFC 3551) though it samples at 16 kHz.
_AUDIO_CODECS = (
    ("opus", 48000, 2), ("speex", 16000, 1), ("speex", 8000, 1), ("PCMU", 8000, 1),
    ("PCMA", 8000, 1), ("GSM", 8000, 1), ("G722", 8000, 1), ("G729", 8000, 1),
    ("speex", 32000, 1), ("G726-16", 8000, 1), ("G726-24", 8000, 1), ("G726-32", 8000, 1),
    ("G726-40", 8000, 1), ("AAL2-G726-16", 8000, 1), ("AAL2-G726-24", 8000, 1),
    ("AAL2-G726-32", 8000, 1), ("AAL2-G726-40", 8000, 1), ("L16", 44100, 2), ("L16", 44100, 1),
)  # fmt: skip
WAV_RATES = {"PCMU": 8000, "PCMA": 8000, "G722": 16000}


class LinphoneError(RuntimeError):
    """linphonec could not be set up, or did not do what it was told in time."""


@dataclass(frozen=True, slots=True)
class SipMessage:
    """One SIP message linphonec sent or received, as its log shows it."""

    direction: str  # "sent" or "received"
    first_line: str
    call_id: str
    cseq: str
    body: str

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        return None if self.first_line.startswith("SIP/2.0") else self.first_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        return int(self.first_line.split(" ", 2)[1]) if self.method is None else None

    def is_final_answer_to(self, method: str) -> bool:
        """A final response (2xx-6xx) linphonec received to its ``method`` request."""
        return (
            self.direction == "received"
            and self.status is not None
            and self.status >= 200
            and self.cseq.endswith(" " + method)
        )

    @property
    def audio_payloads(self) -> list[str]:
        """The payload types on the SDP body's ``m=audio`` line."""
        found = re.search(r"^m=audio \d+ \S+ ([\d ]+)$", self.body, re.M)
        return found[1].split() if found else []

    @property
    def audio_direction(self) -> str:
        """The SDP body's direction attribute (``sendrecv`` when it names none; '' if no SDP)."""
        if not self.body.startswith("v=0"):
            return ""
        found = re.search(r"^a=(sendonly|recvonly|inactive|sendrecv)\s*$", self.body, re.M)
        return found[1] if found else "sendrecv"


@dataclass(frozen=True, slots=True)
class LinphoneResult:
    """``exit_code`` of linphonec (``timed_out``: we had to kill it); ``output``: what it printed;
    ``end_reason``: from ``Call 1 ... ended (REASON).`` ('' if the call never ended);
    ``messages``: the SIP it sent and received, in order (from its log)."""

    exit_code: int
    timed_out: bool
    output: str
    end_reason: str
    messages: tuple[SipMessage, ...]

    @property
    def call_id(self) -> str:
        return next((m.call_id for m in self.messages if m.method == "INVITE"), "")

    def sent(self, method: str) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "sent" and m.method == method]

    def answers(self, method: str) -> list[SipMessage]:
        """Final responses received to ``method`` requests (by CSeq), in order."""
        return [m for m in self.messages if m.is_final_answer_to(method)]


def write_config(path: Path, codec: str, rtp_port: int, user: str = "linphonec") -> None:
    """A linphonerc for one loopback caller offering ``codec`` only, without video, ICE, STUN,
    UPnP, AVPF, RTCP-XR, echo cancellation or registration."""
    codec = codec.upper()
    if codec not in {m.upper() for m, _, _ in _AUDIO_CODECS}:
        raise LinphoneError(f"linphonec knows no codec {codec!r}")
    sections = {
        "sip": {
            "sip_port": "-1",  # the real port comes with `ports sip N` (see the module docstring)
            "sip_tcp_port": "0",
            "sip_tls_port": "0",
            "bind_address": "127.0.0.1",
            "use_ipv6": "0",
            "ipv6_migration_done": "1",
            "contact": f'"{user}" <sip:{user}@127.0.0.1>',
            "guess_hostname": "0",
            "default_proxy": "-1",
            "register_only_when_network_is_up": "0",
            "register_only_when_upnp_is_ok": "0",
            "auto_net_state_mon": "0",
            "keepalive_period": "0",
            "media_encryption": "none",
            "in_call_timeout": "0",
        },
        "net": {"firewall_policy": "0", "mtu": "0"},
        "rtp": {
            "bind_address": "127.0.0.1",
            "audio_rtp_port": str(rtp_port),
            "rtcp_xr_enabled": "0",
            "rtcp_fb_implicit_rtcp_fb": "0",
            "avpf": "0",
            "rtcp_mux": "0",
            "disable_upnp": "1",
            "nortp_timeout": "60",
        },
        "sound": {"echocancellation": "0", "echolimiter": "0", "agc": "0", "noisegate": "0"},
        "video": {
            "enabled": "0",
            "capture": "0",
            "display": "0",
            "automatically_initiate": "0",
            "automatically_accept": "0",
        },
        "misc": {"enable_video": "0"},
    }
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k}={v}" for k, v in values.items()]
        lines.append("")
    for i, (mime, rate, channels) in enumerate(_AUDIO_CODECS):
        enabled = int(mime.upper() == codec)
        lines += [f"[audio_codec_{i}]", f"mime={mime}", f"rate={rate}", f"channels={channels}",
                  f"enabled={enabled}", ""]  # fmt: skip
    path.write_text("\n".join(lines))


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} ", re.M)
_SENT = re.compile(r"message sent to \[[^\]]*\], size: \[\d+\] bytes$")
_RECEIVED = re.compile(r"received \[\d+\] new bytes from \[[^\]]*\]:$")


def parse_sip_log(log: str) -> list[SipMessage]:
    """The SIP messages in linphonec's log: belle-sip logs each one whole, after a line saying
    it was sent or received, up to the next timestamped line."""
    messages = []
    starts = [m.start() for m in _LOG_LINE.finditer(log)] + [len(log)]
    for begin, end in zip(starts, starts[1:], strict=False):
        entry = log[begin:end]
        head, _, message = entry.partition("\n")
        direction = "sent" if _SENT.search(head) else "received" if _RECEIVED.search(head) else ""
        if not direction or not message.strip():
            continue
        text = message.replace("\r\n", "\n")
        headers, _, body = text.partition("\n\n")
        first = headers.split("\n", 1)[0].strip()
        call_id = re.search(r"^(?:Call-ID|i):\s*(\S+)", headers, re.M | re.I)
        cseq = re.search(r"^CSeq:\s*(.+?)\s*$", headers, re.M | re.I)
        messages.append(
            SipMessage(direction, first, call_id[1] if call_id else "", cseq[1] if cseq else "",
                       body.strip())
        )  # fmt: skip
    return messages


class LinphoneCall:
    """One call from ``sip:USER@127.0.0.1`` (port ``local_port``) to ``target_uri``, playing a wav.

    ``start()`` dials; then ``wait_established()``, ``pause()``, ``play()``, ``resume()``,
    ``hang_up()`` and ``finish()`` drive it, each bounded by a timeout. ``source_wav``: 16-bit mono
    at the codec's rate (8 kHz for G.711, 16 kHz for G.722). The file player starts the file again
    at every stream restart, so give it enough trailing silence to outlast the call.
    """

    def __init__(
        self,
        target_uri: str,
        source_wav: Path,
        codec: str = "PCMU",
        user: str = "linphonec",
        local_port: int = 0,
        work_dir: Path | None = None,
    ) -> None:
        self.user = user
        self.codec = codec.upper()
        if self.codec not in WAV_RATES:
            raise LinphoneError(f"no wav rate known for codec {codec!r}")
        self._check_wav(Path(source_wav))
        self.target_uri = target_uri
        self.source_wav = Path(source_wav).resolve()
        self.local_port = local_port or free_udp_port()
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="linphonec-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._output = ""
        self._changed = threading.Condition()
        self._eof = False
        self._reader: threading.Thread | None = None

    def _check_wav(self, path: Path) -> None:
        rate = speech.wav_rate(path)
        if rate != WAV_RATES[self.codec]:
            raise LinphoneError(
                f"{path}: {rate} Hz, but {self.codec} needs {WAV_RATES[self.codec]} Hz"
            )

    @property
    def config_path(self) -> Path:
        return self.work_dir / "linphonerc"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "linphonec.log"

    @property
    def output(self) -> str:
        with self._changed:
            return self._output

    def command_line(self) -> list[str]:
        return [LINPHONEC, "-c", str(self.config_path), "-d", "6", "-l", str(self.log_path)]

    def start(self, timeout: float = 15.0) -> LinphoneCall:
        """Start linphonec, bind its port, choose the file and dial (not waiting for an answer)."""
        if self._proc is not None:
            raise LinphoneError("already started")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.config_path, self.codec, free_udp_ports(2, align=2), self.user)
        env = {
            **os.environ,
            "HOME": str(self.work_dir),  # history, ZRTP cache, databases: all in the work dir
            "XDG_CONFIG_HOME": str(self.work_dir / ".config"),
            "XDG_DATA_HOME": str(self.work_dir / ".local" / "share"),
            "PULSE_SERVER": "unix:/nonexistent",  # no sound server: fail at once, not after a wait
        }
        self._proc = subprocess.Popen(
            self.command_line(),
            cwd=self.work_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self._dial(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _dial(self, timeout: float) -> None:
        self.command(f"ports sip {self.local_port}", timeout)
        ports = self.command("ports", timeout)
        if f"sip port = {self.local_port}" not in ports:
            raise LinphoneError(f"linphonec did not bind SIP to {self.local_port}:\n{self.output}")
        if "Using wav files" not in self.command("soundcard use files", timeout):
            raise LinphoneError(f"linphonec did not switch to files:\n{self.output}")
        self.command(f"play {self.source_wav}", timeout)
        out = self.command(f"call {self.target_uri}", timeout)
        if "Establishing call" not in out:
            raise LinphoneError(f"linphonec did not dial:\n{self.output}")

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := os.read(fd, 4096):  # not line by line: the prompt has no newline
            with self._changed:
                self._output += decoder.decode(chunk)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _running(self) -> bool:
        return self._proc is not None and not self._eof and self._proc.poll() is None

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until the output matches regex ``pattern`` ``count`` times (or linphonec quits)."""
        regex = re.compile(pattern)
        with self._changed:
            return (
                self._changed.wait_for(
                    lambda: len(regex.findall(self._output)) >= count or not self._running(),
                    timeout,
                )
                and len(regex.findall(self._output)) >= count
            )

    def command(self, line: str, timeout: float = 10.0) -> str:
        """Send one command; return what linphonec printed until it asked for the next one."""
        if self._proc is None or self._proc.stdin is None:
            raise LinphoneError("not started")
        with self._changed:
            before = self._output.count(PROMPT)
            start = len(self._output)
        if before == 0 and not self.wait_for(re.escape(PROMPT), 1, timeout):
            raise LinphoneError(f"linphonec gave no prompt:\n{self.output}")
        before = max(before, 1)
        self._proc.stdin.write(line.encode() + b"\n")
        self._proc.stdin.flush()
        if not self.wait_for(re.escape(PROMPT), before + 1, timeout):
            raise LinphoneError(f"linphonec did not finish {line!r} in {timeout} s:\n{self.output}")
        return self.output[start:]

    def wait_established(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait for the ``count``-th 'Media streams established' (the answer, then each resume)."""
        return self.wait_for(r"Media streams established", count, timeout)

    def play(self, wav: Path, timeout: float = 10.0) -> None:
        """Make ``wav`` the file that the next stream restart (pause, resume) plays."""
        self._check_wav(Path(wav))
        self.command(f"play {Path(wav).resolve()}", timeout)

    def pause(self, timeout: float = 10.0) -> None:
        """Put the call on hold (re-INVITE, a=sendonly) and wait until linphonec says it is."""
        self.command("pause", timeout)
        if not self.wait_for(r"is now paused\.", 1, timeout):
            raise LinphoneError(f"call not paused in {timeout} s:\n{self.output}")

    def resume(self, timeout: float = 10.0) -> None:
        """Take the call off hold and wait until its streams run again."""
        established = self.output.count("Media streams established")
        self.command("resume", timeout)
        if not self.wait_established(established + 1, timeout):
            raise LinphoneError(f"call not resumed in {timeout} s:\n{self.output}")

    def hang_up(self, timeout: float = 10.0) -> None:
        """Send BYE and wait for its answer. linphonec reports the call ended as it sends the BYE;
        quitting then would drop the BYE transaction before the answer is in."""
        self.command("terminate", timeout)
        if not self.wait_for(r"ended \(", 1, timeout):
            raise LinphoneError(f"call did not end in {timeout} s:\n{self.output}")
        if not self.wait_for_message(lambda m: m.is_final_answer_to("BYE"), timeout):
            raise LinphoneError(f"no answer to BYE in {timeout} s:\n{self.output}")

    def messages(self) -> list[SipMessage]:
        """The SIP linphonec has sent and received so far (its log is written as it goes)."""
        return (
            parse_sip_log(self.log_path.read_text(errors="replace"))
            if self.log_path.is_file()
            else []
        )

    def wait_for_message(self, predicate: Callable[[SipMessage], bool], timeout: float) -> bool:
        """Wait until a SIP message matching ``predicate`` is in the log (read every 50 ms)."""
        deadline = time.monotonic() + timeout
        while not any(predicate(m) for m in self.messages()):
            if time.monotonic() > deadline or not self._running():
                return any(predicate(m) for m in self.messages())
            time.sleep(0.05)
        return True

    def finish(self, timeout: float = 15.0) -> LinphoneResult:
        """Quit linphonec (ending any call still up) and collect what it did."""
        if self._proc is None:
            raise LinphoneError("not started")
        if self._running() and self._proc.stdin is not None:
            try:
                self._proc.stdin.write(b"quit\n")
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        code, timed_out = wait_or_kill(self._proc, timeout)
        if self._reader is not None:
            self._reader.join(5)
        output = self.output
        ended = re.search(r"ended \(([^)]*)\)", output)
        return LinphoneResult(
            code, timed_out, output, ended[1] if ended else "", tuple(self.messages())
        )

    def kill(self) -> None:
        kill(self._proc)

    def cleanup(self) -> None:
        """Kill linphonec if still running; remove the work dir if this object made it."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

"""baresip as a scripted caller: one G.722 call whose microphone is a 16 kHz wav file.

Owns: a throw-away baresip configuration directory (config + accounts) and running
``baresip -f DIR -e "/dial URI" -t SECONDS`` on 127.0.0.1 with a timeout. Test support only.

What baresip 1.0.0 (Debian) needs, found by trying it:
- ``module_app menu.so`` provides ``/dial``; ``-e`` commands go through it.
  ``module_tmp account.so`` reads the accounts file: without an account there is no user agent
  to dial from.
- ``aufile.so`` in 1.0.0 is an audio *source* only. No player module is loaded at all, so baresip
  plays nothing (it skips the player when no ``auplay`` is registered) and needs no sound card.
- The account line restricts codecs (``;audio_codecs=G722``) and disables registration
  (``;regint=0``); ``sip_listen 127.0.0.1:PORT`` and ``net_interface 127.0.0.1`` keep SIP and RTP
  on loopback (``net_interface lo`` fails here: "could not get IPv4 address").
- The wav's rate must match the codec's (16 kHz for G.722), 16-bit mono.
- When the wav ends, aufile reports "end of file" and baresip hangs the call up itself (BYE);
  ``-t`` then quits the process (it is set a little past the wav as a guard).
- baresip answers an in-dialog INFO with 488, which is expected.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import speech
from tests.support.ports import free_udp_port
from tests.support.procs import kill, wait_or_kill

BARESIP = shutil.which("baresip") or "/usr/bin/baresip"
MODULE_PATH = Path("/usr/lib/baresip/modules")


class BaresipError(RuntimeError):
    """baresip could not be set up or started."""


@dataclass(frozen=True, slots=True)
class BaresipResult:
    """``exit_code`` of baresip (``timed_out``: we had to kill it); ``output``: stdout + stderr."""

    exit_code: int
    timed_out: bool
    output: str


def write_config(
    config_dir: Path, source_wav: Path, sip_port: int, codec: str = "G722", mediaenc: str = "",
    auth: tuple[str, str] | None = None, ca_file: Path | None = None,
) -> None:  # fmt: skip
    """Write ``config`` and ``accounts`` for one caller into ``config_dir``. ``auth``: digest
    (user, password) for challenges; ``ca_file``: the CA that signed a TLS server's certificate."""
    config_dir.mkdir(parents=True, exist_ok=True)
    codec_module = {"G722": "g722.so", "PCMU": "g711.so", "PCMA": "g711.so"}.get(codec.upper())
    if codec_module is None:
        raise BaresipError(f"no module known for codec {codec!r}")
    rtp_low = free_udp_port() & ~1
    lines = [
        "poll_method\t\tepoll",
        "call_local_timeout\t30",
        "call_max_calls\t\t1",
        f"sip_listen\t\t127.0.0.1:{sip_port}",
        "net_interface\t\t127.0.0.1",
        f"audio_source\t\taufile,{source_wav}",
        "audio_level\t\tno",
        "ausrc_format\t\ts16",
        "auplay_format\t\ts16",
        "auenc_format\t\ts16",
        "audec_format\t\ts16",
        "audio_buffer\t\t20-160",
        f"rtp_ports\t\t{rtp_low}-{rtp_low + 40}",
        "rtcp_mux\t\tno",
        "jitter_buffer_delay\t5-10",
        "rtp_stats\t\tno",
        f"module_path\t\t{MODULE_PATH}",
        f"module\t\t\t{codec_module}",
        "module\t\t\taufile.so",
        "module_tmp\t\taccount.so",
        "module_app\t\tmenu.so",
        *(["module\t\t\tsrtp.so"] if mediaenc else []),
        *([f"sip_cafile\t\t{ca_file}"] if ca_file else []),
    ]
    (config_dir / "config").write_text("\n".join(lines) + "\n")
    account = f"<sip:test@127.0.0.1:{sip_port}>;regint=0;audio_codecs={codec.upper()}"
    if mediaenc:  # e.g. "srtp-mand": RTP/SAVP with SDES keys, nothing else
        account += f";mediaenc={mediaenc}"
    if auth:
        account += f";auth_user={auth[0]};auth_pass={auth[1]}"
    (config_dir / "accounts").write_text(account + "\n")
    (config_dir / "contacts").write_text("")


class BaresipCall:
    """One call from baresip on ``127.0.0.1:local_port`` to ``target_uri``, lasting ``duration_s``.

    ``source_wav``: 16-bit mono at the codec's rate (16 kHz for G.722). baresip dials at start,
    streams the file (then silence) and hangs up when ``duration_s`` is over.
    """

    def __init__(
        self,
        target_uri: str,
        source_wav: Path,
        duration_s: float,
        codec: str = "G722",
        local_port: int = 0,
        work_dir: Path | None = None,
        mediaenc: str = "",
        auth: tuple[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.mediaenc, self.auth, self.ca_file = mediaenc, auth, ca_file
        expected_rate = 16000 if codec.upper() == "G722" else 8000
        rate = speech.wav_rate(Path(source_wav))
        if rate != expected_rate:
            raise BaresipError(f"{source_wav}: {rate} Hz, but {codec} needs {expected_rate} Hz")
        self.target_uri = target_uri
        self.source_wav = Path(source_wav).resolve()
        self.duration_s = duration_s
        self.codec = codec
        self.local_port = local_port or free_udp_port()
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="baresip-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.work_dir / "baresip.log"

    def command(self) -> list[str]:
        return [
            BARESIP, "-4", "-f", str(self.work_dir),
            "-e", f"/dial {self.target_uri}",
            "-t", str(max(1, round(self.duration_s))),
        ]  # fmt: skip

    def start(self) -> BaresipCall:
        if self._proc is not None:
            raise BaresipError("already started")
        write_config(self.work_dir, self.source_wav, self.local_port, self.codec, self.mediaenc,
                     self.auth, self.ca_file)  # fmt: skip
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.work_dir,
            stdin=subprocess.DEVNULL,
            stdout=open(self.log_path, "wb"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
        )
        return self

    def wait(self, timeout: float | None = None) -> BaresipResult:
        """Wait for baresip to quit (killing it after ``timeout``, default duration + 15 s)."""
        if self._proc is None:
            raise BaresipError("not started")
        limit = timeout if timeout is not None else self.duration_s + 15.0
        code, timed_out = wait_or_kill(self._proc, limit)
        output = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        return BaresipResult(code, timed_out, output)

    def kill(self) -> None:
        kill(self._proc)

    def cleanup(self) -> None:
        """Kill baresip if still running; remove the work dir if this object made it."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def play_prompts(
    target_uri: str, prompts: list[speech.Prompt], work_dir: Path, **options: Any
) -> BaresipResult:
    """One PCMU call from baresip to ``target_uri`` that says ``prompts`` (8 kHz), with a second
    of silence before each and two after, hangs up and is waited for; ``options`` go to
    :class:`BaresipCall` (``mediaenc``, ``auth``, ``ca_file``, ...)."""
    gap = np.zeros(8000, np.int16)
    source = np.concatenate([part for p in prompts for part in (gap, p.pcm(), gap)] + [gap])
    wav = work_dir / "source8k.wav"
    work_dir.mkdir(parents=True, exist_ok=True)
    speech.write_wav(wav, source, 8000)
    seconds = source.size / 8000
    call = BaresipCall(target_uri, wav, duration_s=seconds + 4.0, codec="PCMU",
                       work_dir=work_dir / "baresip", **options).start()  # fmt: skip
    try:
        return call.wait(seconds + 30)
    finally:
        call.kill()

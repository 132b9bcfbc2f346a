"""A small PJSUA2 user agent server that answers calls, records them and sends in-dialog INFO.

Owns: the far end that the test clients (sipp, baresip) call when the harness itself is tested. It
answers every INVITE with 200 (the codecs it is given, in that order), records each call's received
audio through an ``AudioMediaPort`` at 8 or 16 kHz, and sends an INFO (application/json) into a call
when told. Used ONLY by tests of the SIP client harness, never by the product.

PJSUA2 allows one Endpoint per process and the product's own tests may hold one, so the agent runs
in a child process (``python info_uas.py ...``) driven over stdin/stdout with one JSON object a
line; :class:`InfoUas` is the parent's handle. In the child every pjsua2 call is made from the main
thread (``threadCnt = 0``, ``mainThreadOnly = True``, ``libHandleEvents`` in a bounded loop); only
``onFrameReceived`` runs on PJSIP's clock thread, and it does nothing but copy the frame.

Every pjsua2 object with Python callbacks (recorder ports, calls, the account) is deleted explicitly
with ``_release`` while Python still holds it, never by its reference count reaching zero: the
C++ delete releases the GIL, and until the port's destructor has unhooked it, the clock thread can
still call ``onFrameReceived`` through the SWIG director, whose ``self`` is a borrowed pointer. If
that ``self`` is a proxy already being deallocated, the call revives and frees it a second time,
which corrupts the heap (the agent's occasional segfault; ``del recorder`` did exactly that).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

_T = TypeVar("_T")
CODEC_IDS = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/16000"}


class UasError(RuntimeError):
    """The agent process failed, or did not do what it was asked in time."""


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InfoAnswer:
    call_id: str
    code: int
    body: str


@dataclass(frozen=True, slots=True)
class UasCall:
    """A call that ended at the agent: its Call-ID, received audio and the INFO answers it got."""

    call_id: str
    codec: str
    rate: int
    audio: np.ndarray  # int16 at ``rate``
    last_status: int


@dataclass(slots=True)
class _State:
    started: list[str] = field(default_factory=list)
    ended: dict[str, UasCall] = field(default_factory=dict)
    answers: list[InfoAnswer] = field(default_factory=list)
    failure: str = ""


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class InfoUas:
    """Handle on an agent child process listening on ``127.0.0.1:port`` (UDP).

    ``codecs``: names from ``CODEC_IDS`` in priority order; ``rate``: the recording port's rate
    (8000 for G.711, 16000 for G.722); ``out_dir``: where it writes each call's wav.
    """

    def __init__(
        self,
        out_dir: Path,
        codecs: tuple[str, ...] = ("PCMU", "PCMA"),
        rate: int = 8000,
        port: int = 0,
        max_lifetime_s: float = 300.0,
    ) -> None:
        for c in codecs:
            if c not in CODEC_IDS:
                raise ValueError(f"unknown codec {c!r}; known: {sorted(CODEC_IDS)}")
        self.out_dir = Path(out_dir)
        self.codecs = codecs
        self.rate = rate
        self.port = port or free_udp_port()
        self.max_lifetime_s = max_lifetime_s
        self._proc: subprocess.Popen[str] | None = None
        self._state = _State()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._log = self.out_dir / f"uas-{self.port}.log"

    # -- life cycle --------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> InfoUas:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
            "--codecs", ",".join(self.codecs), "--rate", str(self.rate),
            "--out", str(self.out_dir), "--max-lifetime", str(self.max_lifetime_s),
        ]  # fmt: skip
        log = open(self._log, "w")  # noqa: SIM115 - handed to the child, closed with it
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}  # a crash leaves a traceback in the log
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
            env=env,
        )  # fmt: skip
        log.close()
        ready = threading.Event()
        self._reader = threading.Thread(
            target=self._read_events, args=(self._proc.stdout, ready), daemon=True
        )
        self._reader.start()
        if not ready.wait(timeout):
            self.stop()
            raise UasError(f"agent not ready in {timeout} s; log: {self.log_tail()}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self._command({"cmd": "quit"})
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if self._reader:
            self._reader.join(5)

    def __enter__(self) -> InfoUas:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- commands ------------------------------------------------------------------------------
    def send_info(self, call_id: str, body: str, content_type: str = "application/json") -> None:
        """Ask the agent to send one INFO inside the call ``call_id`` (returns at once)."""
        self._command({"cmd": "info", "call_id": call_id, "body": body, "type": content_type})

    def hangup(self, call_id: str) -> None:
        self._command({"cmd": "hangup", "call_id": call_id})

    def wait_calls(self, count: int, timeout: float) -> list[str]:
        """Call-IDs of the first ``count`` calls the agent answered, in order of arrival."""
        return self._wait(lambda s: s.started[:count] if len(s.started) >= count else None, timeout)

    def wait_ended(self, call_id: str, timeout: float) -> UasCall:
        return self._wait(lambda s: s.ended.get(call_id), timeout)

    def wait_answers(self, count: int, timeout: float) -> list[InfoAnswer]:
        """The first ``count`` answers to INFOs this agent sent, in order of arrival."""
        return self._wait(lambda s: s.answers[:count] if len(s.answers) >= count else None, timeout)

    @property
    def answers(self) -> list[InfoAnswer]:
        with self._cond:
            return list(self._state.answers)

    # -- internals -----------------------------------------------------------------------------
    def _command(self, obj: dict[str, Any]) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise UasError("agent not started")
        self._proc.stdin.write(json.dumps(obj) + "\n")
        self._proc.stdin.flush()

    def _wait(self, pick: Callable[[_State], _T | None], timeout: float) -> _T:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = pick(self._state)
                if found is not None:
                    return found
                if self._state.failure:
                    raise UasError(f"agent failed: {self._state.failure}; log: {self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UasError(f"timed out after {timeout} s; log: {self.log_tail()}")
                self._cond.wait(min(left, 0.5))

    def _read_events(self, stream: IO[str] | None, ready: threading.Event) -> None:
        assert stream is not None  # Popen(stdout=PIPE) always gives one
        for line in stream:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._cond:
                kind = ev.get("event")
                if kind == "ready":
                    ready.set()
                elif kind == "call":
                    self._state.started.append(ev["call_id"])
                elif kind == "info_answer":
                    self._state.answers.append(InfoAnswer(ev["call_id"], ev["code"], ev["body"]))
                elif kind == "ended":
                    with wave.open(ev["wav"]) as w:
                        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
                    self._state.ended[ev["call_id"]] = UasCall(
                        ev["call_id"], ev["codec"], self.rate, audio, ev["status"]
                    )
                elif kind == "error":
                    self._state.failure = ev.get("message", "?")
                self._cond.notify_all()
        with self._cond:
            if not self._state.failure:
                self._state.failure = "agent process exited"
            self._cond.notify_all()


# --------------------------------------------------------------------------------------------
# Child side: everything below runs only in the agent process.
# --------------------------------------------------------------------------------------------


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _release(obj: Any) -> None:
    """Delete the C++ object behind a pjsua2 director proxy now, while the caller still holds it.

    The proxy stays a live Python object during the delete, so a callback that PJSIP's clock thread
    makes into it meanwhile (the bridge calls every port each 20 ms) runs normally. Afterwards the
    proxy no longer owns anything, so when Python frees it later, on whatever thread, nothing of
    pjsua2 is touched. Calling it twice is harmless; never use the proxy's methods after it.
    """
    if obj is not None and obj.thisown:
        obj.__swig_destroy__(obj)


def _run_agent(args: argparse.Namespace) -> int:  # noqa: C901 - one event loop, kept in one place
    import gc

    import pjsua2 as pj

    codecs = [c for c in args.codecs.split(",") if c]
    rate: int = args.rate
    out_dir = Path(args.out)

    class Recorder(pj.AudioMediaPort):  # type: ignore[misc]
        """Collects the frames the conference bridge hands it; runs on the clock thread."""

        def __init__(self) -> None:
            super().__init__()
            self.frames: list[bytes] = []

        def onFrameReceived(self, frame: Any) -> None:  # noqa: N802 - pjsua2 callback name
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
                self.frames.append(bytes(frame.buf))

    class AgentCall(pj.Call):  # type: ignore[misc]
        def __init__(self, acc: Any, call_id: int) -> None:
            super().__init__(acc, call_id)
            self.sip_call_id = ""
            self.codec = ""
            self.recorder: Recorder | None = None
            self.pending: list[str] = []  # INFO bodies sent, answers not yet seen
            self.disconnected = False
            self.last_status = 0

        def onCallState(self, prm: Any) -> None:  # noqa: N802
            ci = self.getInfo()
            self.sip_call_id = ci.callIdString
            if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
                _emit(event="call", call_id=self.sip_call_id)
            elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.last_status = int(ci.lastStatusCode)
                self.disconnected = True  # cleaned up by the loop, outside this callback

        def onCallMediaState(self, prm: Any) -> None:  # noqa: N802
            ci = self.getInfo()
            for i, mi in enumerate(ci.media):
                if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    if self.recorder is None:
                        fmt = pj.MediaFormatAudio()
                        fmt.init(pj.PJMEDIA_FORMAT_L16, rate, 1, 20000, 16)
                        self.recorder = Recorder()
                        self.recorder.createPort(f"rec{self.getId()}", fmt)
                    with contextlib.suppress(pj.Error):
                        self.codec = self.getStreamInfo(i).codecName
                    self.getAudioMedia(i).startTransmit(self.recorder)

        def onCallTsxState(self, prm: Any) -> None:  # noqa: N802
            tsx = prm.e.body.tsxState.tsx
            if tsx.method != "INFO" or tsx.role != pj.PJSIP_ROLE_UAC:
                return
            done = tsx.state == pj.PJSIP_TSX_STATE_COMPLETED or (
                tsx.state == pj.PJSIP_TSX_STATE_TERMINATED and tsx.statusCode >= 400
            )
            if done and self.pending:
                body = self.pending.pop(0)
                _emit(event="info_answer", call_id=self.sip_call_id, code=tsx.statusCode, body=body)

    calls: list[AgentCall] = []  # every live Call object is held here, and only here

    class Account(pj.Account):  # type: ignore[misc]
        def onIncomingCall(self, prm: Any) -> None:  # noqa: N802
            call = AgentCall(self, prm.callId)
            calls.append(call)
            op = pj.CallOpParam()
            op.statusCode = 200
            call.answer(op)

    commands: queue.Queue[dict[str, Any]] = queue.Queue()

    def read_commands() -> None:  # plain Python only: no pjsua2 on this thread
        for line in sys.stdin:
            with contextlib.suppress(json.JSONDecodeError):
                commands.put(json.loads(line))
        commands.put({"cmd": "quit"})

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = 4
    cfg.logConfig.level = 3
    cfg.logConfig.consoleLevel = 0  # stdout carries the events: PJSIP logs to its own file
    cfg.logConfig.filename = str(out_dir / f"uas-{args.port}.pjsip.log")
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    # A generous jitter buffer that never discards: with the defaults, progressive discard threw
    # away 10 ms G.711 frames of sipp's stream in most runs here (correlation 0.4-0.67 instead of
    # 0.999), and a recording must keep every sample the caller sent. SWIG gives no way to
    # assign the jbDiscardAlgo enum from Python, so the settings go through pjsua2's JSON reader.
    doc = pj.JsonDocument()
    doc.writeObject(cfg.medConfig)
    med = json.loads(doc.saveString())
    med["MediaConfig"].update(
        jbInit=120,
        jbMinPre=100,
        jbMaxPre=200,
        jbMax=500,
        jbDiscardAlgo=0,  # 0: DISCARD_NONE
    )
    doc = pj.JsonDocument()
    doc.loadString(json.dumps(med))
    doc.readObject(cfg.medConfig)
    del doc
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = args.port
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    for info in ep.codecEnum2():
        ep.codecSetPriority(info.codecId, 0)
    for prio, name in zip((255, 254, 253), codecs, strict=False):
        ep.codecSetPriority(CODEC_IDS[name], prio)

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:uas@127.0.0.1:{args.port}"
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acfg.mediaConfig.transportConfig.port = args.rtp_port or (args.port + 2)
    acfg.mediaConfig.transportConfig.portRange = 200
    acc = Account()
    acc.create(acfg, True)
    threading.Thread(target=read_commands, daemon=True).start()
    _emit(event="ready", port=args.port)

    def by_call_id(call_id: str) -> AgentCall | None:
        return next((c for c in calls if c.sip_call_id == call_id), None)

    def finish(call: AgentCall) -> None:
        """Write the call's wav, report it, and delete the call's pjsua2 objects (explicitly)."""
        recorder = call.recorder
        call.recorder = None
        pcm = b""
        if recorder is not None:
            # While this runs the clock thread may still deliver a frame to ``recorder``: fine, it
            # is alive. Once it returns the bridge no longer calls it, so ``frames`` is final.
            _release(recorder)
            pcm = b"".join(recorder.frames)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", call.sip_call_id)
        path = out_dir / f"{safe}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm)
        _emit(
            event="ended", call_id=call.sip_call_id, wav=str(path), codec=call.codec,
            status=call.last_status,
        )  # fmt: skip
        _release(call)  # not left to the reference count either: see _release

    def handle(cmd: dict[str, Any]) -> None:
        # A function of its own so that no Call reference outlives it: a Call that Python frees
        # after libDestroy() trips an assertion in pjsua_call_set_user_data and aborts.
        target = by_call_id(str(cmd.get("call_id")))
        if target is None or target.disconnected:
            _emit(event="info_answer", call_id=cmd.get("call_id"), code=0, body=cmd.get("body", ""))
            return
        try:
            if cmd["cmd"] == "hangup":
                target.hangup(pj.CallOpParam())
                return
            prm = pj.CallSendRequestParam()
            prm.method = "INFO"
            prm.txOption.contentType = cmd.get("type", "application/json")
            prm.txOption.msgBody = cmd["body"]
            target.pending.append(cmd["body"])
            target.sendRequest(prm)
        except pj.Error as exc:
            _emit(event="info_answer", call_id=target.sip_call_id, code=-1,
                  body=f"{cmd.get('body', '')} ({exc.info()})")  # fmt: skip

    def reap() -> None:
        for call in [c for c in calls if c.disconnected]:
            calls.remove(call)
            finish(call)

    deadline = time.monotonic() + args.max_lifetime
    running = True
    while running and time.monotonic() < deadline:
        ep.libHandleEvents(10)
        reap()
        while True:
            try:
                cmd = commands.get_nowait()
            except queue.Empty:
                break
            if cmd.get("cmd") == "quit":
                running = False
            elif cmd.get("cmd") in ("info", "hangup"):
                handle(cmd)

    # Orderly teardown: hang up, let BYEs go, drop ports and calls before the library.
    ep.hangupAllCalls()
    for _ in range(50):
        ep.libHandleEvents(10)
        reap()
    while calls:
        finish(calls.pop())
    acc.shutdown()
    _release(acc)
    del acc
    gc.collect()
    ep.libDestroy()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, default=0)
    parser.add_argument("--codecs", default="PCMU,PCMA")
    parser.add_argument("--rate", type=int, default=8000, choices=(8000, 16000))
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-lifetime", type=float, default=300.0)
    args = parser.parse_args()
    try:
        return _run_agent(args)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, then fatal
        _emit(event="error", message=repr(exc))
        raise


if __name__ == "__main__":
    sys.exit(main())

"""The one thread boundary for audio: PJSIP's clock thread → the sender thread → ZeroMQ.

:class:`CallAudioPort` receives each 20 ms frame of a call in ``onFrameReceived``, on PJSIP's
``clock`` thread with the GIL held. It only copies the PCM (fast path, ~3 µs) and puts it on a
``SimpleQueue``; anything slower there would lose frames for every call of the process.

:class:`AudioSender` owns a thread and one PUSH socket per worker. It drains that queue in order
(so a call's start, audio and end reach its worker in order), drops silence with a per-call
:class:`~media.silence_gate.SilenceGate`, and sends the rest as wire ``Audio`` messages, PCM as its
own frame, with time marks through silence (see :class:`~media.silence_gate.SuppressedStream`).
It never touches PJSUA2.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import pjsua2 as pj
import zmq

from media import wire
from media.silence_gate import SilenceGate, SuppressedStream
from sip_bridge.config import SilenceGateConfig
from sip_bridge.frame_copy import Copier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StartCall:
    call_id: str
    sip_call_id: str
    sample_rate: int
    worker: int


@dataclass(frozen=True, slots=True)
class EndCall:
    call_id: str


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


Item = tuple[str, bytes] | StartCall | EndCall | _Stop


class CallAudioPort(pj.AudioMediaPort):  # type: ignore[misc]
    """Taps one call's received audio. Destroy it explicitly (``destroy()``) while still held."""

    def __init__(self, call_id: str, out: queue.SimpleQueue[Item], copy: Copier) -> None:
        super().__init__()
        self.call_id = call_id
        self._out = out
        self._copy = copy

    def onFrameReceived(self, frame: Any) -> None:  # noqa: N802 (PJSUA2 name)
        # PJSIP clock thread: a copy and a non-blocking put, nothing else.
        if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
            self._out.put((self.call_id, self._copy(frame)))

    def destroy(self) -> None:
        release(self)


def release(obj: Any) -> None:
    """Delete the C++ object behind a pjsua2 proxy now, while Python still holds the proxy.

    Never leave a port, call or account to the reference count: SWIG's delete releases the GIL
    before the C++ destructor unhooks the object, and in that window PJSIP's clock thread can call
    the director (``onFrameReceived``) with a borrowed pointer to a proxy being deallocated, which
    frees it twice and corrupts the heap (reproduced: about one crash in 3,000 calls). Deleted
    explicitly, the proxy stays alive through any such call, and owns nothing afterwards, so
    whichever thread frees it later touches no pjsua2 state. Safe to call twice.
    """
    if obj is not None and obj.thisown:
        obj.__swig_destroy__(obj)


@dataclass(slots=True)
class _CallStream:
    worker: int
    sample_rate: int
    stream: SuppressedStream


@dataclass(slots=True)
class SenderStats:
    frames_in: int = 0
    bytes_in: int = 0
    bytes_sent: int = 0
    messages_sent: int = 0  # audio runs and time marks
    send_dropped: int = 0


class AudioSender:
    def __init__(
        self,
        ctx: zmq.Context[Any],
        worker_endpoints: list[str],
        reply_to: str,
        gate: SilenceGateConfig,
    ) -> None:
        self.queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.stats = SenderStats()
        self._ctx = ctx
        self._endpoints = worker_endpoints
        self._reply_to = reply_to
        self._gate = gate
        self._calls: dict[str, _CallStream] = {}
        self._thread = threading.Thread(target=self._run, name="audio-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.queue.put(_Stop())
        self._thread.join(timeout)

    def _run(self) -> None:
        sockets = []
        for endpoint in self._endpoints:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 50_000)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(endpoint)
            sockets.append(sock)
        try:
            while True:
                item = self.queue.get()
                if isinstance(item, tuple):
                    self._audio(sockets, *item)
                elif isinstance(item, StartCall):
                    self._start(sockets, item)
                elif isinstance(item, EndCall):
                    self._end(sockets, item)
                else:
                    return
        finally:
            for sock in sockets:
                sock.close()

    def _send(self, sock: zmq.Socket[Any], msg: wire.Message, call_id: str) -> bool:
        try:
            sock.send_multipart(wire.encode(msg), flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            self.stats.send_dropped += 1
            log.warning("call %s: worker queue full, message dropped", call_id)
            return False

    def _start(self, sockets: list[zmq.Socket[Any]], s: StartCall) -> None:
        g = self._gate
        gate = SilenceGate(s.sample_rate, g.threshold_dbfs, g.hangover_ms, g.preroll_ms)
        self._calls[s.call_id] = _CallStream(s.worker, s.sample_rate, SuppressedStream(gate))
        start = wire.CallStart(s.call_id, s.sample_rate, self._reply_to, s.sip_call_id)
        self._send(sockets[s.worker], start, s.call_id)

    def _audio(self, sockets: list[zmq.Socket[Any]], call_id: str, pcm: bytes) -> None:
        call = self._calls.get(call_id)
        if call is None:  # a frame after the call ended: nothing to do with it
            return
        self.stats.frames_in += 1
        self.stats.bytes_in += len(pcm)
        sock = sockets[call.worker]
        for offset, run in call.stream.push(pcm):
            if self._send(sock, wire.Audio(call_id, offset, call.sample_rate, run), call_id):
                self.stats.bytes_sent += len(run)
                self.stats.messages_sent += 1

    def _end(self, sockets: list[zmq.Socket[Any]], e: EndCall) -> None:
        stream = self._calls.pop(e.call_id, None)
        if stream is None:
            return
        msg = wire.CallEnd(e.call_id, stream.stream.offset, stream.sample_rate)
        self._send(sockets[stream.worker], msg, e.call_id)

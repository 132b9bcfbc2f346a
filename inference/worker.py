"""An inference worker's ZeroMQ loop: wire messages of many calls in, transcripts back out.

One thread, one loop (:meth:`Worker.run`): read every waiting message from the PULL socket,
decode it (:mod:`media.wire`) and hand it to the :class:`~inference.transcriber.Transcriber`,
which runs VAD over all calls' new audio in one batched pass, cuts utterances and decodes them in
batches; then let it take its turn (:meth:`~inference.transcriber.Transcriber.tick`). While the
model runs, audio waits in ZeroMQ's queue and is VAD'ed in one batch afterwards. Each result goes
out on a PUSH socket to the media process named in its call's ``CallStart`` (one socket per
media process, connected when the first call names it).

A :class:`~inference.heartbeat.HeartbeatThread` publishes the worker's liveness and load; it runs
beside the loop, so a long model batch does not look like death, and it reports how long ago the
loop last turned, so a stuck loop does.

Bad messages from a peer are counted and logged, never fatal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from inference.call_state import CallState
from inference.heartbeat import HeartbeatThread
from inference.silero import SileroVad
from inference.speech_model import SpeechModel, StreamingSpeechModel
from inference.transcriber import MODEL_RATE, Transcriber
from inference.worker_settings import WorkerSettings, WorkerStats
from media import wire
from media.curve import CurveKeys
from media.log_sampling import worth_logging

__all__ = ["MAX_MESSAGE_BYTES", "MAX_REPLY_ENDPOINTS", "MODEL_RATE", "Worker", "WorkerSettings"]

log = logging.getLogger(__name__)

# Distinct reply_to endpoints a worker connects to (one per media process is the normal case);
# CallStarts naming more are refused, so a peer cannot make it open sockets without bound.
MAX_REPLY_ENDPOINTS = 256
# The largest ZeroMQ message the PULL socket takes (ZMQ_MAXMSGSIZE): a replay after a failover
# sends each held run of speech as one message, far below this; a peer declaring a larger frame
# is disconnected by ZeroMQ before anything is allocated for it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        model: SpeechModel | StreamingSpeechModel,
        vad: SileroVad,
        ctx: zmq.Context[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``model`` and ``vad`` go to the :class:`Transcriber`; see there."""
        self.settings = settings
        self.clock = clock
        self.ctx = ctx or zmq.Context.instance()
        self.core = Transcriber(settings, model, vad, self._emit, clock)
        self._replies: dict[str, zmq.Socket[Any]] = {}
        self._stop = False
        # Read by the heartbeat thread (a plain attribute read is atomic in CPython).
        self.loop_turned_at = clock()
        self._auth = None if settings.curve is None else authenticator(self.ctx, settings.curve)
        self.pull: zmq.Socket[Any] = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, 100_000)
        self.pull.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        self.pull.setsockopt(zmq.LINGER, 0)
        if settings.curve is not None:
            settings.curve.bind_side(self.pull)
        self.pull.bind(settings.endpoint)

    # What the heartbeat thread, the benchmarks and the tests read.

    @property
    def calls(self) -> dict[str, CallState]:
        return self.core.calls

    @property
    def stats(self) -> WorkerStats:
        return self.core.stats

    @property
    def model_seconds_total(self) -> float:
        return self.core.model_seconds_total

    def backlog_s(self) -> float:
        """Audio waiting for the model, in seconds (a snapshot; safe from another thread)."""
        return self.core.backlog_s()

    # -- messages in --------------------------------------------------------------------------

    def handle(self, frames: list[Any]) -> None:
        stats = self.core.stats
        stats.messages += 1
        try:
            msg = wire.decode(frames)
        except wire.WireError as exc:
            stats.bad_messages += 1
            if worth_logging(stats.bad_messages):
                log.warning("bad message dropped (%d so far): %s", stats.bad_messages, exc)
            return
        if isinstance(msg, wire.Audio):
            self.core.audio(msg)
        elif isinstance(msg, wire.CallStart):
            if self._can_reply(msg):
                self.core.start(msg)
            else:
                stats.bad_messages += 1
                stats.bad_reply_to += 1
        elif isinstance(msg, wire.CallEnd):
            self.core.end(msg)
        else:
            stats.bad_messages += 1
            log.warning("unexpected %s from a media process dropped", type(msg).__name__)

    # -- results out --------------------------------------------------------------------------

    def _can_reply(self, msg: wire.CallStart) -> bool:
        """Connect the call's reply socket now, so that a ``reply_to`` ZeroMQ cannot connect to
        refuses the call here, instead of raising when the call's first result goes out (which
        killed the worker's loop: a fuzz finding). Bounded: one per media process is normal."""
        if msg.reply_to in self._replies:
            return True
        if len(self._replies) >= MAX_REPLY_ENDPOINTS:
            log.warning("call %s: refused: already %d reply endpoints, %r would be one more",
                        msg.call_id, len(self._replies), msg.reply_to[:100])  # fmt: skip
            return False
        try:
            self._reply(msg.reply_to)
        except zmq.ZMQError as exc:
            log.warning("call %s: refused: reply_to %r: %s", msg.call_id, msg.reply_to[:100], exc)
            return False
        return True

    def _reply(self, endpoint: str) -> zmq.Socket[Any]:
        sock = self._replies.get(endpoint)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            if self.settings.curve is not None:
                self.settings.curve.connect_side(sock)
            try:
                sock.connect(endpoint)
            except zmq.ZMQError:
                sock.close(0)
                raise
            self._replies[endpoint] = sock
        return sock

    def _emit(self, reply_to: str, call_id: str, msg: wire.Message) -> bool:
        try:
            self._reply(reply_to).send_multipart(wire.encode(msg), flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    # -- loop ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop = True

    def step(self, timeout_s: float) -> None:
        """One turn of the loop: receive, then the transcriber's turn."""
        if self.pull.poll(int(timeout_s * 1000)):
            for _ in range(10_000):
                try:
                    frames = self.pull.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self.handle([f.buffer for f in frames])
        self.core.run_vad()
        now = self.clock()
        self.loop_turned_at = now
        self.core.tick(now)

    def timeout(self) -> float:
        """How long the next poll may wait: until a batch or the partial budget is due."""
        now = self.clock()
        due = self.core.next_due(now)
        wait = self.settings.poll_interval_s
        return wait if due is None else min(wait, max(0.0, due - now))

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        beats = None
        if self.settings.heartbeat_endpoint is not None:
            beats = HeartbeatThread(self, self.settings.heartbeat_endpoint, self.ctx)
            beats.start()
        try:
            if on_ready is not None:
                on_ready()
            while not self._stop:
                self.step(self.timeout())
        finally:
            if beats is not None:
                beats.stop()
            self.close()

    def close(self) -> None:
        self.core.close()
        self.pull.close(0)
        for sock in self._replies.values():
            sock.close()
        if self._auth is not None:
            self._auth.stop()


def authenticator(ctx: zmq.Context[Any], keys: CurveKeys) -> ThreadAuthenticator:
    """Start the ZAP handler of ``ctx``'s binding sockets: only authorised client keys pass.
    Call before binding; ``stop()`` it at shutdown."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized))
    return auth

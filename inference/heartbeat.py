"""A worker's heartbeats: liveness and load, published for the media processes' routers.

:class:`HeartbeatThread` publishes a :class:`~media.wire.Heartbeat` every
``heartbeat_interval_s`` on its own PUB socket, from its own thread: ONNX Runtime releases the GIL
while the model runs, so beats keep coming through a long batch, and each says how long ago the
worker's loop last turned, so a stuck loop is seen too. The incarnation is new for every worker
process, so a restart is seen even when it is faster than the heartbeat timeout. It reads a few
plain attributes of the :class:`~inference.worker.Worker` (each read is atomic in CPython) and never
touches its calls.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sized
from typing import Any, Protocol

import zmq

from inference.worker_settings import WorkerSettings
from media import wire


class Beating(Protocol):
    """What a heartbeat reads of its worker (:class:`~inference.worker.Worker`)."""

    @property
    def settings(self) -> WorkerSettings: ...
    @property
    def calls(self) -> Sized: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def loop_turned_at(self) -> float: ...
    @property
    def model_seconds_total(self) -> float: ...
    def backlog_s(self) -> float: ...


class HeartbeatThread:
    """Beats for one worker until :meth:`stop`."""

    def __init__(self, worker: Beating, endpoint: str, ctx: zmq.Context[Any]) -> None:
        self.worker = worker
        self.incarnation = uuid.uuid4().hex
        self._interval = worker.settings.heartbeat_interval_s
        self._stopping = threading.Event()
        self._pub: zmq.Socket[Any] = ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.SNDHWM, 10)
        if worker.settings.curve is not None:
            worker.settings.curve.bind_side(self._pub)
        self._pub.bind(endpoint)
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5.0)

    def beat(self, busy: float) -> wire.Heartbeat:
        w = self.worker
        return wire.Heartbeat(
            self.incarnation,
            w.settings.index,
            len(w.calls),
            round(w.backlog_s(), 3),
            round(busy, 3),
            round(max(0.0, w.clock() - w.loop_turned_at), 3),
        )

    def _run(self) -> None:
        last_model = self.worker.model_seconds_total
        last_at = time.monotonic()
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                model = self.worker.model_seconds_total
                busy = min(1.0, (model - last_model) / max(now - last_at, 1e-3))
                last_model, last_at = model, now
                # A subscriber not keeping up misses this beat: a late beat is worth nothing.
                with contextlib.suppress(zmq.Again):
                    self._pub.send_multipart(wire.encode(self.beat(busy)), flags=zmq.NOBLOCK)
                self._stopping.wait(self._interval)
        finally:
            self._pub.close(0)

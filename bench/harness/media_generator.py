"""The media side of the live benches: one loop on one thread that plays calls to workers
over ZeroMQ exactly as a media process does, and collects what comes back.

One PUSH per worker, ``CallStart`` with ``reply_to`` = a PULL bound here, 20 ms ``Audio`` frames
at real-time pace through each call's silence gate, ``CallEnd``. Frames are sent against absolute
20 ms deadlines (no drift) and results received between deadlines, each stamped with
``time.monotonic()`` on arrival. Traffic stays on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from bench.harness.frames import FRAME, RATE, TICK_S
from bench.harness.prompt_calls import Call
from media import wire


class Generator:
    """The media side: one PUSH per worker, one PULL for results, one pacing loop.

    Each call is pinned to one worker when it starts (the least loaded by open calls, ties taken
    in turn) and every message of that call goes to that worker, as a media process does.
    """

    def __init__(self, ctx: zmq.Context[Any], endpoints: Sequence[str]) -> None:
        self.pushes: list[zmq.Socket[Any]] = []
        for endpoint in endpoints:
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, 50_000)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(endpoint)
            self.pushes.append(push)
        self.results = ctx.socket(zmq.PULL)
        self.results.setsockopt(zmq.LINGER, 0)
        port = self.results.bind_to_random_port("tcp://127.0.0.1")
        self.reply_to = f"tcp://127.0.0.1:{port}"
        self.received: list[tuple[float, wire.Message]] = []
        self.route: dict[str, int] = {}  # call id -> worker index
        self.open_calls = [0] * len(self.pushes)
        self.tick_lags: list[float] = []  # lateness of each tick of the last play(), seconds
        self.dropped = 0
        self.undecodable = 0
        self._turn = 0

    def close(self) -> None:
        for push in self.pushes:
            push.close(0)
        self.results.close(0)

    def assign(self, call_id: str, worker: int | None = None) -> int:
        """Pin a call to a worker: the given one, else the one with the fewest open calls."""
        if worker is None:
            count = len(self.pushes)
            order = [(self._turn + i) % count for i in range(count)]
            worker = min(order, key=lambda w: self.open_calls[w])
            self._turn = (worker + 1) % count
        self.route[call_id] = worker
        self.open_calls[worker] += 1
        return worker

    def send(self, msg: wire.CallStart | wire.Audio | wire.CallEnd) -> None:
        try:
            self.pushes[self.route[msg.call_id]].send_multipart(
                wire.encode(msg), flags=zmq.NOBLOCK, copy=False
            )
        except zmq.Again:
            self.dropped += 1

    def receive_until(self, deadline: float) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.results.poll(math.ceil(remaining * 1000)):
                return
            for _ in range(10_000):
                try:
                    frames = self.results.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    msg = wire.decode(frames)
                except wire.WireError:  # e.g. a message type newer than this bench
                    self.undecodable += 1
                    continue
                self.received.append((time.monotonic(), msg))
                if isinstance(msg, wire.CallDone) and msg.call_id in self.route:
                    self.open_calls[self.route[msg.call_id]] -= 1

    def send_frame(self, call: Call, k: int) -> None:
        """Frame k of a call through the gate, exactly as the media process's AudioSender does."""
        pcm = call.pcm[k * FRAME : (k + 1) * FRAME].tobytes()
        for offset, run in call.stream.push(pcm):
            self.send(wire.Audio(call.call_id, offset, RATE, run))

    def play(self, calls: list[Call], drain_s: float) -> float:
        """Run every call in real time, then wait for their CallDone. Returns the worst tick lag."""
        ends = {c.call_id: {s.last_frame: i for i, s in enumerate(c.spoken)} for c in calls}
        last_tick = max(c.start_tick + c.frames for c in calls)
        self.tick_lags = []
        t0 = time.monotonic() + 0.05
        for tick in range(last_tick + 1):
            deadline = t0 + tick * TICK_S
            self.receive_until(deadline)
            self.tick_lags.append(time.monotonic() - deadline)
            for call in calls:
                k = tick - call.start_tick
                if k == 0:
                    self.assign(call.call_id)
                    self.send(wire.CallStart(call.call_id, RATE, self.reply_to, call.call_id[:8]))
                if 0 <= k < call.frames:
                    self.send_frame(call, k)
                    index = ends[call.call_id].get(k)
                    if index is not None:
                        call.speech_end_sent[index] = time.monotonic()
                elif k == call.frames:
                    self.send(wire.CallEnd(call.call_id, call.stream.offset, RATE))
        done = {m.call_id for _, m in self.received if isinstance(m, wire.CallDone)}
        pending = {c.call_id for c in calls} - done
        drain_until = time.monotonic() + drain_s
        while pending and time.monotonic() < drain_until:
            seen = len(self.received)
            self.receive_until(min(drain_until, time.monotonic() + 0.2))
            for _, msg in self.received[seen:]:
                if isinstance(msg, wire.CallDone):
                    pending.discard(msg.call_id)
        for call in calls:
            call.done = call.call_id not in pending
        return max(self.tick_lags, default=0.0)


def warm_up(
    gen: Generator, pool: list[tuple[str, np.ndarray]], worker: int = 0, calls: int = 1
) -> None:
    """Calls sent at once to one worker, so the first model runs' allocations (at up to
    ``calls`` clips a batch) fall outside the levels."""
    pcm = np.concatenate([pool[0][1], np.zeros(RATE, dtype=np.int16)])
    ids = [wire.new_call_id() for _ in range(calls)]
    for call_id in ids:
        gen.assign(call_id, worker)
        gen.send(wire.CallStart(call_id, RATE, gen.reply_to, "warm-up"))
        gen.send(wire.Audio(call_id, 0, RATE, pcm.tobytes()))
        gen.send(wire.CallEnd(call_id, len(pcm), RATE))
    pending = set(ids)
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        seen = len(gen.received)
        gen.receive_until(min(deadline, time.monotonic() + 0.2))
        pending -= {m.call_id for _, m in gen.received[seen:] if isinstance(m, wire.CallDone)}
    if pending:
        sys.exit(f"warm-up calls on worker {worker} never finished")

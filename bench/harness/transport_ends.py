"""The two ends of each audio transport the transport bench compares: how a media process would
hand a 20 ms frame over (an :class:`Outlet` per transport) and how a worker would drain it (a
receive loop per transport), with the work a worker does on each message (:class:`Sink`: decode,
``np.frombuffer``, and a check of the marker samples :func:`source_audio` puts in every frame).

Nothing here paces or times a run; the bench's sender and receiver processes do.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import uuid
from array import array
from collections.abc import Sequence
from typing import Any, Final, Protocol

import numpy as np
import zmq

from bench.harness.frames import FRAME, RATE
from bench.harness.shm_ring import Ring, ring_messages
from media import wire

MARKS: Final = 50  # frames of distinct source audio per call (sample 0 carries k % MARKS)
DRAIN_LIMIT: Final = 1024  # messages (or ring slots) taken per turn of a receive loop


def call_ids(calls: int) -> list[str]:
    return [uuid.UUID(int=i + 1).hex for i in range(calls)]


def source_audio(calls: int) -> list[bytes]:
    """Per call, ``MARKS`` frames of noise; sample 0 = the frame's index, the last = the call's."""
    rng = np.random.default_rng(7)
    out = []
    for call in range(calls):
        pcm = rng.normal(0.0, 3000.0, (MARKS, FRAME)).clip(-32768, 32767).astype("<i2")
        pcm[:, 0] = np.arange(MARKS)
        pcm[:, -1] = call
        out.append(pcm.tobytes())
    return out


# -- receiving -------------------------------------------------------------------------------------


class Sink:
    """What a worker does with each audio message, plus an arrival stamp and the marker check."""

    def __init__(self, calls: int, frames: int) -> None:
        self.index = {cid: i for i, cid in enumerate(call_ids(calls))}
        self.frames = frames
        self.expected = calls * frames
        self.stamps = array("d", bytes(8 * self.expected))
        self.count = 0
        self.bad = 0

    def handle(self, frames: Sequence[wire.Buffer]) -> None:
        now = time.monotonic()
        msg = wire.decode(frames)
        if not isinstance(msg, wire.Audio):
            self.bad += 1
            return
        pcm = np.frombuffer(msg.pcm, dtype="<i2")
        call = self.index.get(msg.call_id, -1)
        k = msg.offset // FRAME
        if call < 0 or k >= self.frames or pcm[0] != k % MARKS or pcm[-1] != call:
            self.bad += 1
            return
        self.stamps[call * self.frames + k] = now
        self.count += 1


def zmq_receive(sock: zmq.Socket[Any], sink: Sink, until: float) -> None:
    # As the worker's loop: poll with a timeout, then drain without blocking.
    while sink.count < sink.expected:
        left = until - time.monotonic()
        if left <= 0:
            return
        if not sock.poll(int(min(left, 0.02) * 1000) + 1):
            continue
        for _ in range(DRAIN_LIMIT):
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            sink.handle([f.buffer for f in frames])


def ring_receive(ring: Ring, sink: Sink, until: float, efd: int, poll_s: float) -> None:
    waiter = select.poll()
    if efd >= 0:
        waiter.register(efd, select.POLLIN)
    while sink.count < sink.expected:
        data, n = ring.take(DRAIN_LIMIT)
        if n:
            for message in ring_messages(data, n):
                sink.handle(message)
            continue
        left = until - time.monotonic()
        if left <= 0:
            return
        if efd < 0:
            time.sleep(min(left, poll_s))
        elif waiter.poll(int(min(left, 0.02) * 1000) + 1):
            with contextlib.suppress(BlockingIOError):  # already read by an earlier turn
                os.eventfd_read(efd)


# -- sending ---------------------------------------------------------------------------------------


class Outlet(Protocol):
    def send(self, call_id: str, offset: int, pcm: bytes) -> bool: ...
    def flush(self) -> None: ...  # end of one 20 ms burst
    def close(self) -> None: ...


class NullOutlet:
    def send(self, call_id: str, offset: int, pcm: bytes) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class CodecOutlet(NullOutlet):
    """Encode, then decode in place: the wire codec's cost with nothing crossing."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def send(self, call_id: str, offset: int, pcm: bytes) -> bool:
        self.sink.handle(wire.encode(wire.Audio(call_id, offset, RATE, pcm)))
        return True


class ZmqOutlet(NullOutlet):
    """As the media process's ``AudioSender``: one PUSH, zero-copy, never blocking."""

    def __init__(self, endpoint: str) -> None:
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, 50_000)
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._sock.connect(endpoint)

    def send(self, call_id: str, offset: int, pcm: bytes) -> bool:
        try:
            frames = wire.encode(wire.Audio(call_id, offset, RATE, pcm))
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        self._sock.close()
        self._ctx.term()


class RingOutlet(NullOutlet):
    def __init__(self, ring: Ring, efd: int) -> None:
        self._ring = ring
        self._efd = efd  # -1: the receiver polls

    def send(self, call_id: str, offset: int, pcm: bytes) -> bool:
        header, payload = wire.encode(wire.Audio(call_id, offset, RATE, pcm))
        return self._ring.put(header, payload)

    def flush(self) -> None:
        if self._efd >= 0:
            os.eventfd_write(self._efd, 1)

    def close(self) -> None:
        self._ring.close()
        if self._efd >= 0:
            os.close(self._efd)

"""The sender thread on real ZeroMQ sockets, with the test playing two workers: heartbeats,
placement, and the replay a call gets when its worker goes silent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from media import wire
from sip_bridge.settings.config import SilenceGateConfig
from sip_bridge.uplink.audio_sender import (
    AudioSender,
    Commit,
    EndCall,
    Forget,
    SenderSettings,
    StartCall,
)
from sip_bridge.uplink.sender_facts import SenderView

RATE = 8000
FRAME = 160
QUEUE_FULL = 6000  # audio_tap.MAX_QUEUED: where the tap starts dropping frames


class FakeWorker:
    """A worker's two sockets: PULL for audio (recorded), PUB for heartbeats (while beating)."""

    def __init__(self, ctx: zmq.Context[Any], index: int) -> None:
        self.index = index
        self.pull = ctx.socket(zmq.PULL)
        self.endpoint = f"tcp://127.0.0.1:{self.pull.bind_to_random_port('tcp://127.0.0.1')}"
        self.pub = ctx.socket(zmq.PUB)
        port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.beat_endpoint = f"tcp://127.0.0.1:{port}"
        self.got: list[wire.Message] = []
        self.beating = threading.Event()
        self.beating.set()
        self.incarnation = wire.new_call_id()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(0.02):
            if self.beating.is_set():
                beat = wire.Heartbeat(self.incarnation, self.index, 0, 0.0, 0.0, 0.0)
                self.pub.send_multipart(wire.encode(beat))

    def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> None:
        for _ in range(100_000):  # bounded; each turn takes a message or times out
            if predicate(self.got):
                return
            assert self.pull.poll(int(timeout_s * 1000)), f"worker {self.index}: {self.got[-3:]}"
            self.got.append(wire.decode(self.pull.recv_multipart()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pull.close(0)
        self.pub.close(0)


@pytest.fixture()
def two_workers() -> Iterator[tuple[AudioSender, list[FakeWorker]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    workers = [FakeWorker(ctx, 0), FakeWorker(ctx, 1)]
    settings = SenderSettings(
        tuple(w.endpoint for w in workers),
        tuple(w.beat_endpoint for w in workers),
        "tcp://127.0.0.1:9",
        SilenceGateConfig(),
        heartbeat_timeout_s=0.3,
        replay_max_s=20.0,
    )
    sender = AudioSender(ctx, settings)
    sender.start()
    try:
        yield sender, workers
    finally:
        sender.stop()
        for w in workers:
            w.close()
        ctx.term()


def wait_until(condition: Any, timeout_s: float = 5.0) -> None:
    """Poll a condition on the sender thread's state (bounded), failing on timeout."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("condition not reached")


def tone(frames: int, start: int) -> list[bytes]:
    """Loud, position-coded frames (the silence gate passes them all)."""
    t = np.arange(start, start + frames * FRAME)
    pcm = (8000 * np.sin(t * 0.3) + (t % 7)).astype("<i2")
    return [pcm[k * FRAME : (k + 1) * FRAME].tobytes() for k in range(frames)]


def audio_of(msgs: list[wire.Message]) -> dict[int, bytes]:
    return {m.offset: bytes(m.pcm) for m in msgs if isinstance(m, wire.Audio) and m.samples}


def test_a_call_moves_to_the_live_worker_with_its_unconfirmed_audio(
    two_workers: tuple[AudioSender, list[FakeWorker]],
) -> None:
    sender, workers = two_workers
    wait_until(lambda: sender.router.live_workers() == [0, 1])
    call = wire.new_call_id()
    sender.queue.put(StartCall(call, "sip-1", RATE))
    frames = tone(100, 0)  # 2 s
    for f in frames[:50]:
        sender.queue.put((call, f))
    first = workers[sender.router.worker_of(call) or 0]
    other = workers[1 - first.index]
    first.wait_for(lambda got: sum(isinstance(m, wire.Audio) for m in got) >= 50)
    assert isinstance(first.got[0], wire.CallStart) and first.got[0].epoch == 0

    # A final covered the first 0.5 s; then the worker dies (no more heartbeats).
    sender.queue.put(Commit(call, 4000, 1))
    first.beating.clear()
    other.wait_for(lambda got: any(isinstance(m, wire.CallStart) for m in got))
    start = next(m for m in other.got if isinstance(m, wire.CallStart))
    assert (start.epoch, start.resume_offset, start.first_utterance) == (1, 4000, 1)
    assert sender.epochs[call] == 1
    for f in frames[50:]:  # the call goes on, on the new worker
        sender.queue.put((call, f))
    sender.queue.put(EndCall(call))
    other.wait_for(lambda got: isinstance(got[-1], wire.CallEnd))
    moved = [m for m in other.got if getattr(m, "call_id", "") == call]
    assert all(getattr(m, "epoch", 1) == 1 for m in moved)
    # Everything from the resume point on, replayed then live, exactly once and in order.
    audio = audio_of(moved)
    joined = b"".join(audio[o] for o in sorted(audio))
    assert sorted(audio)[0] == 4000
    assert joined == b"".join(frames)[4000 * 2 :]
    offsets = [m.offset for m in moved if isinstance(m, wire.Audio)]
    assert offsets == sorted(offsets)
    end = moved[-1]
    assert isinstance(end, wire.CallEnd) and end.offset == 100 * FRAME
    assert sender.stats.moves == 1

    sender.queue.put(Forget(call))
    wait_until(lambda: call not in sender.epochs)
    assert call not in sender.epochs and sender.router.worker_of(call) is None


def test_with_no_live_worker_a_call_waits_and_loses_nothing(
    two_workers: tuple[AudioSender, list[FakeWorker]],
) -> None:
    sender, workers = two_workers
    wait_until(lambda: sender.router.live_workers() == [0, 1])
    for w in workers:
        w.beating.clear()
    wait_until(lambda: sender.router.live_workers() == [])
    call = wire.new_call_id()
    sender.queue.put(StartCall(call, "sip-2", RATE))
    frames = tone(40, 0)
    for f in frames:
        sender.queue.put((call, f))
    workers[1].incarnation = wire.new_call_id()  # it restarted
    workers[1].beating.set()
    workers[1].wait_for(lambda got: sum(isinstance(m, wire.Audio) for m in got) >= 40)
    moved = [m for m in workers[1].got if getattr(m, "call_id", "") == call]
    start = moved[0]
    assert isinstance(start, wire.CallStart)
    assert (start.epoch, start.resume_offset, start.first_utterance) == (1, 0, 0)
    audio = audio_of(moved)
    assert b"".join(audio[o] for o in sorted(audio)) == b"".join(frames)
    assert not any(getattr(m, "call_id", "") == call for m in workers[0].got)


def test_the_main_loop_learns_the_senders_state_only_from_its_facts(
    two_workers: tuple[AudioSender, list[FakeWorker]],
) -> None:
    sender, workers = two_workers
    view = SenderView(2)

    def drained() -> SenderView:
        view.drain(sender.facts)
        return view

    wait_until(lambda: drained().live == (True, True))
    call = wire.new_call_id()
    sender.queue.put(StartCall(call, "sip-3", RATE))
    for f in tone(20, 0):
        sender.queue.put((call, f))
    wait_until(lambda: sender.router.worker_of(call) is not None)
    first = workers[sender.router.worker_of(call) or 0]
    first.wait_for(lambda got: sum(isinstance(m, wire.Audio) for m in got) >= 20)
    wait_until(lambda: drained().marks.get(call, (0, 0.0))[0] == 20 * FRAME)
    assert view.epochs == {call: 0} and view.room
    wait_until(lambda: drained().counts.frames_in == 20)  # about once a second
    assert view.counts.frames_sent == 20
    sender.queue.put(Forget(call))
    wait_until(lambda: call not in drained().epochs)
    assert call not in view.marks


def slow_sender(ctx: zmq.Context[Any], worker: FakeWorker) -> AudioSender:
    """A sender whose every clock reading takes a millisecond (one or more per frame): its
    queue of 6000 frames would take it over 6 s to send."""

    def slow_clock() -> float:
        time.sleep(0.001)
        return time.monotonic()

    settings = SenderSettings(
        (worker.endpoint,), (worker.beat_endpoint,), "tcp://127.0.0.1:9", SilenceGateConfig()
    )
    return AudioSender(ctx, settings, clock=slow_clock)


def test_stop_overtakes_a_full_frame_queue_and_the_call_still_gets_its_call_end() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    worker = FakeWorker(ctx, 0)
    sender = slow_sender(ctx, worker)
    sender.start()
    try:
        wait_until(lambda: sender.router.live_workers() == [0])
        call = wire.new_call_id()
        sender.queue.put(StartCall(call, "sip-4", RATE))
        frames = tone(QUEUE_FULL, 0)
        for f in frames:
            sender.queue.put((call, f))
        sender.queue.put(EndCall(call))
        started = time.monotonic()
        assert sender.stop()
        assert time.monotonic() - started < 1.0  # not behind the 6000 frames
        worker.wait_for(lambda got: any(isinstance(m, wire.CallEnd) for m in got))
    finally:
        sender.stop()
        worker.close()
        ctx.term()
    st = sender.stats
    assert st.frames_unsent > 0 and st.frames_in + st.frames_unsent == QUEUE_FULL
    msgs = [m for m in worker.got if getattr(m, "call_id", "") == call]
    assert isinstance(msgs[0], wire.CallStart) and isinstance(msgs[-1], wire.CallEnd)
    # The audio that was sent is the call's first frames, and the CallEnd comes after it, at
    # the offset it reached.
    audio = audio_of(msgs)
    assert b"".join(audio[o] for o in sorted(audio)) == b"".join(frames[: st.frames_in])
    assert msgs[-1].offset == st.frames_in * FRAME


def test_a_call_end_stays_behind_its_own_frames_among_other_calls_audio(
    two_workers: tuple[AudioSender, list[FakeWorker]],
) -> None:
    """EndCall does not overtake the call's queued frames: its CallEnd carries the offset the
    audio reached, and a frame after it would be dropped."""
    sender, workers = two_workers
    wait_until(lambda: sender.router.live_workers() == [0, 1])
    a, b = wire.new_call_id(), wire.new_call_id()
    sender.queue.put(StartCall(a, "sip-a", RATE))
    sender.queue.put(StartCall(b, "sip-b", RATE))
    frames_a, frames_b = tone(300, 0), tone(600, 0)
    for fa, fb in zip(frames_a, frames_b[:300], strict=True):
        sender.queue.put((a, fa))
        sender.queue.put((b, fb))
    sender.queue.put(EndCall(a))
    for fb in frames_b[300:]:
        sender.queue.put((b, fb))
    sender.queue.put(EndCall(b))
    for call in (a, b):
        wait_until(lambda c=call: sender.router.worker_of(c) is not None)
    worker_a = workers[sender.router.worker_of(a) or 0]
    worker_a.wait_for(lambda got: any(isinstance(m, wire.CallEnd) and m.call_id == a for m in got))
    msgs = [m for m in worker_a.got if getattr(m, "call_id", "") == a]
    assert isinstance(msgs[-1], wire.CallEnd) and msgs[-1].offset == 300 * FRAME
    audio = audio_of(msgs)
    assert b"".join(audio[o] for o in sorted(audio)) == b"".join(frames_a)

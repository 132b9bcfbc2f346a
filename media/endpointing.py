"""Endpointing: cutting one call's audio into utterances from per-window speech probabilities.

Owns the utterance state machine of one call: when speech starts and ends (with hysteresis, a
minimum speech length and a minimum silence), the padding kept around speech, suppressed-silence
gaps, cuts at a maximum utterance length, and the audio of the open utterance. The clock is the
sample count (``offset``: samples since the call started), so it is tested with fake probabilities
and no real time.

It must never run a model, touch a socket, read the wall clock or log: probabilities come from the
caller (``inference.silero.SileroVad`` in production), events go back to the caller.

Timeline conventions, all in samples since call start:

* A window is ``window`` samples with one speech probability. ``push`` takes PCM of any length plus
  the probabilities of the windows it completes; samples after the last whole window wait for the
  next push (``SileroVad`` keeps the same leftover, so both stay aligned).
* Every utterance's audio is exactly ``end_sample - start_sample`` samples. Suppressed silence
  (``gap``) inside an utterance is zeros; a gap is never used as padding: an utterance never starts
  inside a gap (start padding is clipped to real audio) and ends at the gap if its end padding would
  reach into one. Unwindowed leftover samples before a gap count as part of that silence.
* Consecutive utterances never overlap; a max-length cut makes them abut exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from media.errors import LocalProtocolError

EndReason = Literal["silence", "max_length", "flush", "turn"]

_EMPTY = np.zeros(0, dtype=np.int16)
_EMPTY.flags.writeable = False


@dataclass(frozen=True, slots=True)
class EndpointerSettings:
    """Endpointing thresholds. ``neg_threshold`` None means ``threshold - 0.15`` (Silero's rule)."""

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_silence_ms: int = 500
    speech_pad_ms: int = 200
    min_speech_ms: int = 200
    max_utterance_s: float = 15.0
    # How far back from the max-length point to look for a pause to cut at.
    cut_search_s: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        neg = self.release_threshold
        if not 0.0 <= neg <= self.threshold:
            raise ValueError(f"neg_threshold must be in [0, threshold], got {neg}")
        for name in ("min_silence_ms", "speech_pad_ms", "min_speech_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_utterance_s <= 0.0 or self.cut_search_s < 0.0:
            raise ValueError("max_utterance_s must be > 0 and cut_search_s >= 0")

    @property
    def release_threshold(self) -> float:
        """The probability below which a window counts as silence."""
        if self.neg_threshold is None:
            return max(self.threshold - 0.15, 0.0)
        return self.neg_threshold


@dataclass(frozen=True, slots=True)
class UtteranceStarted:
    """Speech has lasted ``min_speech_ms``: utterance ``index`` opened at ``start_sample``."""

    index: int
    start_sample: int


@dataclass(frozen=True, slots=True)
class UtteranceEnded:
    """Utterance ``index`` is complete: ``audio`` holds samples [start_sample, end_sample).

    ``speech_end_sample`` is where speech stopped (end_sample minus the end padding; for a
    max-length cut, the cut point or the start of a pending pause). ``audio`` is read-only.
    """

    index: int
    start_sample: int
    end_sample: int
    speech_end_sample: int
    audio: np.ndarray = field(compare=False, repr=False)
    reason: EndReason = "silence"


Event = UtteranceStarted | UtteranceEnded


class Endpointer:
    """The utterance state machine of one call (see the module docstring for the timeline)."""

    _speech_start: int  # >= 0 while speech is triggered (confirmed or not)
    _silence_start: int  # >= 0 while a pause is pending inside triggered speech
    _confirmed: bool  # UtteranceStarted was emitted for the open utterance
    _index: int
    _utt_start: int
    _chunks: list[np.ndarray]
    _length: int
    # (start, length, prob) per window or gap of the open utterance, for max-length cuts
    _history: list[tuple[int, int, float]]
    _gaps: list[tuple[int, int]]  # (start, end) of the zeros that fill gaps in the open utterance

    def __init__(
        self,
        sample_rate: int,
        settings: EndpointerSettings | None = None,
        *,
        start_offset: int = 0,
        first_index: int = 0,
    ) -> None:
        """``start_offset`` and ``first_index`` resume a call part-way (moved from another
        worker): its audio starts at that offset and its next utterance gets that index."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if start_offset < 0 or first_index < 0:
            raise ValueError("start_offset and first_index must not be negative")
        self.sample_rate = sample_rate
        self.settings = s = settings if settings is not None else EndpointerSettings()
        self._on = s.threshold
        self._off = s.release_threshold
        self._min_silence = s.min_silence_ms * sample_rate // 1000
        self._pad = s.speech_pad_ms * sample_rate // 1000
        self._min_speech = s.min_speech_ms * sample_rate // 1000
        self._max_len = max(int(s.max_utterance_s * sample_rate), 1)
        self._cut_search = int(s.cut_search_s * sample_rate)
        self._next_index = first_index
        self._processed_end = start_offset  # end of the last window (or gap) taken into account
        self._pending = _EMPTY  # samples after the last whole window, not yet judged
        self._ring = _EMPTY  # idle: the last speech_pad samples before _processed_end
        self._reset_utterance()

    # -- public API ---------------------------------------------------------------------------

    def push(
        self, pcm: np.ndarray, offset: int, probs: Sequence[float], window: int
    ) -> list[Event]:
        """Take int16 ``pcm`` at ``offset`` and the probabilities of the windows it completes.

        ``len(probs)`` must equal ``(leftover + len(pcm)) // window``, where leftover is what an
        earlier push left after its last whole window. An ``offset`` past the end of the audio seen
        so far is a gap (see :meth:`gap`); one before it is a caller bug.
        """
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        events: list[Event] = []
        end = self._processed_end + len(self._pending)
        if offset != end:
            events.extend(self.gap(offset))
        samples = np.array(pcm, dtype=np.int16).reshape(-1)  # our own copy: views of it are kept
        if len(self._pending):
            samples = np.concatenate((self._pending, samples))
        n = len(samples) // window
        if len(probs) != n:
            raise LocalProtocolError(
                f"{len(probs)} probabilities for {n} whole windows of {window} samples"
            )
        for i in range(n):
            self._window(samples[i * window : (i + 1) * window], float(probs[i]), events)
        self._pending = samples[n * window :]
        return events

    def gap(self, offset: int) -> list[Event]:
        """Audio jumps to ``offset``: the samples in between were suppressed silence.

        Ends the open utterance if the silence is now long enough; otherwise the gap becomes zeros
        inside it. Leftover samples short of a window are treated as part of the gap.
        """
        start = self._processed_end
        end = start + len(self._pending)
        if offset < end:
            raise LocalProtocolError(f"offset {offset} goes back before {end}")
        events: list[Event] = []
        if offset == end:
            return events
        if self._speech_start < 0:
            self._ring = _EMPTY
        else:
            if self._silence_start < 0:
                self._silence_start = start
            if len(self._pending):
                self._append(self._pending, 0.0)
            self._processed_end = end
            if offset - self._silence_start >= self._min_silence:
                self._finish(events, "silence", audio_end=end)
                self._ring = _EMPTY
            else:
                self._append(np.zeros(offset - end, dtype=np.int16), 0.0)
                self._gaps.append((end, offset))
        self._pending = _EMPTY
        self._processed_end = offset
        if self._speech_start >= 0:
            self._maybe_cut(events)
        return events

    def flush(self) -> list[Event]:
        """The call ended: close the open utterance (reason ``flush``) and forget everything."""
        events: list[Event] = []
        end = self._processed_end + len(self._pending)
        if self._speech_start >= 0 and len(self._pending):
            if self._silence_start < 0:
                self._silence_start = self._processed_end
            self._append(self._pending, 0.0)
        self._processed_end = end
        self._pending = _EMPTY
        if self._speech_start >= 0:
            self._finish(events, "flush", audio_end=end)
        self._ring = _EMPTY
        return events

    def current_utterance(self) -> tuple[int, np.ndarray] | None:
        """The open utterance once it has started (start_sample, audio up to the last window)."""
        if not self._confirmed:
            return None
        return self._utt_start, self._audio()

    @property
    def in_utterance(self) -> bool:
        return self._confirmed

    @property
    def pausing(self) -> bool:
        """Inside an utterance, silence has begun: it ends if the silence lasts."""
        return self._confirmed and self._silence_start >= 0

    def provisional_end(self) -> tuple[int, int, int, int] | None:
        """While pausing, once the end padding has been heard: ``(index, start_sample,
        end_sample, speech_end_sample)`` of the utterance if the pause lasts until it ends it.
        The worker starts that final's decoding during the silence wait; the ``UtteranceEnded``
        that follows has exactly these samples unless speech resumes (or a max-length cut)."""
        if not self.pausing:
            return None
        speech_end = max(self._silence_start, self._speech_start)
        if self._processed_end < speech_end + self._pad:
            return None
        end = min(speech_end + self._pad, self._utt_start + self._length)
        for gap_start, _ in self._gaps:
            if speech_end <= gap_start < end:
                end = gap_start
        if end - self._utt_start > self._max_len:
            return None
        return self._index, self._utt_start, end, speech_end

    def end_turn(self) -> list[Event]:
        """The caller judged the pause to end the turn (see ``inference.turn_taking``): end the
        pausing utterance now, exactly at :meth:`provisional_end`, with reason ``turn``. The
        silence heard after its end becomes the next utterance's start padding, as after any
        end. Nothing happens (an empty list) unless ``provisional_end`` holds a value."""
        if self.provisional_end() is None:
            return []
        events: list[Event] = []
        self._finish(events, "turn", audio_end=self._processed_end)
        return events

    def audio_until(self, end_sample: int) -> np.ndarray:
        """The open utterance's audio from its start to ``end_sample`` (a read-only view)."""
        view = self._audio()[: max(end_sample - self._utt_start, 0)]
        view.flags.writeable = False
        return view

    @property
    def safe_offset(self) -> int:
        """The earliest sample a later utterance can still include: the open utterance's start,
        or, between utterances, the start of the padding kept for the next one."""
        if self._speech_start >= 0:
            return self._utt_start
        return self._processed_end - len(self._ring)

    @property
    def pause_samples(self) -> int:
        """How long the open utterance has been pausing (0 when it is not)."""
        if not self.pausing:
            return 0
        return self._processed_end - self._silence_start

    @property
    def next_index(self) -> int:
        """The index the next utterance to start will get."""
        return self._next_index

    # -- state machine ------------------------------------------------------------------------

    def _reset_utterance(self) -> None:
        self._speech_start = -1
        self._silence_start = -1
        self._confirmed = False
        self._index = -1
        self._utt_start = 0
        self._chunks = []
        self._length = 0
        self._history = []
        self._gaps = []

    def _append(self, audio: np.ndarray, prob: float) -> None:
        self._history.append((self._utt_start + self._length, len(audio), prob))
        self._chunks.append(audio)
        self._length += len(audio)

    def _audio(self) -> np.ndarray:
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks else _EMPTY]
        return self._chunks[0]

    def _window(self, audio: np.ndarray, prob: float, events: list[Event]) -> None:
        start = self._processed_end
        end = start + len(audio)
        self._processed_end = end
        if self._speech_start < 0:
            if prob < self._on:
                ring = np.concatenate((self._ring, audio)) if len(self._ring) else audio
                self._ring = ring[max(len(ring) - self._pad, 0) :] if self._pad else _EMPTY
                return
            self._speech_start = start
            self._utt_start = start - len(self._ring)
            self._chunks = [self._ring] if len(self._ring) else []
            self._length = len(self._ring)
            self._ring = _EMPTY
            self._append(audio, prob)
        else:
            self._append(audio, prob)
            if prob >= self._on:
                self._silence_start = -1
            elif prob < self._off and self._silence_start < 0:
                self._silence_start = start
        if not self._confirmed and self._voiced() >= self._min_speech:
            self._confirm(events)
        if self._silence_start >= 0 and end - self._silence_start >= self._min_silence:
            self._finish(events, "silence", audio_end=end)
        else:
            self._maybe_cut(events)

    def _voiced(self) -> int:
        speech_end = self._silence_start if self._silence_start >= 0 else self._processed_end
        return speech_end - self._speech_start

    def _confirm(self, events: list[Event]) -> None:
        self._confirmed = True
        self._index = self._next_index
        self._next_index += 1
        events.append(UtteranceStarted(self._index, self._utt_start))

    def _finish(self, events: list[Event], reason: EndReason, audio_end: int) -> None:
        """End the triggered speech at its speech end plus padding; unconfirmed speech is dropped.

        ``audio_end`` is the end of the real audio seen; what follows the end point goes to the
        ring, so the next utterance's start padding never reaches back into this one.
        """
        while True:
            if self._silence_start >= 0:
                speech_end = max(self._silence_start, self._speech_start)
            else:
                speech_end = self._processed_end
            end = min(speech_end + self._pad, audio_end, self._utt_start + self._length)
            for gap_start, _ in self._gaps:
                if speech_end <= gap_start < end:
                    end = gap_start
            if not self._confirmed or end - self._utt_start <= self._max_len:
                break
            self._split(self._best_cut(self._utt_start + self._max_len), events)
        audio = self._audio()
        cut = end - self._utt_start
        if self._confirmed:
            out = audio[:cut].copy()
            out.flags.writeable = False
            events.append(
                UtteranceEnded(self._index, self._utt_start, end, speech_end, out, reason)
            )
        # The ring takes the real audio after the end point (never a gap's zeros), so the next
        # utterance's start padding can neither overlap this one nor reach into a gap.
        ring_from = max([end] + [gap_end for _, gap_end in self._gaps if gap_end > end])
        tail = audio[ring_from - self._utt_start :]
        self._ring = tail[max(len(tail) - self._pad, 0) :] if self._pad else _EMPTY
        self._reset_utterance()

    def _maybe_cut(self, events: list[Event]) -> None:
        while self._confirmed and self._length > self._max_len:
            limit = self._utt_start + self._max_len
            cut = self._best_cut(limit)
            self._split(cut, events)

    def _best_cut(self, limit: int) -> int:
        """The middle of the least speech-like window (or gap) below threshold near ``limit``.

        The search stays in the second half of the allowed length: a piece cut for length is
        never shorter than half of it, and the window of the previous cut, which straddles the
        utterance's start, is out of reach.
        """
        reach = min(self._cut_search, self._max_len // 2)
        lo = max(limit - reach, self._utt_start + 1)
        best = limit
        best_prob = self._on
        for start, length, prob in reversed(self._history):
            if start >= limit:
                continue
            if start + length <= lo:
                break
            if prob < best_prob:
                a, b = max(start, lo), min(start + length, limit)
                best, best_prob = (a + b) // 2, prob
        return best

    def _split(self, cut: int, events: list[Event]) -> None:
        """Emit [utt_start, cut) and continue with [cut, ...) as new, not yet confirmed speech."""
        audio = self._audio()
        k = cut - self._utt_start
        head = audio[:k].copy()
        head.flags.writeable = False
        if self._silence_start >= 0:
            speech_end = min(max(self._silence_start, self._speech_start), cut)
        else:
            speech_end = cut
        events.append(
            UtteranceEnded(self._index, self._utt_start, cut, speech_end, head, "max_length")
        )
        self._confirmed = False
        self._chunks = [audio[k:]]
        self._length = len(audio) - k
        self._utt_start = self._speech_start = cut
        self._history = [h for h in self._history if h[0] + h[1] > cut]
        self._gaps = [g for g in self._gaps if g[1] > cut]
        if self._voiced() >= self._min_speech:
            self._confirm(events)

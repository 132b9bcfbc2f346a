"""A cheap energy gate that keeps silence off the wire between a media process and its worker.

Owns one decision per 20 ms frame of one call: send it or hold it back. A frame louder than
``threshold_dbfs`` (RMS, relative to full-scale int16) opens the gate; the frames held back for the
last ``preroll_ms`` go out with it, so the VAD downstream sees the onset; the gate stays open until
``hangover_ms`` of quiet has passed, so word endings and short pauses are not clipped. What is held
back and never sent shows up downstream as a jump in ``offset`` (suppressed silence).

It must never do I/O, log, or hold more than ``preroll_ms`` of audio: it runs for every frame of
every call inside the media process, next to PJSIP's clock thread.

Measured here (2-core x86_64, Python 3.11, numpy 2): about 2.2 µs per 20 ms frame at 8 kHz, open or
closed (``tests/test_silence_gate.py`` prints it). On a call that is half silence (ten recorded
prompts, each followed by as long of -70 dBFS noise, 90 s) it drops 43% of the frames: the pauses
lose their first 700 ms (hangover) and last 200 ms (preroll), and the prompts' own quiet stretches
are dropped too. With 3 s tones and 3 s pauses it drops 36% (10.7 of 30 s).
"""

from __future__ import annotations

from collections import deque

import numpy as np

_FULL_SCALE = 32768.0


class SilenceGate:
    """Energy gate for one call's audio. Feed every frame in order with :meth:`push`."""

    __slots__ = (
        "sample_rate",
        "threshold_dbfs",
        "hangover_samples",
        "preroll_samples",
        "frames_in",
        "frames_sent",
        "bytes_in",
        "bytes_sent",
        "_min_mean_square",
        "_held",
        "_held_samples",
        "_quiet_samples",
        "_open",
    )

    def __init__(
        self,
        sample_rate: int,
        threshold_dbfs: float = -50.0,
        hangover_ms: int = 700,
        preroll_ms: int = 200,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if threshold_dbfs > 0.0:
            raise ValueError(f"threshold_dbfs must be <= 0, got {threshold_dbfs}")
        if hangover_ms < 0 or preroll_ms < 0:
            raise ValueError("hangover_ms and preroll_ms must be >= 0")
        self.sample_rate = sample_rate
        self.threshold_dbfs = threshold_dbfs
        self.hangover_samples = sample_rate * hangover_ms // 1000
        self.preroll_samples = sample_rate * preroll_ms // 1000
        self.frames_in = 0
        self.frames_sent = 0
        self.bytes_in = 0
        self.bytes_sent = 0
        # Compare mean squares, not decibels: no log10 per frame.
        self._min_mean_square = (_FULL_SCALE * 10.0 ** (threshold_dbfs / 20.0)) ** 2
        self._held: deque[tuple[int, bytes]] = deque()
        self._held_samples = 0
        self._quiet_samples = 0
        self._open = False

    @property
    def is_open(self) -> bool:
        """True while frames are being sent (speech or hangover)."""
        return self._open

    @property
    def fraction_dropped(self) -> float:
        """Share of the frames pushed so far that were never sent."""
        return 1.0 - self.frames_sent / self.frames_in if self.frames_in else 0.0

    def push(self, frame: bytes, offset: int) -> list[tuple[int, bytes]]:
        """Take one frame of little-endian int16 PCM that starts ``offset`` samples into the call.

        Returns the runs to send now, each ``(offset, pcm)``; contiguous frames are joined into one
        run. Empty while quiet; on onset, the held-back preroll plus this frame.
        """
        size = len(frame)
        if size & 1:
            raise ValueError(f"odd frame length {size}: not int16 PCM")
        self.frames_in += 1
        self.bytes_in += size
        samples = size >> 1
        if samples:
            x = np.frombuffer(frame, dtype="<i2")
            loud = float(np.dot(x, x.astype(np.float32))) > self._min_mean_square * samples
        else:
            loud = False

        if loud:
            self._quiet_samples = 0
            if not self._open:
                self._open = True
                return self._release(frame, offset)
        elif self._open:
            self._quiet_samples += samples
            if self._quiet_samples > self.hangover_samples:
                self._open = False
        if self._open:
            self.frames_sent += 1
            self.bytes_sent += size
            return [(offset, frame)]
        self._hold(frame, offset, samples)
        return []

    def _hold(self, frame: bytes, offset: int, samples: int) -> None:
        held = self._held
        held.append((offset, frame))
        self._held_samples += samples
        # Keep at most preroll_samples: drop whole frames from the front.
        while held and self._held_samples > self.preroll_samples:
            self._held_samples -= len(held.popleft()[1]) >> 1

    def _release(self, frame: bytes, offset: int) -> list[tuple[int, bytes]]:
        held = self._held
        held.append((offset, frame))
        runs: list[tuple[int, bytes]] = []
        run_start = -1
        run_end = -1
        parts: list[bytes] = []
        for off, pcm in held:
            if off != run_end and parts:
                runs.append((run_start, b"".join(parts)))
                parts = []
            if not parts:
                run_start = off
            parts.append(pcm)
            run_end = off + (len(pcm) >> 1)
            self.frames_sent += 1
            self.bytes_sent += len(pcm)
        runs.append((run_start, parts[0] if len(parts) == 1 else b"".join(parts)))
        held.clear()
        self._held_samples = 0
        return runs


class SuppressedStream:
    """One call's outgoing audio: the gate, the call's timeline, and time marks through silence.

    :meth:`push` takes each frame in order and returns what to send as ``(offset, pcm)`` runs. While
    the gate holds silence back it also returns, every ``time_mark_ms``, an empty run: a *time
    mark* telling the receiver how far the call has got, so its endpointer can end an utterance
    without waiting for the next speech. Marks stop short of the preroll the gate may still
    release, so offsets on the wire never go back.
    """

    __slots__ = ("gate", "offset", "sent_until", "time_marks", "_holdback", "_mark_every")

    def __init__(self, gate: SilenceGate, time_mark_ms: int = 40) -> None:
        self.gate = gate
        self.offset = 0  # samples of the call seen so far
        self.sent_until = 0  # how far the receiver knows the call's timeline
        self.time_marks = 0
        frame = gate.sample_rate // 50  # the gate holds whole 20 ms frames
        self._holdback = -(-gate.preroll_samples // frame) * frame
        self._mark_every = max(1, gate.sample_rate * time_mark_ms // 1000)

    def push(self, frame: bytes) -> list[tuple[int, bytes]]:
        out = self.gate.push(frame, self.offset)
        if out:
            last_offset, last_run = out[-1]
            self.sent_until = last_offset + len(last_run) // 2
        self.offset += len(frame) // 2
        mark = self.offset - self._holdback
        if mark - self.sent_until >= self._mark_every:
            out.append((mark, b""))
            self.time_marks += 1
            self.sent_until = mark
        return out

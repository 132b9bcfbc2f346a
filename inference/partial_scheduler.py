"""Which growing utterances get a partial next: the stalest caption first, within a CPU budget.

A worker holds many live utterances and one partial thread. Each time that thread is free the
worker asks :meth:`PartialScheduler.choose` which utterances to decode together; the answer is
the ones whose caption lags their audio the most (seconds of speech heard but not yet in any
partial), up to ``max_batch``, among those that have at least ``min_new_audio_s`` of new audio
and had no partial for ``min_interval_s``. So when the CPU is free every talking call gets a
partial every ``min_interval_s``; under load the batches grow and each call's cadence stretches,
all calls alike, instead of some calls' partials being shed while others run.

The budget: after a batch that took ``t`` seconds of model time, the next one may start no
sooner than ``t * (1 / cpu_share - 1)`` after it, so partials use at most ``cpu_share`` of the
thread's time (1.0: back to back, leaving finals only the priority the nicer thread gives them).

Sans-IO: the caller passes its utterances and the time, and gets keys back. It never reads a
clock, runs a model or touches a call.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PartialPolicy:
    min_interval_s: float = 0.3  # a call's partials at most this often (0: no partials)
    min_new_audio_s: float = 0.2  # of audio not yet in a partial, before another is worth it
    min_audio_s: float = 0.3  # an utterance this long gets its first partial
    max_batch: int = 8
    cpu_share: float = 1.0  # of the partial thread's time the partials may use, in (0, 1]

    def __post_init__(self) -> None:
        if self.min_interval_s < 0 or self.min_new_audio_s < 0 or self.min_audio_s < 0:
            raise ValueError("min_interval_s, min_new_audio_s and min_audio_s must be >= 0")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        if not 0 < self.cpu_share <= 1:
            raise ValueError(f"cpu_share must be in (0, 1], got {self.cpu_share}")

    @property
    def enabled(self) -> bool:
        return self.min_interval_s > 0


@dataclass(frozen=True, slots=True)
class Growing:
    """A live utterance as the scheduler sees it: ``audio_s`` heard so far, ``captioned_s`` of it
    in the last partial sent or under way (0 before the first), when that partial was started
    (``last_at``; None before the first)."""

    key: Hashable
    audio_s: float
    captioned_s: float = 0.0
    last_at: float | None = None

    @property
    def stale_s(self) -> float:
        return self.audio_s - self.captioned_s


class PartialScheduler:
    def __init__(self, policy: PartialPolicy) -> None:
        self.policy = policy
        self._not_before = float("-inf")

    def choose(self, utterances: Sequence[Growing], now: float) -> list[Hashable]:
        """The keys to decode now, stalest first; empty while the budget says wait."""
        p = self.policy
        if not p.enabled or now < self._not_before:
            return []
        due = [
            u
            for u in utterances
            if u.audio_s >= p.min_audio_s
            and u.stale_s >= p.min_new_audio_s
            and (u.last_at is None or now - u.last_at >= p.min_interval_s)
        ]
        due.sort(key=lambda u: u.stale_s, reverse=True)
        return [u.key for u in due[: p.max_batch]]

    def ran(self, model_s: float, now: float) -> None:
        """A batch of partials took ``model_s`` and finished at ``now``."""
        self._not_before = now + max(model_s, 0.0) * (1.0 / self.policy.cpu_share - 1.0)

    def next_start(self) -> float:
        """The earliest time ``choose`` may return keys (``-inf``: now)."""
        return self._not_before

"""The batching policy: which ready utterances run together, and when.

Sans-IO: requests and ``now`` (seconds, any monotonic clock) go in, batches come out. Owns no
threads, sockets or model. Rules, after Triton's dynamic batcher:

- a batch runs when ``max_batch`` compatible requests are waiting, or when the oldest request has
  waited ``max_wait_ms`` (a real deadline: :meth:`Batcher.deadline` says when to wake up);
- clips batched together are of similar length: the longest is at most ``1 + max_padding`` times the
  shortest (the model has no padding mask; padding far past a clip's length can empty its
  output);
- finals outrank partials; a partial is superseded by a newer request of the same utterance, and
  rides along in a batch with finals only when no other final is left waiting;
- every request leaves in exactly one batch, or is dropped (by :meth:`Batcher.discard`, or by a
  newer request of the same utterance).

The worker (:mod:`inference.transcriber`) queues only finals here, early finals included, and
discards the requests of a call it forgets and an early final that missed its utterance's end.
Its partials never come here: :mod:`inference.partial_scheduler` picks them and
:mod:`inference.partial_runner` runs them on a thread of their own, niced below the loop that
runs the finals (with ``partial_nice`` off, the loop runs them only while no final waits).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["final", "partial"]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch: int = 8
    max_wait_ms: float = 50.0
    max_padding: float = 0.25

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        if self.max_padding < 0:
            raise ValueError("max_padding must not be negative")


@dataclass(frozen=True, slots=True)
class Request:
    """One clip to transcribe. ``key`` names the utterance (e.g. ``(call_id, index)``)."""

    key: Hashable
    samples: int
    ready_at: float
    final: bool = True
    payload: object = field(default=None, compare=False)


class Batcher:
    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._pending: list[Request] = []

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def finals_waiting(self) -> int:
        return sum(1 for r in self._pending if r.final)

    def add(self, request: Request) -> None:
        """Queue a request. A partial replaces an older partial of the same utterance; a final
        replaces any partial of its utterance."""
        self._pending = [r for r in self._pending if r.final or r.key != request.key]
        self._pending.append(request)

    def discard(self, drop: Callable[[Request], bool]) -> int:
        """Drop every waiting request ``drop`` says to; returns how many were dropped."""
        before = len(self._pending)
        self._pending = [r for r in self._pending if not drop(r)]
        return before - len(self._pending)

    def waiting_samples(self) -> int:
        return sum(r.samples for r in list(self._pending))

    def deadline(self) -> float | None:
        """When the oldest request's wait runs out (``None`` if nothing waits)."""
        return self._deadline(self._pending) if self._pending else None

    def _deadline(self, pending: list[Request]) -> float:
        return min(r.ready_at for r in pending) + self.policy.max_wait_ms / 1000.0

    def _compatible(self, anchor: Request, pending: list[Request]) -> list[Request]:
        """The anchor plus the requests closest to it in length, within the padding bound.
        The anchor is a final if any is waiting, else the oldest request."""
        chosen = [anchor]
        lo = hi = max(anchor.samples, 1)
        limit = 1.0 + self.policy.max_padding
        others = sorted(
            (r for r in pending if r is not anchor),
            key=lambda r: (not r.final, abs(r.samples - anchor.samples), r.ready_at),
        )
        finals_left = False
        for r in others:
            if len(chosen) >= self.policy.max_batch:
                finals_left = finals_left or r.final
                continue
            n = max(r.samples, 1)
            if not r.final and anchor.final and finals_left:
                break  # finals wait for a later batch: partials must not make this one slower
            if max(hi, n) <= limit * min(lo, n):
                chosen.append(r)
                lo, hi = min(lo, n), max(hi, n)
            elif r.final:
                finals_left = True
        return chosen

    def next_batch(
        self, now: float, nothing_coming: bool = False, only: Kind | None = None
    ) -> list[Request]:
        """The batch to run now, or ``[]`` if waiting longer could still fill one.

        ``nothing_coming``: the caller knows no request can arrive before the deadline (nobody
        is speaking), so waiting would only add latency: run now. ``only``: a batch of finals
        only, or of partials only (for a caller that runs the two kinds apart).
        """
        if only is None:
            pending = self._pending
        else:
            pending = [r for r in self._pending if r.final == (only == "final")]
        if not pending:
            return []
        anchor = min(pending, key=lambda r: (not r.final, r.ready_at))
        batch = self._compatible(anchor, pending)
        due = (
            nothing_coming or len(batch) >= self.policy.max_batch or now >= self._deadline(pending)
        )
        if not due:
            return []
        taken = {id(r) for r in batch}
        self._pending = [r for r in self._pending if id(r) not in taken]
        return batch

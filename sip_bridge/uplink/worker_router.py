"""Which inference worker each call is pinned to, and which workers are alive (sans-IO).

Each media process holds one PUSH socket per worker and pins every call to one of them, so that
the worker keeps the call's VAD and utterance state. This module decides where, from the workers'
:class:`~media.wire.Heartbeat` messages and the clock it is given:

* a worker is *live* once a heartbeat arrived, its loop is turning (``loop_age_s`` under
  ``stall_s``) and its last heartbeat is younger than ``timeout_s``;
* a new call goes to the least-loaded live worker: fewest calls (as last reported, plus the calls
  this process placed there since), then the least audio waiting for its model, then a rotation
  that starts at this process's own offset, so that processes do not all pick the same one;
* calls never move while their worker is live. When it stops being live (no heartbeat for
  ``timeout_s``, or a stuck loop) or restarts (a new incarnation), each of its calls moves to the
  least-loaded live worker, which is a :class:`Move` for the caller to carry out (replay the
  audio the call still needs). With no live worker a call waits (``target`` None) and moves as
  soon as one appears;
* :meth:`WorkerRouter.has_room` is the admission rule: a new call is taken only while some live
  worker has fewer calls than ``calls_per_worker`` (its last heartbeat's count, which covers every
  media process's calls, plus those this process placed since) and is not *behind*: its last
  ``BEHIND_BEATS`` heartbeats all reported more than ``max_backlog_s`` of audio waiting for its
  model. With no live worker at all the call is taken and waits, as during a worker's restart.

No sockets, no threads, no wall clock: ``now`` is passed in, so it is tested with a fake clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from media.wire import Heartbeat
from sip_bridge.settings.config import HEARTBEAT_TIMEOUT_MS, STALL_TIMEOUT_S

log = logging.getLogger(__name__)

# Heartbeats in a row over max_backlog_s that make a worker "behind": one burst of finals
# (a few calls ending their sentences together) is not a worker that cannot keep up.
BEHIND_BEATS = 2


@dataclass(frozen=True, slots=True)
class Move:
    """Place ``call_id`` on ``target`` (None: no live worker, the call waits for one)."""

    call_id: str
    source: int | None  # where it was (None: it was waiting)
    target: int | None
    reason: str


@dataclass(slots=True)
class _Worker:
    index: int
    incarnation: str | None = None
    last_beat: float = 0.0
    live: bool = False
    reported_calls: int = 0
    placed_since_beat: int = 0
    backlog_s: float = 0.0
    beats_over_backlog: int = 0  # heartbeats in a row over max_backlog_s
    was_up: bool = False  # has been live once


class WorkerRouter:
    def __init__(
        self,
        workers: int,
        offset: int = 0,
        timeout_s: float = HEARTBEAT_TIMEOUT_MS / 1000.0,
        stall_s: float = STALL_TIMEOUT_S,
        calls_per_worker: int = 0,
        max_backlog_s: float = 0.0,
        announce_first_up: bool = True,
    ) -> None:
        """``calls_per_worker`` and ``max_backlog_s``: the admission limits of
        :meth:`has_room` (0: that limit is off). ``announce_first_up``: log each worker's first
        coming up at INFO (else DEBUG; a later one, after it was down, is INFO either way): one
        media process of a host says so for all, not each of them for each worker."""
        if workers < 1:
            raise ValueError("at least one worker")
        if timeout_s <= 0 or stall_s <= 0:
            raise ValueError("timeout_s and stall_s must be positive")
        if calls_per_worker < 0 or max_backlog_s < 0:
            raise ValueError("calls_per_worker and max_backlog_s must be 0 (off) or more")
        self._offset = offset
        self._timeout = timeout_s
        self._stall = stall_s
        self._calls_per_worker = calls_per_worker
        self._max_backlog = max_backlog_s
        self._announce_first_up = announce_first_up
        self._workers = [_Worker(i) for i in range(workers)]
        self._assigned: dict[str, int | None] = {}

    # -- queries ------------------------------------------------------------------------------

    def worker_of(self, call_id: str) -> int | None:
        return self._assigned.get(call_id)

    def is_live(self, index: int) -> bool:
        return self._workers[index].live

    def live_workers(self) -> list[int]:
        return [w.index for w in self._workers if w.live]

    def waiting(self) -> list[str]:
        return sorted(c for c, w in self._assigned.items() if w is None)

    def calls_on(self, index: int) -> list[str]:
        return sorted(c for c, w in self._assigned.items() if w == index)

    def has_room(self) -> bool:
        """Whether a new call may be admitted (see the module's docstring)."""
        live = [w for w in self._workers if w.live]
        return not live or any(self._takes_calls(w) for w in live)

    def _takes_calls(self, w: _Worker) -> bool:
        cap = self._calls_per_worker
        if cap and w.reported_calls + w.placed_since_beat >= cap:
            return False
        return not (self._max_backlog and w.beats_over_backlog >= BEHIND_BEATS)

    # -- calls --------------------------------------------------------------------------------

    def assign(self, call_id: str) -> int | None:
        """Pin a new call; None if no worker is live (it waits, see :meth:`waiting`)."""
        if call_id in self._assigned:
            return self._assigned[call_id]
        target = self._pick()
        self._place(call_id, target)
        return target

    def release(self, call_id: str) -> None:
        self._assigned.pop(call_id, None)

    # -- liveness -----------------------------------------------------------------------------

    def heartbeat(self, beat: Heartbeat, now: float) -> list[Move]:
        if not 0 <= beat.worker < len(self._workers):
            log.warning("heartbeat from worker %d, which this process does not know", beat.worker)
            return []
        w = self._workers[beat.worker]
        moves: list[Move] = []
        restarted = w.incarnation is not None and beat.incarnation != w.incarnation
        was_live = w.live
        w.incarnation = beat.incarnation
        w.last_beat = now
        w.reported_calls = beat.calls
        w.placed_since_beat = 0
        w.backlog_s = beat.backlog_s
        over = self._max_backlog and beat.backlog_s > self._max_backlog
        w.beats_over_backlog = w.beats_over_backlog + 1 if over else 0
        stalled = beat.loop_age_s > self._stall
        if restarted:
            log.warning("worker %d restarted", w.index)
            w.live = not stalled
            moves += self._evacuate(w, "worker restarted")
        elif stalled and was_live:
            w.live = False
            log.warning("worker %d is stuck: its loop has not turned for %.1f s",
                        w.index, beat.loop_age_s)  # fmt: skip
            moves += self._evacuate(w, "worker stuck")
        else:
            w.live = not stalled
        if w.live and not was_live:
            level = logging.INFO if w.was_up or self._announce_first_up else logging.DEBUG
            log.log(level, "worker %d is up", w.index)
            w.was_up = True
        if w.live:
            moves += self._place_waiting()
        return moves

    def check(self, now: float) -> list[Move]:
        """Declare workers whose heartbeats stopped dead; returns the calls to move."""
        moves: list[Move] = []
        for w in self._workers:
            if w.live and now - w.last_beat > self._timeout:
                w.live = False
                log.warning("worker %d is down: no heartbeat for %.1f s",
                            w.index, now - w.last_beat)  # fmt: skip
                moves += self._evacuate(w, "worker down")
        return moves

    # -- internals ----------------------------------------------------------------------------

    def _load(self, w: _Worker) -> tuple[int, float, int]:
        n = len(self._workers)
        return (w.reported_calls + w.placed_since_beat, w.backlog_s, (w.index - self._offset) % n)

    def _pick(self) -> int | None:
        live = [w for w in self._workers if w.live]
        if not live:
            return None
        # A worker at its limits is picked only when every one is (a call moved off a dead
        # worker must go somewhere; admission keeps new calls out).
        return min(live, key=lambda w: (not self._takes_calls(w), self._load(w))).index

    def _place(self, call_id: str, target: int | None) -> None:
        self._assigned[call_id] = target
        if target is not None:
            self._workers[target].placed_since_beat += 1

    def _evacuate(self, w: _Worker, reason: str) -> list[Move]:
        moves = []
        for call_id in self.calls_on(w.index):
            target = self._pick()
            self._place(call_id, target)
            moves.append(Move(call_id, w.index, target, reason))
        return moves

    def _place_waiting(self) -> list[Move]:
        moves = []
        for call_id in self.waiting():
            target = self._pick()
            if target is None:
                break
            self._place(call_id, target)
            moves.append(Move(call_id, None, target, "a worker is up"))
        return moves

"""What the sender thread tells the main loop, and the main loop's picture built from it (sans-IO).

The :class:`~sip_bridge.uplink.audio_sender.AudioSender` thread alone knows which placement of a
call is current, when its audio arrived, whether the workers take another call, which workers
are live and how much audio went where. It says so in the messages below, on its ``facts``
queue; the main loop drains that queue into a :class:`SenderView` and reads only the view.
Nobody reads another thread's attributes.

The facts of one call come in the order the sender learnt them (one queue, one writer). A
:class:`WorkerEpoch` is put before the ``CallStart`` of that epoch is sent, so a result of the
new placement can only reach the main loop after its fact is queued: the main loop drains the
facts before it checks a result's epoch (``MediaProcess._on_result``).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerEpoch:
    """``call_id``'s placement is now ``epoch``: results of any other epoch are stale."""

    call_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class AudioMark:
    """The call's audio up to stream offset ``offset`` had arrived at ``arrived`` (the sender's
    monotonic clock): how a final is timed from the end of its speech."""

    call_id: str
    offset: int
    arrived: float


@dataclass(frozen=True, slots=True)
class Forgotten:
    """The sender dropped the call (after its ``Forget``): no more facts of it."""

    call_id: str


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether the workers take a new call (``WorkerRouter.has_room``); sent when it changes."""

    room: bool


@dataclass(frozen=True, slots=True)
class WorkersLive:
    """Which workers are live, by index; sent when it changes."""

    live: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class SenderCounts:
    """The sender's running totals (its ``SenderStats``) that the metrics show; about once a
    second."""

    frames_in: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0  # 20 ms frames' worth a full worker queue refused
    bad_heartbeats: int = 0


SenderFact = WorkerEpoch | AudioMark | Forgotten | Admission | WorkersLive | SenderCounts


class SenderView:
    """The sender as the main loop knows it: the facts applied so far, in order."""

    def __init__(self, workers: int) -> None:
        self.epochs: dict[str, int] = {}  # call id -> current epoch
        self.marks: dict[str, tuple[int, float]] = {}  # call id -> (offset, arrived)
        self.room = True  # as the sender starts: no worker heard of yet, calls are taken
        self.live: tuple[bool, ...] = (False,) * workers
        self.counts = SenderCounts()

    def apply(self, fact: SenderFact) -> None:
        if isinstance(fact, AudioMark):  # the most frequent: one per frame
            self.marks[fact.call_id] = (fact.offset, fact.arrived)
        elif isinstance(fact, WorkerEpoch):
            self.epochs[fact.call_id] = fact.epoch
        elif isinstance(fact, Forgotten):
            self.epochs.pop(fact.call_id, None)
            self.marks.pop(fact.call_id, None)
        elif isinstance(fact, Admission):
            self.room = fact.room
        elif isinstance(fact, WorkersLive):
            self.live = fact.live
        else:
            self.counts = fact

    def drain(self, facts: queue.SimpleQueue[SenderFact]) -> None:
        """Apply the facts queued so far (never blocks; those put meanwhile wait for the next
        drain)."""
        for _ in range(facts.qsize()):
            try:
                fact = facts.get_nowait()
            except queue.Empty:
                return
            self.apply(fact)

"""The main loop's picture of the sender thread, from the facts it sends (sans-IO)."""

from __future__ import annotations

import queue

from sip_bridge.uplink.sender_facts import (
    Admission,
    AudioMark,
    Forgotten,
    SenderCounts,
    SenderFact,
    SenderView,
    WorkerEpoch,
    WorkersLive,
)


def test_facts_apply_in_order_and_a_forgotten_call_leaves_nothing() -> None:
    facts: queue.SimpleQueue[SenderFact] = queue.SimpleQueue()
    view = SenderView(2)
    assert view.room and view.live == (False, False) and view.counts == SenderCounts()
    for fact in (
        WorkersLive((True, False)),
        WorkerEpoch("c1", 0),
        AudioMark("c1", 160, 10.0),
        AudioMark("c1", 320, 10.02),
        WorkerEpoch("c1", 1),  # moved
        Admission(False),
        SenderCounts(2, 2, 0, 1),
    ):
        facts.put(fact)
    view.drain(facts)
    assert view.epochs == {"c1": 1} and view.marks == {"c1": (320, 10.02)}
    assert not view.room and view.live == (True, False)
    assert view.counts == SenderCounts(2, 2, 0, 1)
    facts.put(Forgotten("c1"))
    facts.put(Admission(True))
    view.drain(facts)
    assert view.epochs == {} and view.marks == {} and view.room


def test_a_drain_takes_what_is_queued_and_never_blocks() -> None:
    facts: queue.SimpleQueue[SenderFact] = queue.SimpleQueue()
    view = SenderView(1)
    view.drain(facts)  # empty: returns at once
    facts.put(WorkerEpoch("c1", 0))
    view.drain(facts)
    assert view.epochs == {"c1": 0} and facts.empty()

import json

import pytest

from media.wire import Transcript
from sip_bridge.delivery.events import CallEvents, CallInfo

CALL = "c" * 32


def make() -> CallEvents:
    return CallEvents(
        CallInfo(CALL, "sip-1@pbx", "sip:alice@pbx", "sip:tx@us", "PCMU/8000", 8000, "h/media0")
    )


def test_seq_increases_and_call_ended_holds_the_whole_text_in_order() -> None:
    ev = make()
    out = [ev.started()]
    out.append(ev.transcript(Transcript(CALL, 0, False, "fir", 0.5, 1.0, 0.5)))
    out.append(ev.transcript(Transcript(CALL, 0, True, "first part", 0.5, 2.0, 0.8)))
    out.append(ev.transcript(Transcript(CALL, 1, True, "second part", 3.0, 4.0, 0.9)))
    out.append(ev.ended_event("200 OK", 5.0))
    bodies = [json.loads(e.body) for e in out if e is not None]
    assert [b["seq"] for b in bodies] == [1, 2, 3, 4, 5]
    assert [b["type"] for b in bodies] == [
        "call.started", "transcript.partial", "transcript.final", "transcript.final", "call.ended",
    ]  # fmt: skip
    assert all(b["call_id"] == CALL and b["sip_call_id"] == "sip-1@pbx" for b in bodies)
    assert bodies[0]["from"] == "sip:alice@pbx" and bodies[0]["codec"] == "PCMU/8000"
    assert bodies[-1]["text"] == "first part second part"
    assert [u["utterance"] for u in bodies[-1]["utterances"]] == [0, 1]


def test_an_utterance_heard_again_after_a_move_is_not_delivered_twice() -> None:
    ev = make()
    assert ev.transcript(Transcript(CALL, 0, True, "first", 0.5, 2.0, 0.8)) is not None
    # A call moved to another worker that re-heard utterance 0: neither its partial nor its
    # final is given again, and seq has no gap.
    assert ev.transcript(Transcript(CALL, 0, False, "fir", 0.5, 1.0, 0.5)) is None
    assert ev.transcript(Transcript(CALL, 0, True, "first", 0.5, 2.0, 0.8)) is None
    nxt = ev.transcript(Transcript(CALL, 1, False, "sec", 3.0, 3.5, 0.5))
    assert nxt is not None and nxt.seq == 2
    ended = json.loads(ev.ended_event("hangup", 4.0).body)
    assert ended["seq"] == 3 and ended["text"] == "first"


def test_nothing_after_call_ended() -> None:
    ev = make()
    ev.ended_event("hangup", 1.0)
    assert ev.transcript(Transcript(CALL, 0, True, "late", 0, 1, 1)) is None
    with pytest.raises(RuntimeError):
        ev.ended_event("again", 1.0)

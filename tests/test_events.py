"""CallEvents: numbering, dedupe and the shape of each version's events (the schemas
themselves are checked in ``test_event_schemas``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from media.wire import Transcript
from sip_bridge.delivery.events import CallEvents, CallInfo, Conversation, Event, FinalText

CALL = "c" * 32


def make() -> CallEvents:
    return CallEvents(
        CallInfo(CALL, "sip-1@pbx", "sip:alice@pbx", "sip:tx@us", "PCMU/8000", 8000, "h/media0")
    )


def test_seq_increases_and_call_ended_holds_the_whole_text_in_order() -> None:
    ev = make()
    out: list[Event | None] = [ev.started()]
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


# -- version 2: conversations, streams, speakers ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Who:
    participant_id: str | None
    name: str | None
    aor: str | None


ALICE = Who("p1", "Alice", "sip:alice@atlanta.example")
BOB = Who("p2", "Bob", "sip:bob@biloxi.example")
SESSION = Conversation("rs-1@src", "siprec", ("hVpd7YQg",), ("cs-77@pbx",), "complete")


def session(version: int = 2) -> CallEvents:
    info = CallInfo(CALL, "rs-1@src", "<sip:src@sbc>", "<sip:srs@us>", "PCMU/8000", 8000, "h/m0")
    return CallEvents(info, started_at=1796676091.6812, version=version, conversation=SESSION)


def final(utterance: int, text: str, start: float, end: float) -> Transcript:
    return Transcript(CALL, utterance, True, text, start, end, 0.9)


def partial(utterance: int, text: str, start: float, end: float) -> Transcript:
    return Transcript(CALL, utterance, False, text, start, end, 0.5)


def body(event: Event | None) -> dict[str, Any]:
    assert event is not None
    return event.as_dict()


def test_v2_is_the_default_and_an_ordinary_call_names_no_conversation() -> None:
    ev = make()
    assert ev.version == 2
    started = body(ev.started())
    assert started["version"] == 2 and started["conversation"] is None
    assert started["participants"] == [] and started["streams"] == []
    fin = body(ev.transcript(final(0, "hello", 0.5, 1.0)))
    assert fin["stream"] is None and fin["speaker"] is None
    ended = body(ev.ended_event("200 OK", 2.0))
    assert ended["participants"] == []
    assert ended["utterances"] == [
        {"utterance": 0, "start": 0.5, "end": 1.0, "text": "hello", "stream": None, "speaker": None}
    ]


def test_v1_events_are_exactly_as_before() -> None:
    ev = CallEvents(make().info, version=1, conversation=SESSION)
    started = body(ev.started((("96", ALICE),), (ALICE,)))  # v1 says nothing of either
    fin = body(ev.transcript(final(0, "hello", 0.5, 1.0)))
    dtmf = body(ev.dtmf("1", 1.5, None, "rfc4733"))
    ended = body(ev.ended_event("200 OK", 2.0, (ALICE,)))
    envelope = ["type", "call_id", "sip_call_id", "seq"]
    assert list(started) == envelope + [
        "from", "to", "codec", "sample_rate", "node", "headers", "timestamp",
    ]  # fmt: skip
    assert list(fin) == envelope + ["utterance", "text", "start", "end", "confidence"]
    assert list(dtmf) == envelope + ["digit", "time", "duration_ms", "method"]
    assert list(ended) == envelope + ["reason", "duration", "text", "utterances"]
    assert list(ended["utterances"][0]) == ["utterance", "start", "end", "text"]


def test_every_v2_event_carries_the_conversation_as_it_is_when_made() -> None:
    ev = session()
    ev.conversation = Conversation("rs-1@src", "siprec")  # metadata not come yet
    started = body(ev.started((("96", None), ("97", None))))
    assert started["conversation"]["metadata"] == "none"
    assert started["streams"] == [
        {"stream": "96", "speaker": None},
        {"stream": "97", "speaker": None},
    ]
    updated = body(ev.updated(SESSION, (("96", ALICE), ("97", BOB)), (ALICE, BOB)))
    assert updated["type"] == "conversation.updated" and updated["seq"] == 2
    assert updated["conversation"] == SESSION.as_dict()
    assert updated["participants"] == [
        {"participant_id": "p1", "name": "Alice", "aor": "sip:alice@atlanta.example"},
        {"participant_id": "p2", "name": "Bob", "aor": "sip:bob@biloxi.example"},
    ]
    assert [s["speaker"]["name"] for s in updated["streams"]] == ["Alice", "Bob"]
    later = body(ev.transcript(final(0, "hi", 0.1, 0.5), "97", BOB))
    assert later["conversation"]["metadata"] == "complete"
    assert later["stream"] == "97" and later["speaker"]["participant_id"] == "p2"


def test_utterances_are_numbered_and_deduplicated_per_stream() -> None:
    ev = session()
    assert body(ev.transcript(final(0, "hello bob", 0.2, 1.2), "96", ALICE))["utterance"] == 0
    # Stream 97's utterance 0 is its own: not taken for 96's, which already had its final.
    assert body(ev.transcript(partial(0, "hi", 0.0, 0.4), "97", BOB))["utterance"] == 0
    assert body(ev.transcript(final(0, "hi alice", 0.0, 0.7), "97", BOB))["utterance"] == 0
    # Heard again after a move: nothing twice, on either stream, and seq has no gap.
    assert ev.transcript(partial(0, "hel", 0.2, 0.9), "96", ALICE) is None
    assert ev.transcript(final(0, "hi alice", 0.0, 0.7), "97", BOB) is None
    nxt = body(ev.transcript(final(1, "bye", 2.0, 2.5), "96", ALICE))
    assert (nxt["utterance"], nxt["seq"]) == (1, 4)
    # The call's one stream (None) is a stream of its own too.
    assert body(ev.transcript(final(0, "mixed", 0.0, 0.3)))["utterance"] == 0


def test_offset_s_shifts_a_streams_times_to_the_calls_answer() -> None:
    ev = session()
    fin = body(ev.transcript(final(0, "hi alice", 0.2, 0.9), "97", BOB, offset_s=1.5))
    assert (fin["start"], fin["end"]) == (1.7, 2.4)
    part = body(ev.transcript(partial(1, "and", 0.1 + 0.2, 0.4), "97", BOB, offset_s=0.0004))
    assert (part["start"], part["end"]) == (0.3, 0.4)  # rounded after the shift
    ended = body(ev.ended_event("200 OK", 3.0))
    assert [(u["start"], u["end"]) for u in ended["utterances"]] == [(1.7, 2.4)]


def test_call_ended_interleaves_every_streams_finals_by_start_time() -> None:
    ev = session()
    # Finals come in the order the workers give them, not the order the words were said.
    ev.transcript(final(0, "hello bob", 0.2, 1.2), "96", ALICE)
    ev.transcript(final(1, "how are you", 2.5, 3.4), "96", ALICE)
    ev.transcript(final(0, "hi alice", 0.0, 0.7), "97", BOB, offset_s=1.5)
    ev.transcript(final(1, "fine", 2.5, 3.0), "97", BOB)  # same start as 96's: by label
    ended = body(ev.ended_event("200 OK", 4.0, (ALICE, BOB)))
    assert [(u["stream"], u["utterance"]) for u in ended["utterances"]] == [
        ("96", 0), ("97", 0), ("96", 1), ("97", 1),
    ]  # fmt: skip
    assert ended["text"] == "hello bob hi alice how are you fine"
    assert [u["speaker"]["name"] for u in ended["utterances"]] == ["Alice", "Bob", "Alice", "Bob"]
    assert [p["participant_id"] for p in ended["participants"]] == ["p1", "p2"]


def test_a_session_under_v1_gets_finals_only_numbered_across_the_session() -> None:
    ev = session(version=1)
    assert "version" not in body(ev.started((("96", ALICE), ("97", BOB)), (ALICE, BOB)))
    assert ev.transcript(partial(0, "hel", 0.2, 0.9), "96", ALICE) is None
    out = [
        ev.transcript(final(0, "hello bob", 0.2, 1.2), "96", ALICE),
        ev.transcript(final(0, "hi alice", 0.0, 0.7), "97", BOB, 1.5),
        ev.transcript(final(0, "hello bob", 0.2, 1.2), "96", ALICE),  # heard again: dropped
        ev.transcript(final(1, "bye", 2.4, 2.9), "96", ALICE),
        ev.transcript(final(1, "bye", 2.6, 3.0), "97", BOB, 0.5),
    ]
    finals = [body(e) for e in out if e is not None]
    assert [(f["utterance"], f["seq"], f["text"]) for f in finals] == [
        (0, 2, "hello bob"), (1, 3, "hi alice"), (2, 4, "bye"), (3, 5, "bye"),
    ]  # fmt: skip
    assert all("stream" not in f and "speaker" not in f for f in finals)
    ended = body(ev.ended_event("200 OK", 4.0))
    assert [u["utterance"] for u in ended["utterances"]] == [0, 1, 2, 3]
    assert ended["text"] == "hello bob hi alice bye bye"


def test_updated_is_none_in_v1_and_after_the_end() -> None:
    v1 = session(version=1)
    v1.started()
    assert v1.updated(SESSION, (("96", ALICE),), (ALICE,)) is None
    assert v1.seq == 1  # no number spent
    v2 = session()
    v2.started()
    v2.ended_event("200 OK", 1.0)
    assert v2.updated(SESSION, (("96", ALICE),), (ALICE,)) is None
    assert v2.seq == 2


def test_restore_keeps_per_stream_numbering() -> None:
    ev = session()
    ev.restore(7, (
        FinalText(0, 0.2, 1.2, "hello bob", "96", ALICE),
        FinalText(0, 1.5, 2.2, "hi alice", "97", None),
        FinalText(1, 2.4, 2.9, "bye", "96", ALICE),
    ))  # fmt: skip
    assert ev.seq == 7
    assert ev.transcript(final(1, "bye", 2.4, 2.9), "96", ALICE) is None
    assert ev.transcript(partial(0, "hi", 0.0, 0.4), "97", BOB, 1.5) is None
    nxt = body(ev.transcript(final(2, "see you", 3.0, 3.5), "96", ALICE))
    assert (nxt["utterance"], nxt["seq"]) == (2, 8)
    assert body(ev.transcript(final(1, "you too", 3.1, 3.6), "97", BOB))["utterance"] == 1
    ended = body(ev.ended_event("media process lost", 4.0))
    assert [(u["stream"], u["utterance"]) for u in ended["utterances"]] == [
        ("96", 0), ("97", 0), ("96", 1), ("96", 2), ("97", 1),
    ]  # fmt: skip
    assert ended["utterances"][0]["speaker"]["name"] == "Alice"
    assert ended["utterances"][1]["speaker"] is None


def test_restore_of_rows_from_before_siprec_keeps_one_numbering() -> None:
    ev = make()
    ev.restore(3, (FinalText(0, 0.5, 2.0, "first"), FinalText(1, 3.0, 4.0, "second")))
    assert ev.transcript(final(1, "second", 3.0, 4.0)) is None
    assert body(ev.transcript(final(2, "third", 5.0, 6.0)))["seq"] == 4
    assert body(ev.ended_event("hangup", 7.0))["text"] == "first second third"


def test_restore_of_a_v1_session_keeps_the_streams_numbering() -> None:
    ev = session(version=1)
    a = body(ev.transcript(final(0, "hello bob", 0.2, 1.2), "96", ALICE))
    b = body(ev.transcript(final(0, "hi alice", 1.5, 2.2), "97", BOB))
    picked_up = session(version=1)
    picked_up.restore(b["seq"], (
        FinalText(a["utterance"], a["start"], a["end"], a["text"], "96"),
        FinalText(b["utterance"], b["start"], b["end"], b["text"], "97"),
    ))  # fmt: skip
    assert ev.transcript(final(1, "bye", 3.0, 3.5), "97", BOB) is not None
    assert picked_up.transcript(final(1, "bye", 3.0, 3.5), "97", BOB) is not None


def test_a_v1_sessions_call_ended_lists_utterances_in_utterance_order() -> None:
    ev = session(version=1)
    ev.transcript(final(0, "later words", 5.0, 6.0), "96", ALICE)
    ev.transcript(final(0, "earlier words", 1.0, 2.0), "97", BOB)
    ended = body(ev.ended_event("200 OK", 7.0))
    assert [u["utterance"] for u in ended["utterances"]] == [0, 1]

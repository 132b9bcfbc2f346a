"""The captions hub, sans-IO: real events (made by CallEvents) in, items and call views out."""

from __future__ import annotations

import json

from media.wire import Transcript
from sip_bridge.captions.hub import CALL, CALL_LOST, NODE_TIMEOUT_S, CaptionHub, Item
from sip_bridge.delivery.events import CallEvents, CallInfo, Conversation, Event
from sip_bridge.siprec.speakers import Speaker
from tests.support.event_schemas import stream_problems

NODE = "host/media0"
ALICE = Speaker("p1", "Alice", "sip:alice@atlanta.example", "96")
BOB = Speaker("p2", None, "sip:bob@biloxi.example", "97")


def call(n: int = 1, conversation: Conversation | None = None, node: str = NODE) -> CallEvents:
    call_id = f"{n:032x}"
    return CallEvents(
        CallInfo(call_id, f"sip-{n}@pbx", "<sip:a@pbx>", "<sip:t@us>", "PCMU/8000", 8000, node),
        conversation=conversation,
    )


def siprec_call(n: int = 1) -> CallEvents:
    """A recording session of Alice (stream 96) and Bob (stream 97), as a media process has it."""
    return call(n, Conversation(f"rs-{n}@src", "siprec", ("hVpd7YQg",), ("cs-77@pbx",), "complete"))


def spoke(c: CallEvents, stream: str | None, who: Speaker | None, u: int, text: str, final: bool,
          at: float) -> Event:  # fmt: skip
    t = Transcript(c.info.call_id, u, final, text, at, at + 1.0, 0.9)
    event = c.transcript(t, stream, who)
    assert event is not None
    return event


def kept(items: list[Item]) -> list[Item]:
    """The items, each checked against the captions stream's contract."""
    for item in items:
        problem = stream_problems(item.kind, json.loads(item.data))
        assert problem is None, problem
    return items


def said(c: CallEvents, u: int, text: str, final: bool) -> Event:
    event = c.transcript(Transcript(c.info.call_id, u, final, text, u * 2.0, u * 2.0 + 1.5, 0.9))
    assert event is not None
    return event


def feed(hub: CaptionHub, event: Event, tenant: str = "acme") -> list[str]:
    return [item.kind for item in hub.on_event(NODE, tenant, event.body)]


def test_a_final_replaces_its_partials_and_the_view_holds_the_captions() -> None:
    hub = CaptionHub()
    c = call()
    assert feed(hub, c.started()) == [CALL, "call.started"]
    feed(hub, said(c, 0, "please enter", False))
    (view,) = hub.calls()
    assert [p["text"] for p in view["partials"]] == ["please enter"] and view["finals"] == []
    feed(hub, said(c, 0, "please enter your pin", True))
    feed(hub, said(c, 1, "thank", False))
    (view,) = hub.calls()
    assert [f["text"] for f in view["finals"]] == ["please enter your pin"]
    assert [p["utterance"] for p in view["partials"]] == [1]
    assert view["tenant"] == "acme" and view["from"] == "<sip:a@pbx>" and not view["ended"]
    # An ordinary call: one stream, nobody named, no conversation.
    assert view["conversation"] is None and view["streams"] == view["participants"] == []
    assert view["finals"][0]["stream"] is None and view["finals"][0]["speaker"] is None
    feed(hub, c.ended_event("200 Normal call clearing", 9.0))
    (view,) = hub.calls()
    assert view["ended"] and view["reason"] == "200 Normal call clearing"
    assert view["partials"] == []
    assert stream_problems("snapshot", {"calls": hub.calls()}) is None


def test_repeats_and_bad_events_are_dropped() -> None:
    hub = CaptionHub()
    c = call()
    started = c.started()
    assert feed(hub, started) and feed(hub, started) == []
    assert hub.on_event(NODE, "acme", b"not json") == []
    assert hub.on_event(NODE, "acme", b'{"type": 1, "call_id": "x", "seq": 1}') == []
    assert hub.bad_messages == 2


def test_a_client_resumes_from_its_last_id_or_needs_a_snapshot() -> None:
    hub = CaptionHub(history=100)
    c = call()
    feed(hub, c.started())
    mark = hub.last_id
    feed(hub, said(c, 0, "one", True))
    feed(hub, said(c, 1, "two", True))
    assert [json.loads(i.data)["text"] for i in hub.since(mark) or []] == ["one", "two"]
    assert hub.since(hub.last_id) == []
    assert hub.since("otherepoch-1") is None  # the hub restarted
    assert hub.since(f"{hub.epoch}-999") is None  # from the future
    for u in range(2, 150):  # the history holds 100 items
        feed(hub, said(c, u, f"u{u}", True))
    assert hub.since(mark) is None


def test_calls_listed_by_a_media_process_appear_and_unlisted_ones_end() -> None:
    hub = CaptionHub()
    early = {"call_id": "e" * 32, "sip_call_id": "early@pbx", "from": "<sip:x@pbx>",
             "to": "<sip:t@us>", "codec": "G722/16000", "started": 100.0,
             "tenant": "globex"}  # fmt: skip
    items = hub.on_calls(NODE, [early], now=0.0)
    assert [i.kind for i in items] == [CALL]
    assert hub.calls()[0]["codec"] == "G722/16000"
    assert hub.on_calls(NODE, [early], now=2.0) == []  # nothing new
    (lost,) = hub.on_calls(NODE, [], now=4.0)  # its call.ended never came
    assert lost.kind == CALL_LOST and hub.calls()[0]["ended"]
    for item in (*items, lost):
        assert stream_problems(item.kind, json.loads(item.data)) is None
    assert stream_problems("snapshot", {"calls": hub.calls()}) is None


def test_a_silent_media_process_loses_its_calls() -> None:
    hub = CaptionHub()
    c = call()
    feed(hub, c.started())
    hub.on_calls(NODE, [{"call_id": c.info.call_id}], now=0.0)
    assert hub.expire(now=NODE_TIMEOUT_S) == []
    (lost,) = hub.expire(now=NODE_TIMEOUT_S + 0.1)
    assert lost.kind == CALL_LOST and "stopped reporting" in json.loads(lost.data)["reason"]
    assert stream_problems(CALL_LOST, json.loads(lost.data)) is None
    assert stream_problems("snapshot", {"calls": hub.calls()}) is None
    assert hub.expire(now=100.0) == []


def test_views_are_scoped_ordered_and_ended_calls_are_bounded() -> None:
    hub = CaptionHub(keep_ended=2)
    calls = [call(n) for n in range(1, 6)]
    for n, c in enumerate(calls):
        feed(hub, c.started(), tenant="acme" if n % 2 == 0 else "globex")
    assert {v["tenant"] for v in hub.calls(frozenset({"globex"}))} == {"globex"}
    assert len(hub.calls(frozenset({"acme"}))) == 3
    for c in calls[:3]:
        feed(hub, c.ended_event("200 OK", 1.0), tenant="?")
    views = hub.calls()
    # Live first; then the ended ones, newest first, at most keep_ended of them.
    assert [v["call_id"] for v in views] == [
        calls[3].info.call_id,
        calls[4].info.call_id,
        calls[2].info.call_id,
        calls[1].info.call_id,
    ]
    assert hub.calls(call_id=calls[4].info.call_id)[0]["call_id"] == calls[4].info.call_id


def test_a_call_first_heard_of_mid_way_has_a_complete_view() -> None:
    hub = CaptionHub()
    c = call()
    c.started()  # made before the hub was listening: never fed
    feed(hub, said(c, 0, "hello", True))
    (view,) = hub.calls()
    assert view["from"] is None and view["finals"][0]["text"] == "hello"
    assert stream_problems("snapshot", {"calls": [view]}) is None


def test_a_siprec_session_keeps_each_streams_speaker_and_partials() -> None:
    hub = CaptionHub()
    c = siprec_call()
    items = kept(
        hub.on_event(NODE, "acme", c.started((("96", ALICE), ("97", BOB)), (ALICE, BOB)).body)
    )
    summary = json.loads(items[0].data)
    assert summary["conversation"] == {
        "id": "rs-1@src",
        "kind": "siprec",
        "calls": [c.info.call_id],
    }
    assert [s["speaker"]["name"] for s in summary["streams"]] == ["Alice", None]
    assert [p["aor"] for p in summary["participants"]] == [ALICE.aor, BOB.aor]
    # Both speak at once: each stream numbers its own utterances, from 0.
    kept(hub.on_event(NODE, "acme", spoke(c, "96", ALICE, 0, "hello", False, 0.2).body))
    kept(hub.on_event(NODE, "acme", spoke(c, "97", BOB, 0, "hi th", False, 0.4).body))
    (view,) = hub.calls()
    assert [(p["stream"], p["text"]) for p in view["partials"]] == [
        ("96", "hello"),
        ("97", "hi th"),
    ]
    kept(hub.on_event(NODE, "acme", spoke(c, "97", BOB, 0, "hi there", True, 0.4).body))
    (view,) = hub.calls()
    # Bob's final replaces Bob's partial only.
    assert [(p["stream"], p["text"]) for p in view["partials"]] == [("96", "hello")]
    kept(hub.on_event(NODE, "acme", spoke(c, "96", ALICE, 0, "hello bob", True, 0.2).body))
    kept(hub.on_event(NODE, "acme", spoke(c, "96", ALICE, 1, "how are you", True, 2.0).body))
    (view,) = hub.calls()
    assert view["partials"] == []
    # The finals of both streams, interleaved by time, each with its speaker.
    assert [(f["stream"], f["utterance"], f["speaker"]["aor"]) for f in view["finals"]] == [
        ("96", 0, ALICE.aor), ("97", 0, BOB.aor), ("96", 1, ALICE.aor)]  # fmt: skip
    assert view["finals"][0]["speaker"] == {
        "participant_id": "p1", "name": "Alice", "aor": "sip:alice@atlanta.example"}  # fmt: skip
    assert stream_problems("snapshot", {"calls": hub.calls()}) is None


def test_conversation_updated_changes_who_speaks_on_a_stream() -> None:
    hub = CaptionHub()
    c = siprec_call()
    kept(hub.on_event(NODE, "acme", c.started((("96", None), ("97", None)), ()).body))
    (view,) = hub.calls()
    assert [s["speaker"] for s in view["streams"]] == [None, None]  # no metadata yet
    carol = Speaker("p3", "Carol", "sip:carol@chicago.example", "97")
    assert c.conversation is not None
    updated = c.updated(c.conversation, (("96", ALICE), ("97", carol)), (ALICE, carol))
    assert updated is not None
    assert [i.kind for i in kept(hub.on_event(NODE, "acme", updated.body))] == [
        "conversation.updated"
    ]
    (view,) = hub.calls()
    assert [(s["stream"], s["speaker"]["name"]) for s in view["streams"]] == [
        ("96", "Alice"), ("97", "Carol")]  # fmt: skip
    assert [p["participant_id"] for p in view["participants"]] == ["p1", "p3"]


def test_legs_of_one_conversation_are_grouped_across_media_processes() -> None:
    hub = CaptionHub()
    tag = Conversation("conv-42", "legs")
    caller, callee = Speaker(None, "caller", None, ""), Speaker(None, "callee", None, "")
    a = call(1, tag, node="host/media0")
    b = call(2, tag, node="host/media1")
    other_tenant = call(3, tag)
    plain = call(4)
    kept(hub.on_event("host/media0", "acme", a.started((), (caller,)).body))
    (summary, _) = kept(hub.on_event("host/media1", "acme", b.started((), (callee,)).body))
    legs = [a.info.call_id, b.info.call_id]
    # The second leg's summary names both.
    assert json.loads(summary.data)["conversation"] == {"id": "conv-42", "kind": "legs",
                                                        "calls": legs}  # fmt: skip
    kept(hub.on_event(NODE, "globex", other_tenant.started((), (caller,)).body))
    kept(hub.on_event(NODE, "acme", plain.started().body))
    kept(hub.on_event("host/media1", "acme", spoke(b, None, callee, 0, "hello?", True, 0.5).body))
    views = {v["call_id"]: v for v in hub.calls()}
    assert views[a.info.call_id]["conversation"]["calls"] == legs
    assert views[other_tenant.info.call_id]["conversation"]["calls"] == [other_tenant.info.call_id]
    assert views[plain.info.call_id]["conversation"] is None
    assert views[b.info.call_id]["finals"][0]["speaker"]["name"] == "callee"
    assert views[a.info.call_id]["participants"][0]["name"] == "caller"
    # A leg learned late, from its media process's list, joins the conversation too.
    supervisor = {"participant_id": None, "name": "supervisor", "aor": None}
    tagged = {"id": "conv-42", "kind": "legs", "streams": [], "participants": [supervisor]}
    late = {"call_id": "f" * 32, "sip_call_id": "late@pbx", "from": None, "to": None,
            "codec": "PCMA/8000", "started": 5.0, "tenant": "acme",
            "conversation": tagged}  # fmt: skip
    (item,) = kept(hub.on_calls("host/media2", [late], now=0.0))
    assert json.loads(item.data)["conversation"]["calls"] == [*legs, "f" * 32]
    assert json.loads(item.data)["participants"][0]["name"] == "supervisor"
    assert stream_problems("snapshot", {"calls": hub.calls()}) is None


def test_a_siprec_session_learned_late_has_its_streams_from_its_row() -> None:
    hub = CaptionHub()
    row = {"call_id": "d" * 32, "sip_call_id": "rs-9@src", "from": "<sip:src@pbx>",
           "to": "<sip:srs@us>", "codec": "PCMU/8000", "started": 100.0, "on_hold": False,
           "tenant": "", "node": NODE, "conversation": {
               "id": "rs-9@src", "kind": "siprec",
               "participants": [{"participant_id": "p1", "name": "Alice", "aor": ALICE.aor}],
               "streams": [{"stream": "96", "name": "Alice", "on_hold": False},
                           {"stream": "97", "name": None, "on_hold": True}]}}  # fmt: skip
    (item,) = kept(hub.on_calls(NODE, [row], now=0.0))
    view = json.loads(item.data)
    assert view["conversation"]["kind"] == "siprec"
    assert [(s["stream"], s["speaker"]) for s in view["streams"]] == [
        ("96", {"participant_id": None, "name": "Alice", "aor": None}), ("97", None)]  # fmt: skip

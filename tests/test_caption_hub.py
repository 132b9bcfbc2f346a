"""The captions hub, sans-IO: real events (made by CallEvents) in, items and call views out."""

from __future__ import annotations

import json

from media.wire import Transcript
from sip_bridge.captions.hub import CALL, CALL_LOST, NODE_TIMEOUT_S, CaptionHub
from sip_bridge.delivery.events import CallEvents, CallInfo, Event
from tests.support.event_schemas import stream_problems

NODE = "host/media0"


def call(n: int = 1) -> CallEvents:
    call_id = f"{n:032x}"
    return CallEvents(
        CallInfo(call_id, f"sip-{n}@pbx", "<sip:a@pbx>", "<sip:t@us>", "PCMU/8000", 8000, NODE)
    )


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
    assert view["partial"]["text"] == "please enter" and view["finals"] == []
    feed(hub, said(c, 0, "please enter your pin", True))
    feed(hub, said(c, 1, "thank", False))
    (view,) = hub.calls()
    assert [f["text"] for f in view["finals"]] == ["please enter your pin"]
    assert view["partial"]["utterance"] == 1
    assert view["tenant"] == "acme" and view["from"] == "<sip:a@pbx>" and not view["ended"]
    feed(hub, c.ended_event("200 Normal call clearing", 9.0))
    (view,) = hub.calls()
    assert view["ended"] and view["reason"] == "200 Normal call clearing"
    assert view["partial"] is None


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

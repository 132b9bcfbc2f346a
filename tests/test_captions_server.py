"""The captions server for real: its HTTP API on loopback, fed over real ZeroMQ by the media
processes' CaptionFeed, read by a plain HTTP client as a browser's EventSource would."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq

from media.wire import Transcript
from sip_bridge.captions.feed import CaptionFeed
from sip_bridge.captions.server import (
    COOKIE,
    Scope,
    TokenBook,
    _Subscriber,
    make_token_file,
)
from sip_bridge.delivery.events import CallEvents, CallInfo, Conversation, Event
from sip_bridge.settings.checks import validate
from sip_bridge.settings.config import CaptionsConfig, Config, TenantConfig
from sip_bridge.siprec.speakers import Speaker
from tests.support.captions import Running
from tests.support.event_schemas import stream_problems
from tests.support.ports import free_tcp_port

OPERATOR = "operator-token-0123456789"
ACME = "acme-token-0123456789abcd"
GLOBEX = "globex-token-0123456789ab"
NODE = "host/media0"
T = TypeVar("T")


def config(tmp: Path) -> Config:
    return validate(
        Config(
            captions=CaptionsConfig(
                port=free_tcp_port(), feed_port=free_tcp_port(), tokens=(OPERATOR,)
            ),
            tenants=(
                TenantConfig("acme", captions_tokens=(ACME,)),
                TenantConfig("globex", captions_tokens=(GLOBEX,)),
            ),
            runtime_dir=str(tmp / "run"),
        ),
        "test",
    )


@dataclass
class Stream:
    """An open event stream, read message by message."""

    resp: http.client.HTTPResponse
    conn: http.client.HTTPConnection
    messages: list[dict[str, Any]] = field(default_factory=list)

    def next(self) -> dict[str, Any]:
        msg: dict[str, Any] = {}
        while True:
            line = self.resp.fp.readline().decode()
            if line == "":
                raise EOFError("stream closed")
            line = line.rstrip("\n")
            if not line:
                if "event" in msg:
                    msg["json"] = json.loads(msg["data"])
                    problem = stream_problems(msg["event"], msg["json"])
                    assert problem is None, problem  # every message keeps the contract
                    self.messages.append(msg)
                    return msg
                msg = {}  # a retry: or comment block
                continue
            key, _, value = line.partition(": ")
            if key in ("id", "event", "data"):
                msg[key] = value

    def until(self, kind: str) -> dict[str, Any]:
        while True:
            msg = self.next()
            if msg["event"] == kind:
                return msg

    def close(self) -> None:
        self.conn.close()


def open_stream(run: Running, path: str = "/v1/events", **headers: str) -> Stream:
    conn = http.client.HTTPConnection("127.0.0.1", run.cfg.captions.port, timeout=5)
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert resp.getheader("Content-Type") == "text/event-stream"
    return Stream(resp, conn)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Running]:
    r = Running(config(tmp_path))
    yield r
    r.close()


def connected(run: Running, ctx: zmq.Context[Any], node: str) -> CaptionFeed:
    f = CaptionFeed(ctx, f"tcp://127.0.0.1:{run.cfg.captions.feed_port}", node)
    # A PUB drops what it sends before the subscription reaches it: announce until heard.
    deadline = time.monotonic() + 10
    while node not in run.server.hub.nodes:
        assert time.monotonic() < deadline, "the feed never reached the server"
        f.calls([])
        time.sleep(0.05)
    return f


@pytest.fixture
def feed(run: Running) -> Iterator[CaptionFeed]:
    ctx: zmq.Context[Any] = zmq.Context()
    f = connected(run, ctx, NODE)
    yield f
    f.close()
    ctx.term()


def new_call(n: int, conversation: Conversation | None = None, node: str = NODE) -> CallEvents:
    return CallEvents(
        CallInfo(f"{n:032x}", f"{n}@pbx", "<sip:a@pbx>", "<sip:t@us>", "PCMU/8000", 8000, node),
        conversation=conversation,
    )


def final(c: CallEvents, u: int, text: str) -> Event:
    event = c.transcript(Transcript(c.info.call_id, u, True, text, float(u), u + 0.5, 0.9))
    assert event is not None
    return event


def test_the_api_needs_a_token_the_page_does_not(run: Running) -> None:
    status, headers, body = run.request("/")
    assert status == 200 and b"Live captions" in body
    assert "default-src 'self'" in headers["content-security-policy"]
    assert run.request("/static/captions.js")[0] == 200
    assert run.request("/static/nothing.js")[0] == 404
    assert run.request("/healthz")[0] == 200
    for token in (None, "wrong-token-0123456789", ACME[:-1]):
        status, headers, _ = run.request("/v1/calls", token)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert run.request("/v1/events", token)[0] == 401
    assert run.request("/v1/calls", OPERATOR)[0] == 200
    assert run.request(f"/v1/calls?token={ACME}")[0] == 200


def test_a_session_cookie_stands_in_for_the_token(run: Running) -> None:
    status, headers, body = run.request("/v1/session", ACME, method="POST")
    assert status == 200 and json.loads(body) == {"tenants": ["acme"]}
    cookie = headers["set-cookie"]
    assert f"{COOKIE}={ACME}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert run.request("/v1/calls", Cookie=f"{COOKIE}={ACME}")[0] == 200
    assert run.request("/v1/session", "wrong-token-0123456789", method="POST")[0] == 401
    status, headers, _ = run.request("/v1/session", method="DELETE")
    assert status == 204 and f'{COOKIE}=""' in headers["set-cookie"]


def test_each_token_streams_only_its_tenants_calls(run: Running, feed: CaptionFeed) -> None:
    everything = open_stream(run, Authorization=f"Bearer {OPERATOR}")
    acme_only = open_stream(run, f"/v1/events?token={ACME}")
    assert everything.next()["event"] == "snapshot"
    assert acme_only.next()["json"] == {"calls": []}
    a, g = new_call(1), new_call(2)
    feed.event("acme", a.started().body)
    feed.event("globex", g.started().body)
    feed.event("globex", final(g, 0, "globex words").body)
    feed.event("acme", final(a, 0, "acme words").body)
    seen = [everything.until("transcript.final")["json"]["text"] for _ in range(2)]
    assert seen == ["globex words", "acme words"]
    # The call's summary (with its tenant) comes before its call.started.
    assert [m["event"] for m in acme_only.messages] == ["snapshot"]
    assert acme_only.next()["json"]["tenant"] == "acme"
    assert acme_only.next()["event"] == "call.started"
    assert acme_only.until("transcript.final")["json"]["text"] == "acme words"
    assert all(m["json"].get("call_id") in (None, a.info.call_id) for m in acme_only.messages)
    status, _, body = run.request("/v1/calls", GLOBEX)
    assert stream_problems("snapshot", json.loads(body)) is None
    (call,) = json.loads(body)["calls"]
    assert call["call_id"] == g.info.call_id and call["finals"][0]["text"] == "globex words"
    # One call's stream.
    one = open_stream(run, f"/v1/calls/{g.info.call_id}/events?token={OPERATOR}")
    (only,) = one.next()["json"]["calls"]
    assert only["call_id"] == g.info.call_id
    for s in (everything, acme_only, one):
        s.close()


def test_speakers_and_conversations_reach_a_stream_and_the_call_list(
    run: Running, feed: CaptionFeed
) -> None:
    alice = Speaker("p1", "Alice", "sip:alice@atlanta.example", "96")
    bob = Speaker("p2", "Bob", "sip:bob@biloxi.example", "97")
    stream = open_stream(run, Authorization=f"Bearer {OPERATOR}")
    stream.next()
    session = new_call(6, Conversation("rs-1@src", "siprec", ("hVpd7YQg",), ("cs-77@pbx",)))
    feed.event("acme", session.started((("96", alice), ("97", None)), (alice,)).body)
    for stream_label, who, text in (("96", alice, "hello b"), ("97", None, "hi al")):
        t = Transcript(session.info.call_id, 0, False, text, 0.2, 1.0, 0.9)
        feed.event("acme", must(session.transcript(t, stream_label, who)).body)
    updated = session.updated(must(session.conversation), (("96", alice), ("97", bob)),
                              (alice, bob))  # fmt: skip
    feed.event("acme", must(updated).body)
    t = Transcript(session.info.call_id, 0, True, "hi alice", 0.4, 1.2, 0.9)
    feed.event("acme", must(session.transcript(t, "97", bob)).body)
    summary = stream.until("call")  # the session's
    assert summary["json"]["conversation"]["kind"] == "siprec"
    assert stream.until("conversation.updated")["json"]["streams"][1]["speaker"]["name"] == "Bob"
    assert stream.until("transcript.final")["json"]["speaker"]["name"] == "Bob"
    # Two legs of one conversation, from two media processes.
    tag = Conversation("conv-9", "legs")
    a, b = new_call(7, tag), new_call(8, tag, node="host/media1")
    ctx: zmq.Context[Any] = zmq.Context()
    other = connected(run, ctx, "host/media1")
    try:
        feed.event("acme", a.started((), (Speaker(None, "caller", None, ""),)).body)
        assert stream.until("call")["json"]["call_id"] == a.info.call_id
        other.event("acme", b.started((), (Speaker(None, "callee", None, ""),)).body)
        legs = stream.until("call")["json"]["conversation"]["calls"]
        assert legs == [a.info.call_id, b.info.call_id]
    finally:
        other.close()
        ctx.term()
    status, _, body = run.request("/v1/calls", OPERATOR)
    assert status == 200 and stream_problems("snapshot", json.loads(body)) is None
    views = {v["call_id"]: v for v in json.loads(body)["calls"]}
    view = views[session.info.call_id]
    assert [(p["stream"], p["text"]) for p in view["partials"]] == [("96", "hello b")]
    assert [(f["stream"], f["speaker"]["name"]) for f in view["finals"]] == [("97", "Bob")]
    assert [s["speaker"]["name"] for s in view["streams"]] == ["Alice", "Bob"]
    assert views[a.info.call_id]["conversation"]["calls"] == [a.info.call_id, b.info.call_id]
    stream.close()


def must(x: T | None) -> T:
    assert x is not None
    return x


def test_a_client_that_reconnects_gets_what_it_missed(run: Running, feed: CaptionFeed) -> None:
    first = open_stream(run, Authorization=f"Bearer {OPERATOR}")
    first.next()
    c = new_call(3)
    feed.event("acme", c.started().body)
    last = first.until("call.started")["id"]
    first.close()  # gone while the call goes on
    feed.event("acme", final(c, 0, "missed one").body)
    feed.event("acme", final(c, 1, "missed two").body)
    deadline = time.monotonic() + 5
    while len(run.server.hub.calls()[0]["finals"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    again = open_stream(run, **{"Authorization": f"Bearer {OPERATOR}", "Last-Event-ID": last})
    assert [again.next()["json"]["text"] for _ in range(2)] == ["missed one", "missed two"]
    stale = open_stream(run, **{"Authorization": f"Bearer {OPERATOR}", "Last-Event-ID": "x-1"})
    assert stale.next()["event"] == "snapshot"
    again.close()
    stale.close()


def test_corrupt_feed_messages_are_counted_and_change_nothing(
    run: Running, feed: CaptionFeed
) -> None:
    for frames in ([b"E1", b"node"], [b"X9", b"a", b"b"], [b"C1", NODE.encode(), b"{not json"],
                   [b"E1", NODE.encode(), b"acme", b"[1, 2]"]):  # fmt: skip
        feed.sock.send_multipart(frames)
    feed.event("acme", new_call(4).started().body)
    deadline = time.monotonic() + 5
    while not run.server.hub.calls():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert run.server.hub.bad_messages == 4
    assert run.request("/healthz")[0] == 200


def test_a_subscriber_that_falls_behind_is_cut_off_not_waited_for(run: Running) -> None:
    async def check() -> tuple[int, list[Any]]:
        slow = _Subscriber(Scope(None), None)
        run.server.subscribers.add(slow)
        c = new_call(5)
        for u in range(1200):  # more than a subscriber may have queued
            run.server.publish(run.server.hub.on_event(NODE, "acme", final(c, u, "x").body))
        got = []
        while not slow.queue.empty():
            got.append(slow.queue.get_nowait())
        run.server.subscribers.discard(slow)
        return run.server.cut_off, got

    cut_off, got = asyncio.run_coroutine_threadsafe(check(), run.loop).result(10)
    assert cut_off == 1 and got[-1] is None and len(got) <= 1000


def test_without_any_token_configured_one_is_made_for_the_run(tmp_path: Path) -> None:
    cfg = validate(Config(runtime_dir=str(tmp_path / "run")), "t")
    path = make_token_file(cfg)
    assert path is not None and path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    assert len(token) >= 24
    book = TokenBook.from_config(cfg)
    assert book.scope(token) == Scope(None) and book.scope(token + "x") is None
    assert make_token_file(config(tmp_path)) is None and not path.exists()

import socket
import subprocess
import sys
import time
from pathlib import Path

from media.wire import Transcript
from sip_bridge.delivery.events import CallEvents, CallInfo, Event
from sip_bridge.delivery.spool import Spool
from sip_bridge.delivery.webhooks import Endpoint, WebhookDispatcher, sign, verify
from tests.support.ports import free_tcp_port
from tests.support.webhook_receiver import Post, WebhookReceiver

CALL = "c" * 32


def finals(count: int, call_id: str = CALL) -> list[Event]:
    """Real transcript.final events, seq 1..count (the receiver checks them against the schema)."""
    info = CallInfo(call_id, "a84b@pbx", "<sip:a@pbx>", "<sip:t@us>", "PCMU/8000", 8000, "h/media0")
    call = CallEvents(info)
    made = [
        call.transcript(Transcript(call_id, u, True, f"part {u}", u, u + 0.5, 0.9))
        for u in range(count)
    ]
    return [e for e in made if e is not None]


def test_signature_round_trip() -> None:
    sig = sign("k", b"body", 1_800_000_000)
    assert sig.startswith("t=1800000000,v1=")
    now = 1_800_000_010.0
    assert verify("k", b"body", sig, now=now)
    assert not verify("other", b"body", sig, now=now)
    assert not verify("k", b"body!", sig, now=now)


def test_a_signature_binds_its_time_and_expires() -> None:
    sig = sign("k", b"body", 1_800_000_000)
    assert not verify("k", b"body", sig, now=1_800_000_301.0)  # replayed 5 min later
    assert verify("k", b"body", sig, now=1_800_000_301.0, tolerance_s=600)
    mac = sig.split("v1=")[1]
    assert not verify("k", b"body", f"t=1800000100,v1={mac}", now=1_800_000_100.0)  # new t
    # Several v1 values (a secret being rotated): any one may match.
    assert verify("k", b"body", f"t=1800000000,v1={'0' * 64},v1={mac}", now=1_800_000_000.0)
    for bad in ("", "v1=" + mac, "t=x,v1=" + mac, "t=1800000000", "t=1,t=2,v1=" + mac):
        assert not verify("k", b"body", bad, now=1_800_000_000.0)


def test_delivers_in_order_signed_and_retries_a_failing_endpoint(tmp_path: Path) -> None:
    rx = WebhookReceiver(fail_first=2)
    down = Endpoint("http://127.0.0.1:9/unreachable", "x")  # must not delay the other endpoint
    hooks = WebhookDispatcher([down, Endpoint(rx.url, "s3cret")], tmp_path / "spool.sqlite",
                              timeout=2, backoff=0.05)  # fmt: skip
    try:
        for e in finals(3):
            hooks.submit(e)
        assert rx.wait_for(lambda posts: len(posts) == 3, timeout=10)
        hooks.close(timeout=5)  # the receiver's sender finishes its queue; stats are final
        assert [p.json()["seq"] for p in rx.posts] == [1, 2, 3]
        for p in rx.posts:
            assert verify("s3cret", p.body, p.headers["X-Signature"])
            assert p.headers["X-Event-Type"] == "transcript.final"
        assert rx.attempts == 5
        stats = hooks.stats()[rx.url]
        assert stats.delivered == 3 and stats.retried == 2
    finally:
        hooks.close(timeout=1)
        rx.close()


def interleaved(*calls: list[Event]) -> list[Event]:
    return [e for group in zip(*calls, strict=True) for e in group]


def per_call(posts: list[Post]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = {}
    for p in posts:
        event = p.json()
        assert p.headers["X-Event-Id"] == f"{event['call_id']}-{event['seq']}"
        seqs.setdefault(event["call_id"], []).append(event["seq"])
    return seqs


def test_an_endpoint_that_recovers_gets_every_call_in_order(tmp_path: Path) -> None:
    rx = WebhookReceiver(fail_first=7)
    events = interleaved(finals(5, "a" * 32), finals(5, "b" * 32))
    hooks = WebhookDispatcher([Endpoint(rx.url, "k")], tmp_path / "spool.sqlite", backoff=0.02,
                              max_backoff=0.2)  # fmt: skip
    try:
        for e in events:
            hooks.submit(e)
        assert rx.wait_for(lambda posts: len(posts) == 10, timeout=10)
        hooks.close(timeout=5)
        assert per_call(rx.posts) == {"a" * 32: [1, 2, 3, 4, 5], "b" * 32: [1, 2, 3, 4, 5]}
        stats = hooks.stats()[rx.url]
        assert stats.delivered == 10 and stats.retried == 7 and stats.parked == 0
        assert Spool(tmp_path / "spool.sqlite").pending_count() == 0
    finally:
        hooks.close(timeout=1)
        rx.close()


def test_an_endpoint_that_times_out_then_recovers_gets_everything_once(tmp_path: Path) -> None:
    rx = WebhookReceiver(hang_first=2, hang_s=1.5)  # longer than the 0.4 s timeout
    hooks = WebhookDispatcher([Endpoint(rx.url, "k")], tmp_path / "spool.sqlite", timeout=0.4,
                              backoff=0.05)  # fmt: skip
    try:
        for e in finals(3):
            hooks.submit(e)
        assert rx.wait_for(lambda posts: len(posts) == 3, timeout=15)
        hooks.close(timeout=5)
        assert [p.json()["seq"] for p in rx.posts] == [1, 2, 3]
        # The attempts it timed out on were the first event's, with the same idempotency key.
        assert [p.headers["X-Event-Id"] for p in rx.hung] == [rx.posts[0].headers["X-Event-Id"]] * 2
        assert hooks.stats()[rx.url].retried == 2
    finally:
        hooks.close(timeout=1)
        rx.close()


def test_a_hanging_endpoint_does_not_delay_a_live_one(tmp_path: Path) -> None:
    hang = socket.socket()  # accepts connections (in the backlog) and never answers
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    rx = WebhookReceiver()
    dead = Endpoint(f"http://127.0.0.1:{hang.getsockname()[1]}/hook", "x")
    hooks = WebhookDispatcher([dead, Endpoint(rx.url, "k")], tmp_path / "spool.sqlite",
                              timeout=3)  # fmt: skip
    try:
        start = time.monotonic()
        for e in finals(5):
            hooks.submit(e)
        assert rx.wait_for(lambda posts: len(posts) == 5, timeout=10)
        assert time.monotonic() - start < 1.5  # not one 3 s timeout of the dead endpoint
        assert hooks.stats()[dead.url].delivered == 0
    finally:
        hooks.close(timeout=0.5)
        hang.close()
        rx.close()


def test_a_restart_mid_backlog_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spool-media0.sqlite"
    rx = WebhookReceiver(fail_first=10**9)  # down until told otherwise
    events = interleaved(finals(6, "a" * 32), finals(6, "b" * 32), finals(6, "c" * 32))
    first = WebhookDispatcher([Endpoint(rx.url, "k")], path, backoff=10.0, max_backoff=10.0)
    try:
        for e in events:
            first.submit(e)
        assert first.stats()[rx.url].dropped_spool_full == 0
        deadline = time.monotonic() + 5
        while rx.attempts < 3 and time.monotonic() < deadline:  # each call's head was tried
            time.sleep(0.01)
        assert rx.attempts >= 3
    finally:
        first.close(timeout=2)
    assert not any(s.thread.is_alive() for s in first._senders)
    assert rx.posts == []
    assert Spool(path).pending_count() == 18

    rx.fail_first = 0  # the endpoint is back; a new process opens the same spool
    second = WebhookDispatcher([Endpoint(rx.url, "k")], path, backoff=10.0)
    try:
        assert rx.wait_for(lambda posts: len(posts) == 18, timeout=10)
        second.close(timeout=5)
        assert per_call(rx.posts) == {c * 32: [1, 2, 3, 4, 5, 6] for c in "abc"}
        sent = sorted(p.headers["X-Event-Id"] for p in rx.posts)
        assert sent == sorted(f"{e.call_id}-{e.seq}" for e in events)  # each once, same ids
        assert Spool(path).pending_count() == 0
    finally:
        second.close(timeout=1)
        rx.close()


_SPOOL_AND_HANG = """
import sys, time
from sip_bridge.delivery.webhooks import Endpoint, WebhookDispatcher
from tests.test_webhooks import finals, interleaved
hooks = WebhookDispatcher([Endpoint(sys.argv[1], "k")], sys.argv[2], backoff=10.0)
for e in interleaved(finals(4, "d" * 32), finals(4, "e" * 32)):
    hooks.submit(e)
print("spooled", flush=True)
time.sleep(60)
"""


def test_a_process_killed_mid_backlog_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spool-media0.sqlite"
    # Nothing listens on the endpoint while the first process runs (its POSTs are refused), so
    # no request of the killed process can reach the receiver that starts there afterwards.
    port = free_tcp_port()
    url = f"http://127.0.0.1:{port}/hook"
    child = subprocess.Popen(
        [sys.executable, "-c", _SPOOL_AND_HANG, url, str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "spooled\n"
        child.kill()  # SIGKILL: no close(), no checkpoint, the WAL as it is
        child.wait(10)
    finally:
        child.kill()
    rx = WebhookReceiver(port=port)
    hooks = WebhookDispatcher([Endpoint(rx.url, "k")], path)
    try:
        assert rx.wait_for(lambda posts: len(posts) >= 8, timeout=10)
        hooks.close(timeout=5)
        # The first process delivered nothing: each event is delivered exactly once here.
        assert per_call(rx.posts) == {"d" * 32: [1, 2, 3, 4], "e" * 32: [1, 2, 3, 4]}
    finally:
        hooks.close(timeout=1)
        rx.close()


def test_a_full_spool_drops_new_events_and_counts_them(tmp_path: Path) -> None:
    rx = WebhookReceiver(fail_first=10**9)
    hooks = WebhookDispatcher([Endpoint(rx.url, "k")], tmp_path / "spool.sqlite", backoff=10.0,
                              spool_max=2)  # fmt: skip
    try:
        for e in finals(3):
            hooks.submit(e)
        assert hooks.stats()[rx.url].dropped_spool_full == 1
        assert Spool(tmp_path / "spool.sqlite").pending_count() == 2
    finally:
        hooks.close(timeout=1)
        rx.close()

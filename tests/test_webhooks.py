import json

from sip_bridge.events import Event
from sip_bridge.webhooks import Endpoint, WebhookDispatcher, sign, verify
from tests.support.webhook_receiver import WebhookReceiver


def event(seq: int) -> Event:
    body = json.dumps({"type": "transcript.final", "call_id": "c", "seq": seq}).encode()
    return Event("transcript.final", "c", seq, body)


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


def test_delivers_in_order_signed_and_retries_a_failing_endpoint() -> None:
    rx = WebhookReceiver(fail_first=2)
    down = Endpoint("http://127.0.0.1:9/unreachable", "x")  # must not delay the other endpoint
    hooks = WebhookDispatcher([down, Endpoint(rx.url, "s3cret")], timeout=2, retries=3,
                              backoff=0.05)  # fmt: skip
    try:
        for seq in (1, 2, 3):
            hooks.submit(event(seq))
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

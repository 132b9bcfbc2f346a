import json

from sip_bridge.events import Event
from sip_bridge.webhooks import Endpoint, WebhookDispatcher, sign, verify
from tests.support.webhook_receiver import WebhookReceiver


def event(seq: int) -> Event:
    body = json.dumps({"type": "transcript.final", "call_id": "c", "seq": seq}).encode()
    return Event("transcript.final", "c", seq, body)


def test_signature_round_trip() -> None:
    sig = sign("k", b"body")
    assert verify("k", b"body", sig)
    assert not verify("other", b"body", sig)
    assert not verify("k", b"body!", sig)


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

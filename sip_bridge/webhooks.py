"""Signed webhook delivery: one thread per endpoint, so a slow or dead endpoint delays no other.

Each event is POSTed as its JSON body with ``X-Event-Type``, ``X-Event-Id`` (``<call_id>-<seq>``,
the same on every attempt: the receiver's idempotency key) and, in the Stripe style,
``X-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the endpoint's secret>``,
signed afresh at each attempt: a receiver checks the HMAC and that ``t`` is recent, so a captured
request cannot be replayed later. A failed POST (connection error, timeout, non-2xx) is retried
with doubling back-off up to ``retries`` times, then dropped with an error log. Order is kept per
endpoint, hence per call. The queue is bounded; when full, the event is dropped and counted (never
blocks the caller: it runs next to the SIP loop). Secrets are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from sip_bridge.events import Event

log = logging.getLogger(__name__)


SIGNATURE_TOLERANCE_S = 300  # what verify() accepts between signing and checking, by default


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Signature`` value for ``body`` signed at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Check an ``X-Signature`` header as a receiver should: one of its ``v1`` HMACs matches
    ``"<t>.<body>"`` under ``secret``, and ``t`` lies within ``tolerance_s`` of ``now``."""
    parts = [item.partition("=") for item in header.split(",")]
    stamps = [v.strip() for k, _, v in parts if k.strip() == "t"]
    macs = [v.strip() for k, _, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not macs:
        return False
    t = int(stamps[0])
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, m) for m in macs)


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    secret: str


@dataclass(slots=True)
class DeliveryStats:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    dropped_queue_full: int = 0


class _EndpointSender:
    def __init__(
        self, endpoint: Endpoint, timeout: float, retries: int, backoff: float, size: int
    ) -> None:
        self.endpoint = endpoint
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.queue: queue.Queue[Event | None] = queue.Queue(maxsize=size)
        self.stats = DeliveryStats()
        self._stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"webhook {endpoint.url}", daemon=True
        )

    def _post(self, event: Event) -> None:
        req = urllib.request.Request(
            self.endpoint.url,
            data=event.body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "sip-bridge",
                "X-Signature": sign(self.endpoint.secret, event.body, int(time.time())),
                "X-Event-Type": event.type,
                "X-Event-Id": f"{event.call_id}-{event.seq}",
            },
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (configured URL)
            resp.read()

    def _deliver(self, event: Event) -> None:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                self._post(event)
                self.stats.delivered += 1
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if attempt == self.retries:
                    self.stats.failed += 1
                    log.error(
                        "call %s: webhook %s gave up on %s seq %d after %d attempts: %s",
                        event.call_id, self.endpoint.url, event.type, event.seq, attempt + 1, exc,
                    )  # fmt: skip
                    return
                self.stats.retried += 1
                log.warning(
                    "call %s: webhook %s failed (%s), retry in %.1f s",
                    event.call_id, self.endpoint.url, exc, delay,
                )  # fmt: skip
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 30.0)

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            self._deliver(event)


class WebhookDispatcher:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        timeout: float = 5.0,
        retries: int = 5,
        backoff: float = 0.5,
        queue_size: int = 10000,
    ) -> None:
        self._senders = [
            _EndpointSender(e, timeout, retries, backoff, queue_size) for e in endpoints
        ]
        for s in self._senders:
            s.thread.start()

    def submit(self, event: Event) -> None:
        for s in self._senders:
            try:
                s.queue.put_nowait(event)
            except queue.Full:
                s.stats.dropped_queue_full += 1
                log.error(
                    "call %s: webhook %s queue full, dropped %s seq %d",
                    event.call_id, s.endpoint.url, event.type, event.seq,
                )  # fmt: skip

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop the threads."""
        for s in self._senders:
            try:
                s.queue.put(None, timeout=timeout)
            except queue.Full:
                s._stop.set()
        for s in self._senders:
            s.thread.join(timeout)
            if s.thread.is_alive():
                s._stop.set()
                log.warning("webhook %s: %d events undelivered at shutdown", s.endpoint.url,
                            s.queue.qsize())  # fmt: skip

    def stats(self) -> dict[str, DeliveryStats]:
        return {s.endpoint.url: s.stats for s in self._senders}

"""Signed webhook delivery from the durable spool: one thread per endpoint, so a slow or dead
endpoint delays no other, and nothing here ever blocks the SIP loop on the network.

:meth:`WebhookDispatcher.submit` only writes the event to the spool
(:mod:`sip_bridge.delivery.spool`, one SQLite insert per event for all endpoints) and wakes the
senders. Each endpoint's thread sends what the spool says is due (per call in ``seq`` order),
deletes what was delivered and records failures, which the spool retries with jittered exponential
back-off up to a horizon, then parks as dead letters. A restarted media process with the same spool
file resumes the backlog.

Each event is POSTed as its JSON body with ``X-Event-Type``, ``X-Event-Id`` (``<call_id>-<seq>``,
the same on every attempt and after a restart: the receiver's idempotency key, as delivery is
at-least-once) and, in the Stripe style, ``X-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>" under the endpoint's secret>``, signed afresh at each attempt: a receiver checks the
HMAC and that ``t`` is recent, so a captured request cannot be replayed later. Secrets are never
logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from sip_bridge.delivery.events import Event
from sip_bridge.delivery.spool import Delivery, RetryPolicy, Spool
from sip_bridge.settings.config import (
    WEBHOOK_BACKOFF_S,
    WEBHOOK_HORIZON_S,
    WEBHOOK_MAX_BACKOFF_S,
    WEBHOOK_SPOOL_MAX,
    WEBHOOK_TIMEOUT_S,
)

log = logging.getLogger(__name__)


SIGNATURE_TOLERANCE_S = 300  # what verify() accepts between signing and checking, by default
IDLE_WAIT_S = 30.0  # a sender with nothing due looks again this often even if not woken


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
    retried: int = 0  # failed attempts that will be retried
    parked: int = 0  # events moved to the dead letters
    dropped_spool_full: int = 0  # events not spooled: the endpoint had ``spool_max`` pending


class _EndpointSender:
    def __init__(
        self,
        endpoint: Endpoint,
        path: Path,
        policy: RetryPolicy,
        timeout: float,
        lock: threading.Lock,
    ) -> None:
        self.endpoint = endpoint
        self.path, self.policy, self.timeout = path, policy, timeout
        self.stats = DeliveryStats()
        self.lock = lock  # the dispatcher's: guards ``pending`` and ``dropping``
        self.pending = 0  # rows in the spool for this endpoint
        self.dropping = False  # over spool_max, logged once per episode
        self.wake = threading.Event()
        self.closing = threading.Event()  # send what is due, then stop
        self.stop = threading.Event()  # stop after the current POST
        self._down = False
        self.thread = threading.Thread(
            target=self._run, name=f"webhook {endpoint.url}", daemon=True
        )

    def _post(self, d: Delivery) -> None:
        req = urllib.request.Request(
            self.endpoint.url,
            data=d.body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "sip-bridge",
                "X-Signature": sign(self.endpoint.secret, d.body, int(time.time())),
                "X-Event-Type": d.type,
                "X-Event-Id": d.event_id,
            },
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (configured URL)
            resp.read()

    def _attempt(self, spool: Spool, d: Delivery) -> int:
        """POST one delivery and record the outcome; how many rows left the spool."""
        url = self.endpoint.url
        try:
            self._post(d)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            parked = spool.failed(d, time.time(), str(exc))
            if parked:
                self.stats.parked += parked
                log.error(
                    "call %s: webhook %s gave up on %s seq %d after %d attempts over %.0f s (%s);"
                    " %d event(s) parked as dead letters",
                    d.call_id, url, d.type, d.seq, d.attempts + 1, time.time() - d.created_at,
                    exc, parked,
                )  # fmt: skip
                return parked
            self.stats.retried += 1
            if not self._down:
                self._down = True
                log.warning("call %s: webhook %s failed (%s); retrying with back-off",
                            d.call_id, url, exc)  # fmt: skip
            return 0
        spool.delivered(d)
        self.stats.delivered += 1
        if self._down:
            self._down = False
            log.info("webhook %s: delivering again", url)
            spool.retry_now(url, time.time())  # its other calls need not sit out their back-off
        return 1

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                spool = Spool(self.path, self.policy)
                try:
                    self._loop(spool)
                    return
                finally:
                    spool.close()
            except Exception:  # the disk, mostly: keep the thread, the events stay spooled
                log.exception("webhook %s: spool error; trying again in %.0f s",
                              self.endpoint.url, IDLE_WAIT_S)  # fmt: skip
                if self.closing.is_set() or self.stop.wait(IDLE_WAIT_S):
                    return

    def _loop(self, spool: Spool) -> None:
        url = self.endpoint.url
        while not self.stop.is_set():
            self.wake.clear()  # before looking: a submit from now on wakes the wait below
            batch = spool.due(url, time.time())
            for d in batch:
                if self.stop.is_set():
                    return
                gone = self._attempt(spool, d)
                if gone:
                    with self.lock:
                        self.pending -= gone
            if batch:
                continue
            if self.closing.is_set():
                return  # nothing due now; what backs off stays spooled for the next start
            next_at = spool.next_due_at(url)
            wait = IDLE_WAIT_S if next_at is None else next_at - time.time()
            self.wake.wait(min(max(wait, 0.0), IDLE_WAIT_S))


class WebhookDispatcher:
    """Spools every submitted event for each endpoint and delivers it from one thread per
    endpoint. ``spool_max`` bounds the events pending per endpoint (in the spool, on disk):
    beyond it a new event is not spooled for that endpoint, counted and logged (ERROR once per
    episode), so a long-dead endpoint cannot fill the disk."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        spool_path: str | Path,
        timeout: float = WEBHOOK_TIMEOUT_S,
        backoff: float = WEBHOOK_BACKOFF_S,
        max_backoff: float = WEBHOOK_MAX_BACKOFF_S,
        horizon: float = WEBHOOK_HORIZON_S,
        spool_max: int = WEBHOOK_SPOOL_MAX,
    ) -> None:
        self.spool_max = spool_max
        self._lock = threading.Lock()
        self._senders: list[_EndpointSender] = []
        self._spool: Spool | None = None
        if not endpoints:
            return  # no spool file either
        if len({e.url for e in endpoints}) != len(endpoints):
            raise ValueError("one endpoint per URL: the spool keys deliveries by URL")
        path = Path(spool_path)
        policy = RetryPolicy(backoff, max_backoff, horizon)
        self._spool = Spool(path, policy)
        now = time.time()
        urls = [e.url for e in endpoints]
        orphans = self._spool.park_other_endpoints(urls, now)
        if orphans:
            log.warning("webhooks: %d spooled event(s) for endpoints no longer configured parked"
                        " as dead letters in %s", orphans, path)  # fmt: skip
        self._senders = [_EndpointSender(e, path, policy, timeout, self._lock) for e in endpoints]
        for s in self._senders:
            s.pending = self._spool.pending_count(s.endpoint.url)
            if s.pending:
                # The back-off a previous process chose is stale: try its backlog now.
                self._spool.retry_now(s.endpoint.url, now)
                log.info("webhook %s: %d event(s) spooled before a restart, resuming",
                         s.endpoint.url, s.pending)  # fmt: skip
            s.thread.start()

    def submit(self, event: Event, urls: Collection[str] | None = None) -> None:
        """Spool ``event`` for the endpoints with these URLs (its tenant's and the operator's;
        ``None``: every endpoint), in one SQLite transaction, no network."""
        if self._spool is None:
            return
        with self._lock:
            take = []
            for s in self._senders:
                if urls is not None and s.endpoint.url not in urls:
                    continue
                if s.pending >= self.spool_max:
                    s.stats.dropped_spool_full += 1
                    if not s.dropping:
                        s.dropping = True
                        log.error(
                            "call %s: webhook %s has %d events spooled"
                            " (delivery.webhook_spool_max); dropping new ones, first %s seq %d",
                            event.call_id, s.endpoint.url, s.pending, event.type, event.seq,
                        )  # fmt: skip
                    continue
                if s.dropping:
                    s.dropping = False
                    log.warning("webhook %s: spooling again (%d dropped so far)", s.endpoint.url,
                                s.stats.dropped_spool_full)  # fmt: skip
                s.pending += 1
                take.append(s)
            self._spool.add(event, [s.endpoint.url for s in take], time.time())
        for s in take:
            s.wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is due now (within ``timeout``), then stop the threads. Whatever is not
        delivered stays spooled for the next start."""
        deadline = time.monotonic() + timeout
        for s in self._senders:
            s.closing.set()
            s.wake.set()
        for s in self._senders:
            s.thread.join(max(0.0, deadline - time.monotonic()))
            s.stop.set()
        with self._lock:
            if self._spool is not None:
                for s in self._senders:
                    left = self._spool.pending_count(s.endpoint.url)
                    if left:
                        log.warning("webhook %s: %d event(s) left spooled at shutdown",
                                    s.endpoint.url, left)  # fmt: skip
                self._spool.close()
                self._spool = None

    def stats(self) -> dict[str, DeliveryStats]:
        return {s.endpoint.url: s.stats for s in self._senders}

"""Where a media process's events and its list of calls go, apart from SIP INFO and the call
journal: the webhook spool (durable, per tenant) and the captions server's feed (live, may
drop), each a :class:`~sip_bridge.delivery.sink.ResultSink`, and the calls file that
``sip-bridge calls`` reads. :class:`CallOutputs` owns them: it starts and closes them.

Runs on the media process's SIP loop thread; nothing here blocks on the network (the webhook
threads and ZeroMQ do the sending).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import zmq

from sip_bridge.calls import active_calls
from sip_bridge.captions.feed import LIST_EVERY_S, CaptionFeed
from sip_bridge.delivery.events import Event
from sip_bridge.delivery.sink import PastCall, ResultSink, TenantCall
from sip_bridge.delivery.webhooks import Endpoint, WebhookDispatcher
from sip_bridge.settings import tenants
from sip_bridge.settings.config import Config

log = logging.getLogger(__name__)


class WebhookSink:
    """Every event into the webhook spool, for the tenant's endpoints (sent by their threads)."""

    def __init__(self, webhooks: WebhookDispatcher) -> None:
        self._webhooks = webhooks

    def event(self, call: TenantCall, event: Event) -> None:
        self._webhooks.submit(event, call.tenant.webhook_urls)


class CaptionSink:
    """Every event on the captions feed (a PUB socket: never blocks, drops when full)."""

    def __init__(self, feed: CaptionFeed) -> None:
        self._feed = feed

    def event(self, call: TenantCall, event: Event) -> None:
        self._feed.event(call.tenant.name, event.body)


class CallOutputs:
    def __init__(self, cfg: Config, index: int, ctx: zmq.Context[Any], node: str) -> None:
        d = cfg.delivery
        self.webhooks = WebhookDispatcher(
            [Endpoint(h.url, h.secret) for h in tenants.all_webhooks(cfg)],
            cfg.spool_path(index),
            timeout=d.webhook_timeout_s, backoff=d.webhook_backoff_s,
            max_backoff=d.webhook_max_backoff_s, horizon=d.webhook_horizon_s,
            spool_max=d.webhook_spool_max,
        )  # fmt: skip
        self.feed: CaptionFeed | None = None
        if cfg.captions.enabled:
            endpoint = f"tcp://127.0.0.1:{cfg.captions.feed_port}"
            self.feed = CaptionFeed(ctx, endpoint, node)
        self.sinks: list[ResultSink[TenantCall]] = [WebhookSink(self.webhooks)]
        if self.feed is not None:
            self.sinks.append(CaptionSink(self.feed))
        self.index = index
        self._path: Path = active_calls.path_for(cfg.runtime_path(), index)
        self._rows: list[dict[str, Any]] = []
        self._next_list = 0.0

    def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.calls_changed([])  # none yet: replaces what a previous run of this index left

    def event(self, tenant: tenants.TenantPolicy, event: Event) -> None:
        """An event of a call that is not in this process (an orphan): to every sink here."""
        for sink in self.sinks:
            sink.event(PastCall(tenant), event)

    def calls_changed(self, rows: list[dict[str, Any]]) -> None:
        """The calls in progress changed (one started, ended, went on hold)."""
        self._rows = rows
        try:
            active_calls.publish(self._path, rows)
        except OSError as exc:
            log.warning("media process %d: cannot publish its calls: %s", self.index, exc)
        if self.feed is not None:
            self.feed.calls(rows)

    def tick(self, now: float) -> None:
        """Called every loop turn: the list goes to the captions server every LIST_EVERY_S."""
        if self.feed is not None and now >= self._next_list:
            self._next_list = now + LIST_EVERY_S
            self.feed.calls(self._rows)

    def close(self) -> None:
        self.webhooks.close()
        if self.feed is not None:
            self.feed.close()

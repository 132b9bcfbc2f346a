"""The media processes' Prometheus metrics: calls, frames, webhook delivery, what they see of
the workers, and every drop. Served, added up over all processes, by ``serve`` (see
``metrics_server``).

Defined once here, at import. With ``PROMETHEUS_MULTIPROC_DIR`` set (``serve`` sets it for its
children) each update lands in a per-process file; without it they are in-memory metrics
nobody reads. Nothing here is ever updated on PJSIP's clock thread: frame counts are copied
from the audio sender's own counters once a second (:func:`sync_counter`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from media.metric_sync import sync_counter

__all__ = ["sync_counter"]  # the media process syncs its own running counts with it

ACTIVE_CALLS = Gauge("sip_bridge_active_calls", "Calls in progress", multiprocess_mode="livesum")
CALLS = Counter(
    "sip_bridge_calls",
    "Calls by outcome: answered, refused (no tenant), over_capacity (503: every worker at"
    " capacity or behind), ended_by_caller, ended_by_bridge"
    " (rtp timeout, max duration, media error), shutdown, lost (their media process died)",
    ["outcome"],
)
FRAMES = Counter(
    "sip_bridge_frames",
    "20 ms audio frames: received from calls, sent to workers (runs of speech), dropped",
    ["stage"],  # received, sent, dropped_queue_full, dropped_worker_full
)
FINAL_LATENCY = Histogram(
    "sip_bridge_final_latency_seconds",
    "From the end of an utterance's speech (as received) to its final transcript here",
    buckets=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0),
)
WEBHOOKS = Counter(
    "sip_bridge_webhook_deliveries",
    "Webhook attempts by result: delivered, retried (failed, will retry), dead_letter,"
    " dropped (spool full)",
    ["result"],
)
ADMITTING = Gauge(
    "sip_bridge_admitting",
    "1 while the media processes take new calls (the highest view wins); 0 while every worker"
    " is at capacity or behind (inference.calls_per_worker, inference.max_backlog_s) and new"
    " INVITEs get 503",
    multiprocess_mode="livemax",
)
WORKER_UP = Gauge(
    "sip_bridge_worker_up",
    "1 while a media process hears an inference worker's heartbeats (the lowest view wins)",
    ["worker"],
    multiprocess_mode="min",
)
MEDIA_DROPS = Counter(
    "sip_bridge_media_dropped",
    "What a media process dropped on purpose, by reason",
    ["reason"],  # bad_result, stale_result, bad_heartbeat
)

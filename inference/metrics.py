"""The inference worker's Prometheus metrics (see ``sip_bridge.serve.metrics_server`` for how every
process's metrics are served as one endpoint by ``serve``).

Defined once here, at import: with ``PROMETHEUS_MULTIPROC_DIR`` set (``serve`` sets it for its
children) every update lands in a per-process file that the endpoint adds up; without it they
are ordinary in-memory metrics nobody reads. Updates cost a few microseconds: they are made per
batch, per utterance and per VAD pass, never per audio sample.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from media.metric_sync import sync_counter

__all__ = ["sync_counter"]  # the worker syncs its own running counts with it

VAD_AUDIO_SECONDS = Counter(
    "sip_bridge_vad_audio_seconds",
    "Call audio the VAD judged, by verdict (speech ratio: speech / (speech + silence))",
    ["verdict"],
)
BATCH_SIZE = Histogram(
    "sip_bridge_batch_size",
    "Clips per model batch, by kind (finals, partials)",
    ["kind"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
)
QUEUE_WAIT = Histogram(
    "sip_bridge_queue_wait_seconds",
    "From a clip being ready to its batch starting, by kind",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UTTERANCES = Counter(
    "sip_bridge_utterances",
    "Utterances ended, by why: silence (vad.min_silence_ms), turn (a short pause after a "
    "sentence, vad.turn_cue), max_length, flush (the call ended)",
    ["reason"],
)
MODEL_SECONDS = Counter("sip_bridge_model_seconds", "Time spent in the speech model", ["kind"])
WORKER_DROPS = Counter(
    "sip_bridge_worker_dropped",
    "What a worker dropped on purpose, by reason",
    ["reason"],  # bad_message, stale_message, unknown_call, partial_too_late, results_not_read
)

"""The operator's endpoint of a real ``sip-bridge serve`` (issue 6, point 5): after a real call,
/metrics (Prometheus text, every process added up) shows the call, its frames, the VAD's
verdicts, batches and their waits, the end-of-speech → final latency, webhook deliveries,
worker liveness and the front's counters; /healthz and /readyz answer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.metrics import get, scrape, value
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.sipp import run_calls
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_e2e import check_call, make_call

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
]


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    overrides = {"media": {"processes": 2}, "inference": {"workers": 1}}
    with serving(tmp_path_factory.mktemp("metrics"), overrides, receiver.url) as b:
        yield b


def test_health_and_readiness(bridge: RunningBridge) -> None:
    assert get(bridge, "/healthz") == (200, b'{"status":"alive"}')
    status, body = get(bridge, "/readyz")
    doc = json.loads(body)
    assert status == 200 and doc["ready"] is True, doc
    assert doc["parts"]["media 0"] == doc["parts"]["worker 0"] == doc["parts"]["front"] == "up"
    assert doc["parts"]["front rotation"] == "2 media process(es) active"
    assert get(bridge, "/nothing")[0] == 404


def test_a_call_shows_in_every_family(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    before = scrape(bridge)
    prompts = speech.select(2, min_s=2.0, max_s=5.0, stride=19)
    (result,) = run_calls([make_call(tmp_path, bridge, prompts, "metered")])
    ended = check_call(result, receiver)
    finals = len(ended["utterances"])  # type: ignore[arg-type]
    # The media process copies its running counts once a second; webhooks are async.
    deadline_samples = None
    for _ in range(50):
        samples = scrape(bridge)
        if value(samples, "sip_bridge_webhook_deliveries_total", result="delivered") >= 2 + finals:
            deadline_samples = samples
            break
        time.sleep(0.1)  # polling for the once-a-second copy, bounded above
    assert deadline_samples is not None, "webhook deliveries never counted"
    s = deadline_samples

    def grew(metric: str, **labels: str) -> float:
        return value(s, metric, **labels) - value(before, metric, **labels)

    assert grew("sip_bridge_calls_total", outcome="answered") == 1
    assert grew("sip_bridge_calls_total", outcome="ended_by_caller") == 1
    assert value(s, "sip_bridge_active_calls") == 0
    audio_s = sum(p.seconds for p in prompts)
    received = grew("sip_bridge_frames_total", stage="received")
    assert received >= audio_s * 50 * 0.9, received  # 50 frames a second, the silences too
    assert 0 < grew("sip_bridge_frames_total", stage="sent") <= received
    speech_s = grew("sip_bridge_vad_audio_seconds_total", verdict="speech")
    silence_s = grew("sip_bridge_vad_audio_seconds_total", verdict="silence")
    assert 0.5 * audio_s < speech_s < 1.5 * audio_s and silence_s > 0, (speech_s, silence_s)
    assert grew("sip_bridge_batch_size_count", kind="final") >= 1
    assert grew("sip_bridge_queue_wait_seconds_count", kind="final") >= finals
    latencies = grew("sip_bridge_final_latency_seconds_count")
    assert latencies == finals, (latencies, finals)
    mean = grew("sip_bridge_final_latency_seconds_sum") / latencies
    assert 0.1 < mean < 5.0, mean  # endpointing waits ~0.5 s of silence, then the model runs
    assert value(s, "sip_bridge_worker_up", worker="0") == 1
    assert value(s, "sip_bridge_process_up") == value(s, "sip_bridge_process_up", role="front") + 4
    assert value(s, "sip_bridge_front_destination_active") == 2
    front = {
        dict(ls)["name"]: v for (n, ls), v in s.items() if n == "sip_bridge_front_statistic_total"
    }
    assert front["core:rcv_requests"] > 0 and "sl:5xx_replies" in front, front
    assert value(s, "sip_bridge_draining") == 0

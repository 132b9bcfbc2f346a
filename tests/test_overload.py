"""Overload (issue 6, point 2) on a real ``sip-bridge serve`` sized for 4 calls (2 media
processes x 2): six sipp calls at once (1.5x capacity). Exactly the two beyond capacity are
refused at the front with 503 and Retry-After, counted in /metrics; the four admitted are
transcribed as usual. (What overload does to admitted calls' latency is measured by
bench/overload.py, not here.)"""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.sipp import can_play_pcap, run_calls
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_e2e import check_call, events_of, make_call

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (speech.available() and shutil.which("kamailio") and shutil.which("sipp")),
        reason="needs kamailio, sipp and asterisk-core-sounds-en-wav",
    ),
    pytest.mark.skipif(not can_play_pcap(), reason="sipp needs CAP_NET_RAW to play pcap audio"),
]

CAPACITY = 4


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    overrides = {"media": {"processes": 2, "calls_per_process": 2}, "inference": {"workers": 1}}
    with serving(tmp_path_factory.mktemp("overload"), overrides, receiver.url) as b:
        yield b


def front_5xx(bridge: RunningBridge) -> float:
    url = f"http://127.0.0.1:{bridge.config['metrics']['port']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "sip_bridge_front_statistic_total"
        and s.labels.get("name") in ("sl:5xx_replies", "tmx:5xx_transactions")
    )


def test_one_and_a_half_times_capacity_refuses_the_excess_with_503(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    before = front_5xx(bridge)
    prompts = speech.select(int(CAPACITY * 1.5), min_s=3.0, max_s=5.0, stride=3)
    calls = [make_call(tmp_path, bridge, [p], f"load{n}") for n, p in enumerate(prompts)]
    results = run_calls(calls)
    admitted = [(p, r) for p, r in zip(prompts, results, strict=True) if r.final_status == 200]
    refused = [r for r in results if r.final_status != 200]
    assert len(admitted) == CAPACITY, [r.final_status for r in results]
    for r in refused:
        assert r.final_status == 503, r.final_status
        answer = next(m for m in r.messages if m.direction == "received" and m.status == 503)
        assert answer.header("Retry-After") == "5", answer
        assert events_of(receiver, r.call_id) == []  # never reached a media process
    for prompt, result in admitted:
        ended = check_call(result, receiver)
        assert speech.wer([prompt.text], [str(ended["text"])]) <= 0.34, (prompt.text, ended)
    # Kamailio counts its 503s; the metrics endpoint shows them (refreshed once a second).
    deadline = time.monotonic() + 5
    while front_5xx(bridge) - before < len(refused) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling, bounded by the deadline
    assert front_5xx(bridge) - before >= len(refused)

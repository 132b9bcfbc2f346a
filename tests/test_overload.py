"""Overload (issue 6, point 2) on a real ``sip-bridge serve`` sized for 4 calls (2 media
processes x 2): six sipp calls at once (1.5x capacity). Exactly the two beyond capacity are
refused at the front with 503 and Retry-After, counted in /metrics; the four admitted are
transcribed as usual. (What overload does to admitted calls' latency is measured by
bench/overload.py, not here.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.metrics import front_statistic
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.sipp import run_calls
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_e2e import check_call, events_of, make_call

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
]

CAPACITY = 4
# Kamailio counts its 5xx replies in two places: stateless replies (sl) and transactions (tm).
FRONT_5XX = ("sl:5xx_replies", "tmx:5xx_transactions")


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    overrides = {"media": {"processes": 2, "calls_per_process": 2}, "inference": {"workers": 1}}
    with serving(tmp_path_factory.mktemp("overload"), overrides, receiver.url) as b:
        yield b


def test_one_and_a_half_times_capacity_refuses_the_excess_with_503(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    before = front_statistic(bridge, *FRONT_5XX)
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
    while (
        front_statistic(bridge, *FRONT_5XX) - before < len(refused) and time.monotonic() < deadline
    ):
        time.sleep(0.2)  # polling, bounded by the deadline
    assert front_statistic(bridge, *FRONT_5XX) - before >= len(refused)

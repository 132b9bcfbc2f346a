"""Admission by the workers' capacity (issue 14, capability 3) on a real ``sip-bridge serve``:
one worker that takes two calls (``inference.calls_per_worker: 2``) behind two media processes
with eight call slots, so the slots are not the limit. The front refuses what is beyond the
workers' capacity with 503 and Retry-After, counted and logged. (The media processes' own check,
from the workers' heartbeats, is tested in tests/test_media_process.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.metrics import front_statistic, scrape
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.sipp import run_calls
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_e2e import check_call, events_of, make_call

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
]

CALLS_PER_WORKER = 2
OVER_CAPACITY = "script:over_capacity"  # the front's count of its refusals for capacity


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    overrides = {
        "media": {"processes": 2},
        "inference": {"workers": 1, "calls_per_worker": CALLS_PER_WORKER},
    }
    with serving(tmp_path_factory.mktemp("admission"), overrides, receiver.url) as b:
        yield b


def test_a_burst_beyond_the_workers_capacity_gets_503_at_the_front_and_later_calls_are_taken(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Five INVITEs at once: the workers' heartbeats cannot count them in time, the front's
    count of its calls can. Exactly two are taken, three refused at once; once the two have
    ended, the next call is taken."""
    refused_before = front_statistic(bridge, OVER_CAPACITY)
    prompts = speech.select(2 * 5 + 1, min_s=3.0, max_s=5.0, stride=5)
    burst = [make_call(tmp_path, bridge, prompts[2 * n : 2 * n + 2], f"burst{n}") for n in range(5)]
    results = run_calls(burst)
    admitted = [(n, r) for n, r in enumerate(results) if r.final_status == 200]
    refused = [r for r in results if r.final_status != 200]
    assert len(admitted) == CALLS_PER_WORKER, [r.final_status for r in results]
    for r in refused:
        assert r.final_status == 503, r.final_status
        answer = next(m for m in r.messages if m.direction == "received" and m.status == 503)
        assert answer.header("Retry-After") == "5", answer
        assert events_of(receiver, r.call_id) == []  # never reached a media process
    for n, result in admitted:
        ended = check_call(result, receiver)
        text = " ".join(p.text for p in prompts[2 * n : 2 * n + 2])
        assert speech.wer([text], [str(ended["text"])]) <= 0.34, (text, ended)
    deadline = time.monotonic() + 5
    while front_statistic(bridge, OVER_CAPACITY) - refused_before < len(refused):
        assert time.monotonic() < deadline, front_statistic(bridge, OVER_CAPACITY) - refused_before
        time.sleep(0.2)  # the metrics endpoint refreshes the front's counters once a second
    log = bridge.log_text()
    assert log.count("the host is at its capacity of 2 calls") == 1  # once a minute
    # The media processes see the calls gone with the worker's next heartbeat.
    deadline = time.monotonic() + 10
    while scrape(bridge).get(("sip_bridge_admitting", ())) != 1:
        assert time.monotonic() < deadline, scrape(bridge).get(("sip_bridge_admitting", ()))
        time.sleep(0.2)  # the media processes copy it into /metrics once a second
    after = make_call(tmp_path, bridge, [prompts[-1]], "after").start().wait(40)
    check_call(after, receiver)

"""Tenants end to end: ``sip-bridge serve`` with three tenants, real sipp calls playing recorded
prompts through the front, and one webhook receiver per tenant plus the operator's. Each call
is recognised by its selector (source address, dialled number, SIP header); its events go to
its tenant's webhooks, signed with that tenant's secret, and to the operator's, never to another
tenant's; INFO follows the tenant's setting; unknown callers and calls over a tenant's limit are
refused by the front."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sip_bridge.delivery.webhooks import verify
from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.raw_uac import invite_status
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall, run_calls
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
]

NAMES = ("operator", "acme", "globex", "initech")


@pytest.fixture(scope="module")
def hooks() -> Iterator[dict[str, WebhookReceiver]]:
    receivers = {name: WebhookReceiver() for name in NAMES}
    yield receivers
    for rx in receivers.values():
        rx.close()


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, hooks: dict[str, WebhookReceiver]
) -> Iterator[RunningBridge]:
    def hook(name: str) -> list[dict[str, str]]:
        return [{"url": hooks[name].url, "secret": f"{name}-secret"}]

    changes: dict[str, Any] = {
        "webhooks": hook("operator"),
        "tenants": [
            {
                "name": "acme",
                "match": [{"source": "127.0.0.2"}],
                "max_calls": 1,
                "webhooks": hook("acme"),
            },
            {
                "name": "globex",
                "match": [{"to_user": "5550(100|101)"}],
                "sip_info": False,
                "webhooks": hook("globex"),
            },
            {
                "name": "initech",
                "match": [{"header": "X-Customer: initech"}],
                "webhooks": hook("initech"),
            },
        ],  # fmt: skip
        "unknown_tenant": {"status": 404, "reason": "No such number"},
    }
    with serving(tmp_path_factory.mktemp("bridge"), changes, None) as b:
        yield b


def sipp_call(
    tmp: Path, bridge: RunningBridge, name: str, prompt: speech.Prompt, **how: Any
) -> SippCall:
    pcm = join_with_silence([prompt.pcm()], gap_s=1.0, lead_s=0.5, tail_s=0.5)
    seconds = write_rtp_pcap(tmp / f"{name}.pcap", pcm)
    return SippCall("127.0.0.1", bridge.port, tmp / f"{name}.pcap", "PCMU", audio_s=seconds,
                    linger_s=3.0, work_dir=tmp / name, **how)  # fmt: skip


def call_ids(rx: WebhookReceiver) -> set[str]:
    return {p.json()["sip_call_id"] for p in rx.posts}


def test_each_tenants_calls_go_to_its_webhooks_only(
    bridge: RunningBridge, hooks: dict[str, WebhookReceiver], tmp_path: Path
) -> None:
    prompts = speech.select(3, min_s=2.0, max_s=5.0, stride=5)
    calls = {
        "acme": sipp_call(tmp_path, bridge, "acme", prompts[0], local_ip="127.0.0.2"),
        "globex": sipp_call(tmp_path, bridge, "globex", prompts[1], service="5550101"),
        "initech": sipp_call(
            tmp_path, bridge, "initech", prompts[2], extra_headers="X-Customer: initech\n"
        ),  # fmt: skip
    }
    results = dict(zip(calls, run_calls(list(calls.values())), strict=True))
    for name, result in results.items():
        assert result.ok and result.final_status == 200, (name, result.stderr, result.errors)
        rx = hooks[name]
        assert rx.wait_for(
            lambda posts, r=result: any(p.json()["type"] == "call.ended"
                                        and p.json()["sip_call_id"] == r.call_id for p in posts),
            timeout=30,
        ), name  # fmt: skip
    everyone = {r.call_id for r in results.values()}
    for name, result in results.items():
        assert call_ids(hooks[name]) == {result.call_id}, name  # its own call, no other
        for post in hooks[name].posts:
            assert verify(f"{name}-secret", post.body, post.headers["X-Signature"])
            assert not verify("operator-secret", post.body, post.headers["X-Signature"])
    assert call_ids(hooks["operator"]) >= everyone
    for post in hooks["operator"].posts:
        assert verify("operator-secret", post.body, post.headers["X-Signature"])
    # The front's tenant stamp is ours: never passed on as one of the caller's headers.
    started = [p.json() for p in hooks["operator"].posts if p.json()["type"] == "call.started"]
    assert all("X-Bridge-Tenant" not in e["headers"] for e in started)
    initech = next(e for e in started if e["sip_call_id"] == results["initech"].call_id)
    assert initech["headers"] == {"X-Customer": "initech"}
    # globex turned SIP INFO off; the others get each final in the call.
    assert not results["globex"].info_bodies
    assert results["acme"].info_bodies and results["initech"].info_bodies
    ended = [p.json() for p in hooks["globex"].posts if p.json()["type"] == "call.ended"]
    assert speech.wer([prompts[1].text], [ended[0]["text"]]) <= 0.3, ended[0]["text"]


def test_unknown_callers_and_calls_over_a_limit_are_refused(
    bridge: RunningBridge, tmp_path: Path
) -> None:
    assert invite_status("127.0.0.1", bridge.port, user="999") == 404
    # Kamailio's NOTICE lines go to its log file, not the console.
    assert bridge.wait_for_front_log("no tenant matches, 404", timeout=5)
    # Round the front, straight to a media process, even with a forged stamp: refused too.
    media = bridge.config["media"]["sip_port_base"]
    assert invite_status("127.0.0.1", media, extra="X-Bridge-Tenant: nobody\r\n") == 404
    assert bridge.wait_for_log("'nobody', not a tenant of ours; refused with 404", timeout=5)
    # acme may have one call at a time: a second one while it lasts is busy.
    prompt = speech.select(1, min_s=4.0, max_s=8.0)[0]
    answered = bridge.log_text().count(": answered (sip ")
    first = sipp_call(tmp_path, bridge, "long", prompt, local_ip="127.0.0.2").start()
    try:
        assert bridge.wait_for_count(": answered (sip ", answered + 1, timeout=15)
        assert invite_status("127.0.0.1", bridge.port, local_ip="127.0.0.2") == 486
        # Another tenant is not affected.
        assert invite_status("127.0.0.1", bridge.port, user="5550100") == 200
        assert first.wait().ok
    finally:
        first.kill()
    assert invite_status("127.0.0.1", bridge.port, local_ip="127.0.0.2") == 200

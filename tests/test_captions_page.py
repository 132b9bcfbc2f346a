"""The captions page in a real headless Chromium, against ``sip-bridge serve`` taking a real sipp
call that plays recorded prompts: the page lists the call while it is live, shows its partials,
replaces them by the finals, and ends with the final text the webhooks got."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import browser, speech
from tests.support.bridge import RunningBridge, serving
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
    pytest.mark.skipif(not browser.available(), reason="needs chromium, chromium-driver, selenium"),
]

TOKEN = "page-test-operator-token-0123"
# Counts every partial line the page ever shows (they are replaced, so look as they come).
WATCH_PARTIALS = """
window.partialsSeen = new Set();
new MutationObserver(() => {
  for (const el of document.querySelectorAll('.line.partial')) {
    window.partialsSeen.add(el.closest('.call').dataset.callId + '/' + el.dataset.utterance);
  }
}).observe(document.getElementById('calls'),
           {subtree: true, childList: true, attributes: true, characterData: true});
"""


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    # Partials every 500 ms, so that each prompt shows some before its final.
    changes = {"captions": {"tokens": [TOKEN]}, "inference": {"partial_interval_ms": 500}}
    with serving(tmp_path_factory.mktemp("bridge"), changes, receiver.url) as b:
        yield b


@pytest.fixture
def page(bridge: RunningBridge, tmp_path: Path) -> Iterator[Any]:
    with browser.chromium(tmp_path / "profile") as driver:
        driver.set_script_timeout(10)
        yield driver


def page_url(bridge: RunningBridge) -> str:
    return f"http://127.0.0.1:{bridge.config['captions']['port']}/"


def wait(driver: Any, what: str, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except Exception as exc:
        body = driver.find_element("tag name", "body").text
        raise AssertionError(f"{what} not seen in {timeout} s; the page says:\n{body}") from exc


def webhook_events(receiver: WebhookReceiver, sip_call_id: str) -> list[dict[str, Any]]:
    """The call's events as the webhook got them, once its call.ended is in."""

    def of_call(posts: list[Any]) -> list[dict[str, Any]]:
        return [p.json() for p in posts if p.json()["sip_call_id"] == sip_call_id]

    ok = receiver.wait_for(lambda posts: any(e["type"] == "call.ended" for e in of_call(posts)), 30)
    assert ok, "no call.ended webhook"
    return of_call(receiver.posts)


def card(driver: Any, sip_call_id: str) -> Any:
    found = driver.find_elements("css selector", f'.call[data-sip-call-id="{sip_call_id}"]')
    return found[0] if found else None


def finals_of(driver: Any, sip_call_id: str) -> list[str]:
    """The texts of the final lines the page shows for a call (none if it shows no card)."""
    found = card(driver, sip_call_id)
    if found is None:
        return []
    return [e.text for e in found.find_elements("css selector", ".line.final .text")]


def open_page(driver: Any, bridge: RunningBridge) -> None:
    driver.get(page_url(bridge) + f"#token={TOKEN}")
    wait(driver, "status live", lambda d: d.find_element("id", "status").text == "live")


def start_call(
    tmp: Path, bridge: RunningBridge, prompts: list[speech.Prompt], gap_s: float
) -> SippCall:
    pcm = join_with_silence([p.pcm() for p in prompts], gap_s=gap_s, lead_s=0.5, tail_s=0.5)
    seconds = write_rtp_pcap(tmp / "call.pcap", pcm)
    return SippCall("127.0.0.1", bridge.port, tmp / "call.pcap", "PCMU", audio_s=seconds,
                    linger_s=3.0, work_dir=tmp / "sipp").start()  # fmt: skip


def test_the_page_shows_a_live_call_and_its_final_text(
    bridge: RunningBridge, receiver: WebhookReceiver, page: Any, tmp_path: Path
) -> None:
    prompts = speech.select(2, min_s=3.0, max_s=6.0, stride=3)
    open_page(page, bridge)
    assert "token" not in page.current_url  # the page dropped it from the address bar
    page.execute_script(WATCH_PARTIALS)
    call = start_call(tmp_path, bridge, prompts, gap_s=1.5)
    try:
        live = wait(page, "the live call", lambda d: card(d, call.call_id), timeout=20)
        assert live.find_element("css selector", ".state").text == "live"
        assert "transcribe@" in live.find_element("css selector", ".parties").text
        wait(page, "a final while the call is live", lambda d: finals_of(d, call.call_id))
        assert "ended" not in live.get_attribute("class")
        result = call.wait()
    finally:
        call.kill()
    assert result.ok, result.stderr
    wait(page, "the call ended", lambda d: "ended" in card(d, call.call_id).get_attribute("class"))
    ended = card(page, call.call_id)
    shown = finals_of(page, call.call_id)
    assert ended.find_elements("css selector", ".line.partial") == []  # all replaced
    seen = page.execute_script("return [...window.partialsSeen]")
    assert seen, "no partial was ever shown"

    # The page's finals are the webhook's, word for word, and they say what was played.
    events = webhook_events(receiver, call.call_id)
    finals = [e["text"] for e in events if e["type"] == "transcript.final"]
    assert shown == finals
    error = speech.wer([" ".join(p.text for p in prompts)], [" ".join(shown)])
    assert error <= 0.3, (shown, [p.text for p in prompts])
    assert ended.find_element("css selector", ".state").text.startswith("ended: ")


def test_a_wrong_token_asks_for_the_right_one(bridge: RunningBridge, page: Any) -> None:
    page.get(page_url(bridge) + "#token=not-the-right-token-at-all")
    wait(page, "the sign-in form", lambda d: d.find_element("id", "sign-in").is_displayed())
    assert "not accepted" in page.find_element("id", "sign-in-error").text
    page.find_element("id", "token").send_keys(TOKEN)
    page.find_element("css selector", "#sign-in button").click()
    wait(page, "status live", lambda d: d.find_element("id", "status").text == "live")
    assert not page.find_element("id", "sign-in").is_displayed()
    # A reload keeps the session (the HttpOnly cookie), with no token in sight.
    page.refresh()
    wait(
        page, "status live after a reload", lambda d: d.find_element("id", "status").text == "live"
    )
    assert page.execute_script("return document.cookie") == ""  # HttpOnly: not for scripts


def test_the_page_rides_out_a_captions_server_killed_mid_call(
    bridge: RunningBridge, receiver: WebhookReceiver, page: Any, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess

    prompts = speech.select(3, min_s=2.0, max_s=4.0, stride=7)
    open_page(page, bridge)
    call = start_call(tmp_path, bridge, prompts, gap_s=4.0)
    try:
        wait(page, "the first final", lambda d: finals_of(d, call.call_id))
        first = finals_of(page, call.call_id)[0]
        pid = subprocess.run(
            ["pgrep", "-f", f"sip_bridge.cli captions .*{bridge.config_path}"],
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        assert len(pid) == 1, pid
        starts = bridge.log_text().count("captions page on http://")
        os.kill(int(pid[0]), signal.SIGKILL)
        assert bridge.wait_for_count("captions page on http://", starts + 1, timeout=20)
        result = call.wait()
    finally:
        call.kill()
    assert result.ok, result.stderr
    wait(page, "status live again", lambda d: d.find_element("id", "status").text == "live")
    wait(page, "the call ended", lambda d: "ended" in card(d, call.call_id).get_attribute("class"))
    ended = card(page, call.call_id)
    shown = finals_of(page, call.call_id)
    events = webhook_events(receiver, call.call_id)
    finals = [e["text"] for e in events if e["type"] == "transcript.final"]
    reason = next(e["reason"] for e in events if e["type"] == "call.ended")
    # What was shown before the kill stays; what was said after the restart arrives; the call
    # ends with its real reason (the new server heard its call.ended).
    assert shown[0] == first == finals[0]
    assert shown[-1] == finals[-1] and set(shown) <= set(finals)
    assert ended.find_element("css selector", ".state").text == f"ended: {reason}"

"""The captions page in a real headless Chromium, against ``sip-bridge serve`` taking a real sipp
call that plays recorded prompts: the page lists the call while it is live, shows its partials,
replaces them by the finals, and ends with the final text the webhooks got. And against a
captions server alone, fed real events of a SIPREC session and of tagged legs: the page names
who speaks and shows the legs as one conversation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from media.wire import Transcript
from sip_bridge.captions.feed import CaptionFeed
from sip_bridge.delivery.events import CallEvents, CallInfo, Conversation, Event, Person
from sip_bridge.settings.checks import validate
from sip_bridge.settings.config import CaptionsConfig, Config
from sip_bridge.siprec.speakers import Speaker
from tests.support import browser, speech
from tests.support.bridge import RunningBridge, serving
from tests.support.captions import Running
from tests.support.ports import free_tcp_port
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


def _said(c: CallEvents, u: int, text: str, at: float, final: bool = True,
          stream: str | None = None, who: Person | None = None) -> Event:  # fmt: skip
    event = c.transcript(Transcript(c.info.call_id, u, final, text, at, at + 0.5, 0.9), stream, who)
    assert event is not None
    return event


def test_the_page_names_speakers_and_shows_legs_as_one_conversation(tmp_path: Path) -> None:
    cfg = validate(Config(captions=CaptionsConfig(port=free_tcp_port(), feed_port=free_tcp_port(),
                                                  tokens=(TOKEN,)),
                          runtime_dir=str(tmp_path / "run")), "test")  # fmt: skip
    server = Running(cfg)
    ctx: zmq.Context[Any] = zmq.Context()
    feed = CaptionFeed(ctx, f"tcp://127.0.0.1:{cfg.captions.feed_port}", "host/media0")
    try:
        while "host/media0" not in server.server.hub.nodes:  # until the SUB hears the PUB
            feed.calls([])
            time.sleep(0.05)
        alice = Speaker("p1", "Alice", "sip:alice@atlanta.example", "96")
        bob = Speaker("p2", None, "sip:bob@biloxi.example", "97")

        def call(n: int, conversation: Conversation, started_at: float) -> CallEvents:
            info = CallInfo(f"{n:032x}", f"{n}@pbx", "<sip:a@pbx>", "<sip:t@us>", "PCMU/8000",
                            8000, "host/media0")  # fmt: skip
            return CallEvents(info, started_at=started_at, conversation=conversation)

        session = call(1, Conversation("rs-1@src", "siprec"), 1000.0)
        tag = Conversation("conv-42", "legs")
        leg_a, leg_b = call(2, tag, 1000.0), call(3, tag, 1001.0)
        caller, callee = Speaker(None, "caller", None, ""), Speaker(None, "callee", None, "")
        events = [
            session.started((("96", alice), ("97", bob)), (alice, bob)),
            _said(session, 0, "hello bob", 0.2, stream="96", who=alice),
            _said(session, 0, "hi alice", 1.0, stream="97", who=bob),
            _said(session, 1, "how are", 2.0, final=False, stream="96", who=alice),
            _said(session, 1, "fine th", 2.1, final=False, stream="97", who=bob),
            leg_a.started((), (caller,)),
            leg_b.started((), (callee,)),
            _said(leg_a, 0, "is anyone there", 0.5, who=caller),  # at 1000.5
            _said(leg_b, 0, "yes hello", 0.2, who=callee),  # at 1001.2
            _said(leg_a, 1, "good", 2.0, who=caller),  # at 1002.0
        ]
        for event in events:
            feed.event("", event.body)
        with browser.chromium(tmp_path / "profile") as page:
            port = cfg.captions.port
            page.get(f"http://127.0.0.1:{port}/#token={TOKEN}")

            def lines(d: Any, selector: str) -> list[str]:
                return [e.text for e in d.find_elements("css selector", selector)]

            session_lines = f'.call[data-call-id="{session.info.call_id}"] .line'
            wait(page, "the session's lines", lambda d: len(lines(d, session_lines)) == 4)
            assert lines(page, session_lines) == [
                "00:00 Alice: hello bob",
                "00:01 sip:bob@biloxi.example: hi alice",  # no name: the address
                "00:02 Alice: how are",  # both streams' partials at once
                "00:02 sip:bob@biloxi.example: fine th",
            ]
            assert len(page.find_elements("css selector", f"{session_lines}.partial")) == 2
            header = page.find_element(
                "css selector", f'.call[data-call-id="{session.info.call_id}"] header'
            )
            assert "stream 96: Alice" in header.text
            # The legs: one card, a row each, their lines interleaved by the wall clock.
            (card,) = page.find_elements("css selector", '.call[data-conversation-id="conv-42"]')
            assert len(card.find_elements("css selector", ".leg")) == 2
            wait(
                page,
                "the legs' lines",
                lambda d: len(card.find_elements("css selector", ".line")) == 3,
            )
            assert [e.text for e in card.find_elements("css selector", ".line .speaker")] == [
                "caller:", "callee:", "caller:"]  # fmt: skip
            assert [e.text for e in card.find_elements("css selector", ".line .text")] == [
                "is anyone there", "yes hello", "good"]  # fmt: skip
            feed.event("", leg_a.ended_event("200 OK", 3.0).body)
            wait(page, "leg a ended", lambda d: "ended: 200 OK" in card.text)
            assert "ended" not in card.get_attribute("class")  # leg b goes on
            feed.event("", leg_b.ended_event("200 OK", 3.0).body)
            wait(page, "the conversation ended", lambda d: "ended" in card.get_attribute("class"))
    finally:
        feed.close()
        ctx.term()
        server.close()

"""The malformed-SIP corpus (tests/support/sip_fuzz.py) against the real thing: ``sip-bridge serve``
(Kamailio, two PJSUA2 media processes, the Moonshine worker). Every case goes to the front, where
it must get what RFC 3261 requires; then every case goes straight to a media process's SIP port
(PJSIP), which only the front reaches in production. Afterwards no process has died or been
restarted, no call is left at a media process or in the front's dispatcher, and a real call is
still transcribed."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip_bridge.front import kamailio
from tests.support import sip_fuzz, sip_fuzz_corpus, speech
from tests.support.bridge import RunningBridge, serving
from tests.support.lone_media import lone_media
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.rtp_fuzz import Caller
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import WebhookReceiver

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
    with serving(tmp_path_factory.mktemp("fuzz-bridge"), overrides, receiver.url) as b:
        yield b


def started(bridge: RunningBridge) -> dict[str, list[int]]:
    """Every part serve started, with the pid of each start (a restart adds one)."""
    found: dict[str, list[int]] = {}
    for name, pid in re.findall(r"(\w+(?: \d+)?) started \(pid (\d+)\)", bridge.log_text()):
        found.setdefault(name, []).append(int(pid))
    return found


def kamailio_files(bridge: RunningBridge) -> kamailio.KamailioFiles:
    rundir = Path(bridge.config["runtime_dir"])
    return kamailio.files_in(rundir)


def listed_calls(bridge: RunningBridge) -> list[dict[str, object]]:
    cli = [sys.executable, "-m", "sip_bridge.cli", "calls", "--json", "--config",
           str(bridge.config_path)]  # fmt: skip
    out = subprocess.run(cli, capture_output=True, text=True, check=True, timeout=30).stdout
    calls: list[dict[str, object]] = json.loads(out)
    return calls


def assert_nothing_leaked_or_died(bridge: RunningBridge, before: dict[str, list[int]]) -> None:
    assert bridge.proc.poll() is None, bridge.log_text()[-3000:]
    assert started(bridge) == before, "a part died and was restarted"
    for pids in before.values():
        os.kill(pids[-1], 0)  # still there
    files = kamailio_files(bridge)
    # The calls that an odd offer opened were hung up (BYE): each media process forgets its
    # call once the worker's last results are in, and the front's load goes back to zero.
    wait_until("no call listed", lambda: listed_calls(bridge) == [], 15)
    wait_until(
        "dispatcher load 0",
        lambda: all(d.load == 0 and d.active for d in kamailio.destinations(files)),
        15,
    )


def test_the_front_answers_each_malformed_request_as_sip_requires(
    bridge: RunningBridge,
) -> None:
    before = started(bridge)
    cases = sip_fuzz_corpus.corpus()
    assert len(cases) >= 200
    t0 = time.monotonic()
    outcomes = sip_fuzz.fire(cases, "127.0.0.1", bridge.port)
    wrong = [o.describe() for o in outcomes if not o.ok]
    assert not wrong, "\n".join(wrong)
    assert time.monotonic() - t0 < 60
    finals = Counter(o.final for o in outcomes)
    # Not everything dropped: the front answered most of the corpus, each with its rule's code.
    assert sum(n for code, n in finals.items() if code is not None) > len(cases) // 2, finals
    hung_up = [o for o in outcomes if o.hung_up]
    assert hung_up and all(o.bye_status == 200 for o in hung_up), [o.describe() for o in hung_up]
    assert "method not in upper case, 501" in bridge.front_log_text()
    assert_nothing_leaked_or_died(bridge, before)


# What PJSIP does differently from the front, and why that is acceptable there: the media processes
# listen on 127.0.0.1 and only the front (which answers all of these itself) talks to them.
PJSIP_DROPS = (
    "PJSIP's parser drops what it cannot parse (oversized, bad URIs, unknown methods it has no "
    "handler for) and takes the end of a UDP datagram as the end of its body"
)


def test_a_media_process_survives_the_corpus_sent_straight_to_it(
    bridge: RunningBridge,
) -> None:
    before = started(bridge)
    port = int(bridge.config["media"]["sip_port_base"])
    cases = sip_fuzz_corpus.corpus()
    # Paced (0.6 s between groups): unpaced, the INVITE bursts abort PJSIP (the open finding
    # that the last test of this module reproduces), and nothing else would be tested here.
    outcomes = sip_fuzz.fire(cases, "127.0.0.1", port, pause_s=0.6)
    for o in outcomes:
        assert o.final is None or 200 <= o.final < 700, o.describe()
    # What must hold even there: offers are answered or refused as RFC 3264 says (486 when its
    # four call slots are busy with the odd offers it took, 503 over its call rate), what has no
    # usable Via or is no request gets nothing.
    strict = [o for o in outcomes if o.case.kind in ("sdp", "via", "not-a-request")]
    # Doubtful, not understood yet: in a burst, an INVITE with a valid offer that arrives while
    # the process tears down the calls it just took is now and then neither answered nor logged
    # by PJSIP (sdp-sendonly, sdp-inactive). Through the front that costs a failover (fr_timer),
    # not a call. Such a case must be answered right when sent again on its own.
    unanswered = [o.case for o in strict if o.final is None and not o.ok]
    again = {o.case.name: o for o in sip_fuzz.fire(unanswered, "127.0.0.1", port, pause_s=0.6)}
    strict = [again.get(o.case.name, o) for o in strict]
    # SRTP offers PJSIP cannot take it answers 406 (its own mapping of the SRTP error, made
    # before our code sees the call); the front answers those 488 first (route[SRTP]).
    wrong = [o.describe() for o in strict if not (
        o.ok or o.final in (486, 503) or ("crypto" in o.case.name and o.final == 406)
    )]  # fmt: skip
    assert not wrong, "\n".join(wrong)
    assert len(unanswered) <= 3, [c.name for c in unanswered]
    conforming = sum(o.ok for o in outcomes)
    assert conforming >= len(outcomes) // 2, f"{conforming} of {len(outcomes)}; {PJSIP_DROPS}"
    assert_nothing_leaked_or_died(bridge, before)


def test_a_real_call_is_still_transcribed_after_the_fuzzing(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    (prompt,) = speech.select(1, min_s=2.0, max_s=5.0, stride=7)
    pcm = join_with_silence([prompt.pcm()], lead_s=0.5, tail_s=0.5)
    pcap = tmp_path / "after.pcap"
    seconds = write_rtp_pcap(pcap, pcm)
    result = SippCall("127.0.0.1", bridge.port, pcap, "PCMU", audio_s=seconds, linger_s=3.0,
                      work_dir=tmp_path / "after").start().wait(60)  # fmt: skip
    assert result.ok, f"{result.errors}\n{bridge.log_text()[-3000:]}"
    assert result.info_bodies, "no caption came back as INFO"

    def ended() -> list[dict[str, object]]:
        return [p.json() for p in receiver.posts if p.json()["type"] == "call.ended"
                and p.json()["sip_call_id"] == result.call_id]  # fmt: skip

    wait_until("call.ended", lambda: bool(ended()), 30)
    (end,) = ended()
    assert speech.wer([prompt.text], [str(end["text"])]) <= 0.3, (prompt.text, end["text"])


@pytest.mark.parametrize("direction", ["sendonly", "inactive"])
def test_an_offer_that_starts_on_hold_is_answered_without_an_error(
    tmp_path: Path, direction: str
) -> None:
    """Fuzz finding: for an INVITE whose offer starts on hold, PJSUA has no stream to tap yet and
    getStreamInfo() raised pj.Error out of onCallMediaState, into PJSIP. It is answered, holds
    no tap, and hangs up cleanly; the process takes the next call."""
    with lone_media(tmp_path) as m:
        for offer in (direction, ""):
            caller = Caller(m.port)
            try:
                caller.invite(offer)
                assert caller.bye() == 200
            finally:
                caller.close()
        m.worker.wait_for(lambda msgs: any(msgs.values()), 10)  # the second call's audio
        assert "Traceback" not in m.log_text(), m.log_text()[-3000:]


def test_a_burst_of_short_calls_through_the_front_kills_no_media_process(
    bridge: RunningBridge,
) -> None:
    """Fuzz finding, fixed: 100 calls answered and hung up at once, 8 at a time, emptied PJSIP's
    ioqueue (64 handles; each INVITE takes two, free again 500 ms after its call ends) and the
    media process aborted on an assertion. The front now gives each media process at most
    media.max_call_rate new calls a second (then the next one, then 503 + Retry-After)."""
    before = started(bridge)
    (offer,) = [c for c in sip_fuzz_corpus.corpus() if c.name == "sdp-lf-only"]
    calls = [
        dataclasses.replace(
            offer, name=f"burst-{i}",
            template=offer.template.replace(b"fuzz$RUN$-", f"burst{i:03d}$RUN$-".encode()),
        )
        for i in range(100)
    ]  # fmt: skip
    outcomes = sip_fuzz.fire(calls, "127.0.0.1", bridge.port, accept_batch=8)
    finals = Counter(o.final for o in outcomes)
    assert set(finals) <= {200, 503}, finals
    assert finals[503] and finals[200] >= 10, finals  # the limit bit, and calls still got in
    assert bridge.wait_for_log("new calls/s, 503", timeout=5)
    assert_nothing_leaked_or_died(bridge, before)

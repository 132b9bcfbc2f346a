"""The life of a call in one real media process, driven by real sipp calls: codec refusal, caller
metadata, session timers, DTMF both ways, hold and codec change by re-INVITE, INFO refusals, and
the calls the bridge ends itself (no RTP, too long). The test plays the inference worker on real
ZeroMQ sockets (``lone_media``), so it sees what reaches a worker."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from media import wire
from tests.support import sip_fuzz, sip_fuzz_corpus, speech
from tests.support.dtmf_rtp import with_dtmf
from tests.support.lone_media import LoneMedia, lone_media
from tests.support.requirements import NEEDS_SIPP_PCAP_AND_PROMPTS
from tests.support.rtp_pcap import (
    PT_PCMA,
    join_with_silence,
    rtp_packets,
    write_packets_pcap,
    write_rtp_pcap,
)
from tests.support.sipp import SippCall, SippResult
from tests.support.sipp_steps import PCMU_WITH_EVENTS, Scenario, sdp

pytestmark = [
    pytest.mark.integration,
    NEEDS_SIPP_PCAP_AND_PROMPTS,
]

PCMA_WITH_EVENTS = {8: "PCMA/8000", 101: "telephone-event/8000"}


def run(m: LoneMedia, tmp: Path, name: str, xml: str, timeout: float = 60) -> SippResult:
    call = SippCall(
        "127.0.0.1", m.port, tmp / "none.pcap", audio_s=0, guard_s=timeout, scenario=xml,
        work_dir=tmp / name,
    )  # fmt: skip
    result = call.start().wait(timeout + 10)
    assert result.ok, f"{result.errors}\n{result.stderr}\nmedia log:\n{m.log_text()[-3000:]}"
    return result


def events(m: LoneMedia, count_ended: int = 1) -> list[dict[str, object]]:
    """Every webhook event, once ``count_ended`` calls have ended (10 s at most)."""

    def enough(posts: list[object]) -> bool:
        return sum(p.json()["type"] == "call.ended" for p in m.rx.posts) >= count_ended

    assert m.rx.wait_for(enough, 15), m.log_text()[-3000:]
    return [p.json() for p in m.rx.posts]


def speech_pcm(stride: int) -> np.ndarray:
    (prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=stride)
    return join_with_silence([prompt.pcm()], lead_s=0.5, tail_s=0.5)


def test_an_offer_with_no_codec_of_ours_gets_488_with_a_warning(tmp_path: Path) -> None:
    with lone_media(tmp_path) as m:
        xml = Scenario(offer=sdp({18: "G729/8000", 3: "GSM/8000"})).render_refused(488)
        result = run(m, tmp_path, "g729", xml)
        assert m.rx.posts == []  # no call, no events
    (refusal,) = [x for x in result.messages if x.status == 488]
    warning = refusal.header("Warning") or ""
    assert warning.startswith("399 ") and "codec" in warning, warning


def test_metadata_session_timer_dtmf_and_hold_in_one_call(tmp_path: Path) -> None:
    pcm = speech_pcm(stride=2)
    packets = [(i * 0.02, p) for i, p in enumerate(rtp_packets(pcm))]
    seconds = len(packets) * 0.02
    presses = [(0.2, "1"), (seconds - 0.4, "#")]
    pcap = tmp_path / "dtmf.pcap"
    write_packets_pcap(pcap, with_dtmf(packets, presses))
    # Speech played while on hold (as music on hold would be): must not reach a worker.
    held = join_with_silence([p.pcm() for p in speech.select(3, min_s=3.0, max_s=6.0)])
    held_pcap = tmp_path / "held.pcap"
    held_s = write_rtp_pcap(held_pcap, held)
    pcma = tmp_path / "pcma.pcap"
    write_rtp_pcap(pcma, pcm, PT_PCMA)
    scenario = Scenario(
        offer=sdp({0: "PCMU/8000", 9: "G722/8000", 101: "telephone-event/8000"}),
        headers=(
            "X-Customer-Id: 42", "x-queue: sales", "Other: not copied",
            "Session-Expires: 600;refresher=uac", "Supported: timer",
        ),
    )  # fmt: skip
    # "b" is the pad's B; "E" is no key of the pad (and not in the event contract): ignored.
    scenario.play(pcap, seconds + 0.3).dtmf_info("7", 250).dtmf_info("b").dtmf_info("E")
    scenario.reinvite(sdp(PCMU_WITH_EVENTS, "sendonly", version=2)).play(held_pcap, held_s)
    scenario.reinvite(sdp(PCMA_WITH_EVENTS, "sendrecv", version=3)).play(pcma, seconds + 1.0)
    scenario.bye()
    with lone_media(tmp_path) as m:
        result = run(m, tmp_path, "life", scenario.render())
        evs = events(m)
        m.worker.wait_for(lambda msgs: any(isinstance(x, wire.CallEnd)
                                           for v in msgs.values() for x in v), 10)  # fmt: skip
        log = m.log_text()
    # The answer: session timer as asked, Info-Package framework advertised.
    ok = next(
        x for x in result.messages if x.status == 200 and "INVITE" in (x.header("CSeq") or "")
    )
    assert (ok.header("Session-Expires") or "").startswith("600")
    assert "timer" in (ok.header("Require") or "")
    assert ok.header("Recv-Info") is not None
    # call.started: caller metadata to join captions to a CRM.
    started = evs[0]
    assert started["type"] == "call.started"
    assert started["headers"] == {"X-Customer-Id": "42", "x-queue": "sales"}
    assert started["codec"] == "PCMU/8000" and started["sip_call_id"] == result.call_id
    assert "sipp" in str(started["from"]) and "transcribe" in str(started["to"])
    # DTMF: RFC 4733 events in the RTP, and SIP INFO, both become dtmf events, in order.
    dtmf = [e for e in evs if e["type"] == "dtmf"]
    assert [(e["digit"], e["method"]) for e in dtmf] == [
        ("1", "rfc4733"), ("#", "rfc4733"), ("7", "sip-info"), ("B", "sip-info")
    ], dtmf  # fmt: skip
    assert dtmf[0]["time"] < dtmf[1]["time"] < dtmf[2]["time"]  # type: ignore[operator]
    # ... and go back into the call as INFO, in the Info-Package.
    infos = [x for x in result.messages if x.direction == "received" and x.method == "INFO"]
    assert [json.loads(x.body)["digit"] for x in infos] == ["1", "#", "7", "B"]
    assert all(x.header("Info-Package") == "transcript" for x in infos)
    # Hold: the call's audio is muted at the media process while held; after the codec change
    # (a new stream), the speech reaches the worker again.
    assert "on hold" in log and "off hold" in log and "PCMA/8000" in log
    (call_id,) = m.worker.messages
    msgs = m.worker.messages[call_id]
    audio = [x for x in msgs if isinstance(x, wire.Audio) and x.samples]
    sent_s = sum(x.samples for x in audio) / 8000
    # The prompt twice, before and after the hold, each with the gate's hangover and preroll;
    # the held speech never leaves the process.
    assert 2 * (seconds - 1.0) < sent_s < 2 * seconds + 2.0 < held_s, (sent_s, seconds, held_s)
    ended = [e for e in evs if e["type"] == "call.ended"]
    assert len(ended) == 1 and str(ended[0]["reason"]).startswith("200")


def test_a_call_without_rtp_is_ended_by_us_with_a_reason(tmp_path: Path) -> None:
    pcm = speech_pcm(stride=3)
    pcap = tmp_path / "a.pcap"
    seconds = write_rtp_pcap(pcap, pcm)
    scenario = Scenario().play(pcap, seconds).await_bye(timeout_s=20)
    with lone_media(tmp_path, {"media": {"rtp_timeout_s": 2.0}}) as m:
        result = run(m, tmp_path, "quiet", scenario.render())
        evs = events(m)
    bye = next(x for x in result.messages if x.direction == "received" and x.method == "BYE")
    assert "rtp timeout" in (bye.header("Reason") or "")
    (ended,) = [e for e in evs if e["type"] == "call.ended"]
    assert str(ended["reason"]).startswith("rtp timeout")
    # Not before the last packet (20 ms before the pcap's end) plus the timeout.
    assert float(ended["duration"]) >= seconds - 0.02 + 2.0 - 0.005  # type: ignore[arg-type]


def test_hold_does_not_count_as_lost_media_but_max_duration_ends_the_call(tmp_path: Path) -> None:
    scenario = Scenario().reinvite(sdp(PCMU_WITH_EVENTS, "inactive", version=2))
    scenario.await_bye(timeout_s=20)
    with lone_media(tmp_path, {"media": {"rtp_timeout_s": 1.0, "max_call_s": 4.0}}) as m:
        result = run(m, tmp_path, "held", scenario.render())
        evs = events(m)
    bye = next(x for x in result.messages if x.direction == "received" and x.method == "BYE")
    assert "max duration" in (bye.header("Reason") or "")
    (ended,) = [e for e in evs if e["type"] == "call.ended"]
    assert str(ended["reason"]).startswith("max duration")
    assert 4.0 <= float(ended["duration"]) < 8.0  # type: ignore[arg-type]


def answer_as_worker(
    m: LoneMedia, results: list[wire.Transcript], then: tuple[str, list[wire.Transcript]] = ("", [])
) -> str:
    """Wait for the call's start at the fake worker, send ``results`` (their call id is filled
    in) to the media process; then, once its log shows ``then[0]``, send ``then[1]``."""
    m.worker.wait_for(lambda msgs: len(msgs) == 1, 15)
    (call_id,) = m.worker.messages
    start = m.worker.messages[call_id][0]
    assert isinstance(start, wire.CallStart)
    reply = m.ctx.socket(zmq.PUSH)
    try:
        reply.connect(start.reply_to)
        for r in results:
            reply.send_multipart(wire.encode(dataclasses.replace(r, call_id=call_id)))
        if then[1]:
            deadline = time.monotonic() + 10
            while then[0] not in m.log_text():
                assert time.monotonic() < deadline, m.log_text()[-3000:]
                time.sleep(0.05)
            for r in then[1]:
                reply.send_multipart(wire.encode(dataclasses.replace(r, call_id=call_id)))
    finally:
        reply.close(linger=2000)  # an open socket would hang the context's term()
    return call_id


def transcript(utterance: int, final: bool, text: str) -> wire.Transcript:
    return wire.Transcript("0" * 32, utterance, final, text, 0.5, 1.5, 0.9)


def test_partials_go_into_info_only_when_asked_and_rate_limited(tmp_path: Path) -> None:
    results = [transcript(0, False, f"partial {i}") for i in range(5)]
    results += [transcript(0, True, "the final")]
    overrides = {"delivery": {"sip_info_partials": True, "sip_info_partial_interval_ms": 5000}}
    with lone_media(tmp_path, overrides) as m:
        call = SippCall(
            "127.0.0.1", m.port, tmp_path / "none.pcap", audio_s=0, guard_s=30,
            scenario=Scenario().pause(4).bye().render(), work_dir=tmp_path / "partials",
        ).start()  # fmt: skip
        answer_as_worker(m, results)
        result = call.wait(40)
        evs = events(m)
    assert result.ok, result.errors
    infos = [json.loads(b) for b in result.info_bodies]
    # Five partials within the interval: the first goes into the call; the final always does.
    assert [(i["type"], i["text"]) for i in infos] == [
        ("transcript.partial", "partial 0"), ("transcript.final", "the final")
    ]  # fmt: skip
    partials = [e for e in evs if e["type"] == "transcript.partial"]
    assert len(partials) == 5  # webhooks get every one


def test_a_peer_refusing_an_info_gets_no_more_and_webhooks_go_on(tmp_path: Path) -> None:
    scenario = Scenario().refuse_info(469).pause(3).bye()
    with lone_media(tmp_path) as m:
        call = SippCall(
            "127.0.0.1", m.port, tmp_path / "none.pcap", audio_s=0, guard_s=30,
            scenario=scenario.render(), work_dir=tmp_path / "refuse",
        ).start()  # fmt: skip
        # The second final is made after the refusal came back (INFOs already in flight when
        # it comes cannot be recalled).
        second = [transcript(1, True, "second")]
        answer_as_worker(m, [transcript(0, True, "first")], ("peer refused INFO", second))
        result = call.wait(40)
        evs = events(m)
        log = m.log_text()
    assert result.ok, result.errors
    assert [json.loads(b)["text"] for b in result.info_bodies] == ["first"]
    assert [e["text"] for e in evs if e["type"] == "transcript.final"] == ["first", "second"]
    assert log.count("peer refused INFO (469") == 1


def test_a_peer_whose_recv_info_lacks_our_package_gets_no_info(tmp_path: Path) -> None:
    scenario = Scenario(headers=("Recv-Info: foo",)).pause(3).bye()
    with lone_media(tmp_path) as m:
        call = SippCall(
            "127.0.0.1", m.port, tmp_path / "none.pcap", audio_s=0, guard_s=30,
            scenario=scenario.render(), work_dir=tmp_path / "recvinfo",
        ).start()  # fmt: skip
        answer_as_worker(m, [transcript(0, True, "only by webhook")])
        result = call.wait(40)
        evs = events(m)
    assert result.ok, result.errors
    assert result.info_bodies == ()
    assert [e["text"] for e in evs if e["type"] == "transcript.final"] == ["only by webhook"]


@pytest.mark.slow  # about a minute: run by .ci/run after the default run
def test_a_session_the_caller_stops_refreshing_is_ended_by_the_session_timer(
    tmp_path: Path,
) -> None:
    """RFC 4028: the caller asks for the shortest session (90 s) and to refresh it itself, then
    never does; before it expires we hang up (the non-refresher's BYE, at most 32 s early)."""
    scenario = Scenario(headers=("Session-Expires: 90;refresher=uac", "Supported: timer"))
    scenario.await_bye(timeout_s=100)
    with lone_media(tmp_path, {"media": {"rtp_timeout_s": 0}}) as m:  # no RTP here: by design
        result = run(m, tmp_path, "expiry", scenario.render(), timeout=110)
        evs = events(m)
    bye = next(x for x in result.messages if x.direction == "received" and x.method == "BYE")
    assert bye is not None
    (ended,) = [e for e in evs if e["type"] == "call.ended"]
    assert 58.0 <= float(ended["duration"]) <= 90.0, ended  # type: ignore[arg-type]
    print("session timer end:", ended["reason"], ended["duration"])


def test_a_new_call_in_the_slot_of_one_still_finishing_is_not_touched(tmp_path: Path) -> None:
    """PJSUA reuses call slots round robin (4 here). Four short calls end and wait for their
    worker's last results (this fake worker never sends them: call_end_flush_s, 3 s); the fifth
    call takes the first one's slot. When the first one is finally let go, the fifth must go on:
    deleting a pjsua2 Call whose slot was reused hung up the new call (and lost its events)."""
    with lone_media(tmp_path) as m:
        for i in range(4):
            run(m, tmp_path, f"short{i}", Scenario().pause(0.2).bye().render())
        fifth = run(m, tmp_path, "fifth", Scenario().pause(5.0).bye().render())
        evs = events(m, count_ended=5)
    assert fifth.bye_status == 200
    assert not any(x.direction == "received" and x.method == "BYE" for x in fifth.messages)
    ended = [e for e in evs if e["type"] == "call.ended"]
    assert len(ended) == 5 and len({e["call_id"] for e in ended}) == 5
    last = next(e for e in ended if e["sip_call_id"] == fifth.call_id)
    assert float(last["duration"]) >= 5.0  # type: ignore[arg-type]


def test_invites_without_an_offer_that_we_refuse_are_answered_and_the_process_lives_on(
    tmp_path: Path,
) -> None:
    """PJSIP sees no offer in an INVITE without a body, nor in one whose multipart body it
    cannot split; refusing such an INVITE inside the incoming-call callback tore the call down
    there, and PJSUA2 then freed the INVITE twice (an assertion aborted the process). Refused
    here: one from no tenant of ours (403), one with an unsplittable multipart body (400, with
    the Warning saying why). The process answers both, then a call, and exits 0."""
    tenants = {"tenants": [{"name": "acme", "match": [{"to_user": "5550100"}]}]}
    with lone_media(tmp_path / "tenants", tenants) as m:
        refused = Scenario(offer="").render_refused(403)
        late = [run(m, tmp_path, f"late{i}", refused) for i in (0, 1)]
    with lone_media(tmp_path / "multipart") as m:
        (garbage,) = [c for c in sip_fuzz_corpus.corpus() if c.name == "syntax-multipart-garbage"]
        outcomes = [o for _ in (0, 1) for o in sip_fuzz.fire([garbage], "127.0.0.1", m.port)]
    for result in late:
        assert [x.status for x in result.messages if (x.status or 0) >= 200] == [403]
    for outcome in outcomes:
        assert outcome.final == 400, outcome.describe()
        assert "Warning: 399" in outcome.responses[-1] and "--zz" in outcome.responses[-1]

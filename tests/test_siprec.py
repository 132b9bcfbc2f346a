"""SIPREC recording sessions (RFC 7866) through a real ``sip-bridge serve``: sipp as the SRC's
signalling, two RTP (or SRTP) streams of two different recorded prompts, the real model.

Each session is a two-party conversation: participant A speaks on stream 96 while B's stream
97 carries silence, then B speaks, and so on. The checks: the bridge answers ``a=recvonly`` on
each stream, each final names the participant whose stream it was heard on, the words of each
final are those of a prompt that participant said (attribution, by content), WER per speaker,
and ``call.ended`` holds the whole conversation interleaved by time. Then metadata that arrives
late, changes mid-session, or is bad (never a crash; a clear 4xx or no speakers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import raw_uac, speech
from tests.support import siprec_metadata as md
from tests.support.bridge import RunningBridge, serving
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall, run_calls
from tests.support.siprec_src import SiprecCall, SrcStream, body, offer
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.integration, NEEDS_KAMAILIO_SIPP_AND_PROMPTS]

ALICE = ("p-alice", "Alice Agent", "sip:alice@callcentre.example", "96")
BOB = ("p-bob", "Bob Customer", "sip:bob@customer.example", "97")
CAROL = ("p-carol", "Carol Supervisor", "sip:carol@callcentre.example", "97")
GAP_S = 1.2
RATE = 8000


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    with serving(
        tmp_path_factory.mktemp("bridge"),
        {"media": {"processes": 2}, "inference": {"workers": 1}},
        receiver.url,
    ) as b:
        yield b


@pytest.fixture(scope="module")
def prompts() -> list[speech.Prompt]:
    return speech.select(8, min_s=2.0, max_s=5.0, stride=7)


def conversation(turns: list[tuple[int, speech.Prompt]], streams: int = 2
                 ) -> tuple[list[np.ndarray], list[tuple[int, speech.Prompt, float]]]:  # fmt: skip
    """Each stream's PCM for ``turns`` of (stream index, prompt) spoken one after the other,
    and where each turn starts (seconds)."""
    t = 0.5
    placed = []
    for who, p in turns:
        placed.append((who, p, t))
        t += p.seconds + GAP_S
    total = int((t + 1.0) * RATE)
    pcm = [np.zeros(total, dtype=np.int16) for _ in range(streams)]
    for who, p, start in placed:
        voice = p.pcm()
        at = int(start * RATE)
        pcm[who][at : at + voice.size] = voice
    return pcm, placed


def events_of(receiver: WebhookReceiver, sip_call_id: str, timeout: float = 40) -> list[Any]:
    done = receiver.wait_for(
        lambda posts: any(
            p.json()["type"] == "call.ended" and p.json()["sip_call_id"] == sip_call_id
            for p in posts
        ),
        timeout=timeout,
    )
    assert done, f"no call.ended for {sip_call_id}"
    return [p.json() for p in receiver.posts if p.json()["sip_call_id"] == sip_call_id]


def run(call: SiprecCall, seconds: float) -> tuple[str, list[Any]]:
    """Run the session; its SIP Call-ID and the INVITE's 200 as sipp traced them."""
    try:
        call.start()
        code, messages = call.wait(timeout=seconds + 60)
        assert code == 0, f"sipp failed ({code}): {call.errors()}"
    finally:
        call.cleanup()
    invite = next(m for m in messages if m.direction == "sent" and m.method == "INVITE")
    ok = next(m for m in messages if m.direction == "received" and m.status == 200
              and (m.header("CSeq") or "").endswith("INVITE"))  # fmt: skip
    return invite.header("Call-ID") or "", [ok]


def best_prompt(text: str, placed: list[tuple[int, speech.Prompt, float]]) -> int:
    """The index in ``placed`` of the prompt ``text`` is closest to (by word error rate)."""
    scores = [speech.wer([p.text], [text]) for _, p, _ in placed]
    return int(np.argmin(scores))


def check_attribution(finals: list[Any], placed: list[tuple[int, speech.Prompt, float]],
                      who_for_stream: dict[int, str | None]) -> float:  # fmt: skip
    """The share of worded finals whose speaker is the one who said the prompt they match."""
    worded = [f for f in finals if f["text"].strip()]
    assert worded, "no words heard"
    right = 0
    for f in worded:
        stream_index, _, _ = placed[best_prompt(f["text"], placed)]
        speaker = f["speaker"]["name"] if f["speaker"] else None
        right += speaker == who_for_stream[stream_index]
    return right / len(worded)


def wer_per_speaker(finals: list[Any], placed: list[tuple[int, speech.Prompt, float]],
                    names: dict[int, str]) -> dict[str, float]:  # fmt: skip
    out = {}
    for index, name in names.items():
        refs = " ".join(p.text for who, p, _ in placed if who == index)
        heard = " ".join(f["text"] for f in finals if f["speaker"] and f["speaker"]["name"] == name)
        out[name] = speech.wer([refs], [heard])
    return out


def test_a_session_with_metadata_gives_one_conversation_with_speakers(
    bridge: RunningBridge, receiver: WebhookReceiver, prompts: list[speech.Prompt]
) -> None:
    turns = [(0, prompts[0]), (1, prompts[1]), (0, prompts[2]), (1, prompts[3])]
    pcm, placed = conversation(turns)
    streams = [SrcStream("96", pcm[0]), SrcStream("97", pcm[1])]
    seconds = pcm[0].size / RATE
    call = SiprecCall(bridge.port, streams, md.rfc7865([ALICE, BOB])).pause(seconds + 3)
    sip_call_id, (ok,) = run(call, seconds)

    # The answer: every stream received only, each keeping its label.
    assert ok.body.count("m=audio") == 2 and ok.body.count("a=recvonly") == 2, ok.body
    assert all(int(m) > 0 for m in re.findall(r"m=audio (\d+)", ok.body)), ok.body

    events = events_of(receiver, sip_call_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    started, ended = events[0], events[-1]
    assert started["type"] == "call.started" and started["version"] == 2
    assert started["conversation"]["kind"] == "siprec"
    assert started["conversation"]["id"] == sip_call_id
    assert started["conversation"]["metadata"] == "complete"
    assert {p["name"] for p in started["participants"]} == {ALICE[1], BOB[1]}
    assert {s["stream"]: s["speaker"]["name"] for s in started["streams"]} == {
        "96": ALICE[1], "97": BOB[1]
    }  # fmt: skip
    finals = [e for e in events if e["type"] == "transcript.final"]
    assert {f["stream"] for f in finals} == {"96", "97"}
    names = {0: ALICE[1], 1: BOB[1]}
    share = check_attribution(finals, placed, names)
    assert share >= 0.95, (share, [(f["speaker"], f["text"]) for f in finals])
    wers = wer_per_speaker(finals, placed, names)
    assert all(w <= 0.35 for w in wers.values()), (wers, finals)
    # call.ended: the whole conversation, interleaved by time, every utterance with its speaker.
    assert ended["type"] == "call.ended"
    starts = [u["start"] for u in ended["utterances"]]
    assert starts == sorted(starts)
    spoken = [u["speaker"]["name"] for u in ended["utterances"] if u["text"].strip()]
    assert spoken[:4] == [ALICE[1], BOB[1], ALICE[1], BOB[1]], ended["utterances"]
    assert {p["name"] for p in ended["participants"]} == {ALICE[1], BOB[1]}
    print(f"\nSIPREC session: attribution {share:.0%}, WER per speaker "
          + ", ".join(f"{k} {v:.1%}" for k, v in wers.items()))  # fmt: skip


def start_session(call: SiprecCall) -> SiprecCall:
    return call.start()


def finish(call: SiprecCall, seconds: float) -> tuple[str, Any]:
    try:
        code, messages = call.wait(timeout=seconds + 60)
        assert code == 0, f"sipp failed ({code}): {call.errors()}"
    finally:
        call.cleanup()
    invite = next(m for m in messages if m.direction == "sent" and m.method == "INVITE")
    return invite.header("Call-ID") or "", messages


@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
def test_metadata_only_in_a_later_request_names_the_speakers_from_then_on(
    bridge: RunningBridge, receiver: WebhookReceiver, prompts: list[speech.Prompt], method: str
) -> None:
    turns = [(0, prompts[4]), (1, prompts[5])]
    pcm, placed = conversation(turns)
    seconds = pcm[0].size / RATE
    streams = [SrcStream("96", pcm[0]), SrcStream("97", pcm[1])]
    # The INVITE has the SDP alone; the metadata comes once A has spoken, before B speaks.
    first_turn_end = placed[0][2] + placed[0][1].seconds + 0.9
    call = SiprecCall(bridge.port, streams, None).pause(first_turn_end)
    if method == "INVITE":
        call.reinvite(md.rfc7865([ALICE, BOB]))
    else:
        call.update(md.rfc7865([ALICE, BOB]))
    call.pause(seconds - first_turn_end + 3)
    sip_call_id, _ = finish(call.start(), seconds)
    events = events_of(receiver, sip_call_id)
    started = events[0]
    assert started["conversation"]["metadata"] == "none"
    assert [s["speaker"] for s in started["streams"]] == [None, None]
    updated = [e for e in events if e["type"] == "conversation.updated"]
    assert len(updated) == 1, updated
    assert updated[0]["conversation"]["metadata"] == "complete"
    assert {s["stream"]: s["speaker"]["name"] for s in updated[0]["streams"]} == {
        "96": ALICE[1], "97": BOB[1]
    }  # fmt: skip
    finals = [e for e in events if e["type"] == "transcript.final" and e["text"].strip()]
    before = [f for f in finals if f["seq"] < updated[0]["seq"]]
    after = [f for f in finals if f["seq"] > updated[0]["seq"]]
    assert before and all(f["speaker"] is None and f["stream"] == "96" for f in before), before
    assert after and all(f["speaker"]["name"] == BOB[1] for f in after), after


def test_a_transfer_mid_session_moves_the_stream_to_the_new_participant(
    bridge: RunningBridge, receiver: WebhookReceiver, prompts: list[speech.Prompt]
) -> None:
    turns = [(0, prompts[0]), (1, prompts[1]), (1, prompts[6])]
    pcm, placed = conversation(turns)
    seconds = pcm[0].size / RATE
    streams = [SrcStream("96", pcm[0]), SrcStream("97", pcm[1])]
    # Bob is transferred away after his turn; Carol now sends stream 97 (partial metadata).
    change = placed[1][2] + placed[1][1].seconds + 0.9
    update = md.partial_update(departed=["p-bob"], joined=[CAROL])
    call = (SiprecCall(bridge.port, streams, md.rfc7865([ALICE, BOB])).pause(change)
            .reinvite(update).pause(seconds - change + 3))  # fmt: skip
    sip_call_id, _ = finish(call.start(), seconds)
    events = events_of(receiver, sip_call_id)
    updated = [e for e in events if e["type"] == "conversation.updated"]
    assert len(updated) == 1, updated
    assert {p["name"] for p in updated[0]["participants"]} == {ALICE[1], CAROL[1]}
    finals = [e for e in events if e["type"] == "transcript.final" and e["text"].strip()]
    share = check_attribution(finals, placed, {0: ALICE[1], 1: BOB[1]} | {})
    # Turn 2 (index 1) was Bob's, turn 3 (index 2, same stream) Carol's: check by content.
    for f in finals:
        turn = best_prompt(f["text"], placed)
        expected = [ALICE[1], BOB[1], CAROL[1]][turn]
        assert f["speaker"]["name"] == expected, (f, share)
    ended = events[-1]
    assert [u["speaker"]["name"] for u in ended["utterances"] if u["text"].strip()] == [
        ALICE[1], BOB[1], CAROL[1]
    ]  # fmt: skip


def test_a_stream_on_hold_is_not_transcribed_and_the_other_goes_on(
    bridge: RunningBridge, receiver: WebhookReceiver, prompts: list[speech.Prompt]
) -> None:
    # A, B, then B's stream is put on hold (a=inactive) and carries a prompt nobody may hear,
    # while A speaks again.
    turns = [(0, prompts[2]), (1, prompts[3]), (1, prompts[7]), (0, prompts[4])]
    pcm, placed = conversation(turns)
    seconds = pcm[0].size / RATE
    streams = [SrcStream("96", pcm[0]), SrcStream("97", pcm[1])]
    hold = placed[1][2] + placed[1][1].seconds + 0.5
    call = (SiprecCall(bridge.port, streams, md.rfc7865([ALICE, BOB])).pause(hold)
            .reinvite(None, inactive=frozenset({"97"})).pause(seconds - hold + 3))  # fmt: skip
    sip_call_id, messages = finish(call.start(), seconds)
    answers = [m for m in messages if m.direction == "received" and m.status == 200
               and (m.header("CSeq") or "").endswith("INVITE")]  # fmt: skip
    assert "a=inactive" in answers[-1].body, answers[-1].body
    events = events_of(receiver, sip_call_id)
    finals = [e for e in events if e["type"] == "transcript.final" and e["text"].strip()]
    heard = {best_prompt(f["text"], placed) for f in finals}
    assert {0, 1, 3} <= heard, finals
    held = [f for f in finals if speech.wer([placed[2][1].text], [f["text"]]) < 0.5]
    assert held == [], held
    assert all(f["stream"] == "96" for f in finals if f["seq"] > finals[1]["seq"]), finals


def test_an_srtp_session_is_transcribed_per_speaker(
    bridge: RunningBridge, receiver: WebhookReceiver, prompts: list[speech.Prompt]
) -> None:
    turns = [(0, prompts[5]), (1, prompts[6])]
    pcm, placed = conversation(turns)
    seconds = pcm[0].size / RATE
    streams = [SrcStream("96", pcm[0]), SrcStream("97", pcm[1])]
    call = SiprecCall(bridge.port, streams, md.rfc7865([ALICE, BOB]), srtp=True)
    sip_call_id, messages = finish(call.pause(seconds + 3).start(), seconds)
    ok = next(m for m in messages if m.direction == "received" and m.status == 200)
    assert ok.body.count("RTP/SAVP") == 2 and ok.body.count("a=crypto:") == 2, ok.body
    events = events_of(receiver, sip_call_id)
    finals = [e for e in events if e["type"] == "transcript.final" and e["text"].strip()]
    assert check_attribution(finals, placed, {0: ALICE[1], 1: BOB[1]}) >= 0.95, finals
    wers = wer_per_speaker(finals, placed, {0: ALICE[1], 1: BOB[1]})
    assert all(w <= 0.35 for w in wers.values()), (wers, finals)


BOMB = (
    '<?xml version="1.0"?>\n<!DOCTYPE recording [\n<!ENTITY a "aaaaaaaaaa">\n'
    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">\n'
    '<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">\n]>\n'
    "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>&d;</datamode></recording>"
)


@pytest.mark.parametrize(
    ("case", "metadata", "state"),
    [
        (
            "bad-xml",
            "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><participant",
            "invalid",
        ),
        ("entity-bomb", BOMB, "invalid"),
        ("unknown-labels", md.rfc7865([(*ALICE[:3], "11"), (*BOB[:3], "12")]), "complete"),
    ],
)
def test_bad_metadata_is_transcribed_without_speakers(
    bridge: RunningBridge, receiver: WebhookReceiver, prompts: list[speech.Prompt],
    case: str, metadata: str, state: str,
) -> None:  # fmt: skip
    turns = [(0, prompts[0]), (1, prompts[1])]
    pcm, placed = conversation(turns)
    seconds = pcm[0].size / RATE
    streams = [SrcStream("96", pcm[0]), SrcStream("97", pcm[1])]
    sip_call_id, _ = finish(SiprecCall(bridge.port, streams, metadata).pause(seconds + 3).start(),
                            seconds)  # fmt: skip
    events = events_of(receiver, sip_call_id)
    assert events[0]["conversation"]["metadata"] == state
    finals = [e for e in events if e["type"] == "transcript.final" and e["text"].strip()]
    assert {f["stream"] for f in finals} == {"96", "97"}, finals
    assert all(f["speaker"] is None for f in finals), finals
    for f in finals:  # each stream still only carries its own participant's words
        assert f["stream"] == ["96", "97"][placed[best_prompt(f["text"], placed)][0]]


def refused(bridge: RunningBridge, body: tuple[str, str]) -> tuple[int, str]:
    """A SIPREC INVITE with ``body`` (Content-Type, text): its final answer."""
    return raw_uac.invite_answer("127.0.0.1", bridge.port, "srs",
                                 extra="Require: siprec\r\n", body=body)  # fmt: skip


def test_a_body_too_large_gets_413_at_the_front(bridge: RunningBridge) -> None:
    streams = [SrcStream("96", np.zeros(1, dtype=np.int16)),
               SrcStream("97", np.zeros(1, dtype=np.int16))]  # fmt: skip
    huge = md.rfc7865([ALICE, BOB]).replace("</recording>",
                                            "<!--" + "x" * 40_000 + "--></recording>")  # fmt: skip
    status, answer = refused(bridge, body(offer(streams), huge))
    assert status == 413, answer


def test_a_multipart_body_that_cannot_be_split_is_refused(bridge: RunningBridge) -> None:
    broken = (
        "multipart/mixed;boundary=nowhere",
        "--elsewhere\r\nContent-Type: text/plain\r\n\r\nhi\r\n",
    )
    status, answer = refused(bridge, broken)
    assert status == 400 and "Warning: 399 sip-bridge" in answer, answer


def test_two_legs_tagged_by_the_pbx_come_out_as_one_conversation(
    bridge: RunningBridge, receiver: WebhookReceiver, prompts: list[speech.Prompt],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The per-speaker spy legs of dialplans/ (no SIPREC): one call per party's voice, tagged
    with one conversation id and each party's label."""
    calls = []
    for n, (who, prompt) in enumerate((("caller", prompts[0]), ("callee", prompts[1]))):
        pcm = join_with_silence([prompt.pcm()], gap_s=0.5, lead_s=0.5 + 3.0 * n, tail_s=0.5)
        pcap = tmp_path / f"{who}.pcap"
        seconds = write_rtp_pcap(pcap, pcm)
        headers = f"X-Transcribe-Conversation: conv-4711\nX-Transcribe-Speaker: {who}\n"
        calls.append(
            SippCall(
                "127.0.0.1",
                bridge.port,
                pcap,
                "PCMU",
                audio_s=seconds,
                linger_s=3.0,
                work_dir=tmp_path / who,
                extra_headers=headers,
            )
        )
    results = run_calls(calls)
    for result, prompt, who in zip(results, prompts[:2], ("caller", "callee"), strict=False):
        assert result.ok, result.errors
        events = events_of(receiver, result.call_id)
        assert all(
            e["conversation"]
            == {
                "id": "conv-4711",
                "kind": "legs",
                "session_ids": [],
                "call_ids": [],
                "metadata": "none",
            }
            for e in events
        )
        assert events[0]["participants"] == [{"participant_id": None, "name": who, "aor": None}]
        finals = [e for e in events if e["type"] == "transcript.final" and e["text"].strip()]
        assert finals and all(f["speaker"]["name"] == who and f["stream"] is None for f in finals)
        assert speech.wer([prompt.text], [" ".join(f["text"] for f in finals)]) <= 0.35


def test_a_session_of_more_streams_than_a_call_holds_gets_488_saying_why(
    bridge: RunningBridge,
) -> None:
    """A conference recording sends a stream per participant; PJSUA holds four per call."""
    streams = [SrcStream(str(90 + n), np.zeros(1, dtype=np.int16)) for n in range(5)]
    people = [(f"p{n}", f"Person {n}", f"sip:p{n}@example.com", s.label)
              for n, s in enumerate(streams)]  # fmt: skip
    status, answer = refused(bridge, body(offer(streams), md.rfc7865(people)))
    assert status == 488 and "at most 4" in answer, answer
    status, answer = refused(bridge, body(offer(streams[:4]), md.rfc7865(people[:4])))
    assert status == 200 and answer.count("a=recvonly") == 4, answer

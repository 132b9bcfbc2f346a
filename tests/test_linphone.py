"""Real calls from linphonec (Debian ``linphone-cli``) into ``sip-bridge serve``: Kamailio, a PJSUA2
media process, the Moonshine worker, a real webhook receiver. linphonec plays recorded human
prompts as its microphone (PCMU, or G.722 wideband), holds and resumes the call with re-INVITEs,
and hangs up with BYE. Checks the transcript by webhook, and what linphonec put on the wire."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.linphone import LinphoneCall, LinphoneResult
from tests.support.rtp_pcap import join_with_silence
from tests.support.webhook_receiver import Post, WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (speech.available() and shutil.which("kamailio") and shutil.which("linphonec")),
        reason="needs kamailio, linphonec (linphone-cli) and asterisk-core-sounds-en-wav",
    ),
]

GAP_S = 1.5
# linphonec's file player starts the file again whenever the stream restarts, and the call is hung
# up by the test once the transcript is in: the trailing silence only has to outlast the call.
TAIL_S = 60.0
Event = dict[str, object]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    rx = WebhookReceiver()
    yield rx
    rx.close()
    # Torn down after the bridge has stopped, so no event can come later: every call got exactly
    # one call.started and one call.ended.
    types: dict[str, list[object]] = {}
    for e in (p.json() for p in rx.posts):
        types.setdefault(str(e["sip_call_id"]), []).append(e["type"])
    for sip_call_id, seen in types.items():
        assert seen.count("call.started") == seen.count("call.ended") == 1, (sip_call_id, seen)


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    with serving(tmp_path_factory.mktemp("bridge"), {"media": {"processes": 1}}, receiver.url) as b:
        yield b


def prompts_wav(path: Path, prompts: list[speech.Prompt], rate: int = 8000) -> float:
    """Write the prompts with silence between them (and a long tail) at ``rate``; return the
    second at which the speech ends."""
    pcm = join_with_silence([p.pcm() for p in prompts], gap_s=GAP_S, lead_s=0.5, tail_s=TAIL_S)
    if rate != 8000:
        import soxr

        wide = soxr.resample(pcm.astype(np.float32), 8000, rate)
        pcm = np.clip(np.round(wide), -32768, 32767).astype(np.int16)
    speech.write_wav(path, pcm, rate)
    return pcm.size / rate - TAIL_S


def events_of(posts: list[Post], sip_call_id: str) -> list[Event]:
    return [e for e in (p.json() for p in posts) if e["sip_call_id"] == sip_call_id]


def finals_of(posts: list[Post], sip_call_id: str) -> list[Event]:
    return [e for e in events_of(posts, sip_call_id) if e["type"] == "transcript.final"]


def started_call(receiver: WebhookReceiver, user: str) -> Event:
    """The call.started event of the call from ``sip:USER@...`` (each test uses its own user)."""

    def mine(posts: list[Post]) -> list[Event]:
        return [
            e for e in (p.json() for p in posts)
            if e["type"] == "call.started" and f"sip:{user}@" in str(e["from"])
        ]  # fmt: skip

    assert receiver.wait_for(mine, timeout=15), f"no call.started from {user}"
    (started,) = mine(receiver.posts)
    return started


def wait_finals(receiver: WebhookReceiver, sip_call_id: str, count: int, timeout: float) -> bool:
    return receiver.wait_for(lambda posts: len(finals_of(posts, sip_call_id)) >= count, timeout)


def ended_call(receiver: WebhookReceiver, sip_call_id: str) -> Event:
    """The call's one call.ended event, after checking its events as a whole: exactly one
    call.started first and one call.ended last, seq gap-free from 1."""
    assert receiver.wait_for(
        lambda posts: any(e["type"] == "call.ended" for e in events_of(posts, sip_call_id)),
        timeout=30,
    ), "no call.ended webhook"
    events = events_of(receiver.posts, sip_call_id)
    types = [e["type"] for e in events]
    assert types.count("call.started") == 1 and types.count("call.ended") == 1, types
    assert types[0] == "call.started" and types[-1] == "call.ended", types
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    ended = events[-1]
    finals = [str(e["text"]) for e in events if e["type"] == "transcript.final" and e["text"]]
    assert ended["text"] == " ".join(finals)
    return ended


def check_linphone(result: LinphoneResult) -> None:
    """linphonec quit cleanly after a call it ended itself, and every INVITE got a 200."""
    assert not result.timed_out and result.exit_code == 0, result.output[-3000:]
    assert result.end_reason == "No error", result.output[-3000:]
    assert [a.status for a in result.answers("INVITE")] == [200] * len(result.sent("INVITE"))
    assert [a.status for a in result.answers("BYE")] == [200]


def call_and_hang_up(
    bridge: RunningBridge,
    receiver: WebhookReceiver,
    wav: Path,
    codec: str,
    user: str,
    finals: int,
    speech_s: float,
    work_dir: Path,
) -> tuple[dict[str, object], LinphoneResult]:
    """Place a linphonec call playing ``wav``, wait for ``finals`` captions, hang up; the call's
    call.started event and linphonec's result."""
    call = LinphoneCall(
        f"sip:transcribe@127.0.0.1:{bridge.port}", wav, codec, user=user, work_dir=work_dir
    ).start()
    try:
        assert call.wait_established(1, timeout=15), call.output[-3000:]
        started = started_call(receiver, user)
        assert wait_finals(receiver, str(started["sip_call_id"]), finals, timeout=speech_s + 20)
        call.hang_up()
        result = call.finish()
    finally:
        call.kill()
    check_linphone(result)
    return started, result


def check_transcript(
    receiver: WebhookReceiver, sip_call_id: str, prompts: list[speech.Prompt]
) -> None:
    """The call.ended transcript against the prompts: WER at most 0.2."""
    ended = ended_call(receiver, sip_call_id)
    refs = " ".join(p.text for p in prompts)
    assert speech.wer([refs], [str(ended["text"])]) <= 0.2, (refs, ended["text"])


def test_pcmu_call_from_linphonec_is_transcribed(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    prompts = speech.select(3, min_s=2.0, max_s=5.0, stride=7)
    speech_s = prompts_wav(tmp_path / "source.wav", prompts)
    started, result = call_and_hang_up(
        bridge, receiver, tmp_path / "source.wav", "PCMU", "lp-pcmu", len(prompts), speech_s,
        tmp_path / "linphonec",
    )  # fmt: skip
    sip_call_id = str(started["sip_call_id"])
    assert started["codec"] == "PCMU/8000"
    assert result.call_id == sip_call_id
    (invite,) = result.sent("INVITE")
    assert invite.audio_payloads[0] == "0" and len(invite.audio_payloads) == 2  # + telephone-event
    assert "c=IN IP4 127.0.0.1" in invite.body and "a=candidate" not in invite.body
    check_transcript(receiver, sip_call_id, prompts)


def test_call_held_and_resumed_by_linphonec_is_transcribed_after_the_resume(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """linphonec's ``pause`` re-INVITEs with a=sendonly (the bridge answers recvonly) and plays
    silence as its music on hold; ``resume`` re-INVITEs with sendrecv and the speech goes on.
    What is said after the resume must be transcribed, in the same call."""
    prompts = speech.select(4, min_s=2.0, max_s=5.0, stride=13)
    before, after = prompts[:2], prompts[2:]
    before_s = prompts_wav(tmp_path / "before.wav", before)
    after_s = prompts_wav(tmp_path / "after.wav", after)
    speech.write_wav(tmp_path / "hold.wav", np.zeros(round(TAIL_S * 8000), np.int16), 8000)
    call = LinphoneCall(
        f"sip:transcribe@127.0.0.1:{bridge.port}", tmp_path / "before.wav", "PCMU",
        user="lp-hold", work_dir=tmp_path / "linphonec",
    ).start()  # fmt: skip
    try:
        assert call.wait_established(1, timeout=15), call.output[-3000:]
        started = started_call(receiver, "lp-hold")
        sip_call_id, call_id = str(started["sip_call_id"]), str(started["call_id"])
        assert wait_finals(receiver, sip_call_id, len(before), timeout=before_s + 20)
        call.play(tmp_path / "hold.wav")
        call.pause()
        call.play(tmp_path / "after.wav")
        call.resume()
        held = len(finals_of(receiver.posts, sip_call_id))
        resumed = wait_finals(receiver, sip_call_id, held + len(after), timeout=after_s + 20)
        call.hang_up()
        result = call.finish()
    finally:
        call.kill()
    check_linphone(result)
    offers = [i.audio_direction for i in result.sent("INVITE")]
    answers = [a.audio_direction for a in result.answers("INVITE")]
    assert offers == ["sendrecv", "sendonly", "sendrecv"], offers
    assert answers in (["sendrecv", "recvonly", "sendrecv"], ["sendrecv", "inactive", "sendrecv"])
    call_log = [
        line for line in bridge.log_text().splitlines() if sip_call_id in line or call_id in line
    ]
    after_text = " ".join(str(e["text"]) for e in finals_of(receiver.posts, sip_call_id)[held:])
    after_refs = " ".join(p.text for p in after)
    assert resumed, "nothing transcribed after the resume; the call's log:\n" + "\n".join(call_log)
    assert speech.wer([after_refs], [after_text]) <= 0.2, (after_refs, after_text)
    check_transcript(receiver, sip_call_id, prompts)


def test_g722_call_from_linphonec_is_transcribed_wideband(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    prompts = speech.select(2, min_s=2.0, max_s=5.0, stride=19)
    speech_s = prompts_wav(tmp_path / "source16k.wav", prompts, rate=16000)
    started, result = call_and_hang_up(
        bridge, receiver, tmp_path / "source16k.wav", "G722", "lp-g722", len(prompts), speech_s,
        tmp_path / "linphonec",
    )  # fmt: skip
    sip_call_id = str(started["sip_call_id"])
    assert (started["codec"], started["sample_rate"]) == ("G722/16000", 16000)
    (invite,) = result.sent("INVITE")
    assert invite.audio_payloads[0] == "9" and len(invite.audio_payloads) == 2
    # The captions came in the call as INFO too; linphonec answered 200 to each one that arrived
    # before its BYE (one crossing the BYE gets 491 Request pending).
    bye = next(i for i, m in enumerate(result.messages) if m.method == "BYE")
    infos = [m for m in result.messages[:bye] if m.method == "INFO"]
    assert infos and all(re.search(r'"type":\s*"transcript.final"', i.body) for i in infos)
    answers = {m.cseq: m.status for m in result.messages if m.direction == "sent" and m.status}
    assert [answers.get(i.cseq) for i in infos] == [200] * len(infos), result.messages
    check_transcript(receiver, sip_call_id, prompts)

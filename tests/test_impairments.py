"""The network's faults, end to end: the same recorded speech played by sipp three times at once
through the whole product (``sip-bridge serve``: Kamailio, PJSUA2, the Moonshine worker) — clean,
with 80 ms of jitter that reorders packets, and with 5 % packet loss. PJSIP's jitter buffer must
put the jittered stream back in order and its packet-loss concealment must cover the holes, so
that both transcripts stay within 3 WER points of the clean one.

The faults are made in the pcap (``tests.support.rtp_pcap``): sipp sends its packets in file
order at their recorded times, so a jittered file is a stream whose packets arrive late and out of
order, and a lossy file one with packets missing. Only 127.0.0.1 traffic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.rtp_pcap import (
    PTIME_MS,
    TimedPacket,
    jittered,
    join_with_silence,
    lossy,
    paced,
    rtp_packets,
    rtp_sequence,
    write_packets_pcap,
)
from tests.support.sipp import SippCall, SippResult, run_calls
from tests.support.webhook_receiver import Post, WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
]

JITTER_S = 0.080  # each packet held back 0-80 ms: about 28 % of neighbours swap
LOSS = 0.05
MAX_WER_RISE = 0.03  # the bar: within 3 WER points of the clean call
CLEAN_MAX_WER = 0.15  # the clean call itself: the accuracy bar of test_e2e


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    # One media process holds the three calls (it takes four) and one worker serves them: the
    # fewest processes for two cores; the jitter buffer and concealment are per call either way.
    overrides = {"media": {"processes": 1}, "inference": {"workers": 1}}
    with serving(tmp_path_factory.mktemp("bridge"), overrides, receiver.url) as b:
        yield b


def sipp_call(tmp: Path, bridge: RunningBridge, packets: list[TimedPacket], name: str) -> SippCall:
    pcap = tmp / f"{name}.pcap"
    write_packets_pcap(pcap, packets)
    seconds = packets[-1][0] - packets[0][0] + PTIME_MS / 1000
    return SippCall("127.0.0.1", bridge.port, pcap, "PCMU", audio_s=seconds, linger_s=4.0,
                    work_dir=tmp / name)  # fmt: skip


def transcript(result: SippResult, receiver: WebhookReceiver) -> str:
    """The call's whole transcript, from its call.ended webhook."""
    assert result.ok, f"sipp failed ({result.exit_code}): {result.stderr}\n{result.errors}"
    assert result.final_status == 200

    def ended(posts: list[Post]) -> list[dict[str, object]]:
        return [
            p.json() for p in posts
            if p.json()["type"] == "call.ended" and p.json()["sip_call_id"] == result.call_id
        ]  # fmt: skip

    assert receiver.wait_for(ended, timeout=30), f"no call.ended for {result.call_id}"
    (event,) = ended(receiver.posts)
    return str(event["text"])


@pytest.mark.slow  # about a minute: run by .ci/run after the default run
def test_jitter_with_reordering_and_five_percent_loss_stay_within_three_wer_points_of_clean(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    prompts = speech.select(10, min_s=3.0, max_s=7.0, stride=5)  # ~45 s of speech, ~120 words
    pcm = join_with_silence([p.pcm() for p in prompts], gap_s=1.5, lead_s=0.5, tail_s=0.5)
    clean = paced(rtp_packets(pcm))
    streams = {
        "clean": clean,
        "jitter": jittered(clean, JITTER_S, seed=1),
        "loss": lossy(clean, LOSS, seed=1),
    }
    order = [rtp_sequence(rtp) for _, rtp in streams["jitter"]]
    assert sum(b < a for a, b in zip(order, order[1:], strict=False)) > len(order) // 5  # reordered
    assert len(streams["loss"]) == len(clean) - round(LOSS * len(clean))
    results = run_calls([sipp_call(tmp_path, bridge, p, name) for name, p in streams.items()])
    refs = " ".join(p.text for p in prompts)
    texts = {name: transcript(r, receiver) for name, r in zip(streams, results, strict=True)}
    errors = {name: speech.wer([refs], [text]) for name, text in texts.items()}
    print("WER " + ", ".join(f"{name} {e:.3f}" for name, e in errors.items()))
    assert errors["clean"] <= CLEAN_MAX_WER, (refs, texts["clean"])
    for name in ("jitter", "loss"):
        assert errors[name] <= errors["clean"] + MAX_WER_RISE, (name, errors, refs, texts[name])

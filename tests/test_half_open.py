"""The attacker's view of the front (issue: a dozen unanswered INVITEs must not take the host).

``sip-bridge serve`` with the default SIP and pool settings for one worker (no listed trunk:
every source is a stranger; the worker takes 8 calls, so at most 4 calls a source; the pool sized
to twice that, 4 media processes x 4 calls) takes INVITEs that nobody ACKs from
one source, and real sipp calls from another at once. What must hold: the half-open calls hold
their slots only ``sip.ack_timeout_s`` (measured from the attacker's side: our 200 OK to the
media process's BYE), a source over its limit gets 503 with Retry-After (counted, logged once),
and the real calls are admitted and transcribed without waiting.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip_bridge.front import kamailio
from sip_bridge.settings import loading
from tests.support import half_open, rtp_fuzz, sip_fuzz_corpus, speech
from tests.support.bridge import RunningBridge, serving
from tests.support.metrics import front_statistic
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall, SippResult
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
]

ATTACKER = "127.0.0.2"
FUZZER = "127.0.0.3"
ACK_TIMEOUT_S = 4.0  # the default sip.ack_timeout_s
SOURCE_LIMIT = 4  # the default: half of the 8 calls one worker takes (inference.calls_per_worker)
SOURCE_LIMITED = "script:source_limited"  # the front's count of its refusals over a source's limit


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    """One bridge for the module: the second test's fuzz comes right after the first test's
    half-open calls were given up, so their slots must really be free (PJSIP keeps the slot
    of a call waiting for its ACK for 32 s unless the media process confirms and BYEs it)."""
    # The default pool ("auto") and admission, and no listed trunk: the defaults, as shipped.
    overrides = {
        "media": {"processes": "auto"},
        "inference": {"workers": 1, "calls_per_worker": 8},
        "sip": {"trunks": []},
    }
    with serving(tmp_path_factory.mktemp("half-open"), overrides, receiver.url) as b:
        yield b


def wait_idle(bridge: RunningBridge, within_s: float) -> float:
    """Until the front counts no call on any media process; returns how long that took."""
    files = kamailio.files_in(Path(bridge.config["runtime_dir"]))
    t0 = time.monotonic()
    while not all(d.load == 0 and d.active for d in kamailio.destinations(files)):
        assert time.monotonic() - t0 < within_s, kamailio.destinations(files)
        time.sleep(0.1)
    return time.monotonic() - t0


def real_call(bridge: RunningBridge, tmp_path: Path, name: str, stride: int) -> SippCall:
    (prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=stride)
    pcap = tmp_path / f"{name}.pcap"
    seconds = write_rtp_pcap(pcap, join_with_silence([prompt.pcm()], lead_s=0.5, tail_s=0.8))
    return SippCall("127.0.0.1", bridge.port, pcap, "PCMU", audio_s=seconds, linger_s=2.0,
                    work_dir=tmp_path / name).start()  # fmt: skip


def assert_transcribed(bridge: RunningBridge, result: SippResult) -> None:
    assert result.ok, f"{result.errors}\n{bridge.log_text()[-3000:]}"
    assert result.final_status == 200
    assert result.info_bodies, "no caption came back as INFO"


def test_half_open_calls_hold_a_slot_for_the_ack_timeout_and_one_source_only_its_share(
    bridge: RunningBridge, tmp_path: Path
) -> None:
    limited_before = front_statistic(bridge, SOURCE_LIMITED)
    burst = [half_open.invite(ATTACKER, "127.0.0.1", bridge.port) for _ in range(12)]
    try:
        half_open.wait(burst, lambda: all(c.final for c in burst), 10, answer_bye=False)
        finals = Counter(c.final for c in burst)
        assert finals == {200: SOURCE_LIMIT, 503: 12 - SOURCE_LIMIT}, finals
        assert all(c.retry_after for c in burst if c.final == 503)
        # One more from the attacker while its calls are half-open: over its limit.
        (extra,) = more = [half_open.invite(ATTACKER, "127.0.0.1", bridge.port)]
        half_open.wait(more, lambda: extra.final is not None, 5)
        assert extra.final == 503
        # Another source is admitted at once, and transcribed.
        call = real_call(bridge, tmp_path, "other-source", stride=3)
        # The media processes give the half-open calls up after the ACK timeout: a BYE each.
        taken = [c for c in burst if c.final == 200]
        half_open.wait(taken, lambda: all(c.bye_at for c in taken), ACK_TIMEOUT_S + 10,
                       answer_bye=False)  # fmt: skip
        held = sorted(c.held_s or 0.0 for c in taken)
        print(f"half-open calls held their slot {held[0]:.2f}-{held[-1]:.2f} s")
        # Checked once a second (media.process's call watch), sent through the front.
        assert held[0] >= ACK_TIMEOUT_S - 0.1 and held[-1] <= ACK_TIMEOUT_S + 1.6, held
        # Once they are released at the front too, the attacker's source is admitted again.
        deadline = time.monotonic() + 10
        while True:
            (again,) = probe = [half_open.invite(ATTACKER, "127.0.0.1", bridge.port)]
            half_open.wait(probe, lambda p=probe: p[0].final is not None, 5)
            half_open.close(probe)
            if again.final == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert again.final == 200
        assert_transcribed(bridge, call.wait(60))
        # And the front's count of calls per media process goes back to zero: the last
        # half-open call (the probe) is given up like the others.
        print(f"front idle {wait_idle(bridge, ACK_TIMEOUT_S + 10):.1f} s after the call")
    finally:
        half_open.close(burst)
    assert front_statistic(bridge, SOURCE_LIMITED) - limited_before >= 12 - SOURCE_LIMIT + 1
    # Logged once a minute per source, not once per refusal.
    assert (
        len(re.findall(rf"from {re.escape(ATTACKER)}: at its limit", bridge.front_log_text())) == 1
    )


def test_the_fuzz_corpus_then_real_calls_at_once(bridge: RunningBridge, tmp_path: Path) -> None:
    """The SIP suite's malformed corpus from one source, fire and forget (no ACK, no answer to
    anything), and 200 garbage RTP datagrams over the pool's RTP ports (the issue's run: about
    300 SIP datagrams and 200 RTP), then at once, without a pause, three real calls from
    another: all transcribed. Right after the first test: its half-open calls must have left no
    slot taken."""
    wait_idle(bridge, 30)
    run = uuid.uuid4().hex[:5]
    socks = []
    try:
        for case in sip_fuzz_corpus.corpus():
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((FUZZER, 0))
            socks.append(sock)
            data = case.render(sock.getsockname()[1], f"127.0.0.1:{bridge.port}", run)
            with contextlib.suppress(OSError):  # too large for a datagram: nothing was sent
                sock.sendto(data, ("127.0.0.1", bridge.port))
        m = loading.load(bridge.config_path).media  # the pool "auto" made
        ports = range(m.rtp_port_base, m.rtp_port_base + m.processes * m.rtp_ports_per_process)
        packets = rtp_fuzz.garbage(seq=1000, ts=160_000, ssrc=0x5EED)
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((FUZZER, 0))
        socks.append(rtp)
        for n in range(200):  # bounded: a port of the pool and a garbage packet, in turn
            with contextlib.suppress(OSError):
                rtp.sendto(
                    packets[n % len(packets)][1], ("127.0.0.1", ports[(n * 37) % len(ports)])
                )
        calls = [real_call(bridge, tmp_path, f"after-fuzz-{n}", stride=11 + n) for n in range(3)]
        for call in calls:
            assert_transcribed(bridge, call.wait(60))
    finally:
        for sock in socks:
            sock.close()

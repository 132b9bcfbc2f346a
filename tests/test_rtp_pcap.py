"""The network faults of ``tests.support.rtp_pcap`` (jitter with reordering, loss, a drifting
sender clock), on packet lists in memory and through a pcap file: no sockets, no clocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support import rtp_pcap
from tests.support.rtp_pcap import TimedPacket, drifted, jittered, lossy, paced

PTIME = rtp_pcap.PTIME_MS / 1000


def stream(seconds: float) -> list[TimedPacket]:
    rng = np.random.default_rng(7)
    pcm = rng.integers(-8000, 8000, round(seconds * rtp_pcap.RATE)).astype(np.int16)
    return paced(rtp_pcap.rtp_packets(pcm))


def seqs(packets: list[TimedPacket]) -> list[int]:
    return [rtp_pcap.rtp_sequence(rtp) for _, rtp in packets]


def test_paced_sends_one_packet_every_20_ms() -> None:
    packets = stream(1.0)
    assert len(packets) == 50
    assert [t for t, _ in packets] == pytest.approx([i * PTIME for i in range(50)])
    assert seqs(packets) == list(range(1000, 1050))
    stamps = [rtp_pcap.rtp_timestamp(rtp) for _, rtp in packets]
    assert np.diff(stamps).tolist() == [rtp_pcap.SAMPLES_PER_PACKET] * 49


def test_jitter_delays_each_packet_by_up_to_its_bound_and_reorders() -> None:
    clean = stream(60.0)
    out = jittered(clean, 0.080, seed=1)
    sent_at = {rtp_pcap.rtp_sequence(rtp): t for t, rtp in clean}
    delays = np.array([t - sent_at[rtp_pcap.rtp_sequence(rtp)] for t, rtp in out])
    assert sorted(rtp for _, rtp in out) == sorted(rtp for _, rtp in clean)  # nothing lost
    assert delays.min() >= 0 and delays.max() <= 0.080
    assert delays.max() > 0.075 and delays.min() < 0.005  # the whole range is used
    assert [t for t, _ in out] == sorted(t for t, _ in out)  # file order is send order
    # Neighbours swap when their delays differ by more than 20 ms: P = (60/80)^2 / 2 = 28 %.
    order = seqs(out)
    swapped = sum(b < a for a, b in zip(order, order[1:], strict=False)) / len(order)
    assert 0.22 < swapped < 0.34, swapped
    # No packet moves further than the jitter allows: 80 ms is four packet times.
    positions = np.argsort(order)
    assert np.abs(positions - np.arange(len(order))).max() <= 4


def test_jitter_is_deterministic_per_seed_and_zero_jitter_changes_nothing() -> None:
    clean = stream(5.0)
    assert jittered(clean, 0.08, seed=3) == jittered(clean, 0.08, seed=3)
    assert jittered(clean, 0.08, seed=3) != jittered(clean, 0.08, seed=4)
    assert jittered(clean, 0.0, seed=3) == clean
    with pytest.raises(ValueError):
        jittered(clean, -0.01, seed=3)


def test_loss_drops_exactly_the_rate_at_random_places() -> None:
    clean = stream(60.0)  # 3000 packets
    out = lossy(clean, 0.05, seed=2)
    assert len(out) == 3000 - 150
    kept = set(seqs(out))
    assert seqs(out) == [s for s in seqs(clean) if s in kept]  # survivors keep their order ...
    assert set(out) <= set(clean)  # ... and their times
    lost = sorted(set(seqs(clean)) - kept)
    # Spread over the whole call, not in one place: every 10 s has some.
    assert len({(s - 1000) // 500 for s in lost}) == 6
    assert lossy(clean, 0.05, seed=2) == out
    assert lossy(clean, 0.05, seed=5) != out
    assert lossy(clean, 0.0, seed=2) == clean
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError):
            lossy(clean, rate, seed=2)


@pytest.mark.parametrize("clock_error", [0.005, -0.005])
def test_a_drifting_sender_clock_scales_send_times_not_rtp_timestamps(clock_error: float) -> None:
    clean = stream(600.0)  # ten minutes of the sender's clock
    out = drifted(clean, clock_error)
    assert [rtp for _, rtp in out] == [rtp for _, rtp in clean]  # same packets, same stamps
    # A 0.5 % fast sender gets ten minutes of audio out in 597 s of ours; a slow one in 603 s.
    assert out[-1][0] == pytest.approx(clean[-1][0] / (1 + clock_error))
    assert abs(out[-1][0] - clean[-1][0]) == pytest.approx(3.0, abs=0.02)
    spacing = np.diff([t for t, _ in out])
    assert spacing == pytest.approx(PTIME / (1 + clock_error))
    with pytest.raises(ValueError):
        drifted(clean, -1.0)


def test_faults_survive_the_pcap_file(tmp_path: Path) -> None:
    clean = stream(10.0)
    faulty = lossy(jittered(clean, 0.08, seed=9), 0.05, seed=9)
    path = tmp_path / "faulty.pcap"
    rtp_pcap.write_packets_pcap(path, faulty)
    back = rtp_pcap.read_rtp_pcap(path)
    assert [rtp for _, rtp in back] == [rtp for _, rtp in faulty]
    first = faulty[0][0]  # the file's times count from its first packet
    assert [t for t, _ in back] == pytest.approx([t - first for t, _ in faulty], abs=1e-6)

from __future__ import annotations

from sip_bridge.calls.watch import MAX_DURATION, NO_ACK, RTP_TIMEOUT, CallWatch


def test_flowing_rtp_keeps_a_call_and_silence_ends_it() -> None:
    w = CallWatch(answered_at=100.0, rtp_timeout_s=30, max_call_s=0)
    for t in range(100, 200):
        w.rtp(t * 50, float(t))  # the counter moves every second
        assert w.expired(float(t)) is None
    w.rtp(199 * 50, 229.0)  # no new packet since t=199
    assert w.expired(228.9) is None
    assert w.expired(229.0) == RTP_TIMEOUT


def test_a_call_that_never_sends_rtp_times_out_from_its_answer() -> None:
    w = CallWatch(answered_at=0.0, rtp_timeout_s=5, max_call_s=0)
    w.rtp(0, 1.0)
    w.rtp(0, 4.0)
    assert w.expired(4.9) is None
    assert w.expired(5.0) == RTP_TIMEOUT


def test_hold_suspends_the_rtp_timeout_and_unhold_restarts_it() -> None:
    w = CallWatch(answered_at=0.0, rtp_timeout_s=5, max_call_s=0)
    w.rtp(10, 1.0)
    w.hold(True, 2.0)
    assert w.expired(100.0) is None
    w.hold(False, 100.0)
    assert w.expired(104.9) is None
    assert w.expired(105.0) == RTP_TIMEOUT


def test_a_new_stream_counts_from_zero() -> None:
    w = CallWatch(answered_at=0.0, rtp_timeout_s=5, max_call_s=0)
    w.rtp(500, 3.0)
    w.media_restarted(4.0)
    w.rtp(0, 4.5)  # the new stream has received nothing yet
    assert w.expired(8.9) is None
    assert w.expired(9.0) == RTP_TIMEOUT
    w.rtp(3, 8.0)
    assert w.expired(12.9) is None


def test_max_duration_wins_even_with_media_and_on_hold() -> None:
    w = CallWatch(answered_at=10.0, rtp_timeout_s=0, max_call_s=60)
    w.hold(True, 20.0)
    assert w.expired(69.9) is None
    assert w.expired(70.0) == MAX_DURATION


def test_zero_means_never() -> None:
    w = CallWatch(answered_at=0.0, rtp_timeout_s=0, max_call_s=0)
    assert w.expired(1e9) is None


def test_a_call_not_acked_in_time_is_given_up() -> None:
    w = CallWatch(answered_at=0.0, rtp_timeout_s=30, max_call_s=0, ack_timeout_s=4)
    assert w.expired(3.9) is None
    assert w.expired(4.0) == NO_ACK


def test_an_acked_call_is_not_given_up_and_its_rtp_clock_starts_at_the_ack() -> None:
    w = CallWatch(answered_at=0.0, rtp_timeout_s=5, max_call_s=0, ack_timeout_s=4)
    w.confirmed(3.0)
    assert w.expired(7.9) is None  # 4.9 s after the ACK, no RTP yet
    assert w.expired(8.0) == "rtp timeout"
    w.confirmed(100.0)  # a second ACK (a retransmission) changes nothing
    assert w.expired(8.0) == "rtp timeout"


def test_no_ack_timeout_waits_as_pjsip_does() -> None:
    w = CallWatch(answered_at=0.0, rtp_timeout_s=0, max_call_s=0)
    assert w.expired(1000.0) is None

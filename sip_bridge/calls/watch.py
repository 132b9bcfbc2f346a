"""When the bridge itself must end a call: no ACK for its 200 in time, no media for too long, or
a call too long (sans-IO).

The media process feeds each call's :class:`CallWatch` the count of RTP packets received so far
(from PJSIP's stream statistics) and the hold state from each SDP negotiation, then asks
:meth:`CallWatch.expired` with the time; the answer is the reason to hang up with, or ``None``.
A call on hold (either side, or ``inactive``) sends no RTP by design: the RTP clock restarts
when it comes off hold. Time comes in as an argument, so tests drive it with a fake clock.

A call answered but never confirmed (no ACK for our 200 OK) is half-open: RFC 3261 §13.3.1.4
has the UAS retransmit the 200 for 64*T1 (32 s) and then end the session with a BYE. Holding a
call slot that long let a dozen INVITEs from one sender fill the pool, so a half-open call gets
only ``ack_timeout_s`` (the media process calls :meth:`CallWatch.confirmed` on the ACK).
"""

from __future__ import annotations

from dataclasses import dataclass, field

RTP_TIMEOUT = "rtp timeout"
MAX_DURATION = "max duration"
NO_ACK = "no ack"


@dataclass(slots=True)
class CallWatch:
    answered_at: float
    rtp_timeout_s: float  # 0: never
    max_call_s: float  # 0: no limit
    ack_timeout_s: float = 0.0  # 0: wait for the ACK as long as PJSIP does
    on_hold: bool = False
    acked: bool = False
    _packets: int = 0  # a stream counts packets from zero
    _last_rx: float = field(init=False)

    def __post_init__(self) -> None:
        self._last_rx = self.answered_at

    def rtp(self, packets: int, now: float) -> None:
        """The stream's received-packet count at ``now``; a change means media flowed."""
        if packets != self._packets:
            self._packets = packets
            self._last_rx = now

    def hold(self, held: bool, now: float) -> None:
        if self.on_hold and not held:
            self._last_rx = now  # media may take a moment to resume: the timeout starts afresh
        self.on_hold = held

    def media_restarted(self, now: float) -> None:
        """A new stream (codec change): its packet counter starts from zero."""
        self._packets = 0
        self._last_rx = now

    def silent_for(self, now: float) -> float:
        return 0.0 if self.on_hold else now - self._last_rx

    def confirmed(self, now: float) -> None:
        """The ACK came: the call is established. Its RTP clock starts now."""
        if not self.acked:
            self.acked = True
            self._last_rx = max(self._last_rx, now)

    def expired(self, now: float) -> str | None:
        if not self.acked and self.ack_timeout_s and now - self.answered_at >= self.ack_timeout_s:
            return NO_ACK
        if self.max_call_s and now - self.answered_at >= self.max_call_s:
            return MAX_DURATION
        if self.rtp_timeout_s and self.silent_for(now) >= self.rtp_timeout_s:
            return RTP_TIMEOUT
        return None

"""Calls the media process ends itself: a quiet or too long call (``CallWatch``), a media error,
and a half-open call (our 200 never ACKed), with the BYE's Reason header (RFC 3326).

Main loop thread only, like every PJSUA2 call of the process. A hangup here only starts the
end: the call's DISCONNECTED callback does the rest (``MediaProcess.on_call_state``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

import pjsua2 as pj

from sip_bridge.calls import dialogs
from sip_bridge.calls.call_state import CallState, header
from sip_bridge.calls.watch import MAX_DURATION, NO_ACK, RTP_TIMEOUT

log = logging.getLogger(__name__)

# The Reason header (RFC 3326) of a BYE we send.
BYE_REASONS = {
    RTP_TIMEOUT: 'Q.850;cause=102;text="rtp timeout"',
    MAX_DURATION: 'Q.850;cause=16;text="max duration"',
    NO_ACK: 'SIP;cause=408;text="no ACK for the 200 OK"',
}
HANDED_ACK_WAIT_S = 2.0  # for PJSIP to take the ACK a half-open call's caller never sent


def hangup(call: CallState, code: int, reason_header: str | None = None) -> None:
    op = pj.CallOpParam()
    op.statusCode = code
    if reason_header:
        op.txOption.headers.append(header("Reason", reason_header))
    try:
        call.sip.hangup(op)
    except pj.Error as exc:
        log.warning("call %s: hangup failed: %s", call.call_id, exc.info())


def end_call(call: CallState, reason: str) -> None:
    """We hang up a call ourselves; ``reason`` goes into call.ended and the BYE."""
    if call.end_reason or call.disconnected_at is not None:
        return
    call.end_reason = reason
    log.info("call %s: hanging up: %s", call.call_id, reason)
    hangup(call, 200, BYE_REASONS.get(reason))


def give_up_half_open(call: CallState, sip_port: int, ack_timeout_s: float, now: float) -> None:
    """End a call that got our 200 and never an ACK (RFC 3261 §13.3.1.4: with a BYE).

    PJSIP ends a call still waiting for its ACK without a BYE and keeps its call slot until
    its own wait for the ACK ends (32 s), and the front would go on counting it. So we hand
    PJSIP (on ``sip_port``, over loopback) the ACK the caller owed: the dialog is confirmed,
    and the hangup that follows (:func:`confirmed`) sends the BYE through the front, which
    releases the call's count, and frees the slot once the BYE is answered or times out at the
    front. If PJSIP does not take that ACK in time, the call is hung up as it is.
    """
    call.end_reason = NO_ACK
    dialog, cseq = call.dialog, call.invite_cseq
    if dialog is None or cseq is None:
        log.warning("call %s: not ACKed; no dialog noted, hanging up as it is", call.call_id)
        hangup(call, 200)
        return
    log.info("call %s: no ACK for %.0f s: confirming it for PJSIP to BYE it", call.call_id,
             ack_timeout_s)  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        ack = dialogs.ack_for_caller(
            dialog, cseq, f"sip:127.0.0.1:{sip_port}", "127.0.0.1", sock.getsockname()[1]
        )
        sock.sendto(ack, ("127.0.0.1", sip_port))
    call.acked_for_caller_at = now


def confirmed(call: CallState) -> None:
    """The call's dialog is confirmed: if by the ACK we handed PJSIP, now the BYE."""
    if call.acked_for_caller_at is not None:
        call.acked_for_caller_at = None
        log.info("call %s: hanging up: %s", call.call_id, NO_ACK)
        hangup(call, 200, BYE_REASONS[NO_ACK])


def watch_calls(
    calls: Iterable[CallState], now: float, sip_port: int, ack_timeout_s: float
) -> None:
    """RTP counters and call limits: end the calls that went quiet or ran too long."""
    for call in calls:
        if call.disconnected_at is None and call.acked_for_caller_at is not None:
            if now - call.acked_for_caller_at >= HANDED_ACK_WAIT_S:  # PJSIP ignored it
                call.acked_for_caller_at = None
                hangup(call, 200, BYE_REASONS[NO_ACK])
            continue
        if call.disconnected_at is not None or call.end_reason:
            continue
        tapped = [t for t in call.taps if t.port is not None and t.media_index >= 0]
        if tapped:
            try:
                # A SIPREC session is alive while any of its streams is.
                packets = sum(call.sip.getStreamStat(t.media_index).rtcp.rxStat.pkt for t in tapped)
                call.watch.rtp(packets, now)
            except pj.Error:
                pass  # no stream right now (mid re-INVITE): no count this time
        reason = call.watch.expired(now)
        if reason == NO_ACK:
            give_up_half_open(call, sip_port, ack_timeout_s, now)
        elif reason is not None:
            end_call(call, reason)

"""Ending the calls a crashed media process left behind (I/O edge of :mod:`call_journal`).

Run once by the media process that takes a dead one's index, before it serves: each orphan
gets its ``call.ended`` (reason :data:`LOST`) through the usual outputs (webhook spool, captions
feed), and a BYE over a plain UDP socket (PJSIP's dialog died with the old process), so the PBX
hangs up and the front releases the call's slot as the BYE passes it. BYEs are retransmitted on
RFC 3261's timer E (500 ms doubling) until a final answer or :data:`BYE_TIMEOUT_S`; any final
answer (200, or 481 from a PBX that already gave up on the call) settles it.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

from sip_bridge import metrics
from sip_bridge.calls.dialogs import Dialog, DialogError, bye, next_hop, response_status
from sip_bridge.calls.journal import CallJournal, Orphan
from sip_bridge.delivery.call_outputs import CallOutputs
from sip_bridge.settings import tenants
from sip_bridge.settings.config import Config

log = logging.getLogger(__name__)

LOST = "media process lost"
BYE_REASON = 'Q.850;cause=41;text="media process lost"'  # 41: temporary failure
BYE_TIMEOUT_S = 4.0
T1_S = 0.5


@dataclass(slots=True)
class _Bye:
    call_id: str
    dest: tuple[str, int]
    branch: str
    request: bytes
    next_send: float
    interval: float = T1_S
    status: int | None = None


def end_orphans(cfg: Config, journal: CallJournal, outputs: CallOutputs, index: int) -> int:
    """End every call the journal holds from a previous run; returns how many."""
    orphans = journal.orphans()
    if not orphans:
        return 0
    log.warning("media process %d: %d call(s) of its previous run never ended; ending them",
                index, len(orphans))  # fmt: skip
    now = time.time()
    for o in orphans:
        _emit_ended(cfg, outputs, o, now)
        journal.forget(o.info.call_id)
    send_byes([(o.info.call_id, o.dialog) for o in orphans if o.dialog is not None])
    return len(orphans)


def _emit_ended(cfg: Config, outputs: CallOutputs, o: Orphan, now: float) -> None:
    policy = tenants.policy_for(cfg, o.tenant or None)
    if policy is None:  # the tenant left the config since: the operator's webhooks still hear
        policy = tenants.TenantPolicy(o.tenant, tuple(h.url for h in cfg.webhooks), False, "")
    outputs.event(policy, o.ended_event(LOST, now))
    metrics.CALLS.labels("lost").inc()
    log.warning("call %s: ended: %s (sip %s, %d final(s) kept)", o.info.call_id, LOST,
                o.info.sip_call_id, len(o.finals))  # fmt: skip


def send_byes(
    dialogs: list[tuple[str, Dialog]], timeout_s: float = BYE_TIMEOUT_S, reason: str = BYE_REASON
) -> int:
    """Send a BYE for each dialog and wait for their final answers; returns how many got one.
    ``reason``: the BYEs' Reason header (RFC 3326)."""
    if not dialogs:
        return 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        cseq = int(time.time())  # above any CSeq PJSIP used (it starts below 2**16)
        pending: list[_Bye] = []
        now = time.monotonic()
        for call_id, dlg in dialogs:
            try:
                dest = next_hop(dlg)
            except DialogError as exc:
                log.error("call %s: no BYE sent: %s", call_id, exc)
                continue
            branch, request = bye(dlg, "127.0.0.1", port, cseq, reason)
            pending.append(_Bye(call_id, dest, branch, request, now))
        deadline = now + timeout_s
        waiting = list(pending)
        while waiting and (now := time.monotonic()) < deadline:
            for b in waiting:
                if now >= b.next_send:
                    try:
                        sock.sendto(b.request, b.dest)
                    except OSError as exc:
                        log.warning("call %s: BYE to %s:%d: %s", b.call_id, *b.dest, exc)
                    b.next_send = now + b.interval
                    b.interval = min(b.interval * 2, 4.0)
            wake = min(b.next_send for b in waiting)
            sock.settimeout(max(0.01, min(wake, deadline) - time.monotonic()))
            try:
                data = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                continue
            for b in waiting:
                status = response_status(data, b.branch)
                if status is not None and status >= 200:
                    b.status = status
            waiting = [b for b in waiting if b.status is None]
        for b in pending:
            if b.status is None:
                log.warning("call %s: BYE unanswered in %.0f s", b.call_id, timeout_s)
            else:
                log.info("call %s: BYE answered %d", b.call_id, b.status)
        return sum(b.status is not None for b in pending)

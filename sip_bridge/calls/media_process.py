"""One PJSUA2 media process: answers calls the front sends it, taps their audio, delivers results.

Threads: PJSUA2 runs with ``threadCnt = 0`` and ``mainThreadOnly``, so every SIP callback and every
PJSUA2 call happens on this module's main loop thread (:meth:`MediaProcess.run`). PJSIP's own
``clock`` thread calls :class:`~sip_bridge.calls.audio_tap.CallAudioPort` for audio, which only
copies and queues (see ``audio_tap``). The :class:`~sip_bridge.uplink.audio_sender.AudioSender`
thread ships audio to the workers, and moves calls between them when one is lost; results come back
on a PULL socket read by the main loop, which drops those of a placement the call has left (its
epoch), turns the rest into events, sends finals into the call as SIP INFO, hands every event to
the webhook threads and tells the sender which audio it need not keep any more.

Never do slow work in a PJSUA2 callback, and never let Python's GC free a media port or a call:
they are released explicitly here (docs/architecture.md, "PJSUA2 facts the media process
relies on": it segfaults otherwise).
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pjsua2 as pj
import zmq
from zmq.auth.thread import ThreadAuthenticator

from media import wire
from media.curve import CurveKeys
from media.log_sampling import worth_logging
from sip_bridge import metrics, sip_headers
from sip_bridge.calls import dialogs, orphans, pjsip_settings
from sip_bridge.calls.audio_tap import CallAudioPort, release
from sip_bridge.calls.frame_copy import make_copier
from sip_bridge.calls.journal import CallJournal
from sip_bridge.calls.watch import MAX_DURATION, NO_ACK, RTP_TIMEOUT, CallWatch
from sip_bridge.delivery.call_outputs import CallOutputs
from sip_bridge.delivery.events import CallEvents, CallInfo, Event
from sip_bridge.delivery.info_policy import InfoPolicy
from sip_bridge.settings import tenants
from sip_bridge.settings.config import Config
from sip_bridge.uplink.audio_sender import (
    AudioSender,
    Commit,
    EndCall,
    Forget,
    Mute,
    SenderSettings,
    StartCall,
)

log = logging.getLogger(__name__)

# The Reason header (RFC 3326) of a BYE we send.
BYE_REASONS = {
    RTP_TIMEOUT: 'Q.850;cause=102;text="rtp timeout"',
    MAX_DURATION: 'Q.850;cause=16;text="max duration"',
    NO_ACK: 'SIP;cause=408;text="no ACK for the 200 OK"',
}
HANDED_ACK_WAIT_S = 2.0  # for PJSIP to take the ACK a half-open call's caller never sent
WATCH_EVERY_S = 1.0  # how often RTP counters and call limits are looked at
RESULT_MAX_BYTES = wire.HEADER_SIZE + wire.MAX_JSON_BYTES + 1024  # a result, with room to spare
DTMF_DIGITS = "0123456789*#ABCD"
DTMF_METHODS = {pj.PJSUA_DTMF_METHOD_RFC2833: "rfc4733", pj.PJSUA_DTMF_METHOD_SIP_INFO: "sip-info"}


@dataclass(slots=True)
class _Call:
    """Everything this process holds for one call. Only the main loop touches it."""

    call_id: str
    sip: BridgeCall
    tenant: tenants.TenantPolicy
    info: InfoPolicy
    watch: CallWatch
    headers: tuple[tuple[str, str], ...] = ()  # INVITE headers for call.started
    answered_at: float = field(default_factory=time.monotonic)
    port: CallAudioPort | None = None
    events: CallEvents | None = None
    codec: str = ""
    media_index: int = -1  # the audio stream in the call's SDP
    conf_slot: int = -1  # the conference slot our port listens to
    muted: bool = False
    disconnected_at: float | None = None
    end_reason: str = ""  # set when we end the call ourselves, else from the SIP state
    invite: str = ""  # the INVITE as received, until our 2xx makes the dialog
    dialog: dialogs.Dialog | None = None  # journaled: a successor can BYE the call
    invite_cseq: int | None = None  # the INVITE's CSeq number (for the ACK we hand PJSIP)
    acked_for_caller_at: float | None = None  # see MediaProcess._give_up_half_open


class BridgeCall(pj.Call):  # type: ignore[misc]
    def __init__(self, owner: MediaProcess, acc: pj.Account, pj_call_id: int) -> None:
        super().__init__(acc, pj_call_id)
        self.owner = owner
        self.bridge_call_id = wire.new_call_id()

    def onCallState(self, prm: Any) -> None:  # noqa: N802
        self.owner.on_call_state(self)

    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802
        self.owner.on_media_state(self)

    def onCallTsxState(self, prm: Any) -> None:  # noqa: N802
        self.owner.on_tsx_state(self, prm)

    def onDtmfDigit(self, prm: Any) -> None:  # noqa: N802
        self.owner.on_dtmf(self, prm)


class BridgeAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, owner: MediaProcess) -> None:
        super().__init__()
        self.owner = owner

    def onIncomingCall(self, prm: Any) -> None:  # noqa: N802
        self.owner.on_incoming_call(self, prm)


class MediaProcess:
    def __init__(self, cfg: Config, index: int) -> None:
        self.cfg = cfg
        self.index = index
        self.calls: dict[str, _Call] = {}
        self._doomed: list[_Call] = []  # released on the next loop turn, outside callbacks
        self._refused: dict[str, BridgeCall] = {}  # INVITEs we refused, until DISCONNECTED
        self._stop = False
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.curve = cfg.curve_keys()
        targets = cfg.worker_targets()
        self.sender = AudioSender(
            self.ctx,
            SenderSettings(
                tuple(audio for audio, _ in targets),
                tuple(beats for _, beats in targets),
                cfg.result_reply_endpoint(index),
                cfg.media.silence_gate,
                process_index=index,
                heartbeat_timeout_s=cfg.inference.heartbeat_timeout_ms / 1000.0,
                stall_timeout_s=cfg.inference.stall_timeout_s,
                replay_max_s=cfg.media.replay_max_s,
                curve=self.curve,
                calls_per_worker=cfg.inference.calls_per_worker,
                max_backlog_s=cfg.inference.max_backlog_s,
            ),
        )
        self.stale_results = 0
        self.over_capacity = 0  # INVITEs refused because every worker was full or behind
        self._next_capacity_log = 0.0
        self.bad_results = 0  # refused on the result socket: not wire format, or not a result
        self.node = f"{socket.gethostname()}/media{index}"  # as events name it
        self.outputs = CallOutputs(cfg, index, self.ctx, self.node)
        self.copy = make_copier()
        self.ep = pj.Endpoint()
        self.account: BridgeAccount | None = None
        self.results: zmq.Socket[Any] = self.ctx.socket(zmq.PULL)
        self.journal = CallJournal(cfg.journal_path(index))
        self._auth: Any = None
        self._journal_failing = False
        # Results are small JSON; a peer declaring a larger frame is cut off by ZeroMQ.
        self.results.setsockopt(zmq.MAXMSGSIZE, RESULT_MAX_BYTES)

    # -- set-up -------------------------------------------------------------------------------

    def start(self) -> None:
        cfg, m = self.cfg, self.cfg.media
        if self.curve is not None:
            self._auth = _authenticator(self.ctx, self.curve)
            self.curve.bind_side(self.results)
        self.results.bind(cfg.result_endpoint(self.index))
        self.ep.libCreate()
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.threadCnt = 0
        ep_cfg.uaConfig.mainThreadOnly = True
        ep_cfg.uaConfig.maxCalls = m.calls_per_process
        ep_cfg.uaConfig.userAgent = "sip-bridge"
        ep_cfg.logConfig.level = 2
        ep_cfg.logConfig.consoleLevel = 2
        pjsip_settings.set_media_config(ep_cfg, m)
        self.ep.libInit(ep_cfg)
        self.ep.audDevManager().setNullDev()

        tcfg = pj.TransportConfig()
        tcfg.port = cfg.media_sip_port(self.index)
        tcfg.boundAddress = "127.0.0.1"
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        taken = pjsip_settings.set_codecs(self.ep)
        log.info("media process %d: codecs %s (and RFC 4733 telephone-event)", self.index,
                 ", ".join(taken))  # fmt: skip
        self.ep.libStart()

        acfg = pjsip_settings.account_config(cfg, self.index)
        rtp = acfg.mediaConfig.transportConfig
        self.account = BridgeAccount(self)
        self.account.create(acfg, True)
        self.sender.start()
        self.outputs.start()
        orphans.end_orphans(cfg, self.journal, self.outputs, self.index)
        log.info(
            "media process %d: SIP on 127.0.0.1:%d, RTP %d-%d on %s, %d calls max",
            self.index, tcfg.port, rtp.port, rtp.port + rtp.portRange - 1, cfg.public_address,
            m.calls_per_process,
        )  # fmt: skip

    # -- PJSUA2 callbacks (main loop thread) -------------------------------------------------

    def on_incoming_call(self, acc: BridgeAccount, prm: Any) -> None:
        sip_call = BridgeCall(self, acc, prm.callId)
        fields = sip_headers.parse_headers(prm.rdata.wholeMsg)
        stamped = sip_headers.value(fields, tenants.TENANT_HEADER)
        tenant = tenants.policy_for(self.cfg, stamped)
        if tenant is None:
            u = self.cfg.unknown_tenant
            log.error("call %s: INVITE with %s %r, not a tenant of ours; refused with %d",
                      sip_call.bridge_call_id, tenants.TENANT_HEADER, stamped,
                      u.status)  # fmt: skip
            self._refuse(sip_call, u.status, u.reason)
            return
        if not self.sender.room:
            self._refuse_over_capacity(sip_call)
            return
        d = self.cfg.delivery
        info = InfoPolicy.for_peer(
            tenant.sip_info, d.info_package, sip_headers.recv_info(fields), d.sip_info_legacy,
            d.sip_info_partials, d.sip_info_partial_interval_ms / 1000.0,
        )  # fmt: skip
        now = time.monotonic()
        watch = CallWatch(now, self.cfg.media.rtp_timeout_s, self.cfg.media.max_call_s,
                          self.cfg.sip.ack_timeout_s)  # fmt: skip
        ours = tenants.TENANT_HEADER.lower()  # the front's, not the caller's
        picked = sip_headers.select(
            [f for f in fields if f[0].lower() != ours], self.cfg.sip.metadata_headers
        )
        call = _Call(
            sip_call.bridge_call_id, sip_call, tenant, info, watch, tuple(picked.items()), now,
            invite=prm.rdata.wholeMsg,
        )  # fmt: skip
        self.calls[call.call_id] = call
        op = pj.CallOpParam()
        op.statusCode = 200
        # RFC 6086: we take the framework and no package (DTMF INFO is a legacy usage).
        op.txOption.headers.append(_header("Recv-Info", ""))
        try:
            sip_call.answer(op)
        except pj.Error as exc:
            log.error("call %s: answering failed: %s", call.call_id, exc.info())
            self._forget(call)

    def _refuse_over_capacity(self, sip_call: BridgeCall) -> None:
        """Every worker has its calls (inference.calls_per_worker) or is behind: 503, which
        the front answers the caller with its Retry-After, without trying the other media
        processes (they share the workers). Logged once a minute, counted every time."""
        self.over_capacity += 1
        now = time.monotonic()
        if now >= self._next_capacity_log:
            self._next_capacity_log = now + 60.0
            i = self.cfg.inference
            log.warning(
                "call %s: refused with 503, every worker is at capacity (%d calls each, "
                "inference.calls_per_worker) or behind (over %g s of audio waiting); "
                "%d refused so far", sip_call.bridge_call_id, i.calls_per_worker,
                i.max_backlog_s, self.over_capacity,
            )  # fmt: skip
        self._refuse(sip_call, 503, sip_headers.OVER_CAPACITY_REASON, outcome="over_capacity")

    def _refuse(
        self,
        sip_call: BridgeCall,
        status: int,
        reason: str,
        warning: str = "",
        outcome: str = "refused",
    ) -> None:
        """Answer an INVITE we do not take (no tenant of ours; an offer we cannot use)."""
        op = pj.CallOpParam()
        op.statusCode = status
        op.reason = reason
        if warning:
            op.txOption.headers.append(_header("Warning", warning))
        try:
            sip_call.answer(op)
        except pj.Error as exc:
            log.warning("call %s: refusing failed: %s", sip_call.bridge_call_id, exc.info())
        self._refused[sip_call.bridge_call_id] = sip_call  # released once DISCONNECTED
        metrics.CALLS.labels(outcome).inc()

    def _call_for(self, sip_call: BridgeCall) -> _Call | None:
        return self.calls.get(sip_call.bridge_call_id)

    def on_media_state(self, sip_call: BridgeCall) -> None:
        """After each SDP negotiation: the first taps the call's audio; a re-INVITE may put
        the call on hold or take it off (muted meanwhile), or change the codec, which gives the
        stream a new conference slot that our port must listen to again."""
        call = self._call_for(sip_call)
        if call is None or call.disconnected_at is not None:
            return
        info = sip_call.getInfo()
        live = (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)
        for mi, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            held = media.status != pj.PJSUA_CALL_MEDIA_ACTIVE
            if media.status not in live:
                if call.port is not None:
                    self._set_hold(call, True)
                continue
            try:
                stream = sip_call.getStreamInfo(mi)
                audio = sip_call.getAudioMedia(mi)
            except pj.Error as exc:
                # An offer that starts on hold (inactive; sendonly in a burst) has no stream yet:
                # PJSUA says EINVAL. Raised out of this callback, it escaped into PJSIP (fuzz
                # finding). Nothing to tap until a re-INVITE takes the call off hold.
                log.info("call %s: no audio stream to tap (%s)", call.call_id, exc.info())
                if call.port is not None:
                    self._set_hold(call, True)
                return
            codec = f"{stream.codecName}/{stream.codecClockRate}"
            if call.port is None:
                rate = 16000 if stream.codecClockRate >= 16000 else 8000
                call.media_index = mi
                self._tap(call, audio, info, codec, rate)
            else:
                self._retap(call, mi, audio, codec)
            self._set_hold(call, held)
            return

    def _set_hold(self, call: _Call, held: bool) -> None:
        if held != call.muted:
            call.muted = held
            self.sender.queue.put(Mute(call.call_id, held))
            self._publish_calls()
            log.info("call %s: %s", call.call_id, "on hold (audio not transcribed)" if held
                     else "off hold")  # fmt: skip
        call.watch.hold(held, time.monotonic())

    def _retap(self, call: _Call, mi: int, audio: Any, codec: str) -> None:
        slot = audio.getPortId()
        if slot == call.conf_slot and mi == call.media_index and codec == call.codec:
            return
        assert call.port is not None
        try:
            audio.startTransmit(call.port)
        except pj.Error as exc:
            log.error("call %s: audio lost after re-INVITE (%s); hanging up", call.call_id,
                      exc.info())  # fmt: skip
            self._end_call(call, "media error")
            return
        log.info("call %s: audio re-attached after a re-INVITE (%s, was %s)", call.call_id, codec,
                 call.codec)  # fmt: skip
        call.conf_slot, call.media_index, call.codec = slot, mi, codec
        call.watch.media_restarted(time.monotonic())

    def _tap(self, call: _Call, audio: Any, info: Any, codec: str, rate: int) -> None:
        port = CallAudioPort(call.call_id, self.sender.queue, self.copy)
        try:
            fmt = pj.MediaFormatAudio()
            fmt.init(pj.PJMEDIA_FORMAT_PCM, rate, 1, 20000, 16)
            port.createPort(f"tap-{call.call_id[:8]}", fmt)
        except pj.Error as exc:
            self._abandon_tap(call, port, exc, started=False)
            return
        self.sender.queue.put(StartCall(call.call_id, info.callIdString, rate))
        try:
            audio.startTransmit(port)  # frames flow from here on, after StartCall in the queue
        except pj.Error as exc:
            self._abandon_tap(call, port, exc, started=True)
            return
        call.port = port
        call.conf_slot = audio.getPortId()
        call.codec = codec
        call.events = CallEvents(
            CallInfo(
                call.call_id, info.callIdString, info.remoteUri, info.localUri, codec, rate,
                self.node, call.headers,
            )
        )  # fmt: skip
        self._emit(call, call.events.started())
        metrics.CALLS.labels("answered").inc()
        self._publish_calls()
        log.info(
            "call %s: answered (sip %s, from %s, %s)",
            call.call_id, info.callIdString, info.remoteUri, codec,
        )  # fmt: skip

    def _abandon_tap(self, call: _Call, port: CallAudioPort, exc: Any, started: bool) -> None:
        """The audio tap could not be set up: undo what was done and hang the call up."""
        release(port)
        if started:
            self.sender.queue.put(EndCall(call.call_id))
            self.sender.queue.put(Forget(call.call_id))
        log.error("call %s: no audio tap (%s); hanging up", call.call_id, exc.info())
        self._hangup(call, 500)

    def on_call_state(self, sip_call: BridgeCall) -> None:
        call = self._call_for(sip_call)
        if call is None:
            refused = self._refused.get(sip_call.bridge_call_id)
            if refused is not None and refused.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
                del self._refused[sip_call.bridge_call_id]
                release(refused)
            return
        info = sip_call.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            call.watch.confirmed(time.monotonic())
            if call.acked_for_caller_at is not None:  # the ACK we handed PJSIP: now the BYE
                call.acked_for_caller_at = None
                log.info("call %s: hanging up: %s", call.call_id, NO_ACK)
                self._hangup(call, 200, BYE_REASONS[NO_ACK])
        if info.state != pj.PJSIP_INV_STATE_DISCONNECTED:
            return
        if not call.end_reason:
            call.end_reason = f"{info.lastStatusCode} {info.lastReason}".strip()
        call.disconnected_at = time.monotonic()
        self._untap(call)
        if call.events is None:
            log.info("call %s: ended before media (%s)", call.call_id, call.end_reason)
            self._forget(call)
        else:
            log.info("call %s: ended (%s), waiting for last results", call.call_id, call.end_reason)
        # The pjsua2 Call goes now, in its DISCONNECTED callback as pjsua2 intends, not when the
        # last results are in: PJSUA hands this slot to the next call at once, and deleting a
        # Call later clears that slot's user data and hangs up whatever call holds it then.
        # Nothing touches ``call.sip`` after this (every use checks ``disconnected_at``).
        release(sip_call)

    def on_tsx_state(self, sip_call: BridgeCall, prm: Any) -> None:
        call = self._call_for(sip_call)
        state = prm.e.body.tsxState
        tsx = state.tsx
        if call is None:
            return
        if tsx.method == "INVITE" and call.invite and state.type == pj.PJSIP_EVENT_TX_MSG:
            self._note_dialog(call, state.src.tdata.wholeMsg)
            return
        if tsx.method != "INFO" or tsx.role != pj.PJSIP_ROLE_UAC:
            return
        done = (pj.PJSIP_TSX_STATE_COMPLETED, pj.PJSIP_TSX_STATE_TERMINATED)
        if tsx.state in done and call.info.answered(tsx.statusCode):
            log.warning(
                "call %s: peer refused INFO (%d %s); captions continue by webhook only",
                call.call_id, tsx.statusCode, tsx.statusText,
            )  # fmt: skip

    def _note_dialog(self, call: _Call, sent: str) -> None:
        """Our 2xx to the INVITE is going out: the dialog is complete (it has our tag)."""
        if not sent.startswith("SIP/2.0 2"):
            return
        try:
            call.dialog = dialogs.from_messages(call.invite, sent)
        except dialogs.DialogError as exc:
            log.warning("call %s: dialog not journaled (%s): if this process dies, the call"
                        " is not hung up for the PBX", call.call_id, exc)  # fmt: skip
        call.invite_cseq = dialogs.invite_cseq(call.invite)
        call.invite = ""
        dialog = call.dialog
        if dialog is not None and call.events is not None:  # else call.started journals it
            self._journal(lambda: self.journal.dialog(call.call_id, dialog))

    def on_dtmf(self, sip_call: BridgeCall, prm: Any) -> None:
        call = self._call_for(sip_call)
        if call is None or call.events is None:
            return
        method = DTMF_METHODS.get(prm.method)
        digit = str(prm.digit).upper()
        if method is None or len(digit) != 1 or digit not in DTMF_DIGITS:
            # E.g. an RFC 4733 hook flash ("R"), or a SIP INFO "Signal=E": not a key of the pad.
            log.info("call %s: DTMF event %r (method %d) ignored: not 0-9, *, #, A-D",
                     call.call_id, prm.digit, prm.method)  # fmt: skip
            return
        # PJSIP reports an RFC 4733 digit as it starts, before its length is known.
        duration = prm.duration if 0 < prm.duration < 0xFFFF else None
        at = time.monotonic() - call.answered_at
        event = call.events.dtmf(digit, at, duration, method)
        if event is not None:
            log.info("call %s: DTMF %s (%s)", call.call_id, digit, method)
            self._emit(call, event)

    # -- results ------------------------------------------------------------------------------

    def _emit(self, call: _Call, event: Event) -> None:
        self.outputs.event(call.tenant, event)
        if call.events is not None:
            events, now = call.events, time.time()
            self._journal(lambda: self.journal.record(call.tenant.name, events, event,
                                                      call.dialog, now))  # fmt: skip
        if call.disconnected_at is None and call.info.wants(event.type, time.monotonic()):
            self._send_info(call, event)

    def _journal(self, write: Callable[[], None]) -> None:
        """A journal write; a failing disk costs the journal, never the call."""
        try:
            write()
        except sqlite3.Error as exc:
            if not self._journal_failing:
                log.error("media process %d: call journal %s: %s (calls go on; a crash now"
                          " leaves them to the PBX's timers)", self.index, self.journal.path,
                          exc)  # fmt: skip
            self._journal_failing = True
        else:
            self._journal_failing = False

    def _send_info(self, call: _Call, event: Event) -> None:
        prm = pj.CallSendRequestParam()
        prm.method = "INFO"
        prm.txOption.contentType = "application/json"
        prm.txOption.msgBody = event.body.decode()
        prm.txOption.headers.append(_header("Info-Package", self.cfg.delivery.info_package))
        prm.txOption.headers.append(_header("Content-Disposition", "Info-Package"))
        try:
            call.sip.sendRequest(prm)
        except pj.Error as exc:
            log.warning("call %s: INFO not sent: %s", call.call_id, exc.info())

    def _bad_result(self, why: str) -> None:
        """A message on the result socket that no worker of ours would send: count, log (the
        first ten, then every thousandth), drop."""
        self.bad_results += 1
        metrics.MEDIA_DROPS.labels("bad_result").inc()
        if worth_logging(self.bad_results):
            log.warning("media %d: bad message on the result socket dropped (%d so far): %s",
                        self.index, self.bad_results, why)  # fmt: skip

    def _on_result(self, frames: list[zmq.Frame]) -> None:
        try:
            msg = wire.decode([f.buffer for f in frames])
        except wire.WireError as exc:
            self._bad_result(str(exc))
            return
        if not isinstance(msg, wire.Transcript | wire.CallDone | wire.Checkpoint):
            self._bad_result(f"unexpected {type(msg).__name__}")
            return
        call = self.calls.get(msg.call_id)
        if call is None or call.events is None:
            log.debug("result for unknown call %s dropped", msg.call_id)
            return
        if msg.epoch != self.sender.epochs.get(msg.call_id):
            self.stale_results += 1  # from a worker the call has left
            metrics.MEDIA_DROPS.labels("stale_result").inc()
            log.debug("call %s: %s of epoch %d dropped (the call moved)", msg.call_id,
                      type(msg).__name__, msg.epoch)  # fmt: skip
            return
        if isinstance(msg, wire.Transcript):
            event = call.events.transcript(msg)
            if event is not None:
                self._emit(call, event)
                if msg.final:
                    self._time_final(call, msg)
                    self.sender.queue.put(Commit(msg.call_id, msg.end_offset, msg.utterance + 1))
        elif isinstance(msg, wire.Checkpoint):
            self.sender.queue.put(Commit(msg.call_id, msg.offset, msg.next_utterance))
        else:
            self._finish(call, call.end_reason or "hangup")

    def _time_final(self, call: _Call, msg: wire.Transcript) -> None:
        """End of speech → final, as this process saw both: the sender noted when the audio at
        its latest offset arrived, so the speech's end arrived that much earlier."""
        mark = self.sender.marks.get(call.call_id)
        if mark is None or call.events is None or not msg.speech_end_offset:
            return
        offset, arrived = mark
        rate = call.events.info.sample_rate
        spoken = arrived - (offset - msg.speech_end_offset) / rate
        metrics.FINAL_LATENCY.observe(max(0.0, time.monotonic() - spoken))

    def _finish(self, call: _Call, reason: str) -> None:
        if call.events is not None and not call.events.ended:
            duration = (call.disconnected_at or time.monotonic()) - call.answered_at
            metrics.CALLS.labels(_outcome(reason)).inc()
            self._emit(call, call.events.ended_event(reason, duration))
        self._forget(call)

    # -- releasing ----------------------------------------------------------------------------

    def _untap(self, call: _Call) -> None:
        if call.port is not None:
            try:
                call.port.destroy()  # first, so that every frame is queued before EndCall
            except pj.Error as exc:
                log.warning("call %s: destroying the audio port: %s", call.call_id, exc.info())
            call.port = None
            self.sender.queue.put(EndCall(call.call_id))

    def _end_call(self, call: _Call, reason: str) -> None:
        """We hang up a call ourselves; ``reason`` goes into call.ended and the BYE."""
        if call.end_reason or call.disconnected_at is not None:
            return
        call.end_reason = reason
        log.info("call %s: hanging up: %s", call.call_id, reason)
        self._hangup(call, 200, BYE_REASONS.get(reason))

    def _give_up_half_open(self, call: _Call, now: float) -> None:
        """End a call that got our 200 and never an ACK (RFC 3261 §13.3.1.4: with a BYE).

        PJSIP ends a call still waiting for its ACK without a BYE and keeps its call slot until
        its own wait for the ACK ends (32 s), and the front would go on counting it. So we hand
        PJSIP, over loopback, the ACK the caller owed: the dialog is confirmed, and the hangup
        that follows (:meth:`on_call_state`) sends the BYE through the front, which releases
        the call's count, and frees the slot once the BYE is answered or times out at the front.
        If PJSIP does not take that ACK in time, the call is hung up as it is.
        """
        call.end_reason = NO_ACK
        dialog, cseq = call.dialog, call.invite_cseq
        if dialog is None or cseq is None:
            log.warning("call %s: not ACKed; no dialog noted, hanging up as it is", call.call_id)
            self._hangup(call, 200)
            return
        log.info("call %s: no ACK for %.0f s: confirming it for PJSIP to BYE it", call.call_id,
                 self.cfg.sip.ack_timeout_s)  # fmt: skip
        port = self.cfg.media_sip_port(self.index)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            ack = dialogs.ack_for_caller(
                dialog, cseq, f"sip:127.0.0.1:{port}", "127.0.0.1", sock.getsockname()[1]
            )
            sock.sendto(ack, ("127.0.0.1", port))
        call.acked_for_caller_at = now

    def _watch(self, now: float) -> None:
        """RTP counters and call limits: end the calls that went quiet or ran too long."""
        for call in list(self.calls.values()):
            if call.disconnected_at is None and call.acked_for_caller_at is not None:
                if now - call.acked_for_caller_at >= HANDED_ACK_WAIT_S:  # PJSIP ignored it
                    call.acked_for_caller_at = None
                    self._hangup(call, 200, BYE_REASONS[NO_ACK])
                continue
            if call.disconnected_at is not None or call.end_reason:
                continue
            if call.port is not None and call.media_index >= 0:
                try:
                    stat = call.sip.getStreamStat(call.media_index)
                    call.watch.rtp(stat.rtcp.rxStat.pkt, now)
                except pj.Error:
                    pass  # no stream right now (mid re-INVITE): no count this time
            reason = call.watch.expired(now)
            if reason == NO_ACK:
                self._give_up_half_open(call, now)
            elif reason is not None:
                self._end_call(call, reason)

    def _hangup(self, call: _Call, code: int, reason_header: str | None = None) -> None:
        op = pj.CallOpParam()
        op.statusCode = code
        if reason_header:
            op.txOption.headers.append(_header("Reason", reason_header))
        try:
            call.sip.hangup(op)
        except pj.Error as exc:
            log.warning("call %s: hangup failed: %s", call.call_id, exc.info())

    def _sync_metrics(self) -> None:
        """Running counts kept on other threads, copied into the metrics once a second."""
        st = self.sender.stats
        for stage, total in (
            ("received", st.frames_in), ("sent", st.frames_sent),
            ("dropped_worker_full", st.frames_dropped),
            ("dropped_queue_full", CallAudioPort.dropped),
        ):  # fmt: skip
            metrics.sync_counter(metrics.FRAMES, stage, total)
        delivery = self.outputs.webhooks.stats().values()
        for result, total in (
            ("delivered", sum(d.delivered for d in delivery)),
            ("retried", sum(d.retried for d in delivery)),
            ("dead_letter", sum(d.parked for d in delivery)),
            ("dropped", sum(d.dropped_spool_full for d in delivery)),
        ):
            metrics.sync_counter(metrics.WEBHOOKS, result, total)
        metrics.sync_counter(metrics.MEDIA_DROPS, "bad_heartbeat", st.bad_heartbeats)
        metrics.ADMITTING.set(1 if self.sender.room else 0)
        router = self.sender.router
        for w in range(len(self.sender.settings.worker_endpoints)):
            metrics.WORKER_UP.labels(str(w)).set(1 if router.is_live(w) else 0)

    def _publish_calls(self) -> None:
        """What ``sip-bridge calls`` and the captions page list: this process's answered calls."""
        metrics.ACTIVE_CALLS.set(sum(c.events is not None for c in self.calls.values()))
        self.outputs.calls_changed([
            {
                "call_id": c.call_id,
                "sip_call_id": c.events.info.sip_call_id,
                "from": c.events.info.from_uri,
                "to": c.events.info.to_uri,
                "codec": c.codec,
                "started": round(c.events.started_at, 3),
                "on_hold": c.muted,
                "node": c.events.info.node,
                "tenant": c.tenant.name,
            }
            for c in self.calls.values()
            if c.events is not None
        ])  # fmt: skip

    def _forget(self, call: _Call) -> None:
        self.calls.pop(call.call_id, None)
        if call.events is not None:
            self._publish_calls()
        self.sender.queue.put(Forget(call.call_id))
        self._doomed.append(call)

    def _reap(self) -> None:
        """Release the PJSUA2 call objects of calls forgotten before they disconnected (those
        that did are released in their DISCONNECTED callback); a no-op for the others."""
        while self._doomed:
            call = self._doomed.pop()
            release(call.sip)

    def _check_flush_deadlines(self, now: float) -> None:
        limit = self.cfg.media.call_end_flush_s
        for call in list(self.calls.values()):
            if call.disconnected_at is not None and now - call.disconnected_at > limit:
                log.warning(
                    "call %s: no end-of-call answer from worker in %.0f s; ending without it",
                    call.call_id, limit,
                )  # fmt: skip
                self._finish(call, (call.end_reason or "hangup") + "; worker did not answer")

    # -- main loop ----------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.results, zmq.POLLIN)
        next_watch = time.monotonic() + WATCH_EVERY_S
        while not self._stop:
            self.ep.libHandleEvents(10)
            for _ in range(100):
                if not poller.poll(0):
                    break
                self._on_result(self.results.recv_multipart(copy=False))
            self._reap()
            now = time.monotonic()
            self.outputs.tick(now)
            self._check_flush_deadlines(now)
            if now >= next_watch:
                next_watch = now + WATCH_EVERY_S
                self._watch(now)
                self._sync_metrics()
        self.shutdown()

    def shutdown(self) -> None:
        log.info("media process %d: stopping (%d calls)", self.index, len(self.calls))
        try:
            self.ep.hangupAllCalls()
            for _ in range(50):  # let BYEs go out and DISCONNECTED callbacks run
                self.ep.libHandleEvents(10)
        except pj.Error:
            pass
        for call in list(self.calls.values()):
            self._untap(call)
            self._finish(call, call.end_reason or "shutdown")
        self._reap()
        for refused in self._refused.values():
            release(refused)
        self._refused.clear()
        sender_stopped = self.sender.stop()
        if not sender_stopped:
            log.error("media process %d: the audio sender did not stop within 5 s; exiting "
                      "without waiting for its sockets", self.index)  # fmt: skip
        self.outputs.close()
        self.journal.close()
        if self.account is not None:
            self.account.shutdown()
            release(self.account)
            self.account = None
        gc.collect()
        self.results.close(0)
        if self._auth is not None:
            self._auth.stop()
        self.ep.libDestroy()
        if sender_stopped:
            self.ctx.term()  # else it would wait for the sender's sockets forever


def _outcome(reason: str) -> str:
    """The ``sip_bridge_calls`` outcome of a call.ended reason."""
    if reason.startswith("shutdown"):
        return "shutdown"
    if reason.split(";")[0] in (RTP_TIMEOUT, MAX_DURATION, "media error"):
        return "ended_by_bridge"
    return "ended_by_caller"


def _header(name: str, value: str) -> Any:
    h = pj.SipHeader()
    h.hName = name
    h.hValue = value
    return h


def main(cfg: Config, index: int, on_ready: Callable[[], None] | None = None) -> int:
    proc = MediaProcess(cfg, index)

    def _stop(signum: int, frame: FrameType | None) -> None:
        proc.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    proc.start()
    if on_ready is not None:
        on_ready()
    proc.run()
    return 0


def _authenticator(ctx: zmq.Context[Any], keys: CurveKeys) -> ThreadAuthenticator:
    # The worker's own (inference.worker.authenticator): this side may not import it.
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized))
    return auth

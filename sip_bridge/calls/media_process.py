"""One PJSUA2 media process: answers calls the front sends it, taps their audio, delivers results.

Threads: PJSUA2 runs with ``threadCnt = 0`` and ``mainThreadOnly``, so every SIP callback and every
PJSUA2 call happens on this module's main loop thread (:meth:`MediaProcess.run`). PJSIP's own
``clock`` thread calls :class:`~sip_bridge.calls.audio_tap.CallAudioPort` for audio, which only
copies and queues (see ``audio_tap``). The :class:`~sip_bridge.uplink.audio_sender.AudioSender`
thread ships audio to the workers, and moves calls between them when one is lost; what it knows
(each call's current epoch, when its audio arrived, whether the workers have room) comes back as
facts on its ``facts`` queue, which the main loop drains into a
:class:`~sip_bridge.uplink.sender_facts.SenderView`. Results come back on a PULL socket read by
the main loop, which drops those of a placement the call has left (its epoch), turns the rest
into events, hands every event to its sinks (:mod:`~sip_bridge.delivery.sink`: webhooks,
captions, the call journal, SIP INFO) and tells the sender which audio it need not keep any more.

The parts of a call live beside this module: ``call_state`` (what is held of a call),
``call_media`` (its audio tap), ``hangups`` (calls we end ourselves), ``refusals`` (INVITEs
we do not take), ``info_sink`` and ``journal_sink``.

Never do slow work in a PJSUA2 callback, and never let Python's GC free a media port or a call:
they are released explicitly here (docs/architecture.md, "PJSUA2 facts the media process
relies on": it segfaults otherwise).
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import pjsua2 as pj
import zmq
from zmq.auth.thread import ThreadAuthenticator

from media import wire
from media.curve import CurveKeys
from media.log_sampling import worth_logging
from sip_bridge import metrics, sip_headers
from sip_bridge.calls import conversations, hangups, orphans, pjsip_settings
from sip_bridge.calls.audio_tap import CallAudioPort, release
from sip_bridge.calls.call_media import CallMedia
from sip_bridge.calls.call_state import (
    BridgeAccount,
    BridgeCall,
    CallState,
    StreamTap,
    call_rows,
    ended_outcome,
    header,
)
from sip_bridge.calls.frame_copy import make_copier
from sip_bridge.calls.info_sink import InfoSink
from sip_bridge.calls.journal import CallJournal
from sip_bridge.calls.journal_sink import JournalSink
from sip_bridge.calls.refusals import Refusals
from sip_bridge.calls.watch import CallWatch
from sip_bridge.delivery.call_outputs import CallOutputs
from sip_bridge.delivery.events import Event
from sip_bridge.delivery.info_policy import InfoPolicy
from sip_bridge.delivery.sink import ResultSink
from sip_bridge.settings import tenants
from sip_bridge.settings.config import Config
from sip_bridge.uplink.audio_sender import AudioSender, Commit, Forget, SenderSettings
from sip_bridge.uplink.sender_facts import SenderView

log = logging.getLogger(__name__)

WATCH_EVERY_S = 1.0  # how often RTP counters and call limits are looked at
RESULT_MAX_BYTES = wire.HEADER_SIZE + wire.MAX_JSON_BYTES + 1024  # a result, with room to spare
DTMF_DIGITS = "0123456789*#ABCD"
DTMF_METHODS = {pj.PJSUA_DTMF_METHOD_RFC2833: "rfc4733", pj.PJSUA_DTMF_METHOD_SIP_INFO: "sip-info"}


class MediaProcess:
    def __init__(self, cfg: Config, index: int) -> None:
        self.cfg = cfg
        self.index = index
        self.calls: dict[str, CallState] = {}
        self._doomed: list[CallState] = []  # released on the next loop turn, outside callbacks
        self.refusals = Refusals(cfg.inference.calls_per_worker, cfg.inference.max_backlog_s)
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
        # The sender as of its last facts: the main loop reads nothing of the sender thread.
        self.uplink = SenderView(len(targets))
        self.stale_results = 0
        self.bad_results = 0  # refused on the result socket: not wire format, or not a result
        self.node = f"{socket.gethostname()}/media{index}"  # as events name it
        self.outputs = CallOutputs(cfg, index, self.ctx, self.node)
        self.copy = make_copier()
        self.media = CallMedia(
            self.sender.queue, self.copy, self.node, self._emit, self._publish_calls,
            cfg.delivery.event_version,
        )  # fmt: skip
        self.ep = pj.Endpoint()
        self.account: BridgeAccount | None = None
        self.results: zmq.Socket[Any] = self.ctx.socket(zmq.PULL)
        self.journal = CallJournal(cfg.journal_path(index))
        self.journal_sink = JournalSink(self.journal, index)
        self.info_sink = InfoSink(cfg.delivery.info_package)
        # Every event of a call goes to each, in this order (webhooks, captions, journal, INFO).
        self.sinks: list[ResultSink[CallState]] = [
            *self.outputs.sinks, self.journal_sink, self.info_sink,
        ]  # fmt: skip
        self._auth: Any = None
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
        log.debug("media process %d: codecs %s (and RFC 4733 telephone-event)", self.index,
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
            self.refusals.refuse(sip_call, u.status, u.reason)
            return
        refused = conversations.refusal(sip_call.bridge_call_id, fields, prm.rdata.wholeMsg)
        if refused is not None:
            self.refusals.refuse(sip_call, refused.status, refused.reason, refused.warning)
            return
        self.uplink.drain(self.sender.facts)
        if not self.uplink.room:
            self.refusals.over_capacity_503(sip_call)
            return
        d = self.cfg.delivery
        info = InfoPolicy.for_peer(
            tenant.sip_info, d.info_package, sip_headers.recv_info(fields), d.sip_info_legacy,
            d.sip_info_partials, d.sip_info_partial_interval_ms / 1000.0,
        )  # fmt: skip
        now = time.monotonic()
        watch = CallWatch(now, self.cfg.media.rtp_timeout_s, self.cfg.media.max_call_s,
                          self.cfg.sip.ack_timeout_s)  # fmt: skip
        ours = (tenants.TENANT_HEADER.lower(), sip_headers.SIPREC_HEADER.lower())  # the front's
        picked = sip_headers.select(
            [f for f in fields if f[0].lower() not in ours], self.cfg.sip.metadata_headers
        )
        call = CallState(
            sip_call.bridge_call_id, sip_call, tenant, info, watch, tuple(picked.items()), now,
            invite=prm.rdata.wholeMsg,
        )  # fmt: skip
        op = pj.CallOpParam()
        op.opt.audioCount = conversations.classify(call, fields, prm.rdata.wholeMsg)
        self.calls[call.call_id] = call
        op.statusCode = 200
        # RFC 6086: we take the framework and no package (DTMF INFO is a legacy usage).
        op.txOption.headers.append(header("Recv-Info", ""))
        try:
            sip_call.answer(op)
        except pj.Error as exc:
            log.error("call %s: answering failed: %s", call.call_id, exc.info())
            self._forget(call)

    def _call_for(self, sip_call: BridgeCall) -> CallState | None:
        return self.calls.get(sip_call.bridge_call_id)

    def on_media_state(self, sip_call: BridgeCall) -> None:
        call = self._call_for(sip_call)
        if call is None or call.disconnected_at is not None:
            return
        self.media.negotiated(call)

    def on_call_state(self, sip_call: BridgeCall) -> None:
        call = self._call_for(sip_call)
        if call is None:
            self.refusals.call_state(sip_call)
            return
        info = sip_call.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            call.watch.confirmed(time.monotonic())
            hangups.confirmed(call)  # the ACK we handed PJSIP, if it was ours: now the BYE
        if info.state != pj.PJSIP_INV_STATE_DISCONNECTED:
            return
        if not call.end_reason:
            call.end_reason = f"{info.lastStatusCode} {info.lastReason}".strip()
        call.disconnected_at = time.monotonic()
        self.media.untap(call)
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
            self.journal_sink.answer_sent(call, state.src.tdata.wholeMsg)
            return
        if (call.siprec is not None and state.type == pj.PJSIP_EVENT_RX_MSG
                and tsx.role == pj.PJSIP_ROLE_UAS and tsx.method in ("INVITE", "UPDATE")
                and tsx.state == pj.PJSIP_TSX_STATE_TRYING):  # fmt: skip
            self._session_offer(call, state.src.rdata.wholeMsg)
            return
        self.info_sink.transaction(call, tsx)

    def on_rx_offer(self, sip_call: BridgeCall, prm: Any) -> None:
        """A re-INVITE or UPDATE offer: a SIPREC session answers every audio stream it has."""
        call = self._call_for(sip_call)
        if call is not None and call.siprec is not None:
            count = conversations.re_offer(call, prm.offer.wholeSdp)
            if count is None:
                prm.statusCode = 488
            else:
                prm.opt.audioCount = count

    def _session_offer(self, call: CallState, whole_msg: str) -> None:
        """New metadata (or labels) in a re-INVITE or UPDATE of a SIPREC session."""
        event = conversations.session_changed(call, whole_msg)
        if event is not None:
            self._emit(call, event)
            self._publish_calls()

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

    def _emit(self, call: CallState, event: Event) -> None:
        for sink in self.sinks:
            sink.event(call, event)

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
        found = self._stream_of(msg.call_id)
        if found is None or found[0].events is None:
            log.debug("result for unknown call %s dropped", msg.call_id)
            return
        call, tap = found
        assert call.events is not None
        # The WorkerEpoch of the placement this result answers was queued before its CallStart
        # went out, so it is in the facts by now.
        self.uplink.drain(self.sender.facts)
        if msg.epoch != self.uplink.epochs.get(msg.call_id):
            self.stale_results += 1  # from a worker the call has left
            metrics.MEDIA_DROPS.labels("stale_result").inc()
            log.debug("call %s: %s of epoch %d dropped (the call moved)", msg.call_id,
                      type(msg).__name__, msg.epoch)  # fmt: skip
            return
        if isinstance(msg, wire.Transcript):
            event = call.events.transcript(
                msg, tap.label, conversations.speaker_of(call, tap), tap.offset_s
            )
            if event is not None:
                self._emit(call, event)
                if msg.final:
                    self._time_final(tap, msg)
                    self.sender.queue.put(Commit(msg.call_id, msg.end_offset, msg.utterance + 1))
        elif isinstance(msg, wire.Checkpoint):
            self.sender.queue.put(Commit(msg.call_id, msg.offset, msg.next_utterance))
        else:
            tap.done = True
            if all(t.done for t in call.taps):
                self._finish(call, call.end_reason or "hangup")

    def _stream_of(self, uplink_id: str) -> tuple[CallState, StreamTap] | None:
        """The call and stream a worker's result is about (a SIPREC session's streams each have
        their own id; an ordinary call's one stream has the call's)."""
        call = self.calls.get(uplink_id)
        if call is not None:
            return (call, call.taps[0]) if call.taps else None
        for call in self.calls.values():
            for tap in call.taps:
                if tap.uplink_id == uplink_id:
                    return call, tap
        return None

    def _time_final(self, tap: StreamTap, msg: wire.Transcript) -> None:
        """End of speech → final, as this process saw both: the sender noted when the audio at
        its latest offset arrived, so the speech's end arrived that much earlier."""
        mark = self.uplink.marks.get(tap.uplink_id)
        if mark is None or not msg.speech_end_offset:
            return
        offset, arrived = mark
        rate = tap.rate
        spoken = arrived - (offset - msg.speech_end_offset) / rate
        metrics.FINAL_LATENCY.observe(max(0.0, time.monotonic() - spoken))

    def _finish(self, call: CallState, reason: str) -> None:
        if call.events is not None and not call.events.ended:
            duration = (call.disconnected_at or time.monotonic()) - call.answered_at
            metrics.CALLS.labels(ended_outcome(reason)).inc()
            self._emit(
                call, call.events.ended_event(reason, duration, conversations.participants(call))
            )
        self._forget(call)

    # -- metrics, the list of calls, releasing -----------------------------------------------

    def _sync_metrics(self) -> None:
        """Running counts kept on other threads, copied into the metrics once a second."""
        self.uplink.drain(self.sender.facts)
        st = self.uplink.counts
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
        metrics.ADMITTING.set(1 if self.uplink.room else 0)
        for w, live in enumerate(self.uplink.live):
            metrics.WORKER_UP.labels(str(w)).set(1 if live else 0)

    def _publish_calls(self) -> None:
        """What ``sip-bridge calls`` and the captions page list: this process's answered calls."""
        metrics.ACTIVE_CALLS.set(sum(c.events is not None for c in self.calls.values()))
        self.outputs.calls_changed(call_rows(self.calls.values()))

    def _forget(self, call: CallState) -> None:
        self.calls.pop(call.call_id, None)
        if call.events is not None:
            self._publish_calls()
        for uplink_id in {t.uplink_id for t in call.taps} or {call.call_id}:
            self.sender.queue.put(Forget(uplink_id))
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
            self.uplink.drain(self.sender.facts)
            self.ep.libHandleEvents(10)
            self.refusals.answer_refused()
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
                hangups.watch_calls(list(self.calls.values()), now,
                                    self.cfg.media_sip_port(self.index),
                                    self.cfg.sip.ack_timeout_s)  # fmt: skip
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
            self.media.untap(call)
            self._finish(call, call.end_reason or "shutdown")
        self._reap()
        self.refusals.release_all()
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

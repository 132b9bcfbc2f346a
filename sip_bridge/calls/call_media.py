"""A call's audio taps through its SDP negotiations: the first one taps the call's audio (a
:class:`~sip_bridge.calls.audio_tap.CallAudioPort` and the sender's ``StartCall``) and starts
its events; a re-INVITE may put the call on hold or take it off (``Mute``), or change the codec,
which gives the stream a new conference slot that the port must listen to again; the end
destroys the port before the sender's ``EndCall``, so that every frame is queued before it.

An ordinary call has one tap, on its first live audio stream. A SIPREC session has one per
labelled ``m=audio`` (:class:`~sip_bridge.calls.call_state.StreamTap`): each participant's
voice goes to the workers as a stream of its own. Its streams are ``a=sendonly`` by design, so
only a stream we no longer receive (``a=inactive``, or removed) counts as on hold.

Main loop thread only (PJSUA2 callbacks and calls). What goes to the sender goes on its queue,
behind the frames already there (``audio_sender``: these must not overtake a call's audio).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

from media import wire
from sip_bridge import metrics
from sip_bridge.calls.audio_tap import CallAudioPort, release
from sip_bridge.calls.call_state import CallState, StreamTap
from sip_bridge.calls.frame_copy import Copier
from sip_bridge.calls.hangups import end_call, hangup
from sip_bridge.delivery.events import CallEvents, CallInfo, Conversation, Event
from sip_bridge.uplink.audio_sender import EndCall, Forget, Item, Mute, StartCall

log = logging.getLogger(__name__)


class CallMedia:
    def __init__(
        self,
        to_sender: queue.SimpleQueue[Item],
        copy: Copier,
        node: str,
        emit: Callable[[CallState, Event], None],
        calls_changed: Callable[[], None],
        event_version: int = 2,
    ) -> None:
        """``emit``: an event of the call to its sinks; ``calls_changed``: the list of calls
        changed (one was answered or went on hold)."""
        self._to_sender = to_sender
        self._copy = copy
        self._node = node
        self._emit = emit
        self._calls_changed = calls_changed
        self._version = event_version

    def negotiated(self, call: CallState) -> None:
        """After each SDP negotiation of a call that has not disconnected."""
        info = call.sip.getInfo()
        was_muted = call.muted
        if call.siprec is None:
            self._negotiated_one(call, info)
        else:
            self._negotiated_session(call, info)
        if call.disconnected_at is not None or call.end_reason:
            return
        if call.events is None and any(t.port is not None for t in call.taps):
            self._start_events(call, info)
        elif call.events is not None and call.muted != was_muted:
            self._calls_changed()
        call.watch.hold(call.muted, time.monotonic())

    def untap(self, call: CallState) -> None:
        """The call ended: no more audio from it."""
        for tap in call.taps:
            if tap.port is None:
                continue
            try:
                tap.port.destroy()  # first, so that every frame is queued before EndCall
            except pj.Error as exc:
                log.warning("call %s: destroying the audio port: %s", call.call_id, exc.info())
            tap.port = None
            self._to_sender.put(EndCall(tap.uplink_id))

    # -- an ordinary call: its first live audio stream -----------------------------------------

    def _negotiated_one(self, call: CallState, info: Any) -> None:
        sip_call = call.sip
        live = (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)
        tap = call.taps[0] if call.taps else None
        for mi, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            held = media.status != pj.PJSUA_CALL_MEDIA_ACTIVE
            if media.status not in live:
                if tap is not None:
                    self._set_hold(call, tap, True)
                continue
            try:
                stream = sip_call.getStreamInfo(mi)
                audio = sip_call.getAudioMedia(mi)
            except pj.Error as exc:
                # An offer that starts on hold (inactive; sendonly in a burst) has no stream yet:
                # PJSUA says EINVAL. Raised out of this callback, it escaped into PJSIP (fuzz
                # finding). Nothing to tap until a re-INVITE takes the call off hold.
                log.info("call %s: no audio stream to tap (%s)", call.call_id, exc.info())
                if tap is not None:
                    self._set_hold(call, tap, True)
                return
            codec = f"{stream.codecName}/{stream.codecClockRate}"
            if tap is None:
                tap = StreamTap(call.call_id, mi, None, 0.0)
                if not self._tap(call, tap, audio, info, codec, _rate(stream)):
                    return
            else:
                self._retap(call, tap, mi, audio, codec)
            self._set_hold(call, tap, held)
            return

    # -- a SIPREC session: every labelled audio stream ------------------------------------------

    def _negotiated_session(self, call: CallState, info: Any) -> None:
        assert call.siprec is not None
        sip_call = call.sip
        for mi, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            label = call.siprec.label_of(mi)
            tap = next((t for t in call.taps if t.label == label), None)
            receiving = media.status in (
                pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
            ) and bool(media.dir & pj.PJMEDIA_DIR_DECODING)  # fmt: skip
            if not receiving:
                if tap is not None:
                    self._set_hold(call, tap, True)
                continue
            try:
                stream = sip_call.getStreamInfo(mi)
                audio = sip_call.getAudioMedia(mi)
            except pj.Error as exc:
                log.info("call %s: no audio to tap on stream %s (%s)", call.call_id, label,
                         exc.info())  # fmt: skip
                if tap is not None:
                    self._set_hold(call, tap, True)
                continue
            codec = f"{stream.codecName}/{stream.codecClockRate}"
            if tap is None:
                offset = time.monotonic() - call.answered_at if call.events is not None else 0.0
                tap = StreamTap(wire.new_call_id(), mi, label, offset)
                if not self._tap(call, tap, audio, info, codec, _rate(stream)):
                    return
                log.info("call %s: SIPREC stream %s tapped (%s)", call.call_id, label, codec)
            else:
                self._retap(call, tap, mi, audio, codec)
            self._set_hold(call, tap, False)

    # -- taps ----------------------------------------------------------------------------------

    def _set_hold(self, call: CallState, tap: StreamTap, held: bool) -> None:
        if held != tap.muted:
            tap.muted = held
            self._to_sender.put(Mute(tap.uplink_id, held))
            what = "call" if tap.label is None else f"stream {tap.label}"
            log.info("call %s: %s %s", call.call_id, what, "on hold (audio not transcribed)"
                     if held else "off hold")  # fmt: skip

    def _retap(self, call: CallState, tap: StreamTap, mi: int, audio: Any, codec: str) -> None:
        slot = audio.getPortId()
        if slot == tap.conf_slot and mi == tap.media_index and codec == tap.codec:
            return
        assert tap.port is not None
        try:
            audio.startTransmit(tap.port)
        except pj.Error as exc:
            log.error("call %s: audio lost after re-INVITE (%s); hanging up", call.call_id,
                      exc.info())  # fmt: skip
            end_call(call, "media error")
            return
        log.info("call %s: audio re-attached after a re-INVITE (%s, was %s)", call.call_id, codec,
                 tap.codec)  # fmt: skip
        tap.conf_slot, tap.media_index, tap.codec = slot, mi, codec
        call.watch.media_restarted(time.monotonic())

    def _tap(self, call: CallState, tap: StreamTap, audio: Any, info: Any, codec: str,
             rate: int) -> bool:  # fmt: skip
        """Listen to one stream; False if that failed and the call is being hung up."""
        port = CallAudioPort(tap.uplink_id, self._to_sender, self._copy)
        try:
            fmt = pj.MediaFormatAudio()
            fmt.init(pj.PJMEDIA_FORMAT_PCM, rate, 1, 20000, 16)
            port.createPort(f"tap-{tap.uplink_id[:8]}", fmt)
        except pj.Error as exc:
            self._abandon_tap(call, tap, port, exc, started=False)
            return False
        self._to_sender.put(StartCall(tap.uplink_id, info.callIdString, rate))
        try:
            audio.startTransmit(port)  # frames flow from here on, after StartCall in the queue
        except pj.Error as exc:
            self._abandon_tap(call, tap, port, exc, started=True)
            return False
        tap.port = port
        tap.conf_slot = audio.getPortId()
        tap.codec = codec
        tap.rate = rate
        call.taps.append(tap)
        return True

    def _start_events(self, call: CallState, info: Any) -> None:
        tap = call.taps[0]
        conversation = None
        if call.siprec is not None:
            conversation = call.siprec.conversation()
        elif call.conversation is not None:
            conversation = Conversation(call.conversation, "legs")
        call.events = CallEvents(
            CallInfo(
                call.call_id, info.callIdString, info.remoteUri, info.localUri, tap.codec,
                tap.rate, self._node, call.headers,
            ),
            version=self._version,
            conversation=conversation,
        )  # fmt: skip
        if call.siprec is not None:
            labels = [t.label or "" for t in call.taps]
            event = call.events.started(call.siprec.streams(labels), call.siprec.participants())
        elif call.speaker is not None:
            event = call.events.started((), (call.speaker,))
        else:
            event = call.events.started()
        self._emit(call, event)
        metrics.CALLS.labels("answered").inc()
        self._calls_changed()
        log.info(
            "call %s: answered (sip %s, from %s, %s%s)",
            call.call_id, info.callIdString, info.remoteUri, tap.codec,
            f", SIPREC, {len(call.taps)} streams" if call.siprec is not None else "",
        )  # fmt: skip

    def _abandon_tap(self, call: CallState, tap: StreamTap, port: CallAudioPort, exc: Any,
                     started: bool) -> None:  # fmt: skip
        """The audio tap could not be set up: undo what was done and hang the call up."""
        release(port)
        call.end_reason = call.end_reason or "media error"
        if started:
            self._to_sender.put(EndCall(tap.uplink_id))
            self._to_sender.put(Forget(tap.uplink_id))
        log.error("call %s: no audio tap (%s); hanging up", call.call_id, exc.info())
        hangup(call, 500)


def _rate(stream: Any) -> int:
    return 16000 if stream.codecClockRate >= 16000 else 8000

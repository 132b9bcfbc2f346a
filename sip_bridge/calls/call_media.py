"""A call's audio tap through its SDP negotiations: the first one taps the call's audio (a
:class:`~sip_bridge.calls.audio_tap.CallAudioPort` and the sender's ``StartCall``) and starts
its events; a re-INVITE may put the call on hold or take it off (``Mute``), or change the codec,
which gives the stream a new conference slot that the port must listen to again; the end
destroys the port before the sender's ``EndCall``, so that every frame is queued before it.

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

from sip_bridge import metrics
from sip_bridge.calls.audio_tap import CallAudioPort, release
from sip_bridge.calls.call_state import CallState
from sip_bridge.calls.frame_copy import Copier
from sip_bridge.calls.hangups import end_call, hangup
from sip_bridge.delivery.events import CallEvents, CallInfo, Event
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
    ) -> None:
        """``emit``: an event of the call to its sinks; ``calls_changed``: the list of calls
        changed (one was answered or went on hold)."""
        self._to_sender = to_sender
        self._copy = copy
        self._node = node
        self._emit = emit
        self._calls_changed = calls_changed

    def negotiated(self, call: CallState) -> None:
        """After each SDP negotiation of a call that has not disconnected."""
        sip_call = call.sip
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

    def untap(self, call: CallState) -> None:
        """The call ended: no more audio from it."""
        if call.port is not None:
            try:
                call.port.destroy()  # first, so that every frame is queued before EndCall
            except pj.Error as exc:
                log.warning("call %s: destroying the audio port: %s", call.call_id, exc.info())
            call.port = None
            self._to_sender.put(EndCall(call.call_id))

    def _set_hold(self, call: CallState, held: bool) -> None:
        if held != call.muted:
            call.muted = held
            self._to_sender.put(Mute(call.call_id, held))
            self._calls_changed()
            log.info("call %s: %s", call.call_id, "on hold (audio not transcribed)" if held
                     else "off hold")  # fmt: skip
        call.watch.hold(held, time.monotonic())

    def _retap(self, call: CallState, mi: int, audio: Any, codec: str) -> None:
        slot = audio.getPortId()
        if slot == call.conf_slot and mi == call.media_index and codec == call.codec:
            return
        assert call.port is not None
        try:
            audio.startTransmit(call.port)
        except pj.Error as exc:
            log.error("call %s: audio lost after re-INVITE (%s); hanging up", call.call_id,
                      exc.info())  # fmt: skip
            end_call(call, "media error")
            return
        log.info("call %s: audio re-attached after a re-INVITE (%s, was %s)", call.call_id, codec,
                 call.codec)  # fmt: skip
        call.conf_slot, call.media_index, call.codec = slot, mi, codec
        call.watch.media_restarted(time.monotonic())

    def _tap(self, call: CallState, audio: Any, info: Any, codec: str, rate: int) -> None:
        port = CallAudioPort(call.call_id, self._to_sender, self._copy)
        try:
            fmt = pj.MediaFormatAudio()
            fmt.init(pj.PJMEDIA_FORMAT_PCM, rate, 1, 20000, 16)
            port.createPort(f"tap-{call.call_id[:8]}", fmt)
        except pj.Error as exc:
            self._abandon_tap(call, port, exc, started=False)
            return
        self._to_sender.put(StartCall(call.call_id, info.callIdString, rate))
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
                self._node, call.headers,
            )
        )  # fmt: skip
        self._emit(call, call.events.started())
        metrics.CALLS.labels("answered").inc()
        self._calls_changed()
        log.info(
            "call %s: answered (sip %s, from %s, %s)",
            call.call_id, info.callIdString, info.remoteUri, codec,
        )  # fmt: skip

    def _abandon_tap(self, call: CallState, port: CallAudioPort, exc: Any, started: bool) -> None:
        """The audio tap could not be set up: undo what was done and hang the call up."""
        release(port)
        if started:
            self._to_sender.put(EndCall(call.call_id))
            self._to_sender.put(Forget(call.call_id))
        log.error("call %s: no audio tap (%s); hanging up", call.call_id, exc.info())
        hangup(call, 500)

"""One call as a media process holds it: :class:`CallState`, and the pjsua2 objects whose
callbacks bring its SIP events (:class:`BridgeCall`, :class:`BridgeAccount`).

PJSUA2 runs ``mainThreadOnly``, so every callback here comes on the media process's main loop
thread, and only that thread touches a :class:`CallState`. The callbacks do nothing but hand
the event to their owner (:class:`CallbackOwner`, the media process).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pjsua2 as pj

from media import wire
from sip_bridge.calls import dialogs
from sip_bridge.calls.audio_tap import CallAudioPort
from sip_bridge.calls.siprec_call import SiprecCall
from sip_bridge.calls.watch import MAX_DURATION, RTP_TIMEOUT, CallWatch
from sip_bridge.delivery.events import CallEvents
from sip_bridge.delivery.info_policy import InfoPolicy
from sip_bridge.settings import tenants
from sip_bridge.siprec.speakers import Speaker


class CallbackOwner(Protocol):
    """Who answers the pjsua2 callbacks (the media process)."""

    def on_incoming_call(self, acc: BridgeAccount, prm: Any) -> None: ...
    def on_call_state(self, sip_call: BridgeCall) -> None: ...
    def on_media_state(self, sip_call: BridgeCall) -> None: ...
    def on_tsx_state(self, sip_call: BridgeCall, prm: Any) -> None: ...
    def on_dtmf(self, sip_call: BridgeCall, prm: Any) -> None: ...
    def on_rx_offer(self, sip_call: BridgeCall, prm: Any) -> None: ...


class BridgeCall(pj.Call):  # type: ignore[misc]
    def __init__(self, owner: CallbackOwner, acc: pj.Account, pj_call_id: int) -> None:
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

    def onCallRxOffer(self, prm: Any) -> None:  # noqa: N802
        self.owner.on_rx_offer(self, prm)


class BridgeAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, owner: CallbackOwner) -> None:
        super().__init__()
        self.owner = owner

    def onIncomingCall(self, prm: Any) -> None:  # noqa: N802
        self.owner.on_incoming_call(self, prm)


@dataclass(slots=True)
class StreamTap:
    """One audio stream of a call as we tap it. An ordinary call has one, whose ``uplink_id``
    is the call's id; a SIPREC session has one per ``m=audio`` (each participant's voice), each
    with its own id towards the workers, so each is transcribed as its own stream."""

    uplink_id: str  # the id the workers know this stream's audio by
    media_index: int  # its m= line in the call's SDP
    label: str | None  # SDP a=label (SIPREC); None on an ordinary call
    offset_s: float  # when its audio began, seconds from the answer
    port: CallAudioPort | None = None
    conf_slot: int = -1  # the conference slot our port listens to
    codec: str = ""
    rate: int = 8000
    muted: bool = False
    done: bool = False  # the worker sent CallDone for it


@dataclass(slots=True)
class CallState:
    """Everything this process holds for one call. Only the main loop touches it."""

    call_id: str
    sip: BridgeCall
    tenant: tenants.TenantPolicy
    info: InfoPolicy
    watch: CallWatch
    headers: tuple[tuple[str, str], ...] = ()  # INVITE headers for call.started
    answered_at: float = field(default_factory=time.monotonic)
    events: CallEvents | None = None
    taps: list[StreamTap] = field(default_factory=list)
    siprec: SiprecCall | None = None  # a SIPREC recording session
    conversation: str | None = None  # X-Transcribe-Conversation of a tagged leg
    speaker: Speaker | None = None  # X-Transcribe-Speaker of a tagged leg, as its name
    disconnected_at: float | None = None
    end_reason: str = ""  # set when we end the call ourselves, else from the SIP state
    invite: str = ""  # the INVITE as received, until our 2xx makes the dialog
    dialog: dialogs.Dialog | None = None  # journaled: a successor can BYE the call
    invite_cseq: int | None = None  # the INVITE's CSeq number (for the ACK we hand PJSIP)
    acked_for_caller_at: float | None = None  # see hangups.give_up_half_open

    @property
    def codec(self) -> str:
        return self.taps[0].codec if self.taps else ""

    @property
    def muted(self) -> bool:
        """On hold: no stream of the call is being transcribed."""
        return bool(self.taps) and all(t.muted or t.port is None for t in self.taps)


def call_rows(calls: Iterable[CallState]) -> list[dict[str, Any]]:
    """What ``sip-bridge calls`` and the captions page list: the answered calls."""
    return [
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
            "conversation": _conversation_row(c),
        }
        for c in calls
        if c.events is not None
    ]  # fmt: skip


def _conversation_row(c: CallState) -> dict[str, Any] | None:
    """A SIPREC session or a tagged leg: its conversation and who speaks, for the list."""
    if c.siprec is not None:
        labels = [t.label or "" for t in c.taps]
        return {
            "id": c.siprec.sip_call_id,
            "kind": "siprec",
            "participants": [
                {"participant_id": p.participant_id, "name": p.name, "aor": p.aor}
                for p in c.siprec.participants()
            ],
            "streams": [
                {"stream": label, "name": None if s is None else (s.name or s.aor),
                 "on_hold": t.muted}
                for (label, s), t in zip(c.siprec.streams(labels), c.taps, strict=True)
            ],
        }  # fmt: skip
    if c.conversation is not None:
        name = c.speaker.name if c.speaker is not None else None
        return {"id": c.conversation, "kind": "legs", "participants": [
            {"participant_id": None, "name": name, "aor": None}], "streams": []}  # fmt: skip
    return None


def ended_outcome(reason: str) -> str:
    """The ``sip_bridge_calls`` outcome of a call.ended reason."""
    if reason.startswith("shutdown"):
        return "shutdown"
    if reason.split(";")[0] in (RTP_TIMEOUT, MAX_DURATION, "media error"):
        return "ended_by_bridge"
    return "ended_by_caller"


def header(name: str, value: str) -> Any:
    """A SIP header for a PJSUA2 request or answer."""
    h = pj.SipHeader()
    h.hName = name
    h.hValue = value
    return h

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
from sip_bridge.calls.watch import MAX_DURATION, RTP_TIMEOUT, CallWatch
from sip_bridge.delivery.events import CallEvents
from sip_bridge.delivery.info_policy import InfoPolicy
from sip_bridge.settings import tenants


class CallbackOwner(Protocol):
    """Who answers the pjsua2 callbacks (the media process)."""

    def on_incoming_call(self, acc: BridgeAccount, prm: Any) -> None: ...
    def on_call_state(self, sip_call: BridgeCall) -> None: ...
    def on_media_state(self, sip_call: BridgeCall) -> None: ...
    def on_tsx_state(self, sip_call: BridgeCall, prm: Any) -> None: ...
    def on_dtmf(self, sip_call: BridgeCall, prm: Any) -> None: ...


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


class BridgeAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, owner: CallbackOwner) -> None:
        super().__init__()
        self.owner = owner

    def onIncomingCall(self, prm: Any) -> None:  # noqa: N802
        self.owner.on_incoming_call(self, prm)


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
    acked_for_caller_at: float | None = None  # see hangups.give_up_half_open


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
        }
        for c in calls
        if c.events is not None
    ]  # fmt: skip


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

"""Where a call's events go: the one interface every output of a media process implements.

A media process makes each event of a call once (:class:`~sip_bridge.delivery.events.CallEvents`
numbers them) and hands it to each of its sinks in turn, in a fixed order: the webhook spool and
the captions feed (``call_outputs``), the call journal (``calls/journal_sink``), SIP INFO into
the call (``calls/info_sink``). A sink decides for itself which events it takes (INFO takes
finals and DTMF, say); all get the same :class:`Event`, the same bytes.

One method, not one per kind of event: the kind is in the event (``Event.type``), and every
sink but INFO treats all kinds alike.

Sinks are called on the media process's main loop thread, in the order the call produced its
events, and must never block there: slow work (an HTTP POST) belongs to a thread of the sink's
own, fed by a queue or a spool. What a sink needs of the call is its own business: the sink
names it as a Protocol (:class:`TenantCall` here; the INFO sink needs the pjsua2 call), and the
media process's call satisfies them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from sip_bridge.delivery.events import Event
from sip_bridge.settings.tenants import TenantPolicy

CallT_contra = TypeVar("CallT_contra", contravariant=True)


class ResultSink(Protocol[CallT_contra]):
    """One output of a call's events."""

    def event(self, call: CallT_contra, event: Event) -> None:
        """``event`` of ``call``: main loop thread, in the call's order; never blocks."""


class TenantCall(Protocol):
    """What the webhooks and the captions feed need of a call: whose it is."""

    @property
    def tenant(self) -> TenantPolicy: ...


@dataclass(frozen=True, slots=True)
class PastCall:
    """A call known only by its tenant: one a crashed media process left (``calls/orphans``)."""

    tenant: TenantPolicy

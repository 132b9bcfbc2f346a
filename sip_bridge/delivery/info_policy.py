"""Which events go into a call as SIP INFO (sans-IO).

RFC 6086: our INFOs belong to an Info-Package (``delivery.info_package``, "transcript" by
default). A peer that lists packages in its INVITE's ``Recv-Info`` gets INFOs only if ours is
listed; a peer with no ``Recv-Info`` at all predates Info-Packages (most PBXs) and gets them
when ``delivery.sip_info_legacy`` allows. Finals and DTMF always go; partials only when enabled,
at most one per call per interval. A peer that refuses an INFO (405, 415, 469, 488, 501) gets
no more on that call; webhooks carry on regardless.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip_bridge.delivery.events import DTMF, TRANSCRIPT_FINAL, TRANSCRIPT_PARTIAL

# A peer answering one of these to an INFO does not want them.
REFUSALS = frozenset({405, 415, 469, 488, 501})


@dataclass(slots=True)
class InfoPolicy:
    enabled: bool  # INFOs wanted at all, and the peer takes our package
    partials: bool
    partial_interval_s: float
    refused_with: int = 0  # the status of the refusal; 0 while the peer takes them
    _last_partial: float | None = None

    @classmethod
    def for_peer(
        cls,
        sip_info: bool,
        package: str,
        peer_packages: frozenset[str] | None,
        legacy: bool,
        partials: bool,
        partial_interval_s: float,
    ) -> InfoPolicy:
        takes = legacy if peer_packages is None else package.lower() in peer_packages
        return cls(sip_info and takes, partials, partial_interval_s)

    def wants(self, event_type: str, now: float) -> bool:
        """Should this event go into the call now? (A partial that may is counted as sent.)"""
        if not self.enabled or self.refused_with:
            return False
        if event_type in (TRANSCRIPT_FINAL, DTMF):
            return True
        if event_type != TRANSCRIPT_PARTIAL or not self.partials:
            return False
        if self._last_partial is not None and now - self._last_partial < self.partial_interval_s:
            return False
        self._last_partial = now
        return True

    def answered(self, status: int) -> bool:
        """The peer's answer to one of our INFOs; True the first time it is a refusal."""
        if status in REFUSALS and not self.refused_with:
            self.refused_with = status
            return True
        return False

"""The events a call produces, as consumers see them (SIP INFO bodies and webhook POSTs).

Sans-IO: :class:`CallEvents` numbers one call's events (``seq`` starts at 1 and increases by one)
and keeps the finals for ``call.ended``. It owns the JSON shape of every event and nothing else:
no sockets, no SIP. Times (``start``/``end``) are seconds from the moment the call was answered.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

from media.wire import Transcript

CALL_STARTED: Final = "call.started"
TRANSCRIPT_PARTIAL: Final = "transcript.partial"
TRANSCRIPT_FINAL: Final = "transcript.final"
CALL_ENDED: Final = "call.ended"
DTMF: Final = "dtmf"


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    call_id: str
    seq: int
    body: bytes  # the UTF-8 JSON object, exactly as sent everywhere

    def as_dict(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.body)
        return obj


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What we know of a call when it is answered."""

    call_id: str
    sip_call_id: str
    from_uri: str
    to_uri: str
    codec: str
    sample_rate: int
    node: str  # which media process took the call, e.g. "host/media1"
    headers: tuple[tuple[str, str], ...] = ()  # INVITE headers picked by sip.metadata_headers


@dataclass(slots=True)
class CallEvents:
    info: CallInfo
    started_at: float = field(default_factory=time.time)  # wall clock, for consumers
    _seq: int = 0
    _finals: list[tuple[int, float, float, str]] = field(default_factory=list)
    _next_final: int = 0  # utterances before this one have had their final
    _ended: bool = False

    def _make(self, type_: str, extra: dict[str, Any]) -> Event:
        self._seq += 1
        obj: dict[str, Any] = {
            "type": type_,
            "call_id": self.info.call_id,
            "sip_call_id": self.info.sip_call_id,
            "seq": self._seq,
        }
        obj.update(extra)
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        return Event(type_, self.info.call_id, self._seq, body)

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def seq(self) -> int:
        """The ``seq`` of the last event made (0 before any)."""
        return self._seq

    def restore(self, seq: int, finals: tuple[tuple[int, float, float, str], ...]) -> None:
        """Pick up a call another process numbered up to ``seq`` (see ``call_journal``)."""
        self._seq = seq
        self._finals = list(finals)
        self._next_final = max((u for u, _, _, _ in finals), default=-1) + 1

    def started(self) -> Event:
        return self._make(
            CALL_STARTED,
            {
                "from": self.info.from_uri,
                "to": self.info.to_uri,
                "codec": self.info.codec,
                "sample_rate": self.info.sample_rate,
                "node": self.info.node,
                "headers": dict(self.info.headers),
                "timestamp": round(self.started_at, 3),
            },
        )

    def dtmf(self, digit: str, at: float, duration_ms: int | None, method: str) -> Event | None:
        """A key pressed by the caller: ``at`` seconds from the answer, ``method`` "rfc4733"
        (RTP telephone-event) or "sip-info"; ``None`` once the call has ended."""
        if self._ended:
            return None
        return self._make(
            DTMF,
            {"digit": digit, "time": round(at, 3), "duration_ms": duration_ms, "method": method},
        )

    def transcript(self, t: Transcript) -> Event | None:
        """The event for a worker's transcript; ``None`` once the call has ended, and for a
        transcript of an utterance whose final was already given (a call moved to another
        worker may hear part of it again): no utterance is delivered twice."""
        if self._ended or t.utterance < self._next_final:
            return None
        if t.final:
            self._finals.append((t.utterance, t.start, t.end, t.text))
            self._next_final = t.utterance + 1
        return self._make(
            TRANSCRIPT_FINAL if t.final else TRANSCRIPT_PARTIAL,
            {
                "utterance": t.utterance,
                "text": t.text,
                "start": round(t.start, 3),
                "end": round(t.end, 3),
                "confidence": round(t.confidence, 3),
            },
        )

    def ended_event(self, reason: str, duration: float) -> Event:
        """``call.ended`` with the whole transcript; only once."""
        if self._ended:
            raise RuntimeError(f"call {self.info.call_id} already ended")
        self._ended = True
        finals = sorted(self._finals)
        return self._make(
            CALL_ENDED,
            {
                "reason": reason,
                "duration": round(duration, 3),
                "text": " ".join(text for _, _, _, text in finals if text),
                "utterances": [
                    {"utterance": u, "start": round(s, 3), "end": round(e, 3), "text": text}
                    for u, s, e, text in finals
                ],
            },
        )

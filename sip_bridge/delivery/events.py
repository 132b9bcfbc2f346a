"""The events a call produces, as consumers see them (SIP INFO bodies and webhook POSTs).

Sans-IO: :class:`CallEvents` numbers one call's events (``seq`` starts at 1 and increases by one)
and keeps the finals for ``call.ended``. It owns the JSON shape of every event and nothing else:
no sockets, no SIP. Times (``start``/``end``) are seconds from the moment the call was answered.

Two versions of the contract (``schemas/v1``, ``schemas/v2``): version 2, the default, adds the
conversation a call belongs to (a SIPREC recording session, or legs a PBX tagged with one
conversation id), each transcript's stream and speaker, and ``conversation.updated``. A call
with several streams (SIPREC: one per participant) numbers utterances per stream, and its
``call.ended`` holds every stream's finals interleaved by time. Version 1 is kept for consumers
that validate against it: it has no speakers, so a session of several streams gets its finals
only (no partials), numbered across the session in the order they came.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from media.wire import Transcript

CALL_STARTED: Final = "call.started"
TRANSCRIPT_PARTIAL: Final = "transcript.partial"
TRANSCRIPT_FINAL: Final = "transcript.final"
CALL_ENDED: Final = "call.ended"
DTMF: Final = "dtmf"
CONVERSATION_UPDATED: Final = "conversation.updated"  # version 2 only

EVENT_VERSION: Final = 2  # the contract sent unless delivery.event_version says 1
VERSIONS: Final = (1, 2)


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


class Person(Protocol):
    """Who speaks (version 2): a SIPREC participant, or a leg's speaker label as ``name``."""

    @property
    def participant_id(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def aor(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Conversation:
    """The conversation a call is part of (version 2). ``kind`` "siprec": the call is a
    recording session and ``id`` its SIP Call-ID; ``session_ids`` and ``call_ids`` name the
    recorded (communication) sessions as the metadata does. ``kind`` "legs": one of the calls a
    PBX tagged with the same conversation id (``X-Transcribe-Conversation``)."""

    id: str
    kind: str
    session_ids: tuple[str, ...] = ()
    call_ids: tuple[str, ...] = ()
    metadata: str = "none"  # SIPREC: "complete", "none" (not yet) or "invalid"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "session_ids": list(self.session_ids),
            "call_ids": list(self.call_ids),
            "metadata": self.metadata,
        }


@dataclass(frozen=True, slots=True)
class FinalText:
    """A final as ``call.ended`` lists it (and the call journal keeps it)."""

    utterance: int
    start: float
    end: float
    text: str
    stream: str | None = None  # the SDP label of its stream, on a call of several streams
    speaker: Person | None = None


def speaker_dict(s: Person | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"participant_id": s.participant_id, "name": s.name, "aor": s.aor}


@dataclass(slots=True)
class CallEvents:
    info: CallInfo
    started_at: float = field(default_factory=time.time)  # wall clock, for consumers
    version: int = EVENT_VERSION
    conversation: Conversation | None = None
    _seq: int = 0
    _finals: list[FinalText] = field(default_factory=list)
    # per stream (None: the call's one stream): utterances before this one have had their final
    _next_final: dict[str | None, int] = field(default_factory=dict)
    _v1_utterances: int = 0  # version 1, several streams: finals numbered across the session
    _ended: bool = False

    def _make(self, type_: str, extra: dict[str, Any]) -> Event:
        self._seq += 1
        obj: dict[str, Any] = {
            "type": type_,
            "call_id": self.info.call_id,
            "sip_call_id": self.info.sip_call_id,
            "seq": self._seq,
        }
        if self.version >= 2:
            obj["version"] = self.version
            obj["conversation"] = None if self.conversation is None else self.conversation.as_dict()
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

    def restore(self, seq: int, finals: tuple[FinalText, ...]) -> None:
        """Pick up a call another process numbered up to ``seq`` (see ``call_journal``)."""
        self._seq = seq
        self._finals = list(finals)
        for f in finals:
            if self.version < 2 and f.stream is not None:
                continue  # numbered across the session, not in its stream (see transcript())
            self._next_final[f.stream] = max(self._next_final.get(f.stream, 0), f.utterance + 1)
        self._v1_utterances = len(finals)

    def started(self, streams: tuple[tuple[str, Person | None], ...] = (),
                participants: tuple[Person, ...] = ()) -> Event:  # fmt: skip
        """The first event. Version 2 also lists the ``participants`` known now and each
        stream's speaker (``(label, speaker)``; none for a call of one stream)."""
        extra: dict[str, Any] = {
            "from": self.info.from_uri,
            "to": self.info.to_uri,
            "codec": self.info.codec,
            "sample_rate": self.info.sample_rate,
            "node": self.info.node,
            "headers": dict(self.info.headers),
            "timestamp": round(self.started_at, 3),
        }
        if self.version >= 2:
            extra.update(_who(streams, participants))
        return self._make(CALL_STARTED, extra)

    def updated(self, conversation: Conversation, streams: tuple[tuple[str, Person | None], ...],
                participants: tuple[Person, ...]) -> Event | None:  # fmt: skip
        """``conversation.updated``: the metadata changed who is in the conversation or who
        speaks on which stream (version 2; ``None`` in version 1 and after the end)."""
        self.conversation = conversation
        if self._ended or self.version < 2:
            return None
        return self._make(CONVERSATION_UPDATED, _who(streams, participants))

    def dtmf(self, digit: str, at: float, duration_ms: int | None, method: str) -> Event | None:
        """A key pressed by the caller: ``at`` seconds from the answer, ``method`` "rfc4733"
        (RTP telephone-event) or "sip-info"; ``None`` once the call has ended."""
        if self._ended:
            return None
        return self._make(
            DTMF,
            {"digit": digit, "time": round(at, 3), "duration_ms": duration_ms, "method": method},
        )

    def transcript(self, t: Transcript, stream: str | None = None, speaker: Person | None = None,
                   offset_s: float = 0.0) -> Event | None:  # fmt: skip
        """The event for a worker's transcript; ``None`` once the call has ended, and for a
        transcript of an utterance whose final was already given (a call moved to another
        worker may hear part of it again): no utterance is delivered twice.

        ``stream``: its SDP label on a call of several streams, whose utterances are numbered
        per stream; ``speaker``: who speaks on it; ``offset_s``: when that stream's audio began,
        from the answer (the worker counts time from there)."""
        if self._ended or t.utterance < self._next_final.get(stream, 0):
            return None
        start, end = t.start + offset_s, t.end + offset_s
        utterance = t.utterance
        if self.version < 2 and stream is not None:
            if not t.final:
                return None  # v1 cannot say which stream a partial belongs to
            utterance = self._v1_utterances
        if t.final:
            self._finals.append(FinalText(utterance, start, end, t.text, stream, speaker))
            self._next_final[stream] = t.utterance + 1
            self._v1_utterances += 1
        extra: dict[str, Any] = {
            "utterance": utterance,
            "text": t.text,
            "start": round(start, 3),
            "end": round(end, 3),
            "confidence": round(t.confidence, 3),
        }
        if self.version >= 2:
            extra["stream"] = stream
            extra["speaker"] = speaker_dict(speaker)
        return self._make(TRANSCRIPT_FINAL if t.final else TRANSCRIPT_PARTIAL, extra)

    def ended_event(self, reason: str, duration: float, participants: tuple[Person, ...] = ()
                    ) -> Event:  # fmt: skip
        """``call.ended`` with the whole transcript; only once. Version 2 also lists who took
        part (``participants``)."""
        if self._ended:
            raise RuntimeError(f"call {self.info.call_id} already ended")
        self._ended = True
        # Version 2: every stream's finals, interleaved by time. Version 1 promises utterance
        # order (and numbers a session's finals in the order they came).
        if self.version >= 2:
            finals = sorted(self._finals, key=lambda f: (f.start, f.stream or "", f.utterance))
        else:
            finals = sorted(self._finals, key=lambda f: f.utterance)
        utterances = []
        for f in finals:
            u: dict[str, Any] = {"utterance": f.utterance, "start": round(f.start, 3),
                                 "end": round(f.end, 3), "text": f.text}  # fmt: skip
            if self.version >= 2:
                u["stream"] = f.stream
                u["speaker"] = speaker_dict(f.speaker)
            utterances.append(u)
        extra: dict[str, Any] = {
            "reason": reason,
            "duration": round(duration, 3),
            "text": " ".join(f.text for f in finals if f.text),
            "utterances": utterances,
        }
        if self.version >= 2:
            extra["participants"] = [speaker_dict(p) for p in participants]
        return self._make(CALL_ENDED, extra)


def _who(streams: tuple[tuple[str, Person | None], ...],
         participants: tuple[Person, ...]) -> dict[str, Any]:  # fmt: skip
    return {
        "participants": [speaker_dict(p) for p in participants],
        "streams": [{"stream": label, "speaker": speaker_dict(s)} for label, s in streams],
    }

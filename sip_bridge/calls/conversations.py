"""What an INVITE opens besides an ordinary call: a SIPREC recording session (one stream per
participant, speakers from its metadata, :mod:`~sip_bridge.calls.siprec_call`), or one of the
legs a PBX tagged as parts of one conversation (``X-Transcribe-Conversation``, one leg per
speaker: ``X-Transcribe-Speaker``). Also who speaks on a stream when a result comes in.

Main loop thread only. Nothing here calls PJSUA2: the media process hands over the INVITE's
text and headers, and answers as told.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sip_bridge import sip_headers
from sip_bridge.calls.call_state import CallState, StreamTap
from sip_bridge.calls.siprec_call import SiprecCall, audio_count, is_siprec
from sip_bridge.delivery.events import Event, Person
from sip_bridge.siprec.multipart import MultipartError, message_parts
from sip_bridge.siprec.speakers import Speaker

log = logging.getLogger(__name__)

# A PBX tags the legs of one conversation (one per speaker: ChanSpy, eavesdrop) with these.
CONVERSATION_HEADER = "X-Transcribe-Conversation"
SPEAKER_HEADER = "X-Transcribe-Speaker"
MAX_TAG_CHARS = 256
MAX_SIPREC_STREAMS = 4  # audio streams answered in a recording session (PJSUA_MAX_CALL_MEDIA)

Fields = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    warning: str  # the Warning header's value (RFC 3261 399: "why", in words)


def refusal(call_id: str, fields: Fields, whole_msg: str) -> Refusal | None:
    """Why this INVITE cannot be taken as it is, if it cannot: a multipart body that does not
    split (PJSIP would take it for an INVITE without an offer, and answer with its own), or a
    recording session of more streams than PJSUA holds in a call (it would do the same)."""
    ctype = sip_headers.value(fields, "Content-Type") or sip_headers.value(fields, "c") or ""
    if ctype.strip().lower().startswith("multipart/"):
        try:
            message_parts(whole_msg)
        except MultipartError as exc:
            log.warning("call %s: INVITE with a %s body that cannot be split (%s); 400",
                        call_id, ctype.split(";")[0], exc)  # fmt: skip
            why = str(exc).replace('"', "'")[:200]
            return Refusal(400, "Malformed Multipart Body", f'399 sip-bridge "{why}"')
    if _is_siprec(fields, whole_msg) and (offered := audio_count(whole_msg)) > MAX_SIPREC_STREAMS:
        log.warning("call %s: SIPREC offer of %d audio streams (at most %d); 488", call_id,
                    offered, MAX_SIPREC_STREAMS)  # fmt: skip
        why = f"{offered} audio streams offered; a recording session may have at most "
        return Refusal(488, "Not Acceptable Here", f'399 sip-bridge "{why}{MAX_SIPREC_STREAMS}"')
    return None


def classify(call: CallState, fields: Fields, whole_msg: str) -> int:
    """Note what the INVITE opens on ``call`` (a recording session, a tagged leg, or neither);
    the number of audio streams to answer."""
    if _is_siprec(fields, whole_msg):
        call.siprec = SiprecCall(call.call_id, sip_headers.value(fields, "Call-ID") or "")
        call.siprec.offer(whole_msg)
        log.info("call %s: SIPREC session, %d streams labelled %s, metadata %s", call.call_id,
                 len(call.siprec.labels), sorted(call.siprec.labels.values()),
                 call.siprec.state)  # fmt: skip
        return max(1, audio_count(whole_msg))
    conversation = (sip_headers.value(fields, CONVERSATION_HEADER) or "")[:MAX_TAG_CHARS]
    if conversation:
        call.conversation = conversation
        spoken = (sip_headers.value(fields, SPEAKER_HEADER) or "")[:MAX_TAG_CHARS] or None
        call.speaker = Speaker(None, spoken, None, "")
    return 1


def re_offer(call: CallState, sdp: str) -> int | None:
    """A re-INVITE's or UPDATE's offer in a recording session: the audio streams to answer, or
    ``None``: refuse it (488), more than a call holds."""
    count = audio_count(sdp)
    if count > MAX_SIPREC_STREAMS:
        log.warning("call %s: re-offer of %d audio streams (at most %d); 488", call.call_id,
                    count, MAX_SIPREC_STREAMS)  # fmt: skip
        return None
    return max(1, count)


def session_changed(call: CallState, whole_msg: str) -> Event | None:
    """A re-INVITE or UPDATE of a recording session, as received: its ``conversation.updated``
    if the metadata changed who speaks (``None`` if not, or before the call's events began)."""
    assert call.siprec is not None
    if not call.siprec.offer(whole_msg) or call.events is None:
        return None
    streams = call.siprec.streams([t.label or "" for t in call.taps])
    log.info("call %s: SIPREC metadata changed: %s", call.call_id, ", ".join(
        f"{label}={s.name or s.aor or s.participant_id if s else '?'}" for label, s in streams
    ))  # fmt: skip
    return call.events.updated(call.siprec.conversation(), streams, call.siprec.participants())


def speaker_of(call: CallState, tap: StreamTap) -> Speaker | None:
    """Who speaks on ``tap`` now: the participant the metadata names, a tagged leg's speaker,
    or nobody known."""
    if call.siprec is not None and tap.label is not None:
        speaker = call.siprec.speaker(tap.label)
        return speaker if speaker.participant_id is not None else None
    return call.speaker


def participants(call: CallState) -> tuple[Person, ...]:
    """Who took part, as call.ended lists them: a SIPREC session's participants at its end
    (those who left before are not listed), or a tagged leg's speaker."""
    if call.siprec is not None:
        return call.siprec.participants()
    return (call.speaker,) if call.speaker is not None else ()


def _is_siprec(fields: Fields, whole_msg: str) -> bool:
    return is_siprec(sip_headers.value(fields, "Contact"),
                     sip_headers.value(fields, sip_headers.SIPREC_HEADER), whole_msg)  # fmt: skip

"""A SIPREC recording session (RFC 7866) as a media process holds it: which ``m=audio`` carries
which ``a=label``, the session's metadata over time, and what events say of it.

An SRC's INVITE carries ``multipart/mixed``: the SDP (one ``a=sendonly`` stream per voice, each
labelled) and ``application/rs-metadata+xml`` (who the participants are, who sends which
stream). PJSIP finds the SDP part itself and answers ``a=recvonly`` on each stream; this module
reads the rest from the message text. Metadata may come later, in a re-INVITE or an UPDATE, and
may change mid-session (a participant joins, a stream is re-associated after a transfer). Bad
metadata is logged and the session is transcribed without speakers: streams are named by label.

Main loop thread only; nothing here touches PJSUA2.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from sip_bridge.delivery.events import Conversation, Person
from sip_bridge.sip_headers import SIPREC_HEADER
from sip_bridge.siprec.metadata import MetadataError, parse
from sip_bridge.siprec.multipart import MultipartError, find, message_parts
from sip_bridge.siprec.speakers import SessionMetadata, Speaker

log = logging.getLogger(__name__)

__all__ = ["SIPREC_HEADER", "SiprecCall", "audio_count", "audio_labels", "is_siprec"]

SRC_FEATURE_TAG = "+sip.src"  # in an SRC's Contact (RFC 7866 section 6.1.1)
METADATA_TYPE = "application/rs-metadata+xml"
SDP_TYPE = "application/sdp"
_M_LINE = re.compile(r"^m=(\S+)\s+(\d+)", re.MULTILINE)
_LABEL = re.compile(r"^a=label:\s*(\S+)", re.MULTILINE)


def audio_labels(sdp: str) -> dict[int, str]:
    """Media index → ``a=label`` of each labelled ``m=audio`` of an SDP (indexes count every
    ``m=`` line, as PJSUA's do)."""
    out: dict[int, str] = {}
    starts = list(_M_LINE.finditer(sdp))
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(sdp)
        found = _LABEL.search(sdp, m.end(), end)
        if m.group(1) == "audio" and found is not None:
            out[i] = found.group(1)
    return out


def audio_count(sdp: str) -> int:
    return sum(1 for m in _M_LINE.finditer(sdp) if m.group(1) == "audio")


def is_siprec(contact: str | None, stamped: str | None, whole_msg: str) -> bool:
    """An SRC's INVITE: the front saw ``Require: siprec``, the Contact has ``+sip.src``, or the
    body carries recording metadata."""
    if stamped or (contact is not None and SRC_FEATURE_TAG in contact):
        return True
    try:
        return find(message_parts(whole_msg), METADATA_TYPE) is not None
    except MultipartError:
        return False


@dataclass(slots=True)
class SiprecCall:
    call_id: str  # the bridge's, for the log
    sip_call_id: str  # the recording session's Call-ID: the conversation's id
    labels: dict[int, str] = field(default_factory=dict)  # media index -> a=label
    metadata: SessionMetadata = field(default_factory=SessionMetadata)
    state: str = "none"  # "complete" once metadata was read, "invalid" if the last was bad

    def offer(self, whole_msg: str) -> bool:
        """An INVITE, re-INVITE or UPDATE of the session, as received: take its labels and
        metadata. True if who speaks on which stream (or who is in the session) changed."""
        try:
            parts = message_parts(whole_msg)
        except MultipartError as exc:
            log.warning("call %s: SIPREC body not read (%s); streams named by label",
                        self.call_id, exc)  # fmt: skip
            return False
        sdp = find(parts, SDP_TYPE)
        before = self.who()
        if sdp is not None:
            labels = audio_labels(sdp.decode("utf-8", "replace"))
            if labels:
                self.labels = labels
        body = find(parts, METADATA_TYPE)
        if body is not None:
            try:
                self.metadata.apply(parse(body))
                self.state = "complete"
            except MetadataError as exc:
                self.state = "invalid" if not self.metadata.has_metadata else self.state
                log.warning("call %s: SIPREC metadata refused (%s); %s", self.call_id, exc,
                            "keeping what was known" if self.metadata.has_metadata
                            else "streams named by label")  # fmt: skip
        return self.who() != before

    def label_of(self, media_index: int) -> str:
        return self.labels.get(media_index, str(media_index))

    def speaker(self, label: str) -> Speaker:
        return self.metadata.speaker(label)

    def streams(self, labels: list[str]) -> tuple[tuple[str, Person | None], ...]:
        """(label, speaker) of each stream tapped; ``None`` where the metadata names nobody."""
        out: list[tuple[str, Person | None]] = []
        for label in labels:
            s = self.metadata.speaker(label)
            out.append((label, s if s.participant_id is not None else None))
        return tuple(out)

    def participants(self) -> tuple[Person, ...]:
        return tuple(self.metadata.participants())

    def conversation(self) -> Conversation:
        return Conversation(
            self.sip_call_id, "siprec", tuple(self.metadata.session_ids()),
            tuple(self.metadata.call_ids()), self.state,
        )  # fmt: skip

    def who(self) -> tuple[object, ...]:
        """What events say of the session, to tell when it changed."""
        labels = sorted(self.labels.values())
        return (tuple(self.metadata.speaker(x) for x in labels), self.participants(),
                self.conversation())  # fmt: skip

"""SIPREC recording metadata (RFC 7865, ``application/rs-metadata+xml``), parsed from a peer.

Owns turning one metadata document into a :class:`Metadata` value: who takes part, which
streams (by SDP ``a=label``) exist, who sends and receives which, who left and which
communication sessions ended. It reads both the RFC 7865 form and the older draft form several
SBCs still send, and ignores elements it does not know (vendor extension data). The XML comes
from the network: it is size-capped before parsing and parsed with DTDs, entities and external
references refused. It never keeps state across documents (that is ``speakers``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

CONTENT_TYPE: Final = "application/rs-metadata+xml"
NAMESPACE: Final = "urn:ietf:params:xml:ns:recording:1"
# The namespace of the drafts, still sent by older Acme Packet/Oracle releases.
DRAFT_NAMESPACE: Final = "urn:ietf:params:xml:ns:recording"
MAX_METADATA_BYTES: Final = 64 * 1024
# Vendor extension elements that name the communication session's SIP Call-ID.
_CALL_ID_NAMES = frozenset({"callid", "call-id", "call_id"})


class MetadataError(ValueError):
    """A peer's metadata we cannot use; the message says why, on one line."""


@dataclass(frozen=True, slots=True)
class Participant:
    participant_id: str
    name: str | None
    aor: str | None


@dataclass(frozen=True, slots=True)
class Stream:
    stream_id: str
    label: str  # the SDP a=label of the m-line that carries it
    session_id: str | None


@dataclass(frozen=True, slots=True)
class CommSession:
    session_id: str
    sip_session_ids: tuple[str, ...]  # RFC 7865 <sipSessionID> (RFC 7989 Session-ID values)
    call_ids: tuple[str, ...]  # SIP Call-IDs found in vendor extension elements


@dataclass(frozen=True, slots=True)
class Metadata:
    complete: bool  # datamode "complete" (or absent); False for "partial"
    group_id: str | None
    sessions: tuple[CommSession, ...]
    participants: tuple[Participant, ...]
    streams: tuple[Stream, ...]
    sends: tuple[tuple[str, str], ...]  # (participant_id, stream_id)
    receives: tuple[tuple[str, str], ...]  # (participant_id, stream_id)
    departed: frozenset[str]  # participants whose session association has a disassociate-time
    ended_sessions: frozenset[str]  # sessions with a stop-time or a recording disassociate-time
    # Participants this document associates with a session (no disassociate-time).
    associated: frozenset[str] = frozenset()
    # Participants whose stream associations this document states, even as "none".
    stream_assocs: frozenset[str] = frozenset()


def parse(body: bytes | str) -> Metadata:
    """The metadata in ``body``; :class:`MetadataError` if it is too large, not well-formed,
    has a DOCTYPE or entities, or is not a ``recording`` document."""
    size = len(body.encode() if isinstance(body, str) else body)
    if size > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata is {size} bytes, over the {MAX_METADATA_BYTES} limit")
    try:
        root = defusedxml.ElementTree.fromstring(body, forbid_dtd=True)
    except defusedxml.DTDForbidden as e:
        raise MetadataError("metadata has a DOCTYPE; DTDs and entities are refused") from e
    except defusedxml.EntitiesForbidden as e:
        raise MetadataError("metadata declares entities; refused") from e
    except defusedxml.ExternalReferenceForbidden as e:
        raise MetadataError("metadata refers to an external entity; refused") from e
    except defusedxml.DefusedXmlException as e:
        raise MetadataError(f"metadata refused by the XML guard: {type(e).__name__}") from e
    except ParseError as e:
        raise MetadataError(f"metadata is not well-formed XML: {e}") from e
    ns, local = _split(root.tag)
    if local != "recording" or ns not in (NAMESPACE, DRAFT_NAMESPACE, ""):
        shown = f"{{{ns}}}{local}" if ns else local
        raise MetadataError(f"metadata root is <{shown}>, not <recording> of {NAMESPACE}")
    return _Reader(ns).read(root)


def _split(tag: object) -> tuple[str, str]:
    """``"{ns}Local"`` -> ``("ns", "local")``; comments and processing instructions -> ``""``."""
    if not isinstance(tag, str):
        return "", ""
    ns, _, local = tag[1:].rpartition("}") if tag.startswith("{") else ("", "", tag)
    return ns, local.lower()


def _text(el: Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _attr(el: Element, *names: str) -> str:
    return next((v.strip() for n in names if (v := el.get(n)) and v.strip()), "")


class _Reader:
    """One document's walk; elements of other namespaces are skipped, names compared
    case-insensitively (Oracle writes ``dataMode``, the RFC ``datamode``)."""

    def __init__(self, ns: str) -> None:
        self._ours = (ns, "")
        self.sends: dict[tuple[str, str], None] = {}
        self.receives: dict[tuple[str, str], None] = {}
        self.departed: set[str] = set()
        self.associated: set[str] = set()
        self.stream_assocs: set[str] = set()
        self.ended: set[str] = set()

    def children(self, el: Element, name: str | None = None) -> list[Element]:
        out = []
        for child in el:
            ns, local = _split(child.tag)
            if ns in self._ours and local and (name is None or local == name):
                out.append(child)
        return out

    def first(self, el: Element, name: str) -> Element | None:
        found = self.children(el, name)
        return found[0] if found else None

    def has(self, el: Element, name: str) -> bool:
        return bool(self.children(el, name))

    def read(self, root: Element) -> Metadata:
        group_id: str | None = None
        sessions: dict[str, CommSession] = {}
        participants: dict[str, Participant] = {}
        streams: dict[str, Stream] = {}
        mode = _text(self.first(root, "datamode")).lower()
        for el in self.children(root):
            local = _split(el.tag)[1]
            if local == "group":
                group_id = group_id or _attr(el, "group_id", "id") or None
            elif local == "session" and (s := self.session(el)):
                sessions[s.session_id] = s
                group_id = group_id or _text(self.first(el, "group-ref")) or None
            elif local == "participant" and (p := self.participant(el)):
                participants[p.participant_id] = p
            elif local == "stream" and (sid := _attr(el, "stream_id", "id")):
                session = _attr(el, "session_id", "session") or None
                streams[sid] = Stream(sid, _text(self.first(el, "label")), session)
            elif local == "participantstreamassoc" and (pid := _attr(el, "participant_id")):
                self.stream_assocs.add(pid)
                self.associations(pid, el)
            elif local == "participantsessionassoc" and (pid := _attr(el, "participant_id")):
                gone = self.has(el, "disassociate-time")
                (self.departed if gone else self.associated).add(pid)
            elif local == "sessionrecordingassoc" and (sid := _attr(el, "session_id")):
                self.ended.update([sid] if self.has(el, "disassociate-time") else [])
        return Metadata(
            complete=mode != "partial",
            group_id=group_id,
            sessions=tuple(sessions.values()),
            participants=tuple(participants.values()),
            streams=tuple(streams.values()),
            sends=tuple(self.sends),
            receives=tuple(self.receives),
            departed=frozenset(self.departed),
            ended_sessions=frozenset(self.ended),
            associated=frozenset(self.associated - self.departed),
            stream_assocs=frozenset(self.stream_assocs),
        )

    def session(self, el: Element) -> CommSession | None:
        sid = _attr(el, "session_id", "id")
        if not sid:
            return None
        if self.has(el, "stop-time") or self.has(el, "disassociate-time"):
            self.ended.add(sid)
        sip_ids = (_text(s) for s in self.children(el, "sipsessionid"))
        call_ids = (
            _text(d) for d in el.iter() if d is not el and _split(d.tag)[1] in _CALL_ID_NAMES
        )
        return CommSession(sid, _unique(sip_ids), _unique(call_ids))

    def participant(self, el: Element) -> Participant | None:
        pid = _attr(el, "participant_id", "id")
        if not pid:
            return None
        name_id = self.first(el, "nameid")
        if name_id is not None:  # RFC 7865, and the later drafts
            aor = _attr(name_id, "aor") or _text(self.first(name_id, "aor"))
            name = _text(self.first(name_id, "name"))
        else:  # early drafts: <aor> and <name> straight inside <participant>
            aor, name = _text(self.first(el, "aor")), _text(self.first(el, "name"))
        if self.has(el, "send") or self.has(el, "recv"):  # draft: streams inline
            self.stream_assocs.add(pid)
            self.associations(pid, el)
        if self.has(el, "disassociate-time"):  # draft: departure inline
            self.departed.add(pid)
        return Participant(pid, name or None, aor or None)

    def associations(self, pid: str, el: Element) -> None:
        for send in self.children(el, "send"):
            if stream := _text(send):
                self.sends[(pid, stream)] = None
        for recv in self.children(el, "recv"):
            if stream := _text(recv):
                self.receives[(pid, stream)] = None


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))

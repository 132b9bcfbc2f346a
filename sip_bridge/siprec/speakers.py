"""Who speaks on which stream of one recording session, as its metadata changes (sans-IO).

:class:`SessionMetadata` keeps one SIPREC recording session's view of the communication
session: each :class:`~sip_bridge.siprec.metadata.Metadata` document the SRC sends (in the
INVITE, then in re-INVITEs or UPDATEs) is applied in order, complete documents replacing the
view and partial ones merging into it. It answers which participant a stream's SDP ``a=label``
carries. It owns no parsing, no SIP and no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip_bridge.siprec.metadata import CommSession, Metadata, Participant, Stream


@dataclass(frozen=True, slots=True)
class Speaker:
    """The participant heard on the stream with SDP label ``label``; ids and names are ``None``
    when the metadata names no single sender (no metadata, an unknown label, a mixed stream)."""

    participant_id: str | None
    name: str | None
    aor: str | None
    label: str  # always set: the a=label asked about


def _nobody(label: str) -> Speaker:
    return Speaker(None, None, None, label)


class SessionMetadata:
    """The merged metadata of one recording session."""

    def __init__(self) -> None:
        self._has_metadata = False
        self._group_id: str | None = None
        self._sessions: dict[str, CommSession] = {}
        self._participants: dict[str, Participant] = {}
        self._streams: dict[str, Stream] = {}
        self._sends: dict[str, tuple[str, ...]] = {}  # participant id -> stream ids
        self._receives: dict[str, tuple[str, ...]] = {}
        self._departed: set[str] = set()
        self._ended: set[str] = set()
        # First-seen order survives complete documents, so the participants' order is stable
        # for consumers even when an SRC lists them differently each time.
        self._first_seen: dict[str, int] = {}

    @property
    def has_metadata(self) -> bool:
        return self._has_metadata

    @property
    def group_id(self) -> str | None:
        return self._group_id

    def apply(self, md: Metadata) -> bool:
        """Take one more document; ``True`` if :meth:`speaker` or :meth:`participants` would now
        answer differently."""
        before = self._view()
        if md.complete:
            self._group_id = md.group_id
            self._sessions = {s.session_id: s for s in md.sessions}
            self._participants = {}
            self._streams = {}
            self._sends, self._receives = {}, {}
            self._departed = set(md.departed)
            self._ended = set(md.ended_sessions)
        else:
            self._group_id = md.group_id or self._group_id
            for s in md.sessions:
                self._sessions[s.session_id] = _merged(self._sessions.get(s.session_id), s)
            self._departed |= md.departed
            self._ended |= md.ended_sessions
            named = {p.participant_id for p in md.participants} | md.associated
            named |= {pid for pid, _ in md.sends + md.receives} | md.stream_assocs
            self._departed -= named - md.departed  # re-associated: back again
        for p in md.participants:
            self._participants[p.participant_id] = p
            self._first_seen.setdefault(p.participant_id, len(self._first_seen))
        for st in md.streams:
            self._streams[st.stream_id] = st
        # A participant whose stream associations the document states has exactly those now.
        stated = md.stream_assocs | {pid for pid, _ in md.sends + md.receives}
        for pid in stated:
            self._sends[pid] = tuple(sid for p, sid in md.sends if p == pid)
            self._receives[pid] = tuple(sid for p, sid in md.receives if p == pid)
        self._has_metadata = True
        return self._view() != before

    def speaker(self, label: str) -> Speaker:
        """Who is heard on the stream labelled ``label``: its one sender still in the call."""
        senders = self._senders(label)
        if len(senders) != 1:
            return _nobody(label)
        (pid,) = senders
        p = self._participants.get(pid)
        return Speaker(pid, p.name if p else None, p.aor if p else None, label)

    def participants(self) -> tuple[Participant, ...]:
        """Those in the call now (departed ones left out), in the order first seen."""
        current = [p for pid, p in self._participants.items() if pid not in self._departed]
        return tuple(sorted(current, key=lambda p: self._first_seen[p.participant_id]))

    def streams_of(self, participant_id: str) -> tuple[str, ...]:
        """The labels of the streams ``participant_id`` sends."""
        sids = self._sends.get(participant_id, ())
        labels = (self._streams[s].label for s in sids if s in self._streams)
        return tuple(dict.fromkeys(label for label in labels if label))

    def sessions(self) -> tuple[CommSession, ...]:
        return tuple(self._sessions.values())

    def session_ids(self) -> tuple[str, ...]:
        """The communication sessions' SIP Session-IDs (RFC 7865 ``sipSessionID``), all of them."""
        return tuple(dict.fromkeys(i for s in self._sessions.values() for i in s.sip_session_ids))

    def call_ids(self) -> tuple[str, ...]:
        """The communication sessions' SIP Call-IDs (vendor extension data), all of them."""
        return tuple(dict.fromkeys(i for s in self._sessions.values() for i in s.call_ids))

    def _senders(self, label: str) -> set[str]:
        streams = [st for st in self._streams.values() if st.label == label]
        # A label reused after a session ended (a new call leg) belongs to the live session.
        live = [st for st in streams if st.session_id not in self._ended]
        ids = {st.stream_id for st in (live or streams)}
        return {
            pid
            for pid, sent in self._sends.items()
            if pid not in self._departed and ids.intersection(sent)
        }

    def _view(self) -> tuple[tuple[Participant, ...], dict[str, Speaker]]:
        labels = {st.label for st in self._streams.values()}
        speakers = {label: self.speaker(label) for label in labels}
        return self.participants(), {k: v for k, v in speakers.items() if v != _nobody(k)}


def _merged(old: CommSession | None, new: CommSession) -> CommSession:
    """A partial document's session adds ids to what was known; it never forgets any."""
    if old is None:
        return new
    return CommSession(
        new.session_id,
        tuple(dict.fromkeys(old.sip_session_ids + new.sip_session_ids)),
        tuple(dict.fromkeys(old.call_ids + new.call_ids)),
    )

"""The live state behind the captions page and API: every call in progress (and the last ended
ones) with its captions so far, and a numbered history of what happened, for streaming.

Sans-IO: the captions server feeds it what the media processes publish (:mod:`caption_feed`) and
the time; it answers with :class:`Item` objects to stream to subscribers, and with views of the
calls. No sockets, no asyncio.

* A call's captions: its finals by (stream, utterance), each with its stream and speaker, and
  per stream the latest partial of an utterance that has no final yet (a final replaces its
  stream's partials of its utterance). A SIPREC session has a stream per participant, each
  numbering its own utterances; an ordinary call has one, ``None``. Who speaks on which stream
  comes with call.started and changes with conversation.updated.
* Calls a PBX tagged as legs of one conversation (kind "legs", the same conversation id and
  tenant; maybe on different media processes) are grouped: each one's summary lists them all
  (``conversation.calls``), so a page can show one conversation.
* Items are numbered ``<epoch>-<n>`` (the epoch changes when the hub restarts): a client that
  reconnects with the last id it saw gets what it missed from the history, or, when that is gone
  or from another epoch, a fresh snapshot.
* Each media process also publishes its list of calls every few seconds. A call it lists that we
  never heard of (we started after it) is added; a call it no longer lists but that never ended
  here (its call.ended was lost) is closed; a media process silent for :data:`NODE_TIMEOUT_S`
  is gone, and its calls with it (``call.lost``).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sip_bridge.settings.config import CAPTIONS_HISTORY, CAPTIONS_KEEP_ENDED

log = logging.getLogger(__name__)

NODE_TIMEOUT_S = 10.0  # a media process publishes its calls every 2 s
# Kinds of items beyond the event types.
CALL = "call"  # a call's summary (tenant, parties, conversation): as it starts, or learned late
CALL_LOST = "call.lost"  # a call that ended without its call.ended reaching us


@dataclass(frozen=True, slots=True)
class Item:
    """One thing to stream: an event as sent to webhooks, or a hub notice about a call."""

    n: int
    kind: str  # the event's type, CALL or CALL_LOST
    tenant: str
    call_id: str
    data: bytes  # UTF-8 JSON


_INFO_KEYS = ("sip_call_id", "from", "to", "codec", "started")
_KINDS = ("siprec", "legs")
_TRANSCRIPTS = ("transcript.partial", "transcript.final")
_WHO = ("call.started", "conversation.updated")  # events that say who speaks


@dataclass(slots=True)
class _LiveCall:
    call_id: str
    tenant: str
    node: str
    info: dict[str, Any]  # sip_call_id, from, to, codec, started (unix s)
    conversation: tuple[str, str] | None = None  # (kind, id): a SIPREC session or a tagged leg
    participants: list[dict[str, Any]] = field(default_factory=list)
    streams: list[dict[str, Any]] = field(default_factory=list)  # {"stream", "speaker"}
    # (stream, utterance) -> its final; stream None: the one stream of an ordinary call
    finals: dict[tuple[str | None, int], dict[str, Any]] = field(default_factory=dict)
    # stream -> the latest partial of an utterance that has no final yet
    partials: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    heard: dict[str | None, int] = field(default_factory=dict)  # stream -> utterances finished
    last_seq: int = 0
    ended: str | None = None  # the reason, once ended

    def view(self, calls: list[str]) -> dict[str, Any]:
        """Its summary; ``calls``: every call of its conversation we list, itself included."""
        conversation = None
        if self.conversation is not None:
            kind, conversation_id = self.conversation
            conversation = {"id": conversation_id, "kind": kind, "calls": calls}
        return {
            "call_id": self.call_id,
            "tenant": self.tenant,
            "node": self.node,
            **{key: self.info.get(key) for key in _INFO_KEYS},
            "ended": self.ended is not None,
            "reason": self.ended,
            "conversation": conversation,
            "participants": self.participants,
            "streams": self.streams,
            # Every stream's, interleaved by time, as call.ended lists them.
            "finals": sorted(self.finals.values(), key=_by_time),
            "partials": sorted(self.partials.values(), key=_by_time),
        }


class CaptionHub:
    def __init__(
        self, history: int = CAPTIONS_HISTORY, keep_ended: int = CAPTIONS_KEEP_ENDED
    ) -> None:
        self.epoch = secrets.token_hex(4)
        self.keep_ended = keep_ended
        self._calls: dict[str, _LiveCall] = {}
        # Ended calls still listed, oldest first.
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._items: deque[Item] = deque(maxlen=history)
        self._n = 0
        self._nodes: dict[str, float] = {}  # media process -> when it last published its calls
        # (tenant, kind, conversation id) -> its calls we list, in the order we heard of them
        self._conversations: dict[tuple[str, str, str], dict[str, None]] = {}
        self.bad_messages = 0

    # -- ids ------------------------------------------------------------------------------------

    def item_id(self, n: int) -> str:
        return f"{self.epoch}-{n}"

    @property
    def last_id(self) -> str:
        return self.item_id(self._n)

    def since(self, last_id: str) -> list[Item] | None:
        """The items after ``last_id``; ``None`` when they are no longer all here (the client
        needs a snapshot)."""
        epoch, _, number = last_id.partition("-")
        if epoch != self.epoch or not number.isdigit() or int(number) > self._n:
            return None
        n = int(number)
        oldest = self._items[0].n if self._items else self._n + 1
        if n < oldest - 1:
            return None
        return [item for item in self._items if item.n > n]

    # -- input ----------------------------------------------------------------------------------

    def _item(self, kind: str, call: _LiveCall, data: bytes) -> Item:
        self._n += 1
        item = Item(self._n, kind, call.tenant, call.call_id, data)
        self._items.append(item)
        return item

    def on_event(self, node: str, tenant: str, body: bytes) -> list[Item]:
        """An event from a media process; the items to stream: the event, after the call's
        summary (``call``, with its tenant and conversation) for a call.started; none for a
        repeat or bad one."""
        try:
            event = json.loads(body)
            kind, call_id, seq = event["type"], event["call_id"], event["seq"]
            if not (isinstance(kind, str) and isinstance(call_id, str) and isinstance(seq, int)):
                raise TypeError("type, call_id and seq of the wrong types")
        except (ValueError, KeyError, TypeError) as exc:
            self.bad_messages += 1
            log.warning("captions: bad event from %s dropped: %s", node, exc)
            return []
        call = self._calls.get(call_id)
        if call is None:
            call = _LiveCall(call_id, tenant, node, {"sip_call_id": event.get("sip_call_id")})
            self._calls[call_id] = call
        if seq <= call.last_seq:
            return []
        call.last_seq = seq
        self._join(call, event.get("conversation"))
        self._apply(call, kind, event)
        items = []
        if kind == "call.started":
            items.append(self._summary(call))
        items.append(self._item(kind, call, body))
        return items

    def _summary(self, call: _LiveCall) -> Item:
        return self._item(CALL, call, json.dumps(self._view(call)).encode())

    def _join(self, call: _LiveCall, conversation: object) -> None:
        """File the call under its conversation (told by every event, and by its row), once."""
        if call.conversation is not None or not isinstance(conversation, dict):
            return
        kind, conversation_id = conversation.get("kind"), conversation.get("id")
        if kind not in _KINDS or not isinstance(conversation_id, str):
            return
        call.conversation = (kind, conversation_id)
        legs = self._conversations.setdefault((call.tenant, kind, conversation_id), {})
        legs[call.call_id] = None

    def _apply(self, call: _LiveCall, kind: str, event: dict[str, Any]) -> None:
        if kind == "call.started":
            call.info.update(
                {
                    "from": event.get("from"),
                    "to": event.get("to"),
                    "codec": event.get("codec"),
                    "started": event.get("timestamp"),
                }
            )
        if kind in _WHO:
            call.participants = _people(event.get("participants"))
            call.streams = _streams(event.get("streams"))
        if kind in _TRANSCRIPTS:
            self._caption(call, kind == "transcript.final", event)
        elif kind == "call.ended":
            self._end(call, str(event.get("reason", "")))

    @staticmethod
    def _caption(call: _LiveCall, final: bool, event: dict[str, Any]) -> None:
        """Partials are kept per stream, so that two voices speaking at once do not replace
        each other's; a final replaces its stream's partials up to its utterance."""
        u, stream = event.get("utterance"), event.get("stream")
        stream = stream if isinstance(stream, str) else None
        if not isinstance(u, int) or u < call.heard.get(stream, 0):
            return
        line = {k: event.get(k) for k in ("utterance", "text", "start", "end")}
        line["stream"] = stream
        line["speaker"] = _person(event.get("speaker"))
        partial = call.partials.get(stream)
        if final:
            call.finals[(stream, u)] = line
            call.heard[stream] = u + 1
            if partial is not None and partial["utterance"] <= u:
                del call.partials[stream]
        elif partial is None or partial["utterance"] <= u:
            call.partials[stream] = line

    def _end(self, call: _LiveCall, reason: str) -> None:
        call.ended = reason
        call.partials.clear()
        self._ended[call.call_id] = None
        while len(self._ended) > self.keep_ended:
            gone_id, _ = self._ended.popitem(last=False)
            gone = self._calls.pop(gone_id, None)
            if gone is not None and gone.conversation is not None:
                key = (gone.tenant, *gone.conversation)
                legs = self._conversations.get(key, {})
                legs.pop(gone_id, None)
                if not legs:
                    self._conversations.pop(key, None)

    def on_calls(self, node: str, listed: Iterable[dict[str, Any]], now: float) -> list[Item]:
        """A media process's list of its calls (``sip-bridge calls`` rows)."""
        self._nodes[node] = now
        items = []
        present = set()
        for row in listed:
            call_id = row.get("call_id")
            if not isinstance(call_id, str):
                self.bad_messages += 1
                continue
            present.add(call_id)
            if call_id in self._calls:
                continue
            info = {k: row.get(k) for k in _INFO_KEYS}
            call = _LiveCall(call_id, str(row.get("tenant", "")), node, info)
            self._calls[call_id] = call
            self._learn(call, row.get("conversation"))
            items.append(self._summary(call))
        for call in list(self._calls.values()):
            if call.node == node and call.ended is None and call.call_id not in present:
                items.append(self._lose(call, "its call.ended did not reach the captions server"))
        return items

    def _lose(self, call: _LiveCall, why: str) -> Item:
        self._end(call, f"lost: {why}")
        body = json.dumps({"call_id": call.call_id, "reason": call.ended})
        return self._item(CALL_LOST, call, body.encode())

    def expire(self, now: float) -> list[Item]:
        """Media processes silent too long: their calls are lost."""
        items = []
        for node, seen in list(self._nodes.items()):
            if now - seen <= NODE_TIMEOUT_S:
                continue
            del self._nodes[node]
            log.warning("captions: media process %s silent for %.0f s; its calls are lost",
                        node, now - seen)  # fmt: skip
            for call in list(self._calls.values()):
                if call.node == node and call.ended is None:
                    items.append(self._lose(call, f"media process {node} stopped reporting"))
        return items

    # -- views ----------------------------------------------------------------------------------

    def calls(self, sees: frozenset[str] | None = None, call_id: str | None = None) -> list[Any]:
        """The calls ``sees`` may see (``None``: every tenant's): those in progress, oldest
        first, then the ended ones, newest first."""
        visible = [
            c
            for c in self._calls.values()
            if (sees is None or c.tenant in sees) and (call_id is None or c.call_id == call_id)
        ]
        live = sorted((c for c in visible if c.ended is None), key=lambda c: _started(c))
        order = {call_id: i for i, call_id in enumerate(self._ended)}
        ended = sorted(
            (c for c in visible if c.ended is not None),
            key=lambda c: order.get(c.call_id, 0),
            reverse=True,
        )
        return [self._view(c) for c in live + ended]

    def _view(self, call: _LiveCall) -> dict[str, Any]:
        if call.conversation is None:
            return call.view([])
        legs = self._conversations.get((call.tenant, *call.conversation), {})
        return call.view([c for c in legs if c in self._calls])

    def _learn(self, call: _LiveCall, conversation: object) -> None:
        """A call first heard of in its media process's list: who speaks, from its row."""
        self._join(call, conversation)
        if not isinstance(conversation, dict):
            return
        call.participants = _people(conversation.get("participants"))
        rows = conversation.get("streams")
        # A row names each stream's speaker by one string only (its name, else its aor).
        named = [s for s in rows if isinstance(s, dict)] if isinstance(rows, list) else []
        call.streams = _streams(
            [{"stream": s.get("stream"), "speaker": {"name": s["name"]} if s.get("name") else None}
             for s in named]
        )  # fmt: skip

    @property
    def nodes(self) -> list[str]:
        """The media processes heard from lately."""
        return sorted(self._nodes)


def _started(call: _LiveCall) -> float:
    return _number(call.info.get("started"))


def _number(x: object) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else 0.0


def _by_time(line: dict[str, Any]) -> tuple[float, str, float]:
    return _number(line["start"]), line["stream"] or "", _number(line["utterance"])


def _person(p: object) -> dict[str, Any] | None:
    """Who speaks, as events say it (``participant_id``, ``name``, ``aor``; any may be null)."""
    if not isinstance(p, dict):
        return None
    return {k: p.get(k) if isinstance(p.get(k), str) else None
            for k in ("participant_id", "name", "aor")}  # fmt: skip


def _people(listed: object) -> list[dict[str, Any]]:
    people = (_person(p) for p in listed) if isinstance(listed, list) else ()
    return [p for p in people if p is not None]


def _streams(listed: object) -> list[dict[str, Any]]:
    if not isinstance(listed, list):
        return []
    return [
        {"stream": s["stream"], "speaker": _person(s.get("speaker"))}
        for s in listed
        if isinstance(s, dict) and isinstance(s.get("stream"), str)
    ]

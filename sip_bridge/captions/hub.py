"""The live state behind the captions page and API: every call in progress (and the last ended
ones) with its captions so far, and a numbered history of what happened, for streaming.

Sans-IO: the captions server feeds it what the media processes publish (:mod:`caption_feed`) and
the time; it answers with :class:`Item` objects to stream to subscribers, and with views of the
calls. No sockets, no asyncio.

* A call's captions: its finals by utterance, and the latest partial of an utterance that has no
  final yet (a final replaces the partials of its utterance).
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
# Kinds of items beyond the v1 event types.
CALL = "call"  # a call's summary (tenant, parties): as it starts, or when learned late
CALL_LOST = "call.lost"  # a call that ended without its call.ended reaching us


@dataclass(frozen=True, slots=True)
class Item:
    """One thing to stream: a v1 event as sent to webhooks, or a hub notice about a call."""

    n: int
    kind: str  # the event's type, CALL or CALL_LOST
    tenant: str
    call_id: str
    data: bytes  # UTF-8 JSON


_INFO_KEYS = ("sip_call_id", "from", "to", "codec", "started")


@dataclass(slots=True)
class _LiveCall:
    call_id: str
    tenant: str
    node: str
    info: dict[str, Any]  # sip_call_id, from, to, codec, started (unix s)
    finals: dict[int, dict[str, Any]] = field(default_factory=dict)
    partial: dict[str, Any] | None = None
    last_seq: int = 0
    ended: str | None = None  # the reason, once ended

    def view(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "tenant": self.tenant,
            "node": self.node,
            **{key: self.info.get(key) for key in _INFO_KEYS},
            "ended": self.ended is not None,
            "reason": self.ended,
            "finals": [self.finals[u] for u in sorted(self.finals)],
            "partial": self.partial,
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
        """A v1 event from a media process; the items to stream: the event, after the call's
        summary (``call``, with its tenant) for a call.started; none for a repeat or bad one."""
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
        self._apply(call, kind, event)
        items = []
        if kind == "call.started":
            items.append(self._item(CALL, call, json.dumps(call.view()).encode()))
        items.append(self._item(kind, call, body))
        return items

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
        elif kind in ("transcript.partial", "transcript.final"):
            u = event.get("utterance")
            if not isinstance(u, int) or u in call.finals:
                return
            line = {k: event.get(k) for k in ("utterance", "text", "start", "end")}
            if kind == "transcript.final":
                call.finals[u] = line
                if call.partial is not None and call.partial["utterance"] <= u:
                    call.partial = None
            elif call.partial is None or call.partial["utterance"] <= u:
                call.partial = line
        elif kind == "call.ended":
            self._end(call, str(event.get("reason", "")))

    def _end(self, call: _LiveCall, reason: str) -> None:
        call.ended = reason
        call.partial = None
        self._ended[call.call_id] = None
        while len(self._ended) > self.keep_ended:
            gone, _ = self._ended.popitem(last=False)
            self._calls.pop(gone, None)

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
            items.append(self._item(CALL, call, json.dumps(call.view()).encode()))
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
        return [c.view() for c in live + ended]

    @property
    def nodes(self) -> list[str]:
        """The media processes heard from lately."""
        return sorted(self._nodes)


def _started(call: _LiveCall) -> float:
    started = call.info.get("started")
    return float(started) if isinstance(started, int | float) else 0.0

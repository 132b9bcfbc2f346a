"""What a media process tells the captions server: every event of its calls, as it happens, and
its list of calls (the same rows as ``sip-bridge calls``), on every change and every
:data:`LIST_EVERY_S` as a sign of life.

One ZeroMQ PUB socket per media process, connected to the captions server's SUB (which binds
``tcp://127.0.0.1:captions.feed_port``). PUB never blocks: with no captions server, or one that
is slow, messages are dropped at the high-water mark; the captions page is a live view, and the
durable path is the webhook spool. The captions server restarting loses nothing it cannot
rebuild: the next list brings back the calls in progress.

Messages (multipart; frame 0 names the kind and the version of this format):

* ``[b"E1", node, tenant, event]``: one event, its JSON body exactly as sent to webhooks;
* ``[b"C1", node, calls]``: a JSON list of the media process's calls.

:func:`decode` is used by the server; a malformed message raises :class:`FeedError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from media.errors import RemoteProtocolError
from media.log_sampling import worth_logging

log = logging.getLogger(__name__)

EVENT = b"E1"
CALLS = b"C1"
LIST_EVERY_S = 2.0
SNDHWM = 10000  # messages queued for a slow captions server before new ones are dropped


class FeedError(RemoteProtocolError):
    """A feed message that is not in this format."""


@dataclass(frozen=True, slots=True)
class EventMessage:
    node: str
    tenant: str
    body: bytes


@dataclass(frozen=True, slots=True)
class CallsMessage:
    node: str
    calls: list[dict[str, Any]]


def decode(frames: Sequence[bytes]) -> EventMessage | CallsMessage:
    if not frames:
        raise FeedError("empty message")
    kind = frames[0]
    try:
        if kind == EVENT and len(frames) == 4:
            return EventMessage(frames[1].decode(), frames[2].decode(), bytes(frames[3]))
        if kind == CALLS and len(frames) == 3:
            calls = json.loads(frames[2])
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                raise FeedError("calls: not a list of objects")
            return CallsMessage(frames[1].decode(), calls)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FeedError(f"{kind!r}: {exc}") from exc
    raise FeedError(f"unknown kind {kind[:8]!r} with {len(frames)} frames")


class CaptionFeed:
    """The media process's side. Called from its SIP loop thread only; never blocks."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, node: str) -> None:
        self.node = node.encode()
        self.dropped = 0
        self.sock: zmq.Socket[Any] = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, SNDHWM)
        self.sock.setsockopt(zmq.LINGER, 500)
        self.sock.connect(endpoint)

    def _send(self, frames: list[bytes]) -> None:
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            if worth_logging(self.dropped, first=1):
                log.warning("captions feed: %d message(s) dropped (captions server slow)",
                            self.dropped)  # fmt: skip

    def event(self, tenant: str, body: bytes) -> None:
        self._send([EVENT, self.node, tenant.encode(), body])

    def calls(self, rows: list[dict[str, Any]]) -> None:
        self._send([CALLS, self.node, json.dumps(rows, separators=(",", ":")).encode()])

    def close(self) -> None:
        self.sock.close()

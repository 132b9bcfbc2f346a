"""The captions server: live calls and their captions over HTTP, as Server-Sent Events, and the
small web page that shows them.

One process (``serve`` starts it, role ``captions``), asyncio: a ZeroMQ SUB socket bound on
``127.0.0.1:captions.feed_port`` takes what every media process publishes
(:mod:`~sip_bridge.captions.feed`) into a :class:`~sip_bridge.captions.hub.CaptionHub`, and aiohttp
streams the hub's items to every subscriber allowed to see them.

HTTP API (every ``/v1`` path needs a token: ``Authorization: Bearer <token>``, ``?token=`` or
the cookie that ``POST /v1/session`` sets; an operator token sees every tenant's calls, a
tenant's token only that tenant's):

* ``GET /v1/calls``: the calls in progress and the last ended ones, with their captions so far
  (each line with its stream and speaker), who speaks on which stream, and the conversation a
  call is part of (a SIPREC session; or legs a PBX tagged with one conversation id, each naming
  the others, so that a page shows them as one conversation);
* ``GET /v1/events`` (``?call_id=`` for one call), ``GET /v1/calls/{call_id}/events``: an
  event stream. It opens with ``event: snapshot`` (``{"calls": [...]}`` as above), then every
  event of those calls as sent to webhooks (``event:`` is its type; conversation.updated when
  who speaks changes), ``event: call`` with a call's summary (as in the snapshot) as it starts
  or when it is learned late, and ``event: call.lost`` for a call whose end we could not hear.
  Messages of the stream's own are in ``schemas/v2/stream``. Each has an
  ``id:``; a client that reconnects with ``Last-Event-ID`` (browsers do) gets what it missed, or
  a new snapshot. A client too slow to keep up is disconnected (it reconnects and catches up);
  a comment line every 15 s keeps idle connections open through proxies;
* ``POST /v1/session``: with a valid token, sets it as an HttpOnly, SameSite=Strict cookie (the
  page uses it for EventSource, which cannot send headers); ``DELETE`` removes it;
* ``GET /`` the page, ``GET /static/...`` its script and style; ``GET /healthz``.

Tokens and query strings are never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import zmq
import zmq.asyncio
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from sip_bridge.captions.feed import CallsMessage, FeedError, decode
from sip_bridge.captions.hub import CaptionHub, Item
from sip_bridge.settings.config import Config

log = logging.getLogger(__name__)

COOKIE = "sip_bridge_captions"
TOKEN_FILE = "captions.token"
PING_S = 15.0
RETRY_MS = 2000  # what browsers wait before reconnecting
SUBSCRIBER_QUEUE = 1000  # items waiting for one slow client before it is cut off
EXPIRE_EVERY_S = 1.0
COOKIE_MAX_AGE_S = 12 * 3600
_PAGE = {
    "/": ("index.html", "text/html"),
    "/static/captions.js": ("captions.js", "text/javascript"),
    "/static/captions.css": ("captions.css", "text/css"),
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def token_path(cfg: Config) -> Path:
    return cfg.runtime_path() / TOKEN_FILE


def page_url(cfg: Config) -> str:
    """The captions page's address as a browser on this host reaches it."""
    c = cfg.captions
    host = "127.0.0.1" if c.address in ("0.0.0.0", "::") else c.address
    return f"http://{host}:{c.port}/"


def make_token_file(cfg: Config) -> Path | None:
    """With no token configured anywhere, write a fresh operator token (mode 0600) for this run
    and return its path; else remove a stale one and return ``None``."""
    path = token_path(cfg)
    if cfg.captions.tokens or any(t.captions_tokens for t in cfg.tenants):
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(24) + "\n")
    return path


@dataclass(frozen=True, slots=True)
class Scope:
    tenants: frozenset[str] | None  # None: every tenant (an operator token)

    def sees(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


class TokenBook:
    """Which token sees what; lookups compare against every token in constant time."""

    def __init__(self, operator: Sequence[str], by_tenant: Mapping[str, Sequence[str]]) -> None:
        # (token, tenant); tenant None: an operator token.
        self._entries: list[tuple[bytes, str | None]] = [(t.encode(), None) for t in operator]
        self._entries += [(t.encode(), name) for name, ts in by_tenant.items() for t in ts]

    @classmethod
    def from_config(cls, cfg: Config) -> TokenBook:
        operator = list(cfg.captions.tokens)
        by_tenant = {t.name: list(t.captions_tokens) for t in cfg.tenants}
        if not operator and not any(by_tenant.values()):
            path = token_path(cfg)
            try:
                operator = [path.read_text().strip()]
            except OSError as exc:
                raise RuntimeError(f"no captions token configured and {path}: {exc}") from exc
        return cls(operator, by_tenant)

    def scope(self, token: str | None) -> Scope | None:
        if not token:
            return None
        given = token.encode()
        found = [name for known, name in self._entries if hmac.compare_digest(known, given)]
        if not found:
            return None
        if None in found:
            return Scope(None)
        return Scope(frozenset(n for n in found if n is not None))


@dataclass(eq=False)
class _Subscriber:
    scope: Scope
    call_id: str | None
    queue: asyncio.Queue[Item | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE)
    )
    overflowed: bool = False

    def wants(self, item: Item) -> bool:
        return self.scope.sees(item.tenant) and self.call_id in (None, item.call_id)

    def end(self) -> None:
        """Make its stream end after what it has queued (the last item, if full, is lost:
        the client's reconnection gets it back)."""
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


def _sse(item_id: str, kind: str, data: bytes) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (item_id.encode(), kind.encode(), data)


class _AccessLog(AbstractAccessLogger):
    """Method, path without its query (it may hold a token), status and time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.3fs", request.method, request.path, response.status, time)


class CaptionsServer:
    def __init__(self, cfg: Config, tokens: TokenBook, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.tokens = tokens
        self.clock = clock
        self.hub = CaptionHub(cfg.captions.history, cfg.captions.keep_ended)
        self.subscribers: set[_Subscriber] = set()
        self.cut_off = 0  # slow subscribers disconnected
        self._page = {
            path: ((resources.files("sip_bridge.captions") / "page" / name).read_bytes(), ctype)
            for path, (name, ctype) in _PAGE.items()
        }
        self.app = web.Application(middlewares=[self._headers])
        self.app.add_routes(
            [
                web.get("/", self._static),
                web.get("/static/{name}", self._static),
                web.get("/healthz", self._health),
                web.get("/v1/calls", self._calls),
                web.get("/v1/events", self._events),
                web.get("/v1/calls/{call_id}/events", self._events),
                web.post("/v1/session", self._login),
                web.delete("/v1/session", self._logout),
            ]
        )

    # -- HTTP -----------------------------------------------------------------------------------

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def _static(self, request: web.Request) -> web.Response:
        found = self._page.get(request.path)
        if found is None:
            raise web.HTTPNotFound()
        body, ctype = found
        return web.Response(body=body, content_type=ctype, headers={"Cache-Control": "no-cache"})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "subscribers": len(self.subscribers)})

    def _scope(self, request: web.Request) -> Scope:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        token = token or request.query.get("token") or request.cookies.get(COOKIE)
        scope = self.tokens.scope(token)
        if scope is None:
            raise web.HTTPUnauthorized(
                text="a valid captions token is needed\n",
                headers={"WWW-Authenticate": 'Bearer realm="sip-bridge captions"'},
            )
        return scope

    async def _calls(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        return web.json_response({"calls": self.hub.calls(scope.tenants)})

    async def _login(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() != "bearer ":
            raise web.HTTPBadRequest(text="send the token as Authorization: Bearer <token>\n")
        response = web.json_response(
            {"tenants": None if scope.tenants is None else sorted(scope.tenants)}
        )
        response.set_cookie(COOKIE, auth[7:].strip(), max_age=COOKIE_MAX_AGE_S, path="/",
                            httponly=True, samesite="Strict", secure=request.secure)  # fmt: skip
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        response = web.Response(status=204)
        response.del_cookie(COOKIE, path="/")
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        scope = self._scope(request)
        call_id = request.match_info.get("call_id") or request.query.get("call_id") or None
        sub = _Subscriber(scope, call_id)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
            }
        )
        await response.prepare(request)
        # Registered before the backlog is read, with no await in between: nothing falls in a gap.
        self.subscribers.add(sub)
        try:
            last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
            backlog = self.hub.since(last) if last else None
            chunks = [b"retry: %d\n\n" % RETRY_MS]
            if backlog is None:
                snapshot = json.dumps({"calls": self.hub.calls(scope.tenants, call_id)})
                chunks.append(_sse(self.hub.last_id, "snapshot", snapshot.encode()))
            else:
                chunks += [self._encode(i) for i in backlog if sub.wants(i)]
            await response.write(b"".join(chunks))
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), PING_S)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if item is None:  # cut off (too slow), or the server is stopping
                    break
                await response.write(self._encode(item))
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self.subscribers.discard(sub)
        return response

    def _encode(self, item: Item) -> bytes:
        return _sse(self.hub.item_id(item.n), item.kind, item.data)

    # -- the feed -------------------------------------------------------------------------------

    def publish(self, items: Sequence[Item]) -> None:
        for item in items:
            for sub in list(self.subscribers):
                if sub.overflowed or not sub.wants(item):
                    continue
                try:
                    sub.queue.put_nowait(item)
                except asyncio.QueueFull:
                    sub.overflowed = True
                    self.cut_off += 1
                    log.warning(
                        "captions: a subscriber fell %d items behind; disconnecting it"
                        " (it resumes from its last event id)", SUBSCRIBER_QUEUE,
                    )  # fmt: skip
                    sub.end()

    def take(self, frames: Sequence[bytes]) -> None:
        """One message from a media process."""
        try:
            msg = decode(frames)
        except FeedError as exc:
            self.hub.bad_messages += 1
            log.warning("captions: bad feed message dropped: %s", exc)
            return
        if isinstance(msg, CallsMessage):
            self.publish(self.hub.on_calls(msg.node, msg.calls, self.clock()))
        else:
            self.publish(self.hub.on_event(msg.node, msg.tenant, msg.body))

    async def _read_feed(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            self.take(await sock.recv_multipart())

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            self.publish(self.hub.expire(self.clock()))

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.bind(f"tcp://127.0.0.1:{self.cfg.captions.feed_port}")
        runner = web.AppRunner(self.app, access_log_class=_AccessLog, access_log=log,
                               handle_signals=False, shutdown_timeout=2.0)  # fmt: skip
        await runner.setup()
        c = self.cfg.captions
        site = web.TCPSite(runner, c.address, c.port)
        tasks = [asyncio.create_task(self._read_feed(sock)), asyncio.create_task(self._expire())]
        try:
            await site.start()
            log.info("captions page on http://%s:%d/ (feed on 127.0.0.1:%d)",
                     c.address, c.port, c.feed_port)  # fmt: skip
            if on_ready is not None:
                on_ready()
            await stop.wait()
        finally:
            for sub in list(self.subscribers):
                sub.end()
            for task in tasks:
                task.cancel()
            await runner.cleanup()
            sock.close(0)
            ctx.term()


def main(cfg: Config, on_ready: Callable[[], None] | None = None) -> int:
    server = CaptionsServer(cfg, TokenBook.from_config(cfg))

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await server.run(stop, on_ready)

    asyncio.run(_main())
    return 0

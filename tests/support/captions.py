"""A captions server on its own thread and event loop, as in its own process, for tests and
benchmarks that talk to it over real sockets."""

from __future__ import annotations

import asyncio
import http.client
import threading

from sip_bridge.captions.server import CaptionsServer, TokenBook
from sip_bridge.settings.config import Config


class Running:
    """The server on its own thread and event loop, as in its own process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.server = CaptionsServer(cfg, TokenBook.from_config(cfg))
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "captions server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop = asyncio.Event()
            await self.server.run(self.stop, self.ready.set)

        self.loop.run_until_complete(main())

    def close(self) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        assert not self.thread.is_alive()

    def request(
        self, path: str, token: str | None = None, method: str = "GET", **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.cfg.captions.port, timeout=5)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body

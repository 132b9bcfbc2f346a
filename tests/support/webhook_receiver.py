"""A real HTTP server on loopback that records webhook POSTs and can be told to fail."""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Post:
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[Post] = []
        self.fail_first = fail_first
        self.attempts = 0
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._cond:
                    receiver.attempts += 1
                    fail = receiver.attempts <= receiver.fail_first
                    if not fail:
                        receiver.posts.append(Post(body, {k: v for k, v in self.headers.items()}))
                        receiver._cond.notify_all()
                self.send_response(503 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until ``predicate(posts)`` holds (re-checked on every POST)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(list(self.posts)), timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

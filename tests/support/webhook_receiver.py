"""A real HTTP server on loopback that records webhook POSTs and can be told to fail.

Every body it accepts is checked against the event schemas (``sip_bridge/delivery/schemas``) on
receipt, and :meth:`WebhookReceiver.close` fails if any broke them: every test that receives
webhooks checks the event contract on everything the bridge really sent.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from tests.support.event_schemas import problems


@dataclass(frozen=True)
class Post:
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def _contract_problem(body: bytes) -> str | None:
    try:
        event = json.loads(body)
    except ValueError as exc:
        return f"not JSON ({exc})"
    return problems(event)


class WebhookReceiver:
    def __init__(
        self, fail_first: int = 0, port: int = 0, hang_first: int = 0, hang_s: float = 0.0
    ) -> None:
        """``fail_first``: answer the first attempts 503; ``hang_first``: hold the first ones
        ``hang_s`` before answering (a sender with a shorter timeout gives up on them), and
        record them in ``hung`` only, not in ``posts``."""
        self.posts: list[Post] = []
        self.hung: list[Post] = []
        self.hang_first, self.hang_s = hang_first, hang_s
        self.invalid: list[str] = []  # one entry per accepted body that broke its schema
        self.fail_first = fail_first
        self.attempts = 0
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                problem = _contract_problem(body)
                with receiver._cond:
                    receiver.attempts += 1
                    hang = receiver.attempts <= receiver.hang_first
                    fail = receiver.attempts <= receiver.fail_first
                    if hang:
                        receiver.hung.append(Post(body, dict(self.headers.items())))
                    elif not fail:
                        if problem is not None:
                            receiver.invalid.append(f"{problem}\n    body: {body!r}")
                        receiver.posts.append(Post(body, {k: v for k, v in self.headers.items()}))
                        receiver._cond.notify_all()
                if hang:
                    time.sleep(receiver.hang_s)  # a slow endpoint, not a race papered over
                try:
                    self.send_response(503 if fail else 200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up waiting

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until ``predicate(posts)`` holds (re-checked on every POST)."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: predicate(list(self.posts)), timeout))

    def close(self) -> None:
        """Stop the server; raise AssertionError if any event received broke its schema."""
        self.server.shutdown()
        self.server.server_close()
        with self._cond:
            invalid = list(self.invalid)
        if invalid:
            raise AssertionError(
                f"{len(invalid)} of {len(self.posts)} webhook events broke the event schemas "
                "(sip_bridge/delivery/schemas):\n" + "\n".join(invalid)
            )

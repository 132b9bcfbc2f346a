"""The benchmarks' caption consumers: a webhook endpoint and a client of the captions event
stream (SSE), each keeping every transcript event with the moment it arrived.

Both are what a real consumer would run: a plain HTTP server answering 200 to each POST, and one
long ``GET /v1/events`` read line by line. Arrival times are ``time.time()`` when the whole event
has been read, the same clock as sipp's message trace.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import threading
import time
from collections import defaultdict
from typing import Any

from bench.harness.caption_lag import Caption


class EventLog:
    """Events by the SIP Call-ID of their call (as sipp names it), with arrival times."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._sip_call_id: dict[str, str] = {}  # our call_id -> SIP Call-ID
        self._events: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
        self.ended: set[str] = set()  # SIP Call-IDs whose call.ended came

    def add(self, at: float, event: dict[str, Any]) -> None:
        with self._lock:
            sip = event.get("sip_call_id")
            if isinstance(sip, str):
                self._sip_call_id[str(event.get("call_id"))] = sip
            else:
                sip = self._sip_call_id.get(str(event.get("call_id")), "")
            self._events[sip].append((at, event))
            if event.get("type") == "call.ended":
                self.ended.add(sip)
            self._lock.notify_all()

    def wait_ended(self, sip_call_ids: set[str], timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: sip_call_ids <= self.ended, timeout)

    def captions(self, sip_call_id: str) -> list[Caption]:
        with self._lock:
            events = list(self._events.get(sip_call_id, []))
        return [
            Caption(
                at,
                e["type"] == "transcript.final",
                int(e["utterance"]),
                str(e["text"]),
                float(e["start"]),
                float(e["end"]),
            )  # fmt: skip
            for at, e in events
            if e.get("type") in ("transcript.partial", "transcript.final")
        ]


class WebhookSink:
    """A webhook endpoint on loopback: every POSTed event into ``log``, answered 200."""

    def __init__(self) -> None:
        self.log = EventLog()
        log = self.log

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                at = time.time()
                with contextlib.suppress(ValueError):
                    log.add(at, json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class EventStreamClient:
    """One client of the captions server's ``GET /v1/events`` (Server-Sent Events)."""

    def __init__(self, port: int, token: str) -> None:
        self.log = EventLog()
        self.connected = threading.Event()
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=None)
        self._token = token
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._conn.request("GET", "/v1/events",
                               headers={"Authorization": f"Bearer {self._token}"})  # fmt: skip
            resp = self._conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"captions stream answered {resp.status}")
            self.connected.set()
            kind, data = "", []
            while True:
                raw = resp.fp.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    if kind.startswith(("transcript.", "call.started", "call.ended")):
                        with contextlib.suppress(ValueError):
                            self.log.add(time.time(), json.loads("\n".join(data)))
                    kind, data = "", []
        except (OSError, http.client.HTTPException, RuntimeError):
            return  # closed at the end of the run

    def close(self) -> None:
        try:
            if self._conn.sock is not None:
                self._conn.sock.shutdown(2)
        except OSError:
            pass
        self._conn.close()

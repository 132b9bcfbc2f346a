"""``serve``'s HTTP endpoint for operators: ``/metrics`` (Prometheus text, every process's
metrics added up, plus the supervisor's and the front's), ``/healthz`` and ``/readyz``.

The children write their metrics to files in ``runtime_dir/metrics`` (prometheus-client's
multiprocess mode: :data:`ENV` is set for them before they start); this module reads them at
each scrape, so a child that crashed still counts and one that hangs cannot stall the endpoint.

- ``/healthz``: 200 while the supervisor's loop runs (it answers from its own thread, so it
  tells whether ``serve`` is alive, not whether it takes calls).
- ``/readyz``: 200 when every part is up and the front has a media process in rotation and is
  not draining; else 503, with a JSON body saying which part is not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    parts: dict[str, str] = field(default_factory=dict)  # name -> "up" or why not


def prepare_dir(path: Path) -> None:
    """An empty metrics directory for this run, named in the environment the children inherit.
    Counters of a previous run are gone: Prometheus sees a restart (a reset), as it should."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    os.environ[ENV] = str(path)


def process_died(path: Path, pid: int) -> None:
    """Forget a dead child's live gauges (its counters keep counting in the totals)."""
    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("metrics %s", format % args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Supervised(Collector):
    def __init__(self, gauges: Callable[[], Iterable[Metric]]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        yield from self._gauges()


class MetricsServer:
    def __init__(
        self,
        address: str,
        port: int,
        directory: Path,
        readiness: Callable[[], Readiness],
        supervised: Callable[[], Iterable[Metric]],
    ) -> None:
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=str(directory))  # type: ignore[no-untyped-call]
        self.registry.register(_Supervised(supervised))
        self._readiness = readiness
        self._httpd = make_server(address, port, self._app, _Server, handler_class=_Quiet)
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics",
                                        daemon=True)  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _app(self, environ: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body = generate_latest(self.registry)
            start("200 OK", [("Content-Type", CONTENT_TYPE)])
            return [body]
        if path == "/healthz":
            start("200 OK", [("Content-Type", "application/json")])
            return [b'{"status":"alive"}']
        if path == "/readyz":
            r = self._readiness()
            body = json.dumps({"ready": r.ready, "parts": r.parts}).encode()
            start("200 OK" if r.ready else "503 Service Unavailable",
                  [("Content-Type", "application/json")])  # fmt: skip
            return [body]
        start("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /metrics, /healthz or /readyz\n"]


def gauge(
    name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]
) -> Metric:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        g.add_metric(label_values, value)
    return g


def counter(
    name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]
) -> Metric:
    c = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        c.add_metric(label_values, value)
    return c

"""One PJSUA2 media process on its own (``sip-bridge media --index 0``), with the test playing the
inference worker on real ZeroMQ sockets, so it sees exactly what a worker would receive and can
answer. Test support for the media process's tests; no Kamailio, no model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
import zmq
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from media import wire
from sip_bridge.serve.metrics_server import ENV
from tests.support.ports import distinct_free_ports
from tests.support.procs import wait_or_kill
from tests.support.webhook_receiver import WebhookReceiver


class FakeWorkerSide:
    """The worker's end of the wire: a real PULL socket; records every message per call. It
    heartbeats like a worker (from a thread, every 100 ms), or the media process would hold the
    calls back for want of a live worker."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, heartbeat_endpoint: str) -> None:
        self.pull = ctx.socket(zmq.PULL)
        self.pull.bind(endpoint)
        self.messages: dict[str, list[wire.Message]] = {}
        self.load = (0, 0.0)  # (calls, backlog_s) each heartbeat reports; see report()
        self._stop = threading.Event()
        pub = ctx.socket(zmq.PUB)
        pub.bind(heartbeat_endpoint)
        self._beats = threading.Thread(target=self._beat, args=(pub,), daemon=True)
        self._beats.start()

    def _beat(self, pub: zmq.Socket[Any]) -> None:
        incarnation = wire.new_call_id()
        while not self._stop.wait(0.1):
            calls, backlog = self.load
            pub.send_multipart(
                wire.encode(wire.Heartbeat(incarnation, 0, calls, backlog, 0.0, 0.0))
            )
        pub.close(0)

    def report(self, calls: int, backlog_s: float = 0.0) -> None:
        """What the next heartbeats say: the worker's calls (all media processes'), and its
        audio waiting for the model."""
        self.load = (calls, backlog_s)

    def close(self) -> None:
        self._stop.set()
        self._beats.join(5)
        self.pull.close(0)

    log_path: Path | None = None  # the media process's log, quoted when a wait times out

    def wait_for(self, predicate: Any, timeout_s: float) -> None:
        deadline = timeout_s * 1000
        while not predicate(self.messages):
            if not self.pull.poll(int(deadline)):
                log = self.log_path.read_text()[-3000:] if self.log_path else ""
                counts = {k: len(v) for k, v in self.messages.items()}
                raise AssertionError(f"timeout; messages per call {counts}; media log:\n{log}")
            msg = wire.decode(self.pull.recv_multipart())
            self.messages.setdefault(getattr(msg, "call_id", ""), []).append(msg)


@dataclass
class LoneMedia:
    port: int  # the media process's SIP port (sipp calls it directly)
    worker: FakeWorkerSide
    ctx: zmq.Context[Any]
    rx: WebhookReceiver
    log_path: Path
    result_endpoint: str = ""  # the media process's result socket (where workers answer)
    metrics_dir: Path | None = None  # its Prometheus files (multiprocess mode)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """A sample of the media process's metrics, as /metrics would show it (updated by the
        process once a second)."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(self.metrics_dir))
        return registry.get_sample_value(name, labels)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


@contextmanager
def lone_media(tmp_path: Path, overrides: dict[str, Any] | None = None) -> Iterator[LoneMedia]:
    """Run one media process with a fake worker side and a webhook receiver; on exit, stop it
    and check it exited 0. ``overrides``: config keys to change (nested dicts)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    ctx: zmq.Context[Any] = zmq.Context()
    sip_port, result_port, worker_port, beat_port, front_port = distinct_free_ports(5)
    # RTP below the ephemeral port range (32768+), where bound-to-0 sockets of other tests land.
    cfg = {
        "sip": {"address": "127.0.0.1", "port": front_port},
        "media": {
            "processes": 1, "sip_port_base": sip_port, "result_port_base": result_port,
            "rtp_port_base": 31200, "rtp_ports_per_process": 100, "call_end_flush_s": 3.0,
        },
        "inference": {"workers": 1, "port_base": worker_port, "heartbeat_port_base": beat_port},
        "runtime_dir": str(tmp_path / "run"),
        "delivery": {"spool_dir": str(tmp_path / "spool")},
    }  # fmt: skip
    rx = WebhookReceiver()
    cfg["webhooks"] = [{"url": rx.url, "secret": "k"}]
    _merge(cfg, overrides or {})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    worker = FakeWorkerSide(ctx, f"tcp://127.0.0.1:{worker_port}", f"tcp://127.0.0.1:{beat_port}")
    worker.log_path = tmp_path / "media.log"
    log = open(tmp_path / "media.log", "wb")  # noqa: SIM115
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sip_bridge.cli", "media", "--index", "0", "--config", str(path)],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ | {ENV: str(metrics_dir)},
    )  # fmt: skip
    try:
        # Calls before the media process has heard the fake worker would wait for it, then be
        # moved to it (a new epoch: results sent for the old one are dropped): wait for it.
        deadline = time.monotonic() + 30
        while b"worker 0 is up" not in (tmp_path / "media.log").read_bytes():
            assert proc.poll() is None, (tmp_path / "media.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "media.log").read_text()[-3000:]
            time.sleep(0.05)  # polling the log, bounded by the deadline
        yield LoneMedia(sip_port, worker, ctx, rx, tmp_path / "media.log",
                        f"tcp://127.0.0.1:{result_port}", metrics_dir)  # fmt: skip
    finally:
        proc.terminate()
        code, hung = wait_or_kill(proc, 30)  # never leave it running for the next test
        worker.close()
        # linger 0: a reply socket a failed test left open must not block term (nor a later
        # garbage collection of this context, which would hang whichever test it lands in).
        ctx.destroy(linger=0)
        log.close()
        try:
            tail = (tmp_path / "media.log").read_text(errors="replace")[-3000:]
            assert not hung, "media process still running 30 s after SIGTERM:\n" + tail
            assert code == 0, tail
        finally:
            rx.close()  # fails if a webhook event broke the event schemas

"""The benchmarked inference workers: each a real child process (``python -m sip_bridge.cli
worker --index 0 --config CFG``, the config a benchmark gives it written to a work folder and its
log, at DEBUG, kept beside it), and a pool of them with the generator that feeds them.

Only the keys in :class:`WorkerSetup` are set; everything else keeps the product default. The
benchmarks read a worker from outside, never change it: its CPU from /proc, its model batches
from the "batch of N (F finals) in T ms" lines of its log.

A pool's starting and waiting are apart, so that several pools load the model at once:
``start`` every pool, then ``ready`` each, then ``connect`` (the generator, then one warm-up per
worker, so the first model runs' allocations fall outside the levels). ``close`` is safe at any
point.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from bench.harness.cpu_time import process_cpu_s
from bench.harness.media_generator import Generator, warm_up

REPO = Path(__file__).resolve().parents[2]
_BATCH_LINE = re.compile(rb"batch of (\d+) \((\d+) finals\) in (\d+) ms")


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """The config keys a benchmarked worker gets; everything else keeps the product default."""

    partials_ms: int  # inference.partial_interval_ms (0: partials off)
    max_batch: int = 8  # inference.max_batch
    threads: int = 1  # inference.threads
    min_silence_ms: int = 0  # vad.min_silence_ms; 0 keeps the default
    provider: str = "cpu"  # inference.provider

    def yaml(self, port: int, heartbeat_port: int) -> str:
        vad = f"vad:\n  min_silence_ms: {self.min_silence_ms}\n" if self.min_silence_ms else ""
        return (
            "log_level: DEBUG\n"
            "inference:\n"
            f"  port_base: {port}\n"
            f"  heartbeat_port_base: {heartbeat_port}\n"
            f"  partial_interval_ms: {self.partials_ms}\n"
            f"  max_batch: {self.max_batch}\n"
            f"  threads: {self.threads}\n"
            f"  provider: {self.provider}\n" + vad
        )


class WorkerProcess:
    """``sip_bridge.cli worker`` as a child process, with its config and log under ``workdir``."""

    def __init__(self, workdir: Path, name: str, setup: WorkerSetup) -> None:
        port, heartbeat_port = free_ports(2)
        self.name = name
        self.setup = setup
        self.endpoint = f"tcp://127.0.0.1:{port}"
        cfg = workdir / f"{name}.yaml"
        cfg.write_text(setup.yaml(port, heartbeat_port))
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sip_bridge.cli", "worker"]
            + ["--index", "0", "--config", str(cfg)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def wait_ready(self, timeout_s: float = 300.0) -> str:
        """Wait for the worker's "listening" line; returns what ONNX Runtime said it runs on."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()
            if b"listening on" in text:
                found = re.search(rb"ONNX Runtime runs on ([^\n]*)", text)
                return found.group(1).decode() if found else "?"
            if self.proc.poll() is not None:
                sys.exit(f"worker exited ({self.proc.returncode}):\n{text.decode()[-3000:]}")
            time.sleep(0.2)
        sys.exit("worker not ready in time")

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid)

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def batches(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(items, finals, ms) of each batch logged between two log sizes."""
        with open(self.log_path, "rb") as f:
            f.seek(start)
            text = f.read(end - start)
        return [tuple(map(int, m.groups())) for m in _BATCH_LINE.finditer(text)]  # type: ignore[misc]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class WorkerPool:
    """Workers of one setup, started together, and the generator that feeds them."""

    def __init__(self, label: str, setup: WorkerSetup) -> None:
        self.label = label
        self.setup = setup
        self.workers: list[WorkerProcess] = []
        self._gen: Generator | None = None

    def start(self, workdir: Path, count: int) -> None:
        """Start ``count`` workers (config and log in ``workdir``); they load the model now."""
        name = self.label.replace(" ", "")
        self.workers = [WorkerProcess(workdir, f"{name}-{i}", self.setup) for i in range(count)]

    def ready(self) -> set[str]:
        """Wait for every worker; what ONNX Runtime said each runs on."""
        return {worker.wait_ready() for worker in self.workers}

    def connect(
        self, ctx: zmq.Context[Any], pool: list[tuple[str, np.ndarray]], warm_calls: int = 1
    ) -> Generator:
        """The generator for these workers, each warmed up with ``warm_calls`` calls at once."""
        self._gen = Generator(ctx, [worker.endpoint for worker in self.workers])
        for i in range(len(self.workers)):
            warm_up(self._gen, pool, i, calls=warm_calls)
        return self._gen

    @property
    def gen(self) -> Generator:
        if self._gen is None:
            raise RuntimeError(f"{self.label}: not connected")
        return self._gen

    def close(self) -> None:
        """Close the generator's sockets and stop every worker (the ZeroMQ context is the
        caller's)."""
        if self._gen is not None:
            self._gen.close()
        for worker in self.workers:
            worker.stop()

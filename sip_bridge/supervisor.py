"""``sip-bridge serve``: start, watch and stop every part on one host.

Order of start: model conversion (once, here, so workers never race for it) → inference workers →
media processes → the captions server → Kamailio, each part waited for (it reports ready on the
control socket), so the front takes calls only when everything behind it is up. A part that dies
is restarted with a doubling back-off (1 s up to 30 s). SIGINT/SIGTERM stop the front first, then
the media processes (which hang up and flush their calls), then the captions server, then the
workers. If anything fails to start, everything already started is stopped and ``serve`` exits
non-zero: nothing runs half-way.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import zmq

from sip_bridge import kamailio
from sip_bridge.captions_server import make_token_file
from sip_bridge.config import Config

log = logging.getLogger(__name__)

CONTROL_ENV = "SIP_BRIDGE_CONTROL"
READY_TIMEOUT_S = 300.0  # first start converts the model (about a minute on 2 cores)
STOP_TIMEOUT_S = 15.0


class StartupError(Exception):
    pass


@dataclass(slots=True)
class Child:
    role: str  # "worker" | "media" | "captions" | "front"
    index: int
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None
    restarts: int = 0

    @property
    def name(self) -> str:
        return self.role if self.role in ("front", "captions") else f"{self.role} {self.index}"


def notify_ready(role: str, index: int) -> None:
    """Called by a child process once it serves; a no-op when not started by ``serve``."""
    endpoint = os.environ.get(CONTROL_ENV)
    if not endpoint:
        return
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(endpoint)
    sock.send_json({"role": role, "index": index, "state": "ready", "pid": os.getpid()})
    sock.close()


@dataclass(slots=True)
class Supervisor:
    cfg: Config
    config_path: str | None
    children: list[Child] = field(default_factory=list)
    control_endpoint: str = ""
    control: zmq.Socket[Any] | None = None
    files: kamailio.KamailioFiles | None = None
    _stop: bool = False

    def _child_argv(self, role: str, index: int) -> list[str]:
        argv = [sys.executable, "-m", "sip_bridge.cli", role, "--index", str(index)]
        if self.config_path:
            argv += ["--config", self.config_path]
        # Every part must agree on the worker count, whatever overrode the file's.
        argv += ["--workers", str(self.cfg.inference.workers)]
        return argv

    def _spawn(self, child: Child) -> None:
        env = dict(os.environ)
        env[CONTROL_ENV] = self.control_endpoint
        # Kamailio forks its workers; in a group of their own they can all be ended together
        # (killed -9, its main process leaves them serving the SIP port).
        child.proc = subprocess.Popen(
            child.argv, env=env, stdin=subprocess.DEVNULL, start_new_session=child.role == "front"
        )
        child.started_at = time.monotonic()
        log.info("%s started (pid %d)", child.name, child.proc.pid)

    def _wait_ready(self, group: list[Child], control: zmq.Socket[Any], timeout: float) -> None:
        waiting = {(c.role, c.index) for c in group}
        deadline = time.monotonic() + timeout
        while waiting:
            if self._stop:
                raise StartupError("stopped during start-up")
            for c in group:
                if c.proc is not None and c.proc.poll() is not None:
                    raise StartupError(f"{c.name} exited with {c.proc.returncode} during start-up")
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(f"{r} {i}" for r, i in sorted(waiting))
                raise StartupError(f"not ready after {timeout:.0f} s: {names}")
            if control.poll(int(min(left, 0.5) * 1000)):
                msg = control.recv_json()
                if isinstance(msg, dict) and msg.get("state") == "ready":
                    waiting.discard((str(msg.get("role")), int(msg.get("index", -1))))

    def _wait_front(self, front: Child, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if front.proc is not None and front.proc.poll() is not None:
                raise StartupError(
                    f"kamailio exited with {front.proc.returncode}; its ERROR lines above say why"
                    f" (often udp:{self.cfg.sip.address}:{self.cfg.sip.port} is held by another"
                    " SIP server, such as the system kamailio service)"
                )
            if kamailio.probe(self.cfg, timeout=0.3):
                return
        raise StartupError(f"kamailio did not answer OPTIONS within {timeout:.0f} s")

    def start(self) -> None:
        rundir = self.cfg.runtime_path()
        rundir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.control_endpoint = f"ipc://{rundir / 'control.sock'}"
        files = kamailio.render(self.cfg, rundir)
        kamailio.check(files)
        self.files = files
        self._prepare_model()
        ctx: zmq.Context[Any] = zmq.Context.instance()
        control = ctx.socket(zmq.PULL)
        control.bind(self.control_endpoint)
        self.control = control
        workers = [
            Child("worker", i, self._child_argv("worker", i))
            for i in range(self.cfg.inference.workers)
        ]
        media = [
            Child("media", i, self._child_argv("media", i)) for i in range(self.cfg.media.processes)
        ]
        captions = []
        if self.cfg.captions.enabled:
            token_file = make_token_file(self.cfg)
            if token_file is not None:
                log.info("captions: no token configured; this run's is in %s (`sip-bridge"
                         " captions-url` prints the page's link)", token_file)  # fmt: skip
            captions = [Child("captions", 0, self._child_argv("captions", 0))]
        front = Child("front", 0, kamailio.command(files))
        self.children = [*workers, *media, *captions, front]
        for group in (workers, media, captions):
            for c in group:
                self._spawn(c)
            self._wait_ready(group, control, READY_TIMEOUT_S)
        self._spawn(front)
        if self.cfg.sip.answer_options:
            self._wait_front(front)
        log.info(
            "sip-bridge ready: SIP on udp:%s:%d, %d media processes x %d calls, %d worker(s)",
            self.cfg.sip.address, self.cfg.sip.port, self.cfg.media.processes,
            self.cfg.media.calls_per_process, self.cfg.inference.workers,
        )  # fmt: skip

    def _prepare_model(self) -> None:
        from inference.model_files import ensure_converted

        t0 = time.monotonic()
        files = ensure_converted(self.cfg.model_cache_path())
        log.info("model ready in %.1f s: %s", time.monotonic() - t0, files.encoder.parent)

    def watch(self) -> None:
        """Restart parts that die, until asked to stop."""
        while not self._stop:
            now = time.monotonic()
            for c in self.children:
                if c.proc is None:
                    if c.restart_at is not None and now >= c.restart_at:
                        c.restart_at = None
                        c.restarts += 1
                        self._spawn(c)
                    continue
                code = c.proc.poll()
                if code is None:
                    if now - c.started_at > 60:
                        c.backoff = 1.0  # it ran well for a while: forget old failures
                    continue
                if c.role == "media":
                    self._take_out_of_rotation(c)
                _end_group(c)
                log.error("%s (pid %d) exited with %d; restarting in %.0f s",
                          c.name, c.proc.pid, code, c.backoff)  # fmt: skip
                c.proc = None
                c.restart_at = now + c.backoff
                c.backoff = min(c.backoff * 2, 30.0)
            assert self.control is not None
            if self.control.poll(200):  # "ready" messages of restarted parts
                log.info("%s", json.dumps(self.control.recv_json()))

    def _take_out_of_rotation(self, media: Child) -> None:
        """A media process died: the front sends it no call from now on (its OPTIONS probe
        alone would notice in about 2 s), until a probe finds its successor answering."""
        if self.files is None:
            return
        try:
            kamailio.set_state(self.files, kamailio.media_uri(self.cfg, media.index), "ip")
        except kamailio.KamailioError as exc:  # the front is down too: it will probe anew
            log.warning("%s: could not take it out of the front's rotation: %s", media.name, exc)

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def stop(self) -> None:
        # The front first (no new calls), then the media processes (which hang up and flush
        # their calls), then the captions server (it saw their last events), then the workers.
        order = ("front", "media", "captions", "worker")
        by_role: dict[str, list[Child]] = {role: [] for role in order}
        for c in self.children:
            by_role[c.role].append(c)
        for role in order:
            procs = [c for c in by_role[role] if c.proc is not None and c.proc.poll() is None]
            for c in procs:
                assert c.proc is not None
                c.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for c in procs:
                assert c.proc is not None
                try:
                    c.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0f s; killing it", c.name, STOP_TIMEOUT_S)
                    c.proc.kill()
                    c.proc.wait(5)
                _end_group(c)
        log.info("sip-bridge stopped")


def _end_group(child: Child) -> None:
    """Whatever the front's main process left of its group (its forked workers)."""
    if child.role == "front" and child.proc is not None:
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def serve(cfg: Config, config_path: str | None) -> int:
    sup = Supervisor(cfg, config_path)

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        sup.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        sup.start()
    except (StartupError, kamailio.KamailioError) as exc:
        log.error("start-up failed: %s", exc)
        sup.stop()
        return 1
    except Exception:
        sup.stop()
        raise
    sup.watch()
    sup.stop()
    return 0

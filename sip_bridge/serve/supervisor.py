"""``sip-bridge serve``: start, watch and stop every part on one host.

Order of start: model conversion (once, here, so workers never race for it) → inference workers →
media processes → the captions server → Kamailio, each part waited for (it reports ready on the
control socket), so the front takes calls only when everything behind it is up. A part that dies
is restarted with a doubling back-off (1 s up to 30 s); SIGHUP restarts the media processes one
at a time. SIGINT/SIGTERM first drain: the front answers new calls and OPTIONS with 503 while the
calls in progress get up to ``media.drain_timeout_s`` to end (a second signal cuts that short).
Then the parts stop in this order: the media processes (they hang up what is left, their BYEs
pass the front, and flush their webhooks), the captions server, the workers, and the front last.
If anything fails to start, everything already started is stopped and ``serve`` exits
non-zero: nothing runs half-way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from sip_bridge.calls import active_calls
from sip_bridge.captions.server import make_token_file, page_url
from sip_bridge.front import kamailio, source_limits
from sip_bridge.serve import metrics_server, part_logs
from sip_bridge.serve.status import ServeStatus
from sip_bridge.settings.config import Config

log = logging.getLogger(__name__)

CONTROL_ENV = "SIP_BRIDGE_CONTROL"
PARENT_ENV = "SIP_BRIDGE_SUPERVISOR"  # serve's pid, for die_with_supervisor()
READY_TIMEOUT_S = 300.0  # first start converts the model (about a minute on 2 cores)
STOP_TIMEOUT_S = 15.0
PIDFILE = "serve.pid"  # in the runtime dir: `sip-bridge rolling-restart` signals this pid


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
    held: bool = False  # being restarted on purpose (rolling restart): not the watch's to restart
    pump: part_logs.Pump | None = None  # copies its output to its log file (front, media)

    @property
    def name(self) -> str:
        return self.role if self.role in ("front", "captions") else f"{self.role} {self.index}"


def ready_line(cfg: Config) -> str:
    """What an operator needs once the front takes calls: where SIP listens, how many calls the
    host takes, where the captions page and the front's log are."""
    s, m = cfg.sip, cfg.media
    listens = [f"udp:{s.address}:{s.port}"]
    if s.tcp:
        listens.append(f"tcp:{s.address}:{s.port}")
    if s.tls.port:
        listens.append(f"tls:{s.address}:{s.tls.port}")
    workers = len(cfg.worker_targets())
    parts = [
        f"sip-bridge ready: SIP on {', '.join(listens)}",
        f"{source_limits.capacity(cfg)} calls at once ({m.processes} media processes x"
        f" {m.calls_per_process} calls, {workers} worker(s))",
    ]
    if cfg.captions.enabled:
        parts.append(f"captions on {page_url(cfg)} (`sip-bridge captions-url`: its link)")
    parts.append(f"front's log in {part_logs.log_path(cfg.runtime_path(), 'front', 0)}")
    return "; ".join(parts)


def die_with_supervisor() -> None:
    """In a child started by ``serve``: be sent SIGTERM if ``serve`` dies, even by SIGKILL
    (Linux ``PR_SET_PDEATHSIG``), so no worker or media process outlives it holding ports."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


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
    _hurry: bool = False
    _roll: bool = False
    _ready: dict[tuple[str, int], int] = field(default_factory=dict)  # (role, index) -> pid
    draining: bool = False
    started: bool = False  # every part came up once
    metrics: metrics_server.MetricsServer | None = None

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
        env[PARENT_ENV] = str(os.getpid())
        # Kamailio forks its workers; in a group of their own they can all be ended together
        # (killed -9, its main process leaves them serving the SIP port).
        argv = child.argv
        setpriv = shutil.which("setpriv")
        if child.role == "front" and setpriv:
            # Kamailio is not ours to change: util-linux's setpriv gives it the death signal
            # that our own children set themselves (die_with_supervisor), then execs it.
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        # Kamailio's log (stderr) and PJSIP's console (a media process's stdout) go to files
        # of the runtime directory, with Kamailio's WARNING and up to our log (part_logs).
        front = child.role == "front"
        piped = front or child.role == "media"
        child.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, start_new_session=front,
            stdout=subprocess.PIPE if piped else None,
            stderr=subprocess.STDOUT if front else None,
        )  # fmt: skip
        if child.proc.stdout is not None:
            child.pump = part_logs.Pump(
                child.proc.stdout, part_logs.log_path(self.cfg.runtime_path(), child.role,
                                                      child.index),
                part_logs.kamailio_level if front else part_logs.pjsip_level, child.name,
            )  # fmt: skip
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
        if self.cfg.metrics.enabled:
            self._start_metrics(rundir / "metrics")
        calls_here = self.cfg.media.processes > 0  # else a host of workers for other hosts
        if calls_here:
            self.files = kamailio.render(self.cfg, rundir)
            kamailio.check(self.files)
        if self.cfg.inference.workers:
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
        if self.cfg.captions.enabled and calls_here:
            token_file = make_token_file(self.cfg)
            if token_file is not None:
                log.info("captions: no token configured; this run's is in %s (`sip-bridge"
                         " captions-url` prints the page's link)", token_file)  # fmt: skip
            captions = [Child("captions", 0, self._child_argv("captions", 0))]
        front = [Child("front", 0, kamailio.command(self.files))] if self.files else []
        self.children = [*workers, *media, *captions, *front]
        for group in (workers, media, captions):
            for c in group:
                self._spawn(c)
            self._wait_ready(group, control, READY_TIMEOUT_S)
        for c in front:
            self._spawn(c)
            if self.cfg.sip.answer_options:
                self._wait_front(c)
        self.started = True
        if not calls_here:
            i = self.cfg.inference
            log.info("sip-bridge ready: %d worker(s) for other hosts on %s, ports %d+ (audio)"
                     " and %d+ (heartbeats)", i.workers, i.address, i.port_base,
                     i.heartbeat_port_base)  # fmt: skip
            return
        log.info("%s", ready_line(self.cfg))

    def _prepare_model(self) -> None:
        from inference.model_files import ensure_converted

        t0 = time.monotonic()
        files = ensure_converted(self.cfg.model_cache_path())
        log.info("model ready in %.1f s: %s", time.monotonic() - t0, files.encoder.parent)

    def watch(self) -> None:
        """Restart parts that die, until asked to stop; roll the media processes on SIGHUP."""
        while not self._stop:
            self._tend()
            if self._roll:
                self._roll = False
                self.rolling_restart()

    def _tend(self, wait_ms: int = 200) -> None:
        """One look at every child: restart those that died (unless held by a rolling restart),
        then up to ``wait_ms`` for "ready" messages."""
        now = time.monotonic()
        for c in self.children:
            if c.held:
                continue
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
            if self.metrics is not None:
                metrics_server.process_died(self.cfg.runtime_path() / "metrics", c.proc.pid)
            log.error("%s (pid %d) exited with %d; restarting in %.0f s",
                      c.name, c.proc.pid, code, c.backoff)  # fmt: skip
            c.proc = None
            c.restart_at = now + c.backoff
            c.backoff = min(c.backoff * 2, 30.0)
        assert self.control is not None
        if self.control.poll(wait_ms):  # "ready" messages of restarted parts
            msg = self.control.recv_json()
            log.info("%s", json.dumps(msg))
            if isinstance(msg, dict) and msg.get("state") == "ready":
                self._ready[(str(msg.get("role")), int(msg.get("index", -1)))] = int(
                    msg.get("pid", 0)
                )

    # -- draining and rolling restarts --------------------------------------------------------

    def _calls_of(self, index: int | None = None) -> int:
        calls = active_calls.read_all(self.cfg.runtime_path())
        if index is not None:
            node = f"/media{index}"
            calls = [c for c in calls if str(c.get("node", "")).endswith(node)]
        return len(calls)

    def _wait_calls_end(self, index: int | None, deadline: float) -> int:
        """Tend the children until the calls (of media ``index``, or all) are over, the
        deadline passes or a second stop signal comes; returns the calls left."""
        while (left := self._calls_of(index)) and time.monotonic() < deadline and not self._hurry:
            self._tend(wait_ms=200)
        return left

    def drain(self) -> None:
        """SIGTERM: the front refuses new calls (503 with Retry-After, OPTIONS too, so a PBX or
        an upstream proxy moves to another host); calls in progress get up to
        ``media.drain_timeout_s`` to end by themselves."""
        if self.files is None:
            return
        self.draining = True
        try:
            kamailio.set_draining(self.files, True)
        except kamailio.KamailioError as exc:
            log.warning("drain: the front could not be told (%s); stopping without a drain", exc)
            return
        timeout = self.cfg.media.drain_timeout_s
        calls = self._calls_of()
        if calls:
            log.info("draining: %d call(s) in progress, up to %.0f s (SIGTERM again: hang up now)",
                     calls, timeout)  # fmt: skip
        left = self._wait_calls_end(None, time.monotonic() + timeout)
        if left:
            log.warning("drain: %d call(s) still in progress; hanging them up", left)
        elif calls:
            log.info("drained: every call ended by itself")

    def rolling_restart(self) -> None:
        """SIGHUP: restart the media processes one at a time, each first taken out of the
        front's rotation and given up to ``media.drain_timeout_s`` for its calls to end, so
        calls go on on the others and none is dropped (new code or config takes effect)."""
        if self.files is None:
            return
        log.info("rolling restart of %d media processes", self.cfg.media.processes)
        for c in [c for c in self.children if c.role == "media"]:
            if self._stop:
                return
            uri = kamailio.media_uri(self.cfg, c.index)
            try:
                kamailio.set_state(self.files, uri, "d")
            except kamailio.KamailioError as exc:
                log.error("rolling restart stopped: %s not taken out of rotation: %s", c.name, exc)
                return
            calls = self._calls_of(c.index)
            log.info("rolling restart: %s takes no new calls; waiting for its %d call(s)",
                     c.name, calls)  # fmt: skip
            deadline = time.monotonic() + self.cfg.media.drain_timeout_s
            left = self._wait_calls_end(c.index, deadline)
            if left:
                log.warning("rolling restart: %s still has %d call(s); they end now", c.name, left)
            c.held = True
            try:
                self._restart_now(c)
            finally:
                c.held = False
            try:
                kamailio.set_state(self.files, uri, "ap")
            except kamailio.KamailioError as exc:
                log.error("rolling restart: %s not put back in rotation: %s", c.name, exc)
        log.info("rolling restart done")

    def _restart_now(self, c: Child) -> None:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while c.proc.poll() is None and time.monotonic() < deadline:
                self._tend(wait_ms=100)
            if c.proc.poll() is None:
                log.warning("%s did not stop in %.0f s; killing it", c.name, STOP_TIMEOUT_S)
                c.proc.kill()
                c.proc.wait(5)
        self._ready.pop((c.role, c.index), None)
        self._spawn(c)
        assert c.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self._ready.get((c.role, c.index)) != c.proc.pid:
            if c.proc.poll() is not None or time.monotonic() > deadline:
                log.error("rolling restart: %s did not come back; the watch restarts it", c.name)
                return
            self._tend(wait_ms=100)

    def _take_out_of_rotation(self, media: Child) -> None:
        """A media process died: the front sends it no call from now on (its OPTIONS probe
        alone would notice in about 2 s), until a probe finds its successor answering."""
        if self.files is None:
            return
        try:
            kamailio.set_state(self.files, kamailio.media_uri(self.cfg, media.index), "ip")
        except kamailio.KamailioError as exc:  # the front is down too: it will probe anew
            log.warning("%s: could not take it out of the front's rotation: %s", media.name, exc)

    # -- the operator's endpoint ----------------------------------------------------------------

    def _start_metrics(self, directory: Path) -> None:
        metrics_server.prepare_dir(directory)  # before any child starts: they inherit it
        m = self.cfg.metrics
        try:
            view = ServeStatus(self)
            self.metrics = metrics_server.MetricsServer(
                m.address, m.port, directory, view.readiness, view.metrics
            )
        except OSError as exc:
            raise StartupError(f"metrics endpoint {m.address}:{m.port}: {exc}") from exc
        self.metrics.start()
        log.info("metrics, health and readiness on http://%s:%d/ (metrics, healthz, readyz)",
                 m.address, self.metrics.port)  # fmt: skip

    @property
    def stopping(self) -> bool:
        return self._stop

    def request_stop(self, *_: object) -> None:
        if self._stop:
            self._hurry = True  # a second signal: no more waiting for calls
        self._stop = True

    def request_roll(self, *_: object) -> None:
        self._roll = True

    def stop(self) -> None:
        # The media processes first (they hang up what is left, their BYEs pass the front, and
        # flush their webhooks), the captions server (it saw their last events), the workers,
        # and the front last: draining, it refuses new calls meanwhile.
        order = ("media", "captions", "worker", "front")
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
                if c.pump is not None:  # its last lines reach its file before we exit
                    c.pump.join(2.0)
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        log.info("sip-bridge stopped")


def _end_group(child: Child) -> None:
    """Whatever the front's main process left of its group (its forked workers)."""
    if child.role == "front" and child.proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, signal.SIGKILL)


def serve(cfg: Config, config_path: str | None) -> int:
    sup = Supervisor(cfg, config_path)

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        sup.request_stop()

    def _roll(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: rolling restart of the media processes", signum)
        sup.request_roll()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _roll)
    pidfile = cfg.runtime_path() / PIDFILE
    try:
        sup.start()
    except (StartupError, kamailio.KamailioError) as exc:
        log.error("start-up failed: %s", exc)
        sup.stop()
        return 1
    except Exception:
        sup.stop()
        raise
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        sup.watch()
        sup.drain()
        sup.stop()
    finally:
        pidfile.unlink(missing_ok=True)
    return 0

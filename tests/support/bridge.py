"""``sip-bridge serve`` started as a user would (the console script, a YAML config), for tests."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import all_free
from tests.support.waiting import within

READY_LINE = "sip-bridge ready"

# Each bridge takes ports base .. base+93 (SIP, ZeroMQ, HTTP) and from base+1000 its RTP: 100
# ports per media process, up to 8 of them (the control offsets below allow as many).
_SPAN = 2000
_CONTROL_OFFSETS = (0, *range(11, 19), *range(31, 39), *range(51, 59), *range(71, 79), 91, 92, 93)
_live_bases: set[int] = set()
_bases_lock = threading.Lock()


def _take_base() -> int:
    """A port base whose range overlaps no other bridge this test process runs and whose
    control ports are free now (two bridges at once, a module's and a test's own, drawing
    bases at random: CI saw one fail to bind its metrics port)."""
    rng = random.Random(os.getpid() + time.time_ns())
    with _bases_lock:
        for _ in range(200):
            base = rng.randrange(20000, 30000, 100)
            apart = all(abs(base - other) >= _SPAN for other in _live_bases)
            if apart and all_free(base + o for o in _CONTROL_OFFSETS):
                _live_bases.add(base)
                return base
    raise RuntimeError(f"no free port range for a bridge (live bases {sorted(_live_bases)})")


def _script() -> str:
    beside = Path(sys.executable).parent / "sip-bridge"
    return str(beside) if beside.exists() else (shutil.which("sip-bridge") or "sip-bridge")


class RunningBridge:
    def __init__(
        self,
        work: Path,
        overrides: dict[str, Any],
        webhook_url: str | None,
        env: dict[str, str] | None = None,
        this_tree: bool = True,
    ) -> None:
        """``env``: more environment variables for serve and its children (the benchmarks run
        another revision's code with PYTHONPATH). ``this_tree``: set keys an older revision
        does not know: 127.0.0.1, where the tests' callers are, is a listed trunk
        (``sip.trunks``), as an operator lists the PBX, so its calls are not held to the
        per-source limit of strangers; and workers take any number of calls
        (``inference.calls_per_worker: 0``): the tests load one worker with more calls than the
        CPU default admits, to test concurrency (the admission tests set it back)."""
        work.mkdir(parents=True, exist_ok=True)
        base = self._base = _take_base()
        cfg: dict[str, Any] = {
            "sip": {"address": "127.0.0.1", "port": base}
            | ({"trunks": [{"address": "127.0.0.1"}]} if this_tree else {}),
            "media": {
                "processes": 4,
                "sip_port_base": base + 11,
                "result_port_base": base + 31,
                "rtp_port_base": base + 1000 if base + 1000 < 31000 else 31000,
                "rtp_ports_per_process": 100,
                # A test's calls are over at teardown; one its sipp left up ends at once.
                "drain_timeout_s": 5,
            },
            "inference": {"workers": 1, "port_base": base + 51, "heartbeat_port_base": base + 71}
            | ({"calls_per_worker": 0} if this_tree else {}),
            "captions": {"port": base + 91, "feed_port": base + 92},
            "metrics": {"port": base + 93},
            "runtime_dir": str(work / "run"),
            "delivery": {"spool_dir": str(work / "spool")},
            "log_level": "INFO",
        }
        if webhook_url:
            cfg["webhooks"] = [{"url": webhook_url, "secret": "test-secret"}]
        for section, values in overrides.items():
            if isinstance(values, dict):
                cfg.setdefault(section, {}).update(values)
            else:
                cfg[section] = values
        self.config = cfg
        self.port = cfg["sip"]["port"]
        self.config_path = work / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log_path = work / "serve.log"
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._new_line = threading.Condition()
        self.proc = subprocess.Popen(
            [_script(), "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
            # Not the repository: with ``python -m`` the children would import its packages
            # from the working directory first, whatever PYTHONPATH says.
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Kamailio logs the bytes of a malformed message as they came: not always UTF-8.
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log_path, "w") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                with self._new_line:
                    self.lines.append(line)
                    self._new_line.notify_all()
                if READY_LINE in line:
                    self._ready.set()
        with self._new_line:
            self._new_line.notify_all()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"sip-bridge serve not ready (exit {self.proc.poll()}):\n"
                    + "".join(self.lines[-40:])
                )

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """Wait until a line containing ``text`` has been logged (or serve has exited)."""
        with self._new_line:
            return self._new_line.wait_for(
                lambda: any(text in line for line in self.lines) or self.proc.poll() is not None,
                timeout,
            ) and any(text in line for line in self.lines)

    def wait_for_count(self, text: str, count: int, timeout: float) -> bool:
        """Wait until ``text`` has been logged at least ``count`` times (or serve has exited)."""
        with self._new_line:
            self._new_line.wait_for(
                lambda: self.log_text().count(text) >= count or self.proc.poll() is not None,
                timeout,
            )
            return self.log_text().count(text) >= count

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        with _bases_lock:
            _live_bases.discard(self._base)
        return self.proc.returncode

    def log_text(self) -> str:
        """What serve printed (its console)."""
        return "".join(self.lines)

    def front_log_text(self) -> str:
        """Kamailio's whole log (the console gets its WARNING and up only)."""
        path = Path(self.config["runtime_dir"]) / "kamailio.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def wait_for_front_log(self, text: str, timeout: float) -> bool:
        """Wait until Kamailio has logged a line containing ``text``."""
        return (
            within(lambda: text in self.front_log_text() or self.proc.poll() is not None, timeout)
            and text in self.front_log_text()
        )


@contextmanager
def serving(
    work: Path, overrides: dict[str, Any], webhook_url: str | None, ready_s: float = 600
) -> Iterator[RunningBridge]:
    """``sip-bridge serve`` for a test module: yields it once ready; on exit stops it (SIGTERM)
    and checks that it exited 0 and left no process started with its config behind."""
    bridge = RunningBridge(work, overrides, webhook_url)
    try:
        bridge.wait_ready(timeout=ready_s)
        yield bridge
    finally:
        code = bridge.stop()
        assert code == 0, f"serve exited {code}:\n{bridge.log_text()[-4000:]}"
        left = subprocess.run(
            ["pgrep", "-af", str(bridge.config_path.parent)], capture_output=True, text=True
        ).stdout
        if left:  # reported below, but not left to eat the CPU of the tests that follow
            subprocess.run(["pkill", "-KILL", "-f", str(bridge.config_path.parent)], check=False)
        assert left == "", left

"""docker/systemd/sip-bridge.service: systemd takes it, its stop timeout leaves room for the
drain, and the directories it makes are the ones the bridge uses by default."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from sip_bridge.settings.config import Config

UNIT = Path(__file__).resolve().parent.parent / "docker" / "systemd" / "sip-bridge.service"


def service() -> dict[str, list[str]]:
    """The [Service] section, each key with every value it is given."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_stop_timeout_covers_the_drain_and_the_last_flush() -> None:
    media = Config().media
    (timeout,) = service()["TimeoutStopSec"]
    assert int(timeout) > media.drain_timeout_s + media.call_end_flush_s
    assert service()["KillSignal"] == ["SIGTERM"]  # SIGTERM drains (README, Operating it)
    assert service()["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # a rolling restart


def test_the_directories_systemd_makes_are_the_bridge_s_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = service()
    env = dict(pair.split("=", 1) for value in svc["Environment"] for pair in value.split())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = Config()
    (runtime,) = svc["RuntimeDirectory"]
    (state,) = svc["StateDirectory"]
    (cache,) = svc["CacheDirectory"]
    assert cfg.runtime_path() == Path("/run") / runtime
    assert cfg.state_path() == Path("/var/lib") / state
    assert cfg.model_cache_path() == Path("/var/cache") / cache
    assert svc["ExecStart"][0].split()[1:3] == ["serve", "--config"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """As installed, with ExecStart pointing at an executable that exists here."""
    text = UNIT.read_text()
    (exec_start,) = service()["ExecStart"]
    binary = exec_start.split()[0]
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(binary, shutil.which("true") or "/bin/true"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [ln for ln in done.stderr.splitlines() if UNIT.name in ln or "Unknown" in ln]
    assert done.returncode == 0 and not problems, done.stderr
    configparser.ConfigParser(strict=False, interpolation=None).read_string(unit.read_text())

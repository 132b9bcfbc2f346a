"""The ``sip-bridge`` command as a user runs it: config errors and failed start-ups stop cleanly."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CLI = [sys.executable, "-m", "sip_bridge.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_config_error_names_file_and_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("media:\n  processes: 0\n")
    for command in ("serve", "check-config"):
        proc = run(command, "--config", str(bad))
        assert proc.returncode == 2
        assert f"{bad}: media.processes: must be at least 1" in proc.stderr


def test_check_config_prints_effective_values(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("sip: {port: 5090}\n")
    proc = run("check-config", "--config", str(good))
    assert proc.returncode == 0, proc.stderr
    effective = yaml.safe_load(proc.stdout)
    assert effective["sip"]["port"] == 5090
    assert effective["media"]["calls_per_process"] == 4


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("kamailio") and not Path("/usr/sbin/kamailio").exists(),
                    reason="needs kamailio")  # fmt: skip
def test_a_part_failing_at_start_up_stops_everything(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sip": {"address": "127.0.0.1", "port": port + 1 if port < 65000 else port - 1},
                "inference": {"workers": 1, "port_base": port},  # cannot bind: start-up fails
                "runtime_dir": str(tmp_path / "run"),
            }
        )
    )
    try:
        proc = run("serve", "--config", str(cfg), timeout=120)
    finally:
        taken.close()
    assert proc.returncode == 1
    assert "start-up failed: worker 0 exited" in proc.stderr
    left = subprocess.run(["pgrep", "-f", str(cfg)], capture_output=True, text=True)
    assert left.stdout == "", f"processes left behind: {left.stdout}"
    assert "front started" not in proc.stderr  # the front never took a call


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("kamailio") and not Path("/usr/sbin/kamailio").exists(),
                    reason="needs kamailio")  # fmt: skip
def test_a_sip_port_held_by_another_server_is_named(tmp_path: Path) -> None:
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sip": {"address": "127.0.0.1", "port": port},
                "media": {"processes": 1},
                "runtime_dir": str(tmp_path / "run"),
            }
        )
    )
    try:
        proc = run("serve", "--config", str(cfg), timeout=120)
    finally:
        held.close()
    assert proc.returncode == 1
    assert f"udp:127.0.0.1:{port} is held by another SIP server" in proc.stderr
    left = subprocess.run(["pgrep", "-f", str(cfg)], capture_output=True, text=True)
    assert left.stdout == "", f"processes left behind: {left.stdout}"

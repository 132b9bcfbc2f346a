"""What can be checked here of the shipped integration files: Asterisk and FreeSWITCH are not
packaged for this machine and Docker has no engine, so syntax and consistency only."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from sip_bridge.config import load

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["gateway.xml", "dialplan.xml"])
def test_freeswitch_files_are_well_formed_xml(name: str) -> None:
    ET.parse(ROOT / "dialplans" / "freeswitch" / name)


def test_asterisk_endpoint_offers_only_what_the_bridge_takes() -> None:
    text = (ROOT / "dialplans" / "asterisk" / "pjsip.conf").read_text()
    assert "[transcriber]" in text
    allow = [line for line in text.splitlines() if line.strip().startswith("allow")]
    assert allow and all("ulaw" in a and "alaw" in a and "g722" in a for a in allow)
    assert "Dial(PJSIP/" in (ROOT / "dialplans" / "asterisk" / "extensions.conf").read_text()


def test_docker_config_is_valid_and_compose_parses() -> None:
    cfg = load(ROOT / "docker" / "config.docker.yaml")
    assert cfg.sip.address == "0.0.0.0"
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert "bridge" in compose["services"]


@pytest.mark.skipif(shutil.which("kamailio", path="/usr/sbin:/usr/bin") is None,
                    reason="needs kamailio")  # fmt: skip
def test_multi_host_kamailio_example_passes_kamailio_check(tmp_path: Path) -> None:
    cfg = (ROOT / "dialplans" / "kamailio" / "multi-host.cfg").read_text()
    listing = ROOT / "dialplans" / "kamailio" / "dispatcher.list"
    cfg = cfg.replace('"/etc/kamailio/dispatcher.list"', f'"{listing}"')
    path = tmp_path / "multi-host.cfg"
    path.write_text(cfg)
    kam = shutil.which("kamailio", path="/usr/sbin:/usr/bin")
    assert kam is not None
    proc = subprocess.run([kam, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-2000:]

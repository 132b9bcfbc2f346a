"""docker/monitoring: Prometheus takes the shipped scrape config and alert rules, the rules'
own unit tests pass (promtool, from Debian's prometheus), and every metric they name is one
the bridge exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "docker" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (apt prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )


@needs_promtool
@pytest.mark.parametrize(
    "args",
    [("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml"),
     ("test", "rules", "alerts_test.yml")],
    ids=["config", "rules", "rule-tests"],
)  # fmt: skip
def test_promtool_takes_the_shipped_files(args: tuple[str, ...]) -> None:
    done = promtool(*args)
    assert done.returncode == 0, done.stdout + done.stderr


def exported_families() -> set[str]:
    """Every family name the bridge's code declares (prometheus_client's first argument)."""
    names: set[str] = set()
    for path in [*(ROOT / "sip_bridge").rglob("*.py"), *(ROOT / "inference").rglob("*.py")]:
        names |= set(re.findall(r"\"(sip_bridge_[a-z0-9_]+)\"", path.read_text()))
    return names


def test_every_metric_the_rules_name_is_exported() -> None:
    families = exported_families()
    used = set(re.findall(r"\b(sip_bridge_[a-z0-9_]+)", (MONITORING / "alerts.yml").read_text()))
    assert used, "no sip_bridge_ metric in alerts.yml"
    suffixes = ("_bucket", "_count", "_sum", "_total", "_created")
    unknown = sorted(
        u for u in used
        if u not in families and not any(u.endswith(s) and u[: -len(s)] in families
                                         for s in suffixes)
    )  # fmt: skip
    assert not unknown, unknown

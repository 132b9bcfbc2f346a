"""In CI (``CI`` set in the environment), a missing prerequisite fails the run at once instead
of skipping the suites that need it: a green CI must mean the real-process tests ran."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import browser, speech
from tests.support.sipp import can_play_pcap
from tests.support.webhook_receiver import WebhookReceiver


def _missing() -> list[str]:
    tools = {"kamailio": "kamailio", "sipp": "sip-tester", "baresip": "baresip",
             "linphonec": "linphone-cli", "prometheus": "prometheus",
             "promtool": "prometheus"}  # fmt: skip
    missing = [
        f"{tool} (Debian {package})"
        for tool, package in tools.items()
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/usr/local/bin:/usr/local/sbin") is None
    ]
    if not speech.available():
        missing.append("the prompts and their transcripts (asterisk-core-sounds-en-wav and "
                       "asterisk-core-sounds-en)")  # fmt: skip
    if not browser.available():
        missing.append("chromium, chromium-driver and selenium")
    if shutil.which("sipp") and not can_play_pcap():
        missing.append("CAP_NET_RAW for sipp (run as root)")
    if not list(Path("/usr/lib").glob("*/kamailio/modules/tls.so")):
        missing.append("Kamailio's TLS module (Debian kamailio-tls-modules)")
    if shutil.which("openssl") is None:
        missing.append("openssl (Debian openssl)")
    if not (Path(sys.executable).parent / "sipvicious_svwar").exists():
        missing.append("sipvicious (pip install -e '.[test]')")
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CI", "").lower() in ("", "0", "false", "no"):
        return
    missing = _missing()
    if missing:
        pytest.exit("CI is set and the tests would skip for lack of: " + "; ".join(missing), 3)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP webhook receiver for a test module's bridge (a module may define its own)."""
    rx = WebhookReceiver()
    yield rx
    rx.close()

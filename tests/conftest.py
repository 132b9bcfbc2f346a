"""In CI (``CI`` set in the environment), a missing prerequisite fails the run at once instead
of skipping the suites that need it: a green CI must mean the real-process tests ran."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support import browser, speech
from tests.support.sipp import can_play_pcap


def _missing() -> list[str]:
    tools = {"kamailio": "kamailio", "sipp": "sip-tester", "baresip": "baresip",
             "linphonec": "linphone-cli"}  # fmt: skip
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
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CI", "").lower() in ("", "0", "false", "no"):
        return
    missing = _missing()
    if missing:
        pytest.exit("CI is set and the tests would skip for lack of: " + "; ".join(missing), 3)

"""Workers on another host (issue 6, point 4: ZeroMQ CURVE between hosts), on loopback: host B
runs only inference workers (``media.processes: 0``) listening on 127.0.0.2; host A runs the
front and a media process with no worker of its own and B's in ``inference.remote``. Both use
the same CURVE keys. A call to A is transcribed by B's worker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import speech
from tests.support.bridge import serving
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.sipp import run_calls
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_e2e import check_call, make_call

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
]


def test_a_call_on_one_host_is_transcribed_by_a_worker_on_another(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "sip_bridge.cli", "keys", str(keys)], check=True,
                   capture_output=True)  # fmt: skip
    curve = {"enabled": True, "keys_dir": str(keys)}
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    workers_only = {
        "media": {"processes": 0}, "inference": {"workers": 1, "address": "127.0.0.2"},
        "curve": curve,
    }  # fmt: skip
    receiver = WebhookReceiver()
    try:
        with serving(tmp_path / "b", workers_only, None) as b:
            i = b.config["inference"]
            assert "1 worker(s) for other hosts on 127.0.0.2" in b.log_text()
            assert "kamailio" not in b.log_text().lower()  # no front on a workers' host
            remote = [{"address": "127.0.0.2", "port": i["port_base"],
                       "heartbeat_port": i["heartbeat_port_base"]}]  # fmt: skip
            calls = {
                "media": {"processes": 1}, "inference": {"workers": 0, "remote": remote},
                "curve": curve,
            }  # fmt: skip
            with serving(tmp_path / "a", calls, receiver.url) as a:
                assert a.wait_for_log("worker 0 is up", timeout=30), a.log_text()[-2000:]
                prompts = speech.select(2, min_s=2.0, max_s=5.0, stride=61)
                (result,) = run_calls([make_call(tmp_path, a, prompts, "remote")])
                ended = check_call(result, receiver)
                refs = " ".join(p.text for p in prompts)
                assert speech.wer([refs], [str(ended["text"])]) <= 0.3, ended["text"]
            call_id = str(ended["call_id"])
            assert re.search(rf"worker\[0\] inference\.transcriber: call {call_id}: started",
                             b.log_text()), b.log_text()[-2000:]  # fmt: skip
    finally:
        receiver.close()


def test_workers_beyond_loopback_without_curve_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("inference:\n  address: 0.0.0.0\n")
    done = subprocess.run([sys.executable, "-m", "sip_bridge.cli", "check-config", "--config",
                           str(cfg)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "inference.address" in done.stderr, done.stderr
    assert "curve.enabled" in done.stderr

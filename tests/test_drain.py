"""Graceful drain (issue 6, point 6) on a real ``sip-bridge serve``: a rolling restart of a
two-process pool under a steady load of sipp calls drops none of them; SIGTERM makes the front
refuse new calls and OPTIONS (503, so a PBX moves to another host) while the call in progress
finishes by itself, its webhooks are delivered, and serve exits 0."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.raw_uac import invite_status
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.sipp import SippCall
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_e2e import check_call, events_of, make_call

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
]

LOAD_CALLS = 8
LOAD_EVERY_S = 3.0  # each call lasts ~9 s: at most 3 at once, within one process (4)


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    overrides = {"media": {"processes": 2, "drain_timeout_s": 60}, "inference": {"workers": 1}}
    with serving(tmp_path_factory.mktemp("drain"), overrides, receiver.url) as b:
        yield b


def options_status(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)
        me = sock.getsockname()[1]
        sock.sendto(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-drain-{time.monotonic_ns()}\r\n"
                f"From: <sip:probe@127.0.0.1:{me}>;tag=d\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                f"Call-ID: drain-{time.monotonic_ns()}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        reply = sock.recv(65535).decode(errors="replace")
        return int(reply.split(" ", 2)[1])


def media_pids(bridge: RunningBridge, index: int) -> list[str]:
    return re.findall(rf"media {index} started \(pid (\d+)\)", bridge.log_text())


def test_a_rolling_restart_under_load_drops_no_call(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    before = [media_pids(bridge, i) for i in range(2)]
    prompts = speech.select(LOAD_CALLS, min_s=2.5, max_s=4.5, stride=7)
    calls: list[SippCall] = []
    try:
        for n, prompt in enumerate(prompts):
            calls.append(make_call(tmp_path, bridge, [prompt], f"load{n}").start())
            if n == 1:
                cli = [sys.executable, "-m", "sip_bridge.cli", "rolling-restart", "--config",
                       str(bridge.config_path)]  # fmt: skip
                subprocess.run(cli, check=True, capture_output=True, timeout=30)
            time.sleep(LOAD_EVERY_S)  # the load's pace, not a wait for a condition
        results = [c.wait() for c in calls]
    finally:
        for c in calls:
            c.kill()
    assert bridge.wait_for_log("rolling restart done", timeout=120), bridge.log_text()[-4000:]
    for prompt, result in zip(prompts, results, strict=True):
        ended = check_call(result, receiver)  # answered 200, INFO = finals, BYE 200, seq order
        assert "shutdown" not in str(ended["reason"]) and "lost" not in str(ended["reason"])
        assert speech.wer([prompt.text], [str(ended["text"])]) <= 0.34, (prompt.text, ended)
    after = [media_pids(bridge, i) for i in range(2)]
    assert [len(a) for a in after] == [len(b) + 1 for b in before], (before, after)
    log = bridge.log_text()
    assert "takes no new calls" in log
    # No call was refused on the way (the answer's status line, not a digit run in a Call-ID).
    refused = [
        m.first_line for r in results for m in r.messages if m.first_line.startswith("SIP/2.0 5")
    ]
    assert not refused, refused


def test_sigterm_refuses_new_calls_lets_the_call_end_and_exits_0(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Last in the module: it stops the bridge."""
    prompts = speech.select(2, min_s=3.0, max_s=5.0, stride=11)
    call = make_call(tmp_path, bridge, prompts, "draining").start()
    try:
        deadline = time.monotonic() + 30
        while not events_of(receiver, call.call_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events_of(receiver, call.call_id), "call never started"
        bridge.proc.send_signal(signal.SIGTERM)
        assert bridge.wait_for_log("draining: 1 call(s) in progress", timeout=10)
        assert invite_status("127.0.0.1", bridge.port) == 503
        assert options_status(bridge.port) == 503
        ready = f"http://127.0.0.1:{bridge.config['metrics']['port']}/readyz"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(ready, timeout=5)
        assert refused.value.code == 503
        assert json.loads(refused.value.read())["parts"]["serve"] == "draining"
        result = call.wait()
    finally:
        call.kill()
    ended = check_call(result, receiver)
    assert "shutdown" not in str(ended["reason"]), ended
    assert bridge.proc.wait(60) == 0
    assert "drained: every call ended by itself" in bridge.log_text()

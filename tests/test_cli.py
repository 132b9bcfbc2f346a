"""The ``sip-bridge`` command as a user runs it: config errors and failed start-ups stop cleanly."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr
import yaml

from tests.support import speech
from tests.support.rtp_pcap import join_with_silence

CLI = [sys.executable, "-m", "sip_bridge.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_config_error_names_file_and_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("media:\n  processes: -1\n")
    for command in ("serve", "check-config"):
        proc = run(command, "--config", str(bad))
        assert proc.returncode == 2
        assert f"{bad}: media.processes: must be 0 or more" in proc.stderr


def test_check_config_prints_effective_values(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("sip: {port: 5090}\n")
    proc = run("check-config", "--config", str(good))
    assert proc.returncode == 0, proc.stderr
    effective = yaml.safe_load(proc.stdout)
    assert effective["sip"]["port"] == 5090
    assert effective["media"]["calls_per_process"] == 4
    # what the config admits, as comments: the workers' capacity, the pool sized from it
    # (twice over) and one stranger's share of the capacity
    assert "# capacity: 16 calls (2 worker(s) x 8, inference.calls_per_worker)" in proc.stdout
    assert "# call slots: 32 (8 media processes x 4; media.processes: auto" in proc.stdout
    assert effective["media"]["processes"] == 8
    assert "# one source: at most 8 call(s) (half the capacity" in proc.stdout
    # the pool follows the workers, --workers included
    proc = run("check-config", "--config", str(good), "--workers", "3")
    assert "# capacity: 24 calls (3 worker(s) x 8" in proc.stdout
    assert yaml.safe_load(proc.stdout)["media"]["processes"] == 12
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("media: {processes: 3}\ninference: {calls_per_worker: 0}\n")
    proc = run("check-config", "--config", str(fixed))
    assert "# capacity: 12 calls (the call slots; no per-worker limit" in proc.stdout
    assert "# call slots: 12 (3 media processes x 4)" in proc.stdout


def test_check_config_never_prints_secrets_or_tokens(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "webhooks: [{url: 'http://a/h', secret: hook-secret-1}]\n"
        "captions: {tokens: [operator-token-0123456789]}\n"
        "tenants: [{name: t, captions_tokens: [tenant-token-0123456789],"
        " webhooks: [{url: 'http://b/h', secret: hook-secret-2}]}]\n"
        "sip: {auth: {users: [{user: pbx1, password: trunk-password-3},"
        " {user: pbx2, ha1: 0123456789abcdef0123456789abcdef}]}}\n"
    )
    proc = run("check-config", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    for secret in ("hook-secret-1", "hook-secret-2", "operator-token", "tenant-token",
                   "trunk-password", "0123456789abcdef"):  # fmt: skip
        assert secret not in proc.stdout
    effective = yaml.safe_load(proc.stdout)
    assert effective["webhooks"][0] == {"url": "http://a/h", "secret": "<hidden>"}
    assert effective["tenants"][0]["captions_tokens"] == ["<hidden>"]
    assert effective["sip"]["auth"]["users"][0] == {"user": "pbx1", "password": "<hidden>",
                                                    "ha1": ""}  # fmt: skip


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


@pytest.mark.integration
@pytest.mark.skipif(not speech.available(), reason="needs asterisk-core-sounds-en-wav")
def test_transcribe_runs_a_file_through_the_call_pipeline(tmp_path: Path) -> None:
    prompts = speech.select(3, min_s=2.0, max_s=6.0, stride=11)
    pcm = join_with_silence([p.pcm() for p in prompts], gap_s=1.5)
    wav = tmp_path / "call.wav"
    speech.write_wav(wav, pcm, 8000)
    # The same call as 44.1 kHz stereo: mixed down and resampled to 16 kHz on the way in.
    hifi = soxr.resample(pcm.astype(np.float32), 8000, 44100)
    stereo = np.repeat(np.clip(hifi, -32768, 32767).astype(np.int16)[:, None], 2, axis=1)
    wav44 = tmp_path / "call44.wav"
    with wave.open(str(wav44), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(stereo.tobytes())
    refs = " ".join(p.text for p in prompts)
    for path in (wav, wav44):
        proc = run("transcribe", "--json", str(path), timeout=120)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [x["utterance"] for x in lines] == list(range(len(prompts)))  # one per prompt
        assert all(a["end"] <= b["start"] for a, b in zip(lines, lines[1:], strict=False))
        text = " ".join(x["text"] for x in lines)
        assert speech.wer([refs], [text]) <= 0.2, (refs, text)


def test_transcribe_refuses_what_is_not_a_wav_file(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not audio")
    proc = run("transcribe", str(bogus))
    assert proc.returncode == 2
    assert "not a readable wav file" in proc.stderr and "Traceback" not in proc.stderr


def test_dead_letters_are_listed_and_replayed(tmp_path: Path) -> None:
    from sip_bridge.delivery.events import CallEvents, CallInfo
    from sip_bridge.delivery.spool import RetryPolicy, Spool

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"delivery:\n  spool_dir: {tmp_path / 'spool'}\n")
    events = CallEvents(CallInfo("a" * 32, "x@pbx", "<sip:a@pbx>", "<sip:b@us>", "PCMU/8000",
                                 8000, "host/media1"))  # fmt: skip
    spool = Spool(tmp_path / "spool" / "spool-media1.sqlite", RetryPolicy(horizon_s=10))
    spool.add(events.started(), ["http://127.0.0.1:9/hook"], now=1000.0)
    (due,) = spool.due("http://127.0.0.1:9/hook", now=1000.0)
    assert spool.failed(due, now=1011.0, error="connection refused") == 1  # past the horizon
    spool.close()

    listed = json.loads(run("dead-letters", "--json", "--config", str(cfg)).stdout)
    assert [(r["id"], r["event_id"], r["type"]) for r in listed] == [
        ("media1:1", f"{'a' * 32}-1", "call.started")
    ]
    assert listed[0]["last_error"] == "connection refused"
    assert run("replay", "--config", str(cfg)).returncode == 2  # nothing named
    assert run("replay", "bogus", "--config", str(cfg)).returncode == 2
    proc = run("replay", "media1:1", "--config", str(cfg))
    assert proc.returncode == 0 and proc.stdout.startswith("1 dead letters back"), proc.stderr
    assert json.loads(run("dead-letters", "--json", "--config", str(cfg)).stdout) == []
    spool = Spool(tmp_path / "spool" / "spool-media1.sqlite")
    assert spool.pending_count() == 1
    spool.close()


def test_demo_says_when_no_server_answers(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"sip:\n  address: 127.0.0.1\n  port: {port}\n")
    proc = run("demo", "--config", str(cfg), timeout=20)
    assert proc.returncode == 1
    assert f"nothing answers SIP on 127.0.0.1:{port}" in proc.stderr


def test_calls_lists_siprec_sessions_and_tagged_legs_with_who_speaks(tmp_path: Path) -> None:
    from sip_bridge.calls import active_calls

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"runtime_dir: {run_dir}\n")
    row = {"sip_call_id": "x@pbx", "from": "<sip:src@pbx>", "to": "<sip:srs@us>",
           "codec": "PCMU/8000", "on_hold": False, "node": "host/media0", "tenant": ""}  # fmt: skip
    alice = {"participant_id": "p1", "name": "Alice", "aor": "sip:alice@atlanta.example"}
    bob = {"participant_id": "p2", "name": None, "aor": "sip:bob@biloxi.example"}
    session = {**row, "call_id": "a" * 32, "started": 10.0, "conversation": {
        "id": "rs-1@src", "kind": "siprec", "participants": [alice, bob],
        "streams": [{"stream": "96", "name": "Alice", "on_hold": False},
                    {"stream": "97", "name": "sip:bob@biloxi.example", "on_hold": True},
                    {"stream": "98", "name": None, "on_hold": False}]}}  # fmt: skip
    leg = {**row, "call_id": "b" * 32, "started": 20.0, "conversation": {
        "id": "conv-42\x1b[2J", "kind": "legs", "streams": [],
        "participants": [{"participant_id": None, "name": "callee", "aor": None}]}}  # fmt: skip
    plain = {**row, "call_id": "c" * 32, "started": 30.0, "conversation": None}
    # Published as by a live media process (this one: its pid is alive).
    active_calls.publish(active_calls.path_for(run_dir, 0), [session, leg, plain])
    proc = run("calls", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("call id")
    assert lines[1].startswith("a" * 32) and "<sip:src@pbx> -> <sip:srs@us>" in lines[1]
    assert lines[2:6] == [
        "  SIPREC session rs-1@src: 2 participant(s)",
        "  stream 96: Alice <sip:alice@atlanta.example>",
        "  stream 97: sip:bob@biloxi.example  (on hold)",
        "  stream 98: (nobody named)",
    ]
    assert lines[6].startswith("b" * 32)
    assert lines[7] == "  leg of conversation conv-42?[2J: callee"  # no escape reaches the terminal
    assert lines[8].startswith("c" * 32) and len(lines) == 9
    listed = json.loads(run("calls", "--json", "--config", str(cfg)).stdout)
    assert [c["conversation"] and c["conversation"]["kind"] for c in listed] == [
        "siprec", "legs", None]  # fmt: skip

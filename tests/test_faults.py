"""Faults on real processes (issue 6, point 1): ``sip-bridge serve`` with two media processes,
sipp calls playing recorded prompts, a real webhook receiver. A media process killed mid-call
ends only its own call, properly (``call.ended`` with a reason, a BYE to the caller, its slot
at the front released) and is out of the front's rotation within a second; Kamailio killed
mid-call leaves the call's media and captions alone; ZeroMQ peers killed together converge."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sip_bridge.front import kamailio
from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall, run_calls
from tests.support.sipp_steps import Scenario
from tests.support.waiting import within
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_e2e import check_call, events_of, make_call

pytestmark = [
    pytest.mark.integration,
    NEEDS_KAMAILIO_SIPP_AND_PROMPTS,
    NEEDS_PCAP_PLAYBACK,
]


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    overrides = {"media": {"processes": 2}, "inference": {"workers": 1}}
    with serving(tmp_path_factory.mktemp("faults"), overrides, receiver.url) as b:
        yield b


def front_files(bridge: RunningBridge) -> kamailio.KamailioFiles:
    rundir = Path(bridge.config["runtime_dir"])
    return kamailio.files_in(rundir)


def delivered_once(receiver: WebhookReceiver, sip_call_id: str) -> list[dict[str, object]]:
    """A call's events, each once: delivery is at-least-once, so an event POSTed just before
    its process was killed, and not yet marked delivered in the spool, comes again from the
    successor, with the same X-Event-Id and the same body."""
    first: dict[str, bytes] = {}
    for post in receiver.posts:
        if post.json()["sip_call_id"] == sip_call_id:
            seen = first.setdefault(post.headers["X-Event-Id"], post.body)
            assert seen == post.body, (seen, post.body)  # a redelivery, never another event
    return [json.loads(body) for body in first.values()]


def first_of(receiver: WebhookReceiver, sip_call_id: str, type_: str) -> dict[str, Any] | None:
    return next((e for e in events_of(receiver, sip_call_id) if e["type"] == type_), None)


def test_a_media_process_killed_mid_call_ends_only_its_call_and_leaves_the_rotation(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Two calls, one per media process (the front spreads by load). kill -9 the process of the
    first once its first final is out: the front marks it inactive within 1 s; its successor
    gives the call its call.ended ("media process lost", the final it had, the next seq) and
    BYEs the caller, which frees the call's slot at the front. The other call goes on untouched."""
    files = front_files(bridge)
    (victim_prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=5)
    pcm = join_with_silence([victim_prompt.pcm()], gap_s=0, lead_s=0.5, tail_s=0.3)
    seconds = write_rtp_pcap(tmp_path / "victim.pcap", pcm)
    scenario = Scenario().play(tmp_path / "victim.pcap", seconds).await_bye(60).render()
    victim = SippCall(
        "127.0.0.1", bridge.port, tmp_path / "victim.pcap", audio_s=seconds, guard_s=90,
        scenario=scenario, work_dir=tmp_path / "victim",
    ).start()  # fmt: skip
    survivor = None
    try:
        assert within(lambda: first_of(receiver, victim.call_id, "call.started"), 30)
        started = first_of(receiver, victim.call_id, "call.started")
        assert started is not None
        index = int(str(started["node"]).rsplit("media", 1)[1])
        survivor = make_call(tmp_path, bridge, speech.select(3, 2.0, 5.0, stride=13), "survivor")
        survivor.start()
        final = None
        assert within(
            lambda: first_of(receiver, victim.call_id, "transcript.final"), 60, every_s=0.1
        ), "no final for the victim call"
        final = first_of(receiver, victim.call_id, "transcript.final")
        assert final is not None
        uri = f"sip:127.0.0.1:{bridge.config['media']['sip_port_base'] + index}"
        pid = int(re.findall(rf"media {index} started \(pid (\d+)\)", bridge.log_text())[-1])
        ready = f'"role": "media", "index": {index}, "state": "ready"'
        readies = bridge.log_text().count(ready)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()

        def inactive() -> bool:
            return any(d.uri == uri and not d.active for d in kamailio.destinations(files))

        assert within(inactive, 5, every_s=0.02)
        out_after = time.monotonic() - killed_at
        print(f"media {index} out of the front's rotation {out_after * 1000:.0f} ms after kill -9")
        assert out_after < 1.0, out_after
        assert bridge.wait_for_count(ready, readies + 1, timeout=60), bridge.log_text()[-3000:]
        result = victim.wait(60)
        survived = survivor.wait()
    finally:
        victim.kill()
        if survivor is not None:
            survivor.kill()
    # The victim's caller got a BYE saying why, and answered it: the scenario completed.
    assert result.ok, (result.errors, result.stderr)
    byes = [m for m in result.messages if m.direction == "received" and m.method == "BYE"]
    assert byes and "media process lost" in (byes[0].header("Reason") or ""), byes
    assert receiver.wait_for(
        lambda posts: first_of(receiver, victim.call_id, "call.ended") is not None, timeout=30
    )
    events = delivered_once(receiver, victim.call_id)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # the successor went on numbering
    ended = events[-1]
    assert ended["type"] == "call.ended" and ended["reason"] == "media process lost", ended
    finals = [e for e in events if e["type"] == "transcript.final"]
    assert ended["text"] == " ".join(str(e["text"]) for e in finals if e["text"]), ended
    assert final["text"] and final["text"] in ended["text"]
    # The other call never noticed.
    survived_ended = check_call(survived, receiver)
    assert "lost" not in str(survived_ended["reason"])
    # Both calls are gone from the front's books: the successor's BYE passed it.
    assert within(lambda: all(d.load == 0 for d in kamailio.destinations(files)), 10), (
        kamailio.destinations(files)
    )
    assert within(lambda: all(d.active for d in kamailio.destinations(files)), 10)


def test_kamailio_killed_mid_call_leaves_media_and_captions_alone(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """kill -9 the front mid-call: RTP and the worker path never touch it, so the call's
    captions go on (webhooks at once; INFO retransmitted by PJSIP until the restarted front
    relays it); the caller's BYE goes through the new front."""
    prompts = speech.select(3, 2.0, 5.0, stride=31)
    refs = " ".join(p.text for p in prompts)
    call = make_call(tmp_path, bridge, prompts, "front-killed").start()
    try:
        assert within(lambda: first_of(receiver, call.call_id, "transcript.final"), 60, 0.1)
        pid = int(re.findall(r"front started \(pid (\d+)\)", bridge.log_text())[-1])
        starts = bridge.log_text().count("front started")
        os.kill(pid, signal.SIGKILL)
        assert bridge.wait_for_count("front started", starts + 1, timeout=30)
        result = call.wait()
    finally:
        call.kill()
    ended = check_call(result, receiver)  # every final also came as INFO; BYE answered 200
    assert result.bye_status == 200
    assert speech.wer([refs], [str(ended["text"])]) <= 0.3, ended["text"]


def test_zeromq_peers_killed_together_converge(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """kill -9 every media process and the worker at once, then again in the other order:
    each comes back and finds the others (ZeroMQ reconnects; heartbeats say who is up) with no
    manual action, and the next call is transcribed."""
    for order in (("worker", "media"), ("media", "worker")):
        log = bridge.log_text()
        pids: list[tuple[str, int]] = []
        for role in order:
            names = sorted(set(re.findall(rf"({role} \d) started \(pid \d+\)", log)))
            for name in names:
                pid = int(re.findall(rf"{name} started \(pid (\d+)\)", log)[-1])
                pids.append((name, pid))
        readies = {n: log.count(_ready(n)) for n, _ in pids}
        for _, pid in pids:
            os.kill(pid, signal.SIGKILL)
        for name, _ in pids:
            assert bridge.wait_for_count(_ready(name), readies[name] + 1, timeout=120), (
                name, bridge.log_text()[-3000:],
            )  # fmt: skip
        prompts = speech.select(1, 2.0, 5.0, stride=41 if order[0] == "worker" else 43)
        (result,) = run_calls([make_call(tmp_path, bridge, prompts, f"after-{order[0]}")])
        ended = check_call(result, receiver)
        assert speech.wer([prompts[0].text], [str(ended["text"])]) <= 0.3, (order, ended)


def _ready(name: str) -> str:
    role, index = name.split()
    return f'"role": "{role}", "index": {index}, "state": "ready"'


@pytest.mark.slow  # about a minute: run by .ci/run after the default run
def test_a_webhook_target_down_through_a_whole_call_gets_everything_after(
    tmp_path: Path,
) -> None:
    """Nothing listens on the webhook's port during a call and for 20 s after it; then the
    receiver comes up: every event of the call arrives, once each, in order (the spool's
    back-off capped at 3 s here; the ten-minute case runs on a simulated clock in test_spool)."""
    from tests.support.ports import free_tcp_port

    port = free_tcp_port()
    url = f"http://127.0.0.1:{port}/hook"
    overrides = {
        "media": {"processes": 1}, "inference": {"workers": 1},
        "delivery": {"webhook_max_backoff_s": 3.0, "webhook_timeout_s": 1.0},
    }  # fmt: skip
    (tmp_path / "bridge").mkdir()
    with serving(tmp_path / "bridge", overrides, url) as bridge:
        prompts = speech.select(2, 2.0, 5.0, stride=59)
        (result,) = run_calls([make_call(tmp_path, bridge, prompts, "unheard")])
        assert result.ok and result.info_bodies, result.errors
        down_until = time.monotonic() + 20.0
        while time.monotonic() < down_until:  # the outage itself: nothing to wait for
            time.sleep(0.5)
        receiver = WebhookReceiver(port=port)
        try:
            assert receiver.wait_for(
                lambda posts: any(p.json()["type"] == "call.ended" for p in posts), timeout=30
            ), bridge.log_text()[-3000:]
            ended = check_call(result, receiver)  # seq 1.. gap-free, signed, INFO = finals
            assert speech.wer([" ".join(p.text for p in prompts)], [str(ended["text"])]) <= 0.3
            assert len({p.headers["X-Event-Id"] for p in receiver.posts}) == len(receiver.posts)
        finally:
            receiver.close()


def test_serve_killed_minus_9_leaves_no_process_behind(tmp_path: Path) -> None:
    """Its children die with it (the death signal each asks for, setpriv for Kamailio), so a
    restarted serve finds its ports free."""
    import subprocess

    from tests.support.bridge import RunningBridge

    (tmp_path / "b").mkdir()
    b = RunningBridge(tmp_path / "b", {"media": {"processes": 1}, "inference": {"workers": 1}},
                      None)  # fmt: skip
    try:
        b.wait_ready(300)
        os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait(10)

        def left() -> str:
            return subprocess.run(["pgrep", "-af", str(b.config_path.parent)],
                                  capture_output=True, text=True).stdout  # fmt: skip

        assert within(lambda: left() == "", 20, every_s=0.2), left()
    finally:
        subprocess.run(["pkill", "-9", "-f", str(b.config_path.parent)], check=False)
        b.stop()

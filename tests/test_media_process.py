"""One PJSUA2 media process on its own, called directly by sipp; the test plays the inference
worker on a real ZeroMQ socket, so it sees exactly what a worker would receive and can answer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zmq

from media import wire
from sip_bridge.webhooks import verify
from tests.support import speech
from tests.support.ports import free_udp_port
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall, can_play_pcap
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (speech.available() and shutil.which("sipp") and can_play_pcap()),
        reason="needs sipp (with CAP_NET_RAW) and asterisk-core-sounds-en-wav",
    ),
]


class FakeWorkerSide:
    """The worker's end of the wire: a real PULL socket; records every message per call. It
    heartbeats like a worker (from a thread, every 100 ms), or the media process would hold the
    calls back for want of a live worker."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, heartbeat_endpoint: str) -> None:
        self.pull = ctx.socket(zmq.PULL)
        self.pull.bind(endpoint)
        self.messages: dict[str, list[wire.Message]] = {}
        self._stop = threading.Event()
        pub = ctx.socket(zmq.PUB)
        pub.bind(heartbeat_endpoint)
        self._beats = threading.Thread(target=self._beat, args=(pub,), daemon=True)
        self._beats.start()

    def _beat(self, pub: zmq.Socket[Any]) -> None:
        beat = wire.encode(wire.Heartbeat(wire.new_call_id(), 0, 0, 0.0, 0.0, 0.0))
        while not self._stop.wait(0.1):
            pub.send_multipart(beat)
        pub.close(0)

    def close(self) -> None:
        self._stop.set()
        self._beats.join(5)
        self.pull.close(0)

    log_path: Path | None = None  # the media process's log, quoted when a wait times out

    def wait_for(self, predicate: Any, timeout_s: float) -> None:
        deadline = timeout_s * 1000
        while not predicate(self.messages):
            if not self.pull.poll(int(deadline)):
                log = self.log_path.read_text()[-3000:] if self.log_path else ""
                counts = {k: len(v) for k, v in self.messages.items()}
                raise AssertionError(f"timeout; messages per call {counts}; media log:\n{log}")
            msg = wire.decode(self.pull.recv_multipart())
            self.messages.setdefault(getattr(msg, "call_id", ""), []).append(msg)


@pytest.fixture()
def media(
    tmp_path: Path,
) -> Iterator[tuple[int, FakeWorkerSide, zmq.Context[Any], WebhookReceiver]]:
    ctx: zmq.Context[Any] = zmq.Context()
    sip_port, result_port, worker_port = free_udp_port(), free_udp_port(), free_udp_port()
    beat_port = free_udp_port()
    # RTP below the ephemeral port range (32768+), where bound-to-0 sockets of other tests land.
    cfg = {
        "sip": {"address": "127.0.0.1", "port": free_udp_port()},
        "media": {
            "processes": 1, "sip_port_base": sip_port, "result_port_base": result_port,
            "rtp_port_base": 31200, "rtp_ports_per_process": 100, "call_end_flush_s": 3.0,
        },
        "inference": {"workers": 1, "port_base": worker_port, "heartbeat_port_base": beat_port},
        "runtime_dir": str(tmp_path / "run"),
    }  # fmt: skip
    rx = WebhookReceiver()
    cfg["webhooks"] = [{"url": rx.url, "secret": "k"}]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    worker = FakeWorkerSide(ctx, f"tcp://127.0.0.1:{worker_port}", f"tcp://127.0.0.1:{beat_port}")
    worker.log_path = tmp_path / "media.log"
    log = open(tmp_path / "media.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "sip_bridge.cli", "media", "--index", "0", "--config", str(path)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield sip_port, worker, ctx, rx
    finally:
        proc.terminate()
        code = proc.wait(30)
        worker.close()
        ctx.term()
        rx.close()
        log.close()
        assert code == 0, (tmp_path / "media.log").read_text()[-3000:]


def sipp_call(tmp: Path, port: int, pcm: np.ndarray, name: str, linger: float) -> SippCall:
    pcap = tmp / f"{name}.pcap"
    seconds = write_rtp_pcap(pcap, pcm)
    return SippCall("127.0.0.1", port, pcap, audio_s=seconds, linger_s=linger, work_dir=tmp / name)


def rebuild(msgs: list[wire.Message], length: int) -> tuple[np.ndarray, np.ndarray]:
    """The call's audio from its Audio messages, and a mask of the samples that were sent."""
    out = np.zeros(length, np.int16)
    sent = np.zeros(length, bool)
    for m in msgs:
        if isinstance(m, wire.Audio) and m.samples:
            end = min(m.offset + m.samples, length)
            out[m.offset : end] = np.frombuffer(bytes(m.pcm), "<i2")[: end - m.offset]
            sent[m.offset : end] = True
    return out, sent


def best_correlation(ref: np.ndarray, got: np.ndarray, max_lag: int = 8000) -> float:
    """Normalised correlation at the best lag (the jitter buffer delays by 100-200 ms)."""
    a = ref.astype(np.float64)
    b = got.astype(np.float64)[: len(a) + max_lag]
    b = np.pad(b, (0, max(0, len(a) + max_lag - len(b))))
    lag = int(np.argmax(np.correlate(b, a, "valid")))
    y = b[lag : lag + len(a)]
    return float((a * y).sum() / np.sqrt((a * a).sum() * (y * y).sum()))


def test_audio_reaches_the_worker_gated_and_results_come_back_as_info(
    media: tuple[int, FakeWorkerSide, zmq.Context[Any], WebhookReceiver], tmp_path: Path
) -> None:
    port, worker, ctx, rx = media
    (prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=2)
    pcm = join_with_silence([prompt.pcm()], lead_s=1.0, tail_s=3.0)
    call = sipp_call(tmp_path, port, pcm, "one", linger=3.0).start()
    try:
        worker.wait_for(
            lambda m: any(isinstance(x, wire.CallStart) for v in m.values() for x in v), 10
        )
        (call_id,) = worker.messages
        start = worker.messages[call_id][0]
        assert isinstance(start, wire.CallStart) and start.sample_rate == 8000
        # Answer like a worker once the speech has gone by: one final, then the INFO must come.
        worker.wait_for(lambda m: sum(isinstance(x, wire.Audio) for x in m[call_id]) > 150, 15)
        reply = ctx.socket(zmq.PUSH)
        reply.connect(start.reply_to)
        text = "the transcript of the prompt"
        reply.send_multipart(wire.encode(wire.Transcript(call_id, 0, True, text, 1.0, 3.0, 0.9)))
        result = call.wait()
        worker.wait_for(lambda m: isinstance(m[call_id][-1], wire.CallEnd), 10)
        reply.send_multipart(wire.encode(wire.CallDone(call_id)))
        assert rx.wait_for(lambda posts: any(p.json()["type"] == "call.ended" for p in posts), 10)
        reply.close(0)
    finally:
        call.kill()
    assert result.ok, result.errors
    (body,) = result.info_bodies
    info = json.loads(body)
    assert (info["type"], info["text"], info["seq"]) == ("transcript.final", text, 2)
    msgs = worker.messages[call_id]
    end = msgs[-1]
    assert isinstance(end, wire.CallEnd)
    audio, sent = rebuild(msgs, end.offset)
    # Speech arrives intact (through PCMU and the jitter buffer) ...
    assert best_correlation(pcm, audio) >= 0.98
    # ... while most of the silence never leaves the media process, marked by empty time marks.
    assert sent.mean() < 0.6, sent.mean()
    marks = [m for m in msgs if isinstance(m, wire.Audio) and m.samples == 0]
    assert len(marks) >= 10
    offsets = [m.offset for m in msgs if isinstance(m, wire.Audio)]
    assert offsets == sorted(offsets)
    events = [p.json() for p in rx.posts]
    assert [e["type"] for e in events] == ["call.started", "transcript.final", "call.ended"]
    assert events[-1]["text"] == text
    assert all(verify("k", p.body, p.headers["X-Signature"]) for p in rx.posts)


def test_a_fifth_call_is_refused_with_486_and_a_silent_worker_cannot_hold_a_call(
    media: tuple[int, FakeWorkerSide, zmq.Context[Any], WebhookReceiver], tmp_path: Path
) -> None:
    port, worker, _, rx = media
    (prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=4)
    pcm = join_with_silence([prompt.pcm()], lead_s=0.5, tail_s=4.0)
    calls = [sipp_call(tmp_path, port, pcm, f"c{i}", linger=1.0) for i in range(4)]
    for c in calls:
        c.start()
    worker.wait_for(lambda m: len(m) == 4, 15)
    fifth = sipp_call(tmp_path, port, pcm, "fifth", linger=1.0).start()
    results = [c.wait() for c in calls]
    refused = fifth.wait()
    assert all(r.ok for r in results)
    assert refused.final_status == 486
    # Nobody answers for the worker: each call still ends once, after call_end_flush_s.
    done = threading.Event()
    ok = rx.wait_for(
        lambda posts: sum(p.json()["type"] == "call.ended" for p in posts) == 4, timeout=20
    )
    done.set()
    assert ok
    reasons = [p.json()["reason"] for p in rx.posts if p.json()["type"] == "call.ended"]
    assert all("worker did not answer" in r for r in reasons), reasons

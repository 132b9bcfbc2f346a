"""One PJSUA2 media process on its own, called directly by sipp; the test plays the inference
worker on a real ZeroMQ socket, so it sees exactly what a worker would receive and can answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from media import wire
from sip_bridge.delivery.webhooks import verify
from tests.support import speech
from tests.support.lone_media import FakeWorkerSide, lone_media
from tests.support.requirements import NEEDS_SIPP_PCAP_AND_PROMPTS
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall, SippResult
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    NEEDS_SIPP_PCAP_AND_PROMPTS,
]


@pytest.fixture()
def media(
    tmp_path: Path,
) -> Iterator[tuple[int, FakeWorkerSide, zmq.Context[Any], WebhookReceiver]]:
    with lone_media(tmp_path) as m:
        yield m.port, m.worker, m.ctx, m.rx


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


def test_heartbeats_of_a_full_or_behind_worker_make_new_calls_get_503_then_calls_come_back(
    tmp_path: Path,
) -> None:
    """The media process's own admission, from what the worker's heartbeats report (its calls
    from every media process, and its backlog): the front's count cannot see a worker shared
    with another host, or one that falls behind."""
    limits = {"inference": {"calls_per_worker": 2, "max_backlog_s": 5.0}}
    with lone_media(tmp_path, limits) as m:
        (prompt,) = speech.select(1, min_s=2.0, max_s=4.0, stride=6)
        pcm = join_with_silence([prompt.pcm()], lead_s=0.5, tail_s=0.5)

        def admitting(value: float) -> None:
            deadline = time.monotonic() + 10
            while m.metric("sip_bridge_admitting") != value:
                assert time.monotonic() < deadline, m.metric("sip_bridge_admitting")
                time.sleep(0.1)  # the process copies it into its metrics once a second

        def call(name: str) -> SippResult:
            return sipp_call(tmp_path, m.port, pcm, name, linger=0.5).start().wait(30)

        admitting(1)
        m.worker.report(calls=2)  # full with other processes' calls
        admitting(0)
        full = call("full")
        assert full.final_status == 503
        answer = next(x for x in full.messages if x.direction == "received" and x.status == 503)
        assert answer.first_line.endswith("503 Transcription Capacity Reached"), answer.first_line
        m.worker.report(calls=1)  # a call ended
        admitting(1)
        taken = call("taken")
        assert taken.ok and taken.final_status == 200, taken.errors
        m.worker.wait_for(
            lambda ms: any(isinstance(x, wire.CallStart) for x in sum(ms.values(), [])), 10
        )
        m.worker.report(calls=1, backlog_s=9.0)  # room for a call, but behind
        admitting(0)
        assert call("behind").final_status == 503
        assert m.metric("sip_bridge_calls_total", {"outcome": "over_capacity"}) == 2
        started = [p for p in m.rx.posts if p.json()["type"] == "call.started"]
        assert len(started) == 1  # only the call that was taken began
        assert m.log_text().count("every worker is at capacity") == 1  # once a minute

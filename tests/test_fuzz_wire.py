"""Corrupt ZeroMQ messages into the two sockets that take them from peers: an inference worker's
PULL socket (a real worker with the real model, on a thread) and a media process's result socket
(a real media process on its own). Each is refused with a typed error, counted and logged, and
the part goes on serving real calls. A raw TCP peer speaking ZMTP that declares a frame far over
the size limit is cut off by ZeroMQ before anything is allocated."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from inference.batching import BatchPolicy
from inference.model_files import ensure_converted
from inference.moonshine import MoonshineModel
from inference.providers import choose_providers
from inference.silero import SileroVad
from inference.worker import Worker, WorkerSettings
from media import wire
from tests.support import speech
from tests.support.lone_media import lone_media
from tests.support.requirements import NEEDS_PROMPTS
from tests.support.rtp_fuzz import Caller
from tests.support.rtp_pcap import join_with_silence

pytestmark = [
    pytest.mark.integration,
    NEEDS_PROMPTS,
]

CALL = "00112233445566778899aabbccddeeff"


def header(kind: int, version: int = wire.VERSION, rate: int = 8000, magic: bytes = b"SB") -> bytes:
    return struct.pack("!2sBB16sQII", magic, version, kind, bytes.fromhex(CALL), 0, rate, 0)


def start_body(reply_to: str) -> bytes:
    return json.dumps({"reply_to": reply_to, "sip_call_id": "x", "first_utterance": 0}).encode()


# Each is refused (counted as a bad message) by whoever receives it.
CORRUPT: list[tuple[str, list[bytes]]] = [
    ("wrong-version", [header(wire.T_AUDIO, version=wire.VERSION + 1), b"\x00\x00"]),
    ("version-0", [header(wire.T_CALL_START, version=0), start_body("tcp://127.0.0.1:1")]),
    ("bad-magic", [header(wire.T_AUDIO, magic=b"ZZ"), b"\x00\x00"]),
    ("short-header", [header(wire.T_AUDIO)[:20], b"\x00\x00"]),
    ("empty-header", [b"", b""]),
    ("long-header", [header(wire.T_AUDIO) + b"\x00", b"\x00\x00"]),
    ("one-frame", [header(wire.T_AUDIO)]),
    ("three-frames", [header(wire.T_AUDIO), b"\x00\x00", b"\x00\x00"]),
    ("five-empty-frames", [b""] * 5),
    ("random-1", [bytes(range(36)), bytes(range(200))]),
    ("random-2", [b"\xff" * 36, b"\xfe" * 7]),
    ("unknown-type", [header(99), b""]),
    ("odd-audio", [header(wire.T_AUDIO), b"\x00"]),
    ("audio-rate-0", [header(wire.T_AUDIO, rate=0), b"\x00\x00"]),
    ("start-not-json", [header(wire.T_CALL_START), b"{not json"]),
    ("start-nested-json", [header(wire.T_CALL_START), b"[" * 20000 + b"]" * 20000]),
    ("start-huge-int", [header(wire.T_CALL_START), b'{"first_utterance": 1' + b"0" * 500 + b"}"]),
    ("start-64k-json", [header(wire.T_CALL_START), b" " * (wire.MAX_JSON_BYTES + 1)]),
    (
        "transcript-nan",
        [
            header(wire.T_TRANSCRIPT),
            b'{"utterance":0,"final":true,"text":"x",'
            b'"start":NaN,"end":1,"confidence":1,"end_offset":0}',
        ],
    ),  # fmt: skip
]
# Valid wire format, but not what this socket takes, or not usable: refused all the same.
TO_WORKER_ONLY: list[tuple[str, list[bytes]]] = [
    ("start-bad-reply-to", [header(wire.T_CALL_START), start_body("garbage")]),
    ("start-reply-to-no-port", [header(wire.T_CALL_START), start_body("tcp://127.0.0.1")]),
    ("start-rate-12345", [header(wire.T_CALL_START, rate=12345), start_body("tcp://x:1")]),
    ("heartbeat-to-worker", [bytes(b) for b in wire.encode(wire.Heartbeat(CALL, 0, 0, 0, 0, 0))]),
]
TO_MEDIA_ONLY: list[tuple[str, list[bytes]]] = [
    ("audio-to-media", [bytes(b) for b in wire.encode(wire.Audio(CALL, 0, 8000, b"\x00\x00"))]),
    ("heartbeat-to-media", [bytes(b) for b in wire.encode(wire.Heartbeat(CALL, 0, 0, 0, 0, 0))]),
]


def zmtp_huge_frame(host: str, port: int, size: int) -> bool:
    """Speak ZMTP 3.0 as a PUSH peer and announce one frame of ``size`` bytes; True if the
    receiver then closes the connection (ZMQ_MAXMSGSIZE) within 5 s."""
    greeting = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + bytes(32)
    ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack("!I", 4) + b"PUSH"
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(greeting + b"\x04" + bytes([len(ready)]) + ready)
        sock.sendall(b"\x02" + struct.pack("!Q", size) + b"x" * 1000)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if sock.recv(4096) == b"":
                    return True
            except ConnectionResetError:
                return True
            except TimeoutError:
                break
    return False


@pytest.fixture(scope="module")
def model() -> MoonshineModel:
    files = ensure_converted(Path.home() / ".cache" / "sip-bridge")
    return MoonshineModel(files, choose_providers("cpu"), threads=1)


class WorkerUnderTest:
    def __init__(self, model: MoonshineModel) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.results = self.ctx.socket(zmq.PULL)
        self.reply_to = f"tcp://127.0.0.1:{self.results.bind_to_random_port('tcp://127.0.0.1')}"
        probe = self.ctx.socket(zmq.PULL)
        self.port = probe.bind_to_random_port("tcp://127.0.0.1")
        probe.close(0)
        settings = WorkerSettings(
            f"tcp://127.0.0.1:{self.port}", BatchPolicy(max_batch=4, max_wait_ms=20),
            partial_interval_s=0.0,
        )  # fmt: skip
        self.worker = Worker(settings, model, SileroVad(), self.ctx)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.connect(settings.endpoint)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.worker.request_stop()
        self.thread.join(10)
        self.push.close(0)
        self.results.close(0)
        self.ctx.term()


@pytest.fixture()
def under_test(model: MoonshineModel) -> Iterator[WorkerUnderTest]:
    w = WorkerUnderTest(model)
    yield w
    w.close()


def wait_for(what: str, ok: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        time.sleep(0.02)


def test_a_worker_refuses_corrupt_messages_and_goes_on_transcribing(
    under_test: WorkerUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    w = under_test
    bad = CORRUPT + TO_WORKER_ONLY
    for _, frames in bad:
        w.push.send_multipart(frames)
    # A call that starts with an unusable reply_to and ends at once: its CallDone used to raise
    # zmq.ZMQError out of the worker's loop (fuzz finding); now the CallStart is refused.
    w.push.send_multipart(wire.encode(wire.CallEnd(CALL, 0, 8000)))
    # The CallEnd comes after them: wait for it too (the stats are read from this thread while
    # the worker's loop may still be between the last bad message and it).
    wait_for(
        "every corrupt message and the CallEnd counted",
        lambda: w.worker.stats.bad_messages >= len(bad) and w.worker.stats.unknown_call >= 1,
        10,
    )
    assert w.worker.stats.bad_messages == len(bad), w.worker.stats
    assert w.worker.stats.bad_reply_to == 2
    assert w.worker.stats.unknown_call == 1  # the CallEnd of the refused call
    assert w.thread.is_alive()
    assert "bad message dropped (1 so far)" in caplog.text
    # A peer that announces a 1 TB frame is cut off by ZeroMQ (MAXMSGSIZE), nothing allocated.
    assert zmtp_huge_frame("127.0.0.1", w.port, 1 << 40)
    assert w.thread.is_alive()
    # The worker still transcribes a real call.
    (prompt,) = speech.select(1, min_s=2.0, max_s=5.0, stride=3)
    pcm = join_with_silence([prompt.pcm()], lead_s=0.5, tail_s=1.0)
    call = wire.new_call_id()
    w.push.send_multipart(wire.encode(wire.CallStart(call, 8000, w.reply_to, "real")))
    for off in range(0, len(pcm) - 159, 160):
        w.push.send_multipart(
            wire.encode(wire.Audio(call, off, 8000, pcm[off : off + 160].tobytes()))
        )
    w.push.send_multipart(wire.encode(wire.CallEnd(call, len(pcm) // 160 * 160, 8000)))
    texts = []
    while True:
        assert w.results.poll(60_000), "no result from the worker"
        msg = wire.decode(w.results.recv_multipart())
        if isinstance(msg, wire.Transcript) and msg.final:
            texts.append(msg.text)
        if isinstance(msg, wire.CallDone):
            break
    assert speech.wer([prompt.text], [" ".join(texts)]) <= 0.3, (prompt.text, texts)


def test_a_media_process_refuses_corrupt_results_and_goes_on_taking_calls(
    tmp_path: Path,
) -> None:
    bad = CORRUPT + TO_MEDIA_ONLY
    with lone_media(tmp_path) as m:
        push = m.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(m.result_endpoint)
        try:
            for _, frames in bad:
                push.send_multipart(frames)
            line = f"bad message on the result socket dropped ({len(bad)} so far)"
            # The first ten are logged, each with its count; the rest counted (every 1000th
            # logged): the tenth line proves ten were counted in order.
            wait_for("the refusals logged", lambda: "(10 so far)" in m.log_text(), 20)
            counts = [
                int(n) for n in re.findall(r"result socket dropped \((\d+) so far", m.log_text())
            ]
            assert counts == list(range(1, 11)), counts
            assert len(bad) > 10 and line not in m.log_text()  # rate-limited, not silent
            assert zmtp_huge_frame("127.0.0.1", int(m.result_endpoint.rsplit(":", 1)[1]), 1 << 40)
            # Still taking calls, and its audio reaches the worker.
            caller = Caller(m.port)
            try:
                caller.invite()
                packets = [b"\x80\x00" + struct.pack("!HII", i, i * 160, 7) + bytes(160)
                           for i in range(20)]  # fmt: skip
                caller.play(packets, time.monotonic())
                assert caller.bye() == 200
            finally:
                caller.close()
            m.worker.wait_for(
                lambda msgs: any(isinstance(x, wire.CallEnd) for v in msgs.values() for x in v), 15
            )
            assert m.rx.wait_for(
                lambda posts: any(p.json()["type"] == "call.ended" for p in posts), 15
            ), m.log_text()[-3000:]
        finally:
            push.close(0)

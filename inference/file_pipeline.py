"""A recording through the same pipeline as a live call, without SIP (``sip-bridge transcribe``).

The recording is cut into 20 ms frames that go, as a media process sends a call's audio, through
the silence gate (:class:`~media.silence_gate.SuppressedStream`) and the wire format into a real
:class:`~inference.worker.Worker` (Silero VAD, the endpointer, the speech model) over inproc
ZeroMQ. The worker's clock is the recording's own timeline, so a file gets the utterance cuts a
live call would get, as fast as the model allows. Finals only: partials and early finals exist to
be quick on a live call, and a file has no listener waiting.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from inference.speech_model import SpeechModel
from inference.worker import Worker, WorkerSettings
from media import wire
from media.silence_gate import SilenceGate, SuppressedStream
from media.silero import SileroVad

RATES = (8000, 16000)  # what a worker takes, as from a call: narrowband or wideband
FRAME_S = 0.02
FLUSH_TICKS = 3000  # after the end: a minute of the recording's time, far more than a flush needs
_runs = itertools.count()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def transcribe(
    pcm: np.ndarray,
    rate: int,
    settings: WorkerSettings,
    model: SpeechModel,
    gate: SilenceGate,
    on_final: Callable[[wire.Transcript], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> list[wire.Transcript]:
    """The finals of ``pcm`` (int16 mono at ``rate``, 8000 or 16000 Hz), in order.

    ``settings`` are a worker's (its endpoints are replaced); ``gate`` is the media side's silence
    gate for this rate. ``on_final`` sees each final as it is made, ``on_progress`` the share of
    the recording done (0-1) every second of audio.
    """
    if rate not in RATES:
        raise ValueError(f"{rate} Hz: the pipeline takes {RATES}")
    if gate.sample_rate != rate:
        raise ValueError(f"the silence gate is for {gate.sample_rate} Hz, the audio {rate} Hz")
    run = next(_runs)
    ctx: zmq.Context[Any] = zmq.Context()
    results: zmq.Socket[Any] = ctx.socket(zmq.PULL)
    reply_to = f"inproc://file-results-{run}"
    results.bind(reply_to)
    clock = _Clock()
    settings = dataclasses.replace(
        settings, endpoint=f"inproc://file-worker-{run}", partial_interval_s=0.0,
        early_finals=False, partial_nice=None, heartbeat_endpoint=None,
    )  # fmt: skip
    worker = Worker(settings, model, SileroVad(), ctx, clock)
    finals: list[wire.Transcript] = []
    done = False

    def drain() -> None:
        nonlocal done
        while True:
            try:
                msg = wire.decode(results.recv_multipart(flags=zmq.NOBLOCK))
            except zmq.Again:
                return
            if isinstance(msg, wire.Transcript) and msg.final:
                finals.append(msg)
                if on_final is not None:
                    on_final(msg)
            elif isinstance(msg, wire.CallDone):
                done = True

    try:
        call_id = wire.new_call_id()
        worker.handle(wire.encode(wire.CallStart(call_id, rate, reply_to, "file")))
        stream = SuppressedStream(gate)
        frame = int(rate * FRAME_S)
        samples = np.asarray(pcm, dtype="<i2")
        for k, i in enumerate(range(0, len(samples), frame)):
            chunk = samples[i : i + frame]
            if len(chunk) < frame:
                chunk = np.pad(chunk, (0, frame - len(chunk)))
            clock.now += FRAME_S
            for offset, audio in stream.push(chunk.tobytes()):
                worker.handle(wire.encode(wire.Audio(call_id, offset, rate, audio)))
            worker.step(0.0)
            drain()
            if on_progress is not None and k % 50 == 0:
                on_progress(i / len(samples))
        worker.handle(wire.encode(wire.CallEnd(call_id, stream.offset, rate)))
        for _ in range(FLUSH_TICKS):
            if done:
                break
            clock.now += FRAME_S
            worker.step(0.0)
            drain()
        if not done:
            raise RuntimeError("the worker did not finish the recording")
        if on_progress is not None:
            on_progress(1.0)
        return sorted(finals, key=lambda t: t.utterance)
    finally:
        worker.close()
        results.close(0)
        ctx.term()

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
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import zmq

from inference.silero import SileroVad
from inference.speech_model import SpeechModel
from inference.worker import Worker, WorkerSettings
from media import wire
from media.silence_gate import SilenceGate, SuppressedStream

RATES = (8000, 16000)  # what a worker takes, as from a call: narrowband or wideband
FRAME_S = 0.02
FLUSH_TICKS = 3000  # after the end: a minute of the call's time, far more than a flush needs
_runs = itertools.count()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class OfflineCall:
    """One call fed to a real :class:`Worker` on the call's own clock, over inproc ZeroMQ: the
    driver behind :func:`transcribe` (and the benches). Give it each 20 ms tick's wire messages
    with :meth:`tick`, then :meth:`finish`."""

    def __init__(
        self,
        settings: WorkerSettings,
        model: SpeechModel,
        vad: SileroVad,
        rate: int,
        call_id: str,
        on_final: Callable[[wire.Transcript], None] | None = None,
    ) -> None:
        run = next(_runs)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.results: zmq.Socket[Any] = self.ctx.socket(zmq.PULL)
        reply_to = f"inproc://offline-results-{run}"
        self.results.bind(reply_to)
        self.clock = _Clock()
        settings = dataclasses.replace(
            settings, endpoint=f"inproc://offline-worker-{run}", heartbeat_endpoint=None
        )
        self.worker = Worker(settings, model, vad, self.ctx, self.clock)
        self.call_id, self.rate, self.on_final = call_id, rate, on_final
        self.finals: list[wire.Transcript] = []
        self.done = False
        self.worker.handle(wire.encode(wire.CallStart(call_id, rate, reply_to, "offline")))

    def _drain(self) -> None:
        while True:
            try:
                msg = wire.decode(self.results.recv_multipart(flags=zmq.NOBLOCK))
            except zmq.Again:
                return
            if isinstance(msg, wire.Transcript) and msg.final:
                self.finals.append(msg)
                if self.on_final is not None:
                    self.on_final(msg)
            elif isinstance(msg, wire.CallDone):
                self.done = True

    def tick(self, messages: Iterable[list[Any]]) -> None:
        """20 ms of the call: its wire messages (encoded), then one turn of the worker."""
        self.clock.now += FRAME_S
        for frames in messages:
            self.worker.handle(frames)
        self.worker.step(0.0)
        self._drain()

    def finish(self, end_offset: int) -> list[wire.Transcript]:
        """The call ends at ``end_offset`` samples: flush, close; the finals in order."""
        self.worker.handle(wire.encode(wire.CallEnd(self.call_id, end_offset, self.rate)))
        for _ in range(FLUSH_TICKS):
            if self.done:
                break
            self.tick(())
        self.close()
        if not self.done:
            raise RuntimeError("the worker did not finish the call")
        return sorted(self.finals, key=lambda t: t.utterance)

    def close(self) -> None:
        self.worker.close()
        self.results.close(0)
        self.ctx.term()


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

    ``settings`` are a worker's (its endpoints are replaced, partials and early finals turned
    off); ``gate`` is the media side's silence gate for this rate. ``on_final`` sees each final
    as it is made, ``on_progress`` the share of the recording done (0-1) every second of audio.
    """
    if rate not in RATES:
        raise ValueError(f"{rate} Hz: the pipeline takes {RATES}")
    if gate.sample_rate != rate:
        raise ValueError(f"the silence gate is for {gate.sample_rate} Hz, the audio {rate} Hz")
    settings = dataclasses.replace(
        settings, partial_interval_s=0.0, early_finals=False, partial_nice=None
    )
    call_id = wire.new_call_id()
    call = OfflineCall(settings, model, SileroVad(), rate, call_id, on_final)
    try:
        stream = SuppressedStream(gate)
        frame = int(rate * FRAME_S)
        samples = np.asarray(pcm, dtype="<i2")
        for k, i in enumerate(range(0, len(samples), frame)):
            chunk = samples[i : i + frame]
            if len(chunk) < frame:
                chunk = np.pad(chunk, (0, frame - len(chunk)))
            runs = stream.push(chunk.tobytes())
            call.tick(
                wire.encode(wire.Audio(call_id, offset, rate, audio)) for offset, audio in runs
            )
            if on_progress is not None and k % 50 == 0:
                on_progress(i / len(samples))
    except BaseException:
        call.close()
        raise
    finals = call.finish(stream.offset)
    if on_progress is not None:
        on_progress(1.0)
    return finals

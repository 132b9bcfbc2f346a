"""One call of recorded prompts as the media side sends it to a worker (the configured energy
gate, time marks through silence, ``wire.encode``), and a worker's settings as ``sip-bridge
worker`` builds them: what the benches that drive a real ``Worker`` in-process share."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.harness.frames import FRAME, RATE
from inference.worker import WorkerSettings
from media import wire
from media.silence_gate import SilenceGate, SuppressedStream
from sip_bridge import cli
from sip_bridge.settings.config import Config
from tests.support import speech
from tests.support.rtp_pcap import join_with_silence

FULL_SCALE = 32768.0


def dbfs(rms: float) -> float:
    return 20.0 * math.log10(rms / FULL_SCALE) if rms > 0 else -math.inf


def tcp_bytes(frames: Sequence[wire.Buffer]) -> int:
    """A multipart message's bytes in the ZMTP 3 stream: flags and size before every frame."""
    return sum(len(f) + (2 if len(f) <= 255 else 9) for f in frames)


@dataclass(frozen=True, slots=True)
class CallAudio:
    """One direction of a call's audio, and where its prompts lie in it (none for audio made
    without a talker: noise, tones)."""

    label: str
    pcm: np.ndarray  # int16, 8 kHz
    spans: list[tuple[int, int]]  # each prompt's [start, end) in the call, samples

    @property
    def speech_s(self) -> float:
        """The prompts' total length."""
        return sum(b - a for a, b in self.spans) / RATE


def build_call(prompts: list[speech.Prompt], noise_rms: float) -> CallAudio:
    """The prompts with silences between them as long as the mean prompt (half before the first,
    half after the last): speech fills half of the call."""
    pcms = [p.pcm() for p in prompts]
    gap = sum(len(x) for x in pcms) / RATE / len(pcms)
    pcm = join_with_silence(pcms, gap, gap / 2, gap / 2, noise_rms=noise_rms, seed=1)
    spans, at = [], round(gap / 2 * RATE)  # as join_with_silence lays them out
    for x in pcms:
        spans.append((at, at + len(x)))
        at += len(x) + round(gap * RATE)
    label = "digital silence" if noise_rms <= 0 else f"noise {dbfs(noise_rms):.0f} dBFS"
    return CallAudio(label, pcm, spans)


@dataclass(slots=True)
class MediaSide:
    """What the media process sends for one call: the messages of each 20 ms tick, and counts."""

    ticks: list[list[list[wire.Buffer]]] = field(default_factory=list)
    frames: int = 0
    frames_sent: int = 0
    pcm_bytes: int = 0
    pcm_sent: int = 0
    wire_all: int = 0
    wire_sent: int = 0
    tcp_all: int = 0
    tcp_sent: int = 0
    messages: int = 0
    time_marks: int = 0
    gate_cpu_s: float = 0.0


def media_side(call: CallAudio, cfg: Config, call_id: str) -> MediaSide:
    """Play the call frame by frame through the configured gate, as ``AudioSender`` does."""
    g = cfg.media.silence_gate
    stream = SuppressedStream(SilenceGate(RATE, g.threshold_dbfs, g.hangover_ms, g.preroll_ms))
    out = MediaSide()
    data = call.pcm.astype("<i2").tobytes()
    ungated_header = wire.encode(wire.Audio(call_id, 0, RATE, b""))[0]
    for start in range(0, len(data) - 2 * FRAME + 1, 2 * FRAME):
        frame = data[start : start + 2 * FRAME]
        started = time.process_time()
        runs = stream.push(frame)
        out.gate_cpu_s += time.process_time() - started
        out.frames += 1
        out.pcm_bytes += len(frame)
        out.wire_all += len(ungated_header) + len(frame)
        out.tcp_all += tcp_bytes((ungated_header, frame))
        tick: list[list[wire.Buffer]] = []
        for offset, pcm in runs:
            frames = wire.encode(wire.Audio(call_id, offset, RATE, pcm))
            tick.append(frames)
            out.messages += 1
            out.time_marks += not pcm
            out.pcm_sent += len(pcm)
            out.wire_sent += sum(len(f) for f in frames)
            out.tcp_sent += tcp_bytes(frames)
        out.ticks.append(tick)
    out.frames_sent = stream.gate.frames_sent
    return out


def worker_settings(cfg: Config, partials: bool) -> WorkerSettings:
    """As ``sip-bridge worker`` builds them from the config (OfflineCall sets the endpoints);
    partials (when on) run in the loop so that all model time is this thread's."""
    return dataclasses.replace(
        cli.worker_settings(cfg, 0),
        partial_interval_s=cfg.inference.partial_interval_ms / 1000.0 if partials else 0.0,
        early_finals=cfg.inference.early_finals if partials else False,
        partial_nice=None,
    )

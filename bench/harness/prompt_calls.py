"""Calls made of recorded prompts, as the live benches play them to a worker.

The speech corpus (the Asterisk prompts, 8 kHz, from ``tests.support.speech``) is cut to a pool
of prompts between two lengths; each call is its own random sequence of them, 1-2 s apart with a
low noise floor between (the silence gate closes on it), with its own
``media.silence_gate.SuppressedStream`` (the gate plus time marks through silence, the same
object the media process's ``AudioSender`` uses). Each prompt's true speech span (its first and
last 20 ms frame above ``SPEECH_DBFS``) is what latencies are measured from.

Pure data: nothing here sends, sleeps or reads a clock.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from bench.harness.frames import FRAME, RATE, TICK_S
from media import wire
from media.silence_gate import SilenceGate, SuppressedStream
from sip_bridge.settings.config import SilenceGateConfig
from tests.support import speech

SPEECH_DBFS = -40.0  # a frame louder than this is speech, for the "true" speech end
NOISE_RMS = 20.0  # noise floor between prompts, int16 units (about -64 dBFS: the gate closes)
_LOUD_MS = (32768.0 * 10.0 ** (SPEECH_DBFS / 20.0)) ** 2


@dataclass(frozen=True, slots=True)
class Spoken:
    """One prompt inside a call, in 20 ms frames of the call's timeline."""

    text: str
    first_frame: int  # first frame above SPEECH_DBFS
    last_frame: int  # last frame above SPEECH_DBFS: its send time is the speech end
    clip_samples: int  # the whole recorded prompt, its own leading and trailing silence included

    @property
    def span_s(self) -> tuple[float, float]:
        return self.first_frame * TICK_S, (self.last_frame + 1) * TICK_S


@dataclass(slots=True)
class Call:
    call_id: str
    start_tick: int
    pcm: np.ndarray  # int16, a whole number of frames
    spoken: list[Spoken]
    stream: SuppressedStream
    speech_end_sent: dict[int, float] = field(default_factory=dict)  # spoken index -> monotonic
    done: bool = False

    @property
    def frames(self) -> int:
        return len(self.pcm) // FRAME


def loud_frames(pcm: np.ndarray) -> np.ndarray:
    """Indices of the 20 ms frames of ``pcm`` above ``SPEECH_DBFS``."""
    frames = pcm[: len(pcm) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    return np.flatnonzero((frames * frames).mean(axis=1) > _LOUD_MS)


def build_call(
    pool: list[tuple[str, np.ndarray]], rng: np.random.Generator, duration_s: float
) -> tuple[np.ndarray, list[Spoken]]:
    """A call's audio: prompts in a random order, 1-2 s apart, the last ending >= 1.5 s early."""
    total = int(duration_s * 50) * FRAME
    limit = total - int(1.5 * RATE)
    pcm = np.zeros(total, dtype=np.int16)
    placed: list[tuple[str, int, int]] = []
    pos = int(rng.uniform(0.2, 1.0) * 50) * FRAME
    for i in rng.permutation(len(pool)):  # bounded: each prompt tried once at most
        text, clip = pool[i]
        if pos + len(clip) > limit:
            if limit - pos < RATE:
                break
            continue
        pcm[pos : pos + len(clip)] = clip
        placed.append((text, pos, pos + len(clip)))
        pos += len(clip) + int(rng.uniform(1.0, 2.0) * 50) * FRAME
    noise = rng.normal(0.0, NOISE_RMS, total)
    pcm = np.clip(pcm.astype(np.float64) + noise, -32768, 32767).astype(np.int16)
    spoken = []
    for text, a, b in placed:
        loud = loud_frames(pcm[a:b])
        if len(loud):
            first, last = a // FRAME + int(loud[0]), a // FRAME + int(loud[-1])
            spoken.append(Spoken(text, first, last, b - a))
    return pcm, spoken


def prompt_pool(min_s: float, max_s: float) -> list[tuple[str, np.ndarray]]:
    """(transcript, 8 kHz int16 PCM) of every prompt of ``min_s``..``max_s`` seconds with two
    words or more."""
    prompts = [
        p
        for p in speech.load_prompts()
        if min_s <= p.seconds <= max_s and len(speech.normalize(p.text)) >= 2
    ]
    return [(p.text, p.pcm()) for p in prompts]


def make_calls(
    n: int,
    pool: list[tuple[str, np.ndarray]],
    rng: np.random.Generator,
    duration_s: float,
    stagger_s: float,
) -> list[Call]:
    """N calls, each with its own prompts and its own silence gate, starting within stagger_s."""
    gate = SilenceGateConfig()
    calls = []
    for _ in range(n):
        pcm, spoken = build_call(pool, rng, duration_s)
        calls.append(
            Call(
                wire.new_call_id(),
                int(rng.uniform(0.0, stagger_s) * 50),
                pcm,
                spoken,
                SuppressedStream(
                    SilenceGate(RATE, gate.threshold_dbfs, gate.hangover_ms, gate.preroll_ms)
                ),
            )
        )
    return calls


def covered_prompt(call: Call, msg: wire.Transcript) -> tuple[str, int] | None:
    """(call id, spoken index) of the prompt a transcript overlaps most, or None."""
    overlaps = [min(msg.end, b) - max(msg.start, a) for a, b in (s.span_s for s in call.spoken)]
    if not overlaps or max(overlaps) <= 0:
        return None
    return call.call_id, int(np.argmax(overlaps))


def require_prompts() -> None:
    """Exit with the package to install when the Asterisk prompts are missing."""
    if not speech.available():
        sys.exit("Asterisk prompts missing: apt-get install asterisk-core-sounds-en-wav")

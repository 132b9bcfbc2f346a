"""One load level of a live bench: play the calls, then read every figure off what came back.

:func:`measure` plays a level's calls through a :class:`Generator` into the workers and takes the
CPU of the workers (/proc), of this process (the generator) and of the rest of the machine over
it, and the workers' model batches from their logs; :func:`analyse` matches each final to the
prompt it overlaps most and turns the arrivals into latencies, lost finals, partial cadence and
WER. Latency is end of speech -> final: the receive time of the last final covering a prompt
minus the send time of the prompt's last 20 ms frame above -40 dBFS.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.harness.cpu_time import machine_busy_s, own_cpu_s
from bench.harness.figures import nearest_rank
from bench.harness.frames import FRAME, RATE, TICK_S
from bench.harness.media_generator import Generator
from bench.harness.prompt_calls import Call, covered_prompt
from bench.harness.workers import WorkerProcess
from media import wire
from tests.support import speech


@dataclass(slots=True)
class Level:
    calls: int
    prompts: int = 0
    finals: int = 0
    lost: int = 0
    stray: int = 0  # finals overlapping no prompt
    latencies_ms: list[float] = field(default_factory=list)
    # (speech seconds, latency ms) of every prompt; a lost final is infinitely late
    by_length: list[tuple[float, float]] = field(default_factory=list)
    vad_late_ms: float = math.nan
    partials: int = 0
    partial_gaps_ms: list[float] = field(default_factory=list)
    partial_gap_ms: float = math.nan  # median of partial_gaps_ms
    audio_s: float = 0.0  # call audio sent: calls x call length
    cpu_s: float = 0.0  # every worker's utime+stime over the level
    cpu_per_audio: float = math.nan
    batches: int = 0
    batch_log: list[tuple[int, int, int]] = field(default_factory=list)  # (clips, finals, ms)
    avg_batch: float = math.nan
    busy: float = math.nan  # share of wall time inside the model, averaged over the workers
    wer: float = math.nan
    lag_ms: float = 0.0  # worst tick lateness
    lag_p99_ms: float = 0.0
    gen_cpu_s: float = 0.0  # this process (the generator), utime+stime over the level
    other_cpu_s: float = 0.0  # the rest of the machine (/proc/stat busy - workers - generator)
    wall_s: float = 0.0
    send_dropped: int = 0
    undone: int = 0  # calls without CallDone when the drain ran out

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile in ms; a lost final counts as infinitely late."""
        return nearest_rank(self.latencies_ms + [math.inf] * self.lost, q)

    def sustains(self, bar_ms: float, minus_ms: float = 0.0) -> bool:
        """p95 (less ``minus_ms``) within the bar, and every call finished."""
        return self.percentile(0.95) - minus_ms <= bar_ms and self.undone == 0


def measure(
    calls: list[Call],
    workers: Sequence[WorkerProcess],
    gen: Generator,
    duration_s: float,
    drain_s: float,
) -> Level:
    """Play the calls through the generator into the workers and analyse what came back.

    ``gen.received`` keeps this level's results until the next call.
    """
    level = Level(len(calls))
    gen.received.clear()
    dropped = gen.dropped
    log_starts = [w.log_size() for w in workers]
    cpu_start, gen_cpu_start = sum(w.cpu_s() for w in workers), own_cpu_s()
    busy_start, wall_start = machine_busy_s(), time.monotonic()
    level.lag_ms = gen.play(calls, drain_s) * 1000
    level.wall_s = time.monotonic() - wall_start
    busy = machine_busy_s() - busy_start
    level.cpu_s = sum(w.cpu_s() for w in workers) - cpu_start
    level.gen_cpu_s = own_cpu_s() - gen_cpu_start
    level.other_cpu_s = max(0.0, busy - level.cpu_s - level.gen_cpu_s)
    if gen.tick_lags:
        level.lag_p99_ms = float(np.percentile(gen.tick_lags, 99)) * 1000
    # A worker logs a batch before it sends the batch's results, so every batch whose results
    # arrived is in the log by now (only a stale partial run after the last CallDone is missed).
    batches = [
        b for w, s in zip(workers, log_starts, strict=True) for b in w.batches(s, w.log_size())
    ]
    level.send_dropped = gen.dropped - dropped
    level.audio_s = len(calls) * duration_s
    level.cpu_per_audio = level.cpu_s / level.audio_s
    level.batches = len(batches)
    level.batch_log = batches
    if batches:
        level.avg_batch = sum(b[0] for b in batches) / len(batches)
        level.busy = sum(b[2] for b in batches) / 1000 / level.wall_s / len(workers)
    analyse(level, calls, gen.received)
    return level


def analyse(level: Level, calls: list[Call], received: list[tuple[float, wire.Message]]) -> None:
    by_id = {c.call_id: c for c in calls}
    # (call id, spoken index) -> the last final covering it: (end s, receive time, speech end)
    last_final: dict[tuple[str, int], tuple[float, float, int]] = {}
    texts: dict[tuple[str, int], list[tuple[float, str]]] = {}
    partial_times: dict[tuple[str, int], list[float]] = {}
    for t, msg in received:
        if not isinstance(msg, wire.Transcript) or msg.call_id not in by_id:
            continue
        if not msg.final:
            level.partials += 1
            partial_times.setdefault((msg.call_id, msg.utterance), []).append(t)
            continue
        level.finals += 1
        key = covered_prompt(by_id[msg.call_id], msg)
        if key is None:
            level.stray += 1
            continue
        texts.setdefault(key, []).append((msg.start, msg.text))
        if key not in last_final or msg.end >= last_final[key][0]:
            last_final[key] = (msg.end, t, msg.speech_end_offset)
    refs, hyps = [], []
    vad_late = []
    for call in calls:
        for i, spoken in enumerate(call.spoken):
            level.prompts += 1
            refs.append(spoken.text)
            hyps.append(" ".join(text for _, text in sorted(texts.get((call.call_id, i), []))))
            got = last_final.get((call.call_id, i))
            speech_s = (spoken.last_frame + 1 - spoken.first_frame) * TICK_S
            if got is None:
                level.lost += 1
                level.by_length.append((speech_s, math.inf))
            else:
                level.latencies_ms.append((got[1] - call.speech_end_sent[i]) * 1000)
                level.by_length.append((speech_s, level.latencies_ms[-1]))
                vad_late.append((got[2] - (spoken.last_frame + 1) * FRAME) / RATE * 1000)
    if vad_late:
        level.vad_late_ms = float(np.median(vad_late))
    level.wer = speech.wer(refs, hyps) if refs else math.nan
    level.partial_gaps_ms = [
        (b - a) * 1000
        for times in partial_times.values()
        for a, b in zip(times, times[1:], strict=False)
    ]
    if level.partial_gaps_ms:
        level.partial_gap_ms = float(np.median(level.partial_gaps_ms))
    level.undone = sum(not c.done for c in calls)


def cadence(calls: list[Call], received: list[tuple[float, wire.Message]]) -> tuple[float, int]:
    """Share of prompts whose speech lasts over 1 s that got a partial per whole second of it."""
    by_id = {c.call_id: c for c in calls}
    counts: dict[tuple[str, int], int] = {}
    for _, msg in received:
        if isinstance(msg, wire.Transcript) and not msg.final and msg.call_id in by_id:
            key = covered_prompt(by_id[msg.call_id], msg)
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
    eligible = kept_up = 0
    for call in calls:
        for i, spoken in enumerate(call.spoken):
            speech_s = (spoken.last_frame + 1 - spoken.first_frame) * TICK_S
            if speech_s > 1.0:
                eligible += 1
                kept_up += counts.get((call.call_id, i), 0) >= math.floor(speech_s)
    return (kept_up / eligible if eligible else math.nan), eligible

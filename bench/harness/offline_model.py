"""The speech model alone, offline: every clip known in advance, cut into ideal batches.

:func:`run_batched` sorts clips by length and transcribes them in consecutive batches (length
bucketing) in this process, timing wall and CPU; :func:`run_offline` runs a prompt pool that way
in one or more spawned processes of one ONNX Runtime thread each (each takes every
``processes``-th clip by length, so all get the same mix), started together once every one has
loaded the model and warmed up, and measures the rest of the machine meanwhile.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue
import sys
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import numpy as np
import soxr

from bench.harness.cpu_time import machine_busy_s
from bench.harness.frames import MODEL_RATE, RATE
from bench.harness.prompt_calls import prompt_pool
from inference.moonshine import MoonshineModel
from tests.support import speech

OFFLINE_TIMEOUT_S = 1800.0  # loading the model (converting it on a first run) included


def model_audio(pcm: np.ndarray) -> np.ndarray:
    """8 kHz int16 -> 16 kHz float32, as the worker does it."""
    audio = pcm.astype(np.float32) / 32768.0
    return np.asarray(soxr.resample(audio, RATE, MODEL_RATE), dtype=np.float32)


def run_batched(
    model: MoonshineModel, clips: list[np.ndarray], batch: int
) -> tuple[list[str], float, float, float]:
    """Texts in input order, wall seconds, CPU seconds, padding as a share of real audio."""
    order = sorted(range(len(clips)), key=lambda i: clips[i].size)
    texts = [""] * len(clips)
    padded = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(order), batch):
        bucket = order[start : start + batch]
        answers = model.transcribe([clips[i] for i in bucket])
        for index, answer in zip(bucket, answers, strict=True):
            texts[index] = answer.text
        longest = max(clips[i].size for i in bucket)
        padded += sum(longest - clips[i].size for i in bucket)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return texts, wall, cpu, padded / sum(c.size for c in clips)


@dataclass(frozen=True, slots=True)
class OfflineRun:
    label: str
    processes: int
    batch: int
    audio_s: float
    wall_s: float  # the slowest process
    cpu_s: float  # summed over the processes
    other_cores: float  # the rest of the machine's CPU meanwhile, in cores
    padding: float
    wer: float

    @property
    def per_wall(self) -> float:
        return self.audio_s / self.wall_s

    @property
    def per_cpu(self) -> float:
        return self.audio_s / self.cpu_s


# What an offline process reports: its clip indices, their texts, wall s, CPU s, padded samples.
ChildResult = tuple[list[int], list[str], float, float, float]


def offline_child(
    k: int,
    indices: list[int],
    batch: int,
    pool_s: tuple[float, float],
    provider: str,
    go: Event,
    results: Queue[int | ChildResult],
) -> None:
    """One offline process: load the model, warm up, say ready, wait for the go, run, report."""
    from inference.model_files import default_cache_dir, ensure_converted
    from inference.moonshine import MoonshineModel
    from inference.providers import choose_providers

    model = MoonshineModel(
        ensure_converted(default_cache_dir()), choose_providers(provider), threads=1
    )
    pool = prompt_pool(*pool_s)
    clips = [model_audio(pool[i][1]) for i in indices]
    model.transcribe(sorted(clips, key=len)[:batch])  # warm-up: first runs allocate
    results.put(k)
    if not go.wait(OFFLINE_TIMEOUT_S):
        return
    texts, wall, cpu, padding = run_batched(model, clips, batch)
    results.put((indices, texts, wall, cpu, padding * sum(c.size for c in clips)))


def run_offline(
    label: str,
    pool: list[tuple[str, np.ndarray]],
    processes: int,
    batch: int,
    pool_s: tuple[float, float],
    provider: str,
) -> OfflineRun:
    """The pool in ``processes`` parallel processes (every ``processes``-th clip by length),
    started together once every one has loaded the model and warmed up."""
    by_length = sorted(range(len(pool)), key=lambda i: len(pool[i][1]))
    shares = [by_length[k::processes] for k in range(processes)]
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    results: Queue[int | ChildResult] = ctx.Queue()
    children = [
        ctx.Process(
            target=offline_child,
            args=(k, share, batch, pool_s, provider),
            kwargs={"go": go, "results": results},
            name=f"offline-{k}",
        )
        for k, share in enumerate(shares)
    ]
    ready: set[int] = set()
    got: list[ChildResult] = []
    try:
        for child in children:
            child.start()
        deadline = time.monotonic() + OFFLINE_TIMEOUT_S
        busy, started = math.nan, math.nan
        while len(got) < processes:  # bounded by the deadline
            try:
                item = results.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() > deadline:
                    sys.exit(f"offline run {label!r} did not finish in {OFFLINE_TIMEOUT_S:g} s")
                dead = [c for c in children if c.exitcode not in (None, 0)]
                if dead:
                    sys.exit(f"offline process {dead[0].name} exited ({dead[0].exitcode})")
                continue
            if isinstance(item, int):
                ready.add(item)
                if len(ready) == processes:
                    busy, started = machine_busy_s(), time.monotonic()
                    go.set()
            else:
                got.append(item)
        busy = machine_busy_s() - busy
        elapsed = time.monotonic() - started
    finally:
        go.set()  # a child still waiting leaves at once
        for child in children:
            child.join(10.0)
            if child.is_alive():
                child.terminate()
                child.join(5.0)
        results.close()
    texts = [""] * len(pool)
    for indices, part, _, _, _ in got:
        for i, text in zip(indices, part, strict=True):
            texts[i] = text
    audio_s = sum(len(clip) for _, clip in pool) / RATE
    cpu_s = sum(g[3] for g in got)
    return OfflineRun(
        label,
        processes,
        batch,
        audio_s,
        max(g[2] for g in got),
        cpu_s,
        max(0.0, busy - cpu_s) / elapsed,
        sum(g[4] for g in got) / MODEL_RATE / audio_s,
        speech.wer([text for text, _ in pool], texts),
    )


@dataclass(frozen=True, slots=True)
class IdealGain:
    """The offline runs side by side: batch 1 in one and in two processes, batch N in two; the
    best batch-1 one is the one with the most audio per wall second."""

    one_b1: OfflineRun
    two_b1: OfflineRun
    two_b8: OfflineRun

    @property
    def best_b1(self) -> OfflineRun:
        return max(self.one_b1, self.two_b1, key=lambda r: r.per_wall)

    @property
    def gain_wall(self) -> float:
        return self.two_b8.per_wall / self.best_b1.per_wall

    @property
    def gain_cpu(self) -> float:
        return self.two_b8.per_cpu / self.best_b1.per_cpu

"""Does batching across live calls pay, and how close do the workers come to the model's limit?

One run, one machine, three sections, each with its own table. Read them together: this machine
(2 cores) runs the generator, the workers and whatever else is going on at once, so every table
also says how much CPU the rest of the machine took meanwhile.

Run from the repository root (needs ``asterisk-core-sounds-en-wav``; the default run takes about
13 minutes on 2 cores)::

    .venv/bin/python -m bench.inference_scale
    .venv/bin/python -m bench.inference_scale --calls 1,8 --duration-s 15 --capacity-calls 16

The prompt pool is ``worker_capacity``'s: every Asterisk prompt of ``--min-prompt-s`` to
``--max-prompt-s`` seconds (8 kHz; resampled to 16 kHz with soxr, as the worker does).

1. Offline, ideal batches: the model alone (``harness.offline_model``, as ``offline_throughput``
   runs it). The whole pool, sorted by length and cut into consecutive batches, in one or two
   processes of one ONNX Runtime thread each (spawned, model loaded and warmed up, then started
   together); with two processes each takes every other clip by length, so both get the same mix.
   Rows: batch 1 in one process (for reference), batch 1 in two processes, batch 8 in two.

   wall s      wall time of the slowest process
   cpu s       CPU time (utime+stime) of the processes, summed
   cores       cpu s / wall s: 2.00 means both processes had a core all the time
   other       the rest of the machine's CPU meanwhile, in cores (/proc/stat busy + steal, less
               the processes'): above ~0.1 someone else was using the machine
   audio/wall  prompt audio seconds per wall second
   audio/cpu   prompt audio seconds per CPU second
   padding     zero padding as a share of the audio (length bucketing keeps it small)
   ideal gain  the batch-8 row / the best batch-1 row (the one with the higher audio/wall: two
               processes on this machine), per wall second and per CPU second. Section 2 counts
               CPU seconds, so its yardstick is the per-CPU-second gain, which another load on
               the machine disturbs far less than the per-wall-second one.

2. Live. ``--workers`` real worker processes per mode (``sip_bridge.cli worker``,
   ``inference.threads`` 1, nice 5 as in the product, DEBUG log) take N calls from
   ``worker_capacity``'s generator: recorded prompts 1-2 s apart with low noise between, 20 ms
   frames at real-time pace through the media side's silence gate, calls started within
   ``--stagger-s``. Each call is pinned at its ``CallStart`` to the worker with the fewest open
   calls (ties in turn) and stays there. Every level runs twice with the very same call audio:
   on workers with batching ("batched": ``inference.max_batch`` 8, the product default) and on
   workers forced to batch 1 ("batch 1": ``max_batch`` 1). Both sets of workers live through the
   whole run and the modes alternate level by level, so drift in the machine's other load hits
   both; everything else is the product default, partials included
   (``inference.partial_interval_ms``). A level whose generator fell behind (tick lag p99 over
   ``--max-lag-ms``) runs once more and the run with the smaller lag is kept.

   prompts/finals/lost  prompts spoken; finals received; prompts no final covered (a lost
               final counts as infinitely late in the percentiles)
   latency p50/p95  end of speech -> final, ms (``worker_capacity``'s definition): receive time
               of the last final covering a prompt minus the send time of the prompt's last
               20 ms frame above -40 dBFS. It includes the endpointer's wait for
               ``vad.min_silence_ms`` of silence (500 ms by default).
   bridge p50/p95   the same minus the configured ``vad.min_silence_ms``: the bridge's own delay
               after the silence wait the configuration asks for (VAD lateness, queueing, the
               model, the wire)
   vad p50     median ms from that speech end to where the worker's endpointer put it; bridge -
               vad = queueing + model + wire
   part/s      partials received per second of wall time
   gap p50/p95 ms between successive partials of the same utterance (the worker's numbering)
   >=1/s       share of prompts whose speech (first to last frame above -40 dBFS) lasts over 1 s
               that got at least one partial per second of it: partials covering the prompt
               (most overlap, as for finals) >= whole seconds of its speech
   batches, avg.b  model batches run and mean clips per batch (from the workers' DEBUG log)
   busy        share of the level's wall time inside the model, averaged over the workers
   WER         word error rate of the finals against the prompts' transcripts (lost = deleted)

   Throughput, per level:
   audio s     call audio sent: calls x call length, silence included (the same for both modes)
   aud/cpu     audio s per worker CPU second (utime+stime of the mode's workers from /proc, from
               the level's first frame to its last CallDone)
   cpu s       that worker CPU; gen cpu: this process, the generator, as a share of one core
   other cores the rest of the machine meanwhile (the idle mode's workers included, ~0.02)
   lag p99/max lateness of the generator's 20 ms ticks, ms. Tens of ms: the generator was
               starved and sent late (latencies then start late and read short); hundreds: the
               level's numbers lie.
   live gain   batched aud/cpu / batch-1 aud/cpu
   % ideal     live gain / ideal gain per CPU second (GOAL: >= 90% at ``--goal-calls``, 16)
   % of lift   (live gain - 1) / (ideal gain - 1): the share of the possible saving realised

   Where the workers' time goes, from the workers' "batch of N (F finals) in T ms" log lines:
   batches with F > 0 (count, clips per batch, finals per batch) and batches with F = 0 (count,
   clips per batch, ms per batch). The worker counts an early final (decoded during the silence
   wait, ``inference.early_finals``) as a non-final there, so with early finals on, the second
   group holds partials and most finals. Then worker CPU, the wall time spent inside the model,
   and the rest (VAD, wire, Python) with its share of the CPU.

3. Capacity, batching only. Levels of ``--capacity-calls`` run upward (section 2's batched levels
   are reused) until one fails; if the first fails, section 2's smaller batched levels are tried
   downward; then up to ``--refine`` levels bisect between the last pass and the first failure.
   A level holds when every call finished and p95 <= ``--bar-ms`` (lost finals count as late).
   The search follows the bridge definition; the latency definition includes the 500 ms
   silence wait, so its bar is out of reach by construction; its result (the largest level of
   an unbroken run of passes from the smallest measured) is printed too.

   bridge p95 by speech  the bridge p95 of the prompts whose speech lasts < 2 s, 2-4 s, > 4 s:
               the model's time grows with the utterance, so long prompts set the p95 even on
               an idle worker (compare with busy)
   busy        as in section 2

   model-bound limit  section 1's batch-8 two-process audio/wall divided by the prompt audio per
               second of call in the calls played (whole prompt recordings are the unit, as in
               section 1; the worker instead transcribes VAD-cut utterances with 200 ms of
               padding each side, and re-runs growing ones for partials, neither of which this
               limit counts). Also shown with a whole core per process (audio/cpu x 2).
   capacity / limit   GOAL: >= 0.9

Design: traffic on 127.0.0.1 only; every loop is bounded (ticks, drains, waits, the search);
every process is stopped in ``finally``; CPU from /proc (workers, machine) and ``os.times`` (this
process). It never changes the worker or the model; it only configures them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.capacity import largest_unbroken, search_capacity
from bench.harness.command_line import add_call_options, invocation, levels, revision
from bench.harness.figures import fmt_ms, nearest_rank, pct
from bench.harness.frames import RATE
from bench.harness.live_level import Level, cadence, measure
from bench.harness.offline_model import IdealGain, run_offline
from bench.harness.prompt_calls import make_calls, prompt_pool, require_prompts
from bench.harness.workers import WorkerPool, WorkerSetup
from sip_bridge.settings.config import InferenceConfig, VadConfig

# -- 1. offline ---------------------------------------------------------------------------------


def section_offline(pool: list[tuple[str, np.ndarray]], args: argparse.Namespace) -> IdealGain:
    audio_s = sum(len(clip) for _, clip in pool) / RATE
    print(
        f"\n== 1. Offline, ideal length-bucketed batches: the model alone on the prompt pool "
        f"({len(pool)} prompts, {audio_s:.0f} s), one ONNX Runtime thread per process =="
    )
    print(
        f"{'configuration':<28} {'batch':>5} {'wall s':>7} {'cpu s':>7} {'cores':>5} "
        f"{'other':>5} {'audio/wall':>10} {'audio/cpu':>9} {'padding':>7} {'WER':>6}",
        flush=True,
    )
    runs = []
    for label, processes, batch in (
        ("batch 1, one process", 1, 1),
        ("batch 1, two processes", 2, 1),
        (f"batch {args.max_batch}, two processes", 2, args.max_batch),
    ):
        pool_s = (args.min_prompt_s, args.max_prompt_s)
        run = run_offline(label, pool, processes, batch, pool_s, args.provider)
        runs.append(run)
        print(
            f"{label:<28} {batch:>5} {run.wall_s:>7.1f} {run.cpu_s:>7.1f} "
            f"{run.cpu_s / run.wall_s:>5.2f} {run.other_cores:>5.2f} {run.per_wall:>10.1f} "
            f"{run.per_cpu:>9.1f} {run.padding:>7.1%} {run.wer:>6.1%}",
            flush=True,
        )
    offline = IdealGain(*runs)
    print(
        f"best batch-1 configuration: {offline.best_b1.label} ({offline.best_b1.per_wall:.1f} "
        f"audio-s per wall-s)\n"
        f"ideal gain (batch {args.max_batch}, two processes / best batch 1): "
        f"{offline.gain_wall:.2f}x per wall-s, {offline.gain_cpu:.2f}x per CPU-s "
        f"(section 2 compares against the per-CPU-s gain)"
    )
    return offline


# -- 2. live --------------------------------------------------------------------------------------


@dataclass(slots=True)
class LiveRun:
    mode: str
    level: Level
    min_silence_ms: int
    prompt_audio_s: float  # whole prompt recordings played in the level's calls
    gap_p95_ms: float = math.nan
    cadence_share: float = math.nan  # prompts > 1 s with >= 1 partial per second of speech
    cadence_eligible: int = 0
    undecodable: int = 0
    reruns: int = 0

    @property
    def throughput(self) -> float:
        return self.level.audio_s / self.level.cpu_s if self.level.cpu_s > 0 else math.nan

    def bridge(self, q: float) -> float:
        return self.level.percentile(q) - self.min_silence_ms

    def holds(self, bar_ms: float, bridge: bool) -> bool:
        return self.level.sustains(bar_ms, self.min_silence_ms if bridge else 0.0)


def start_modes(
    modes: list[WorkerPool],
    workdir: Path,
    ctx: zmq.Context[Any],
    pool: list[tuple[str, np.ndarray]],
    args: argparse.Namespace,
) -> str:
    """Start every mode's workers (all loading at once), warm each up; returns the provider."""
    for mode in modes:
        mode.start(workdir, args.workers)
    runs_on = set().union(*(mode.ready() for mode in modes))
    for mode in modes:
        mode.connect(ctx, pool, warm_calls=mode.setup.max_batch)
    return ", ".join(sorted(runs_on))


def run_live(
    mode: WorkerPool,
    n: int,
    pool: list[tuple[str, np.ndarray]],
    args: argparse.Namespace,
) -> LiveRun:
    """One level on one mode; run again once (same calls) if the generator fell behind."""
    run = run_live_once(mode, n, pool, args)
    if run.level.lag_p99_ms > args.max_lag_ms:
        print(
            f"    ({n} {mode.label}: generator tick lag p99 {run.level.lag_p99_ms:.0f} ms > "
            f"{args.max_lag_ms:g} ms, other load {run.level.other_cpu_s / run.level.wall_s:.2f} "
            "cores: the level runs again)",
            flush=True,
        )
        again = run_live_once(mode, n, pool, args)
        again.reruns = 1
        run = min(run, again, key=lambda r: r.level.lag_p99_ms)
    return run


def run_live_once(
    mode: WorkerPool,
    n: int,
    pool: list[tuple[str, np.ndarray]],
    args: argparse.Namespace,
) -> LiveRun:
    # The same seed for every mode: both modes hear exactly the same calls at a level.
    rng = np.random.default_rng([args.seed, n])
    calls = make_calls(n, pool, rng, args.duration_s, args.stagger_s)
    gen = mode.gen
    undecodable = gen.undecodable
    level = measure(calls, mode.workers, gen, args.duration_s, args.drain_s)
    run = LiveRun(
        mode.label,
        level,
        args.min_silence_ms,
        sum(s.clip_samples for c in calls for s in c.spoken) / RATE,
        undecodable=gen.undecodable - undecodable,
    )
    run.gap_p95_ms = pct(level.partial_gaps_ms, 95)
    run.cadence_share, run.cadence_eligible = cadence(calls, gen.received)
    return run


LIVE_HEADER = (
    f"{'N':>3} {'mode':<8} {'prompts':>7} {'finals':>6} {'lost':>4} | {'latency':>7} {'p95':>5}"
    f" | {'bridge':>6} {'p95':>5} {'vad':>4} | {'part/s':>6} {'gap':>5} {'p95':>5} {'>=1/s':>5} |"
    f" {'batches':>7} {'avg.b':>5} {'busy':>4} | {'WER':>5}\n"
    f"{'':>3} {'':<8} {'':>7} {'':>6} {'':>4} | {'p50 ms':>7} {'':>5} | {'p50 ms':>6} {'':>5}"
    f" {'p50':>4} | {'':>6} {'p50ms':>5} {'':>5} {'':>5} |"
)


def live_row(run: LiveRun) -> str:
    lv = run.level
    share = "-" if math.isnan(run.cadence_share) else f"{run.cadence_share:.0%}"
    return (
        f"{lv.calls:>3} {run.mode:<8} {lv.prompts:>7} {lv.finals:>6} {lv.lost:>4} | "
        f"{fmt_ms(lv.percentile(0.5)):>7} {fmt_ms(lv.percentile(0.95)):>5} | "
        f"{fmt_ms(run.bridge(0.5)):>6} {fmt_ms(run.bridge(0.95)):>5} "
        f"{fmt_ms(lv.vad_late_ms):>4} | "
        f"{lv.partials / lv.wall_s:>6.1f} {fmt_ms(lv.partial_gap_ms):>5} "
        f"{fmt_ms(run.gap_p95_ms):>5} {share:>5} | {lv.batches:>7} {lv.avg_batch:>5.1f} "
        f"{lv.busy:>4.0%} | {lv.wer:>5.1%}"
    )


def notes(run: LiveRun, drain_s: float) -> list[str]:
    lv = run.level
    found = []
    if lv.send_dropped:
        found.append(f"{lv.send_dropped} sends dropped (high-water mark)")
    if lv.undone:
        found.append(f"{lv.undone} calls without CallDone {drain_s:g} s after the end")
    if lv.stray:
        found.append(f"{lv.stray} finals overlapping no prompt")
    if run.undecodable:
        found.append(f"{run.undecodable} results this bench cannot decode")
    return [f"    note ({lv.calls} {run.mode}): {text}" for text in found]


def throughput_table(
    pairs: list[tuple[LiveRun, LiveRun]], ideal_gain: float, goal_calls: int
) -> None:
    print(
        f"\n{'N':>3} {'audio s':>7} | {'batched':>7} {'cpu s':>6} {'gen':>4} {'other':>5} "
        f"{'lag':>7} | {'batch 1':>7} {'cpu s':>6} {'gen':>4} {'other':>5} {'lag':>7} | "
        f"{'live':>5} {'%':>5} {'% of':>5}\n"
        f"{'':>3} {'':>7} | {'aud/cpu':>7} {'':>6} {'cpu':>4} {'cores':>5} {'p99/max':>7} | "
        f"{'aud/cpu':>7} {'':>6} {'cpu':>4} {'cores':>5} {'p99/max':>7} | {'gain':>5} "
        f"{'ideal':>5} {'lift':>5}"
    )
    for batched, single in pairs:
        gain = batched.throughput / single.throughput
        cells = []
        for run in (batched, single):
            lv = run.level
            cells.append(
                f"{run.throughput:>7.1f} {lv.cpu_s:>6.1f} {lv.gen_cpu_s / lv.wall_s:>4.0%} "
                f"{lv.other_cpu_s / lv.wall_s:>5.2f} {f'{lv.lag_p99_ms:.0f}/{lv.lag_ms:.0f}':>7}"
            )
        ratio = gain / ideal_gain
        lift = (gain - 1) / (ideal_gain - 1) if ideal_gain > 1 else math.nan
        goal = ""
        if batched.level.calls == goal_calls:
            goal = f"  <- GOAL >= 90% of ideal: {'met' if ratio >= 0.9 else 'NOT met'}"
        print(
            f"{batched.level.calls:>3} {batched.level.audio_s:>7.0f} | {cells[0]} | {cells[1]} | "
            f"{gain:>4.2f}x {ratio:>5.0%} {lift:>5.0%}{goal}"
        )


def batching_table(pairs: list[tuple[LiveRun, LiveRun]]) -> None:
    print(
        f"\n{'N':>3} {'mode':<8} | {'batches, finals>0':>19} | {'batches, finals=0':>20} | "
        f"{'worker':>6} {'model':>6} {'outside':>7} {'outside':>7}\n"
        f"{'':>3} {'':<8} | {'count':>7} {'clips/b':>7} {'fin/b':>3} | {'count':>7} "
        f"{'clips/b':>7} {'ms/b':>4} | {'cpu s':>6} {'s':>6} {'model s':>7} {'share':>7}"
    )
    for pair in pairs:
        for run in pair:
            lv = run.level
            with_finals = [b for b in lv.batch_log if b[1]]
            partial_only = [b for b in lv.batch_log if not b[1]]
            model_s = sum(b[2] for b in lv.batch_log) / 1000
            outside = lv.cpu_s - model_s
            cells = []
            for group in (with_finals, partial_only):
                clips = sum(b[0] for b in group) / len(group) if group else math.nan
                cells.append((len(group), clips))
            fin = sum(b[1] for b in with_finals) / len(with_finals) if with_finals else math.nan
            partial_ms = (
                sum(b[2] for b in partial_only) / len(partial_only) if partial_only else math.nan
            )
            print(
                f"{lv.calls:>3} {run.mode:<8} | {cells[0][0]:>7} {cells[0][1]:>7.2f} {fin:>3.1f} | "
                f"{cells[1][0]:>7} {cells[1][1]:>7.2f} {fmt_ms(partial_ms):>4} | "
                f"{lv.cpu_s:>6.1f} {model_s:>6.1f} {outside:>7.1f} {outside / lv.cpu_s:>7.0%}"
            )


# -- 3. capacity ----------------------------------------------------------------------------------


def capacity_search(
    batched: WorkerPool,
    measured: dict[int, LiveRun],
    pool: list[tuple[str, np.ndarray]],
    args: argparse.Namespace,
) -> tuple[int, int | None]:
    """(largest level that holds, smallest that fails) by the bridge definition, measuring
    levels of ``--capacity-calls`` upward and then bisecting; fills ``measured``."""

    def holds(n: int) -> bool:
        if n not in measured:
            measured[n] = run_live(batched, n, pool, args)
            run = measured[n]
            print(f"{capacity_row(run, args.bar_ms)}", flush=True)
            for line in notes(run, args.drain_s):
                print(line)
        return measured[n].holds(args.bar_ms, bridge=True)

    # below a failed first rung: section 2's levels
    return search_capacity(holds, args.capacity_calls, measured.keys(), args.refine)


CAPACITY_HEADER = (
    f"{'N':>3} {'prompts':>7} {'lost':>4} {'undone':>6} | {'latency':>7} {'bridge':>6} | "
    f"{'bridge p95 by speech':>20} | {'holds at p95 <=':>15} | {'busy':>4} {'gen':>4} "
    f"{'other':>5} {'lag':>7}\n"
    f"{'':>3} {'':>7} {'':>4} {'':>6} | {'p95 ms':>7} {'p95 ms':>6} | "
    f"{'<2 s':>6} {'2-4 s':>6} {'>4 s':>6} | {'latency':>7} {'bridge':>7} | {'':>4} {'cpu':>4} "
    f"{'cores':>5} {'p99/max':>7}"
)
SPEECH_BINS = ((0.0, 2.0), (2.0, 4.0), (4.0, math.inf))


def capacity_row(run: LiveRun, bar_ms: float) -> str:
    lv = run.level
    by_bin = [
        nearest_rank([ms - run.min_silence_ms for sec, ms in lv.by_length if lo < sec <= hi], 0.95)
        for lo, hi in SPEECH_BINS
    ]
    return (
        f"{lv.calls:>3} {lv.prompts:>7} {lv.lost:>4} {lv.undone:>6} | "
        f"{fmt_ms(lv.percentile(0.95)):>7} {fmt_ms(run.bridge(0.95)):>6} | "
        + " ".join(f"{fmt_ms(v):>6}" for v in by_bin)
        + f" | {'yes' if run.holds(bar_ms, bridge=False) else 'no':>7} "
        f"{'yes' if run.holds(bar_ms, bridge=True) else 'no':>7} | {lv.busy:>4.0%} "
        f"{lv.gen_cpu_s / lv.wall_s:>4.0%} {lv.other_cpu_s / lv.wall_s:>5.2f} "
        f"{f'{lv.lag_p99_ms:.0f}/{lv.lag_ms:.0f}':>7}"
    )


def unbroken(measured: dict[int, LiveRun], bar_ms: float, bridge: bool) -> int:
    """The largest N of an unbroken run of holding levels from the smallest measured."""
    return largest_unbroken((n, run.holds(bar_ms, bridge)) for n, run in measured.items())


def section_capacity(
    batched: WorkerPool,
    measured: dict[int, LiveRun],
    offline: IdealGain | None,
    pool: list[tuple[str, np.ndarray]],
    args: argparse.Namespace,
) -> None:
    print(
        f"\n== 3. Capacity: {args.workers} batched workers, {partials(args)}; "
        f"a level holds with every call done and p95 <= {args.bar_ms:g} ms =="
    )
    print(CAPACITY_HEADER)
    for n in sorted(measured):
        print(capacity_row(measured[n], args.bar_ms))
    print("  (section 2's batched levels above; levels measured now below)", flush=True)
    passed, failed = capacity_search(batched, measured, pool, args)
    raw = unbroken(measured, args.bar_ms, bridge=False)
    above = f"; {failed} fails" if failed is not None else "; no level failed"
    print(
        f"capacity, bridge definition (p95 of latency - {args.min_silence_ms} ms <= "
        f"{args.bar_ms:g} ms): {passed} calls{above}\n"
        f"capacity, latency definition (p95 of latency <= {args.bar_ms:g} ms, the "
        f"{args.min_silence_ms} ms silence wait included): {raw} calls"
    )
    runs = list(measured.values())
    call_s = sum(r.level.audio_s for r in runs)
    speech_per_call = sum(r.prompt_audio_s for r in runs) / call_s
    print(
        f"prompt audio per call: {speech_per_call:.2f} s per second of call (whole prompt "
        f"recordings, the unit of section 1; the worker transcribes VAD-cut utterances with "
        f"{VadConfig().speech_pad_ms} ms padding each side, plus partials)"
    )
    if offline is None:
        print("model-bound limit: - (section 1 skipped)")
        return
    best = offline.two_b8
    limit = best.per_wall / speech_per_call
    print(
        f"model-bound limit: {best.per_wall:.1f} audio-s per wall-s (batch {args.max_batch}, "
        f"two processes, section 1) / {speech_per_call:.2f} = {limit:.1f} calls\n"
        f"  (with a whole core for each process: {best.per_cpu:.1f} x {best.processes} / "
        f"{speech_per_call:.2f} = {best.per_cpu * best.processes / speech_per_call:.1f} calls; "
        f"section 1 had {best.cpu_s / best.wall_s:.2f} cores)"
    )
    for label, cap in (("bridge", passed), ("latency", raw)):
        ratio = cap / limit
        print(
            f"capacity / model-bound limit ({label} definition): {cap} / {limit:.1f} = "
            f"{ratio:.2f}  GOAL >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'}"
        )


# -- main -----------------------------------------------------------------------------------------


def partials(args: argparse.Namespace) -> str:
    return f"partials every {args.partials_ms} ms" if args.partials_ms else "partials OFF"


def worker_setup(args: argparse.Namespace, max_batch: int) -> WorkerSetup:
    return WorkerSetup(args.partials_ms, max_batch, 1, args.min_silence_ms, args.provider)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=levels, default=levels("1,8,16,32"), help="live levels")
    parser.add_argument(
        "--capacity-calls",
        type=levels,
        default=levels("16,24,32,40,48,64"),
        help="capacity ladder, batching only (default 16,24,32,40,48,64)",
    )
    parser.add_argument("--refine", type=int, default=3, help="bisection steps after the ladder")
    parser.add_argument("--goal-calls", type=int, default=16, help="level the live-gain goal is at")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per mode")
    add_call_options(parser, duration_s=40.0)
    parser.add_argument("--max-batch", type=int, default=InferenceConfig().max_batch)
    parser.add_argument("--bar-ms", type=float, default=500.0, help="capacity bar on p95")
    parser.add_argument("--min-silence-ms", type=int, default=VadConfig().min_silence_ms)
    parser.add_argument("--provider", default="cpu", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-lag-ms",
        type=float,
        default=50.0,
        help="run a level again (once) if the generator's tick lag p99 exceeds this",
    )
    parser.add_argument("--offline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--capacity", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--partials-ms",
        type=int,
        default=InferenceConfig().partial_interval_ms,
        help="inference.partial_interval_ms (default: the product's, %(default)s; 0 = off, "
        "for comparison only: the goals assume partials on)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    require_prompts()
    started = time.monotonic()
    pool = prompt_pool(args.min_prompt_s, args.max_prompt_s)
    mean_s = sum(len(c) for _, c in pool) / len(pool) / RATE
    print(f"command: {invocation('bench.inference_scale')}")
    print(f"code: {revision()}")
    print(
        f"{len(pool)} prompts of {args.min_prompt_s:g}-{args.max_prompt_s:g} s (mean "
        f"{mean_s:.1f} s); {os.cpu_count()} CPUs; provider {args.provider}; load average "
        f"{os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    offline = section_offline(pool, args) if args.offline else None

    modes = [
        WorkerPool("batched", worker_setup(args, args.max_batch)),
        WorkerPool("batch 1", worker_setup(args, 1)),
    ]
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        with tempfile.TemporaryDirectory(prefix="inference-scale-") as tmp:
            try:
                runs_on = start_modes(modes, Path(tmp), ctx, pool, args)
                print(
                    f"\n== 2. Live: N calls over {args.workers} workers per mode (1 thread each, "
                    f"ONNX Runtime on {runs_on}), {args.duration_s:g} s calls at real time, "
                    f"{partials(args)}; batched = max_batch "
                    f"{args.max_batch}, batch 1 = max_batch 1 =="
                )
                print(
                    f"latency = end of speech -> final; bridge = latency - vad.min_silence_ms "
                    f"({args.min_silence_ms} ms, the configured silence wait)"
                )
                print(LIVE_HEADER, flush=True)
                pairs: list[tuple[LiveRun, LiveRun]] = []
                for n in args.calls:
                    batched, single = (run_live(mode, n, pool, args) for mode in modes)
                    pairs.append((batched, single))
                    for run in (batched, single):
                        print(live_row(run), flush=True)
                        for line in notes(run, args.drain_s):
                            print(line)
                ideal = offline.gain_cpu if offline is not None else math.nan
                print(
                    f"\nthroughput: call audio per worker CPU second; ideal gain "
                    f"{ideal:.2f}x per CPU-s (section 1)"
                )
                throughput_table(pairs, ideal, args.goal_calls)
                print(
                    "\nwhere the workers' time goes (batches as their DEBUG log counts them: an "
                    "early final is logged as a non-final; model s = wall time inside the model; "
                    "outside = worker CPU - model s: VAD, wire, Python)"
                )
                batching_table(pairs)
                if args.capacity:
                    measured = {b.level.calls: b for b, _ in pairs}
                    section_capacity(modes[0], measured, offline, pool, args)
            finally:
                for mode in modes:
                    mode.close()
    finally:
        ctx.term()
    print(f"\nwall time of the run: {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()

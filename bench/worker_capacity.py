"""How many live calls one inference worker sustains on this machine.

Starts one real worker as its own process (``python -m sip_bridge.cli worker --index 0 --config
CFG``, config written to a temp dir) and drives N synthetic calls into it over ZeroMQ exactly as a
media process does: one PUSH to the worker's endpoint, ``CallStart`` with ``reply_to`` = a PULL
bound here, 20 ms ``Audio`` frames at real-time pace through a per-call
``media.silence_gate.SuppressedStream`` (the gate plus time marks through silence, the same object
the media process's ``AudioSender`` uses), and ``CallEnd``. Each call plays its own random sequence
of recorded Asterisk prompts (8 kHz), 1-2 s of low noise between them; calls start staggered over
the first ``--stagger-s`` seconds and last ``--duration-s`` seconds. One loop on one thread sends
every call's frames against absolute 20 ms deadlines (no drift) and receives the results between
deadlines. Traffic stays on 127.0.0.1.

Each load level runs to the end (every ``CallDone`` received, or ``--drain-s`` after the last
``CallEnd``) before the next starts; the worker process is kept across levels (one per value of
``--partials-ms``) and warmed up first.

Run from the repository root (needs ``asterisk-core-sounds-en-wav``; default run ~5 minutes):
    .venv/bin/python -m bench.worker_capacity
    .venv/bin/python -m bench.worker_capacity --calls 1,8,16 --partials-ms 0,1000

Columns:
    N          concurrent calls
    prompts    prompts spoken in all calls of the level (each should yield one final)
    finals     final transcripts received
    lost       prompts no final overlapped (counted as infinitely late in p50/p95)
    p50/p95/max  end of speech -> final, ms: receive time of the last final covering a prompt
               minus the wall time its speech-end frame was sent (speech end = last 20 ms frame
               of the prompt above -40 dBFS). Includes the endpointer's vad.min_silence_ms wait.
    vad        median ms from that true speech end to where the worker's endpointer put it
               (``Transcript.speech_end_offset``); latency - vad - min_silence = queueing + model
    part/s     partials received per second of wall time
    part.gap   median ms between successive partials of the same utterance
    cpu/aud    worker CPU seconds (utime+stime from /proc) per second of call audio sent
    batches    model batches run; avg.b = mean utterances per batch (from the worker's DEBUG log)
    busy       share of the level's wall time the worker spent inside the model
    WER        word error rate of the finals against the prompts' transcripts (lost = deleted)
    lag        worst lateness of this generator's 20 ms ticks, ms (large = the numbers lie)
    <=500 / <=1000  the worker sustains N at that bar: p95 <= bar (lost finals count as late)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import zmq

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.capacity import largest_unbroken
from bench.harness.command_line import add_call_options, levels
from bench.harness.figures import fmt_ms
from bench.harness.frames import RATE
from bench.harness.live_level import Level, measure
from bench.harness.prompt_calls import make_calls, prompt_pool, require_prompts
from bench.harness.workers import WorkerPool, WorkerSetup
from sip_bridge.settings.config import VadConfig


def run_level(
    n: int,
    workers: WorkerPool,
    pool: list[tuple[str, np.ndarray]],
    rng: np.random.Generator,
    args: argparse.Namespace,
) -> Level:
    calls = make_calls(n, pool, rng, args.duration_s, args.stagger_s)
    return measure(calls, workers.workers, workers.gen, args.duration_s, args.drain_s)


# -- report ---------------------------------------------------------------------------------------


HEADER = (
    f"{'N':>3} {'prompts':>7} {'finals':>6} {'lost':>4} {'p50':>6} {'p95':>6} {'max':>6} "
    f"{'vad':>4} {'part/s':>6} {'part.gap':>8} {'cpu/aud':>7} {'batches':>7} {'avg.b':>5} "
    f"{'busy':>5} {'WER':>6} {'lag':>4} {'<=500':>5} {'<=1000':>6}"
)


def row(level: Level) -> str:
    top = max(level.latencies_ms, default=math.nan)
    return (
        f"{level.calls:>3} {level.prompts:>7} {level.finals:>6} {level.lost:>4} "
        f"{fmt_ms(level.percentile(0.5)):>6} {fmt_ms(level.percentile(0.95)):>6} "
        f"{fmt_ms(top):>6} {fmt_ms(level.vad_late_ms):>4} {level.partials / level.wall_s:>6.1f} "
        f"{fmt_ms(level.partial_gap_ms):>8} {level.cpu_per_audio:>7.3f} {level.batches:>7} "
        f"{level.avg_batch:>5.1f} {level.busy:>5.0%} {level.wer:>6.1%} {level.lag_ms:>4.0f} "
        f"{'yes' if level.sustains(500) else 'no':>5} {'yes' if level.sustains(1000) else 'no':>6}"
    )


def largest_sustained(levels: list[Level], bar_ms: float) -> int:
    """The largest N of an unbroken run of passing levels from the smallest."""
    return largest_unbroken((level.calls, level.sustains(bar_ms)) for level in levels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,4,8,12,16,24,32", help="load levels: N,N,...")
    parser.add_argument(
        "--partials-ms",
        default="1000",
        help="partial interval(s), comma-separated, one worker each; 0 = partials off (default "
        "%(default)s; '0,1000' runs both, twice as long)",
    )
    add_call_options(parser, duration_s=30.0)
    parser.add_argument("--max-batch", type=int, default=8, help="inference.max_batch")
    parser.add_argument("--min-silence-ms", type=int, default=0, help="vad.min_silence_ms; 0: 500")
    parser.add_argument("--provider", default="cpu", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--give-up-ms",
        type=float,
        default=10_000,
        help="skip the higher levels once a level's p95 exceeds this (default %(default)s)",
    )
    args = parser.parse_args()
    require_prompts()
    levels_n = levels(args.calls)
    intervals = [int(x) for x in args.partials_ms.split(",") if x.strip()]
    pool = prompt_pool(args.min_prompt_s, args.max_prompt_s)
    mean_s = sum(len(c) for _, c in pool) / len(pool) / RATE
    min_silence = args.min_silence_ms or VadConfig().min_silence_ms
    print(
        f"{len(pool)} prompts of {args.min_prompt_s:g}-{args.max_prompt_s:g} s (mean {mean_s:.1f} "
        f"s); {args.duration_s:g} s per level; max_batch {args.max_batch}; "
        f"vad.min_silence_ms {min_silence} (a floor under every latency); {os.cpu_count()} CPUs",
        flush=True,
    )
    summary = []
    with tempfile.TemporaryDirectory(prefix="worker-capacity-") as tmp:
        for partials_ms in intervals:
            rng = np.random.default_rng(args.seed)
            setup = WorkerSetup(partials_ms, args.max_batch, 1, args.min_silence_ms, args.provider)
            workers = WorkerPool(f"worker-{partials_ms}", setup)
            ctx: zmq.Context[Any] = zmq.Context()
            try:
                workers.start(Path(tmp), 1)
                (runs_on,) = workers.ready()
                workers.connect(ctx, pool)
                label = f"partials every {partials_ms} ms" if partials_ms else "partials off"
                pid = workers.workers[0].proc.pid
                print(f"\nworker pid {pid}, {label}, ONNX Runtime on {runs_on}")
                print(HEADER, flush=True)
                done: list[Level] = []
                for n in levels_n:
                    level = run_level(n, workers, pool, rng, args)
                    done.append(level)
                    print(row(level), flush=True)
                    if level.send_dropped or level.undone or level.stray:
                        print(
                            f"    note: {level.send_dropped} sends dropped, {level.undone} calls "
                            f"without CallDone after {args.drain_s:g} s, {level.stray} finals "
                            "overlapping no prompt",
                            flush=True,
                        )
                    if level.percentile(0.95) > args.give_up_ms:
                        skipped = [x for x in levels_n if x > n]
                        if skipped:
                            print(f"    p95 over {args.give_up_ms:g} ms: skipped N={skipped}")
                        break
                summary.append(
                    f"{label}: one worker sustains {largest_sustained(done, 500)} calls at "
                    f"p95 <= 500 ms, {largest_sustained(done, 1000)} at p95 <= 1000 ms"
                )
            finally:
                workers.close()
                ctx.term()
    print()
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()

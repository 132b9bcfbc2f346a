"""Overload through the whole product: ``sip-bridge serve`` sized for C calls, offered 1.0x and
then 1.5x C concurrent sipp calls of recorded prompts. Shows that the excess is refused at once
(503 with Retry-After, never reaching a media process) and that the admitted calls keep their
latency.

For each level it prints: calls offered, admitted (200), refused (503, how many carried
Retry-After, and the slowest refusal), then for the admitted calls the end-of-speech → INFO
latency (p50, p95, max; as bench/e2e_latency measures it) and their WER.

With ``--calls-per-worker N`` the capacity is the workers' (admission by their heartbeats,
``inference.calls_per_worker``; the pool ``auto``, twice as many slots), and the same levels run
a second time on a bridge without that limit (``calls_per_worker: 0``, same pool), so one run
shows what refusing the excess does for the admitted calls' latency against taking them all.

Run:  .venv/bin/python -m bench.overload [--processes 2 --calls-per-process 2] [--prompts 3]
      .venv/bin/python -m bench.overload --workers 2 --calls-per-worker 8 --levels 1.0,1.5
(needs kamailio, sipp, asterisk-core-sounds-en-wav, and root or CAP_NET_RAW for sipp's pcap play)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e_latency import (  # noqa: E402
    GAP_S,
    LEAD_S,
    RATE,
    TAIL_S,
    speech_end,
)
from bench.harness.figures import pct  # noqa: E402
from bench.harness.sipp_trace import entries, trace_times  # noqa: E402
from tests.support import speech  # noqa: E402
from tests.support.bridge import RunningBridge  # noqa: E402
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap  # noqa: E402
from tests.support.sipp import SippCall, run_calls  # noqa: E402


def run_level(bridge: RunningBridge, work: Path, calls: int, per_call: int, stride: int) -> None:
    prompts = speech.select(calls * per_call, min_s=1.5, max_s=6.0, stride=stride)
    plans, sipps = [], []
    for i in range(calls):
        mine = prompts[i * per_call : (i + 1) * per_call]
        pcms = [p.pcm() for p in mine]
        ends, t = [], LEAD_S
        for pcm in pcms:
            ends.append(t + speech_end(pcm))
            t += len(pcm) / RATE + GAP_S
        pcap = work / f"l{calls}-c{i}.pcap"
        seconds = write_rtp_pcap(pcap, join_with_silence(pcms, GAP_S, LEAD_S, TAIL_S))
        plans.append((mine, ends))
        sipps.append(SippCall("127.0.0.1", bridge.port, pcap, audio_s=seconds, linger_s=3.0,
                              work_dir=work / f"l{calls}-c{i}"))  # fmt: skip
    results = run_calls(sipps)
    latencies, refs, hyps = [], [], []
    refused = with_retry_after = 0
    refusal_ms: list[float] = []
    for (mine, ends), sipp, result in zip(plans, sipps, results, strict=True):
        if result.final_status == 503:
            refused += 1
            answer = next(m for m in result.messages if m.status == 503)
            with_retry_after += answer.header("Retry-After") is not None
            refusal_ms.append(refusal_seconds(sipp.trace_path) * 1000)
            continue
        ack, infos = trace_times(sipp.trace_path)
        refs.append(" ".join(p.text for p in mine))
        hyps.append(" ".join(str(b["text"]) for _, b in infos))
        if ack is not None and len(infos) == len(mine):
            latencies += [t - (ack + end) for (t, _), end in zip(infos, ends, strict=True)]
    admitted = calls - refused
    print(
        f"{calls:>7} {admitted:>8} {refused:>7} {with_retry_after:>11} "
        f"{max(refusal_ms, default=float('nan')):>13.1f} {pct(latencies, 50) * 1000:>8.0f} "
        f"{pct(latencies, 95) * 1000:>8.0f} {max(latencies, default=float('nan')) * 1000:>8.0f} "
        f"{speech.wer(refs, hyps) * 100 if refs else float('nan'):>6.1f}",
        flush=True,
    )


def refusal_seconds(trace: Path) -> float:
    """INVITE sent → 503 received, from a sipp -trace_msg file."""
    sent = refused = None
    for t, header, first, _ in entries(trace):
        lines = [header]
        if sent is None and "sent" in lines[0] and first.startswith("INVITE "):
            sent = t
        elif refused is None and "received" in lines[0] and first.startswith("SIP/2.0 503"):
            refused = t
    return refused - sent if sent is not None and refused is not None else float("nan")


def run_bridge(
    work: Path, overrides: dict[str, dict[str, object]], capacity: int, levels: list[float],
    prompts: int, title: str,
) -> None:  # fmt: skip
    work.mkdir()
    bridge = RunningBridge(work, overrides, None)
    try:
        bridge.wait_ready(600)
        print(f"{title}, {prompts} prompts a call")
        print(
            f"{'offered':>7} {'admitted':>8} {'refused':>7} {'Retry-After':>11} "
            f"{'refusal ms':>13} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'WER%':>6}"
        )
        for i, level in enumerate(levels):
            run_level(bridge, work, round(capacity * level), prompts, stride=i * 11)
    finally:
        bridge.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2, help="media processes")
    ap.add_argument("--calls-per-process", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="inference workers")
    ap.add_argument(
        "--calls-per-worker",
        type=int,
        default=0,
        help="admission by the workers' load (0: the slots are the capacity)",
    )
    ap.add_argument("--prompts", type=int, default=3, help="prompts per call")
    ap.add_argument("--levels", default="1.0,1.5", help="offered load as multiples of capacity")
    args = ap.parse_args()
    levels = [float(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        work = Path(tmp)
        if not args.calls_per_worker:
            capacity = args.processes * args.calls_per_process
            overrides = {"media": {"processes": args.processes,
                                   "calls_per_process": args.calls_per_process},
                         "inference": {"workers": args.workers}}  # fmt: skip
            title = (f"capacity {capacity} calls ({args.processes} media processes x "
                     f"{args.calls_per_process})")  # fmt: skip
            run_bridge(work / "slots", overrides, capacity, levels, args.prompts, title)
        else:
            capacity = args.workers * args.calls_per_worker
            for limit in (args.calls_per_worker, 0):
                overrides = {
                    "media": {"processes": "auto"},
                    "inference": {"workers": args.workers, "calls_per_worker": limit},
                }
                # "auto" sizes the pool from calls_per_worker: give the unlimited bridge the
                # same pool as the limited one.
                if not limit:
                    slots = 2 * capacity
                    overrides["media"] = {"processes": -(-slots // 4)}
                title = (
                    f"admission at {capacity} calls ({args.workers} workers x {limit})"
                    if limit
                    else f"no admission limit ({args.workers} workers)"
                )
                run_bridge(work / str(limit), overrides, capacity, levels, args.prompts, title)
    print("latency: of admitted calls, INFO arrival - end of the prompt's last voiced frame as")
    print("played by sipp; refusal ms: INVITE sent -> 503 received, the slowest.")


if __name__ == "__main__":
    main()

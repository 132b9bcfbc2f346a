"""End-to-end figures through the whole product: ``sip-bridge serve`` + sipp calls.

For each load level (concurrent calls), every call plays its own recorded prompts (1.5 s apart) as
G.711 RTP, and sipp's message trace gives the arrival time of every SIP INFO. Prints:

- end-of-speech → INFO latency (p50, p95, max): INFO arrival minus the moment the prompt's last
  voiced 20 ms frame was played (playback starts when sipp sends the ACK);
- WER of the INFO texts against the prompts' transcripts;
- CPU of the media processes per call (CPU seconds / call seconds), and their idle CPU;
- CPU of the inference worker per audio second.

Run:  .venv/bin/python bench/e2e_latency.py --calls 1,12 --prompts 3
(needs kamailio, sipp, asterisk-core-sounds-en-wav, and root or CAP_NET_RAW for sipp's pcap play)
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.cpu_time import process_cpu_s  # noqa: E402
from bench.harness.figures import pct  # noqa: E402
from bench.harness.sipp_trace import trace_times  # noqa: E402
from tests.support import speech  # noqa: E402
from tests.support.bridge import RunningBridge  # noqa: E402
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap  # noqa: E402
from tests.support.sipp import SippCall, run_calls  # noqa: E402

RATE = 8000
VERBOSE = False
LEAD_S, GAP_S, TAIL_S = 0.5, 1.5, 0.5


def speech_end(pcm: np.ndarray, dbfs: float = -40.0) -> float:
    """Seconds from the start of ``pcm`` to the end of its last voiced 20 ms frame."""
    frames = pcm[: len(pcm) // 160 * 160].astype(np.float64).reshape(-1, 160)
    rms = np.sqrt((frames**2).mean(axis=1)) / 32768.0
    voiced = np.nonzero(20 * np.log10(rms + 1e-12) > dbfs)[0]
    return float((voiced[-1] + 1) * 160 / RATE) if len(voiced) else 0.0


def pids(log: str, role: str) -> list[int]:
    return [int(p) for p in re.findall(rf"{role} \d+ started \(pid (\d+)\)", log)]


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
        pcm = join_with_silence(pcms, gap_s=GAP_S, lead_s=LEAD_S, tail_s=TAIL_S)
        pcap = work / f"l{calls}-c{i}.pcap"
        seconds = write_rtp_pcap(pcap, pcm)
        plans.append((mine, ends, seconds))
        sipps.append(SippCall("127.0.0.1", bridge.port, pcap, audio_s=seconds, linger_s=3.0,
                              work_dir=work / f"l{calls}-c{i}"))  # fmt: skip
    log = bridge.log_text()
    media, workers = pids(log, "media"), pids(log, "worker")
    m0 = sum(process_cpu_s(p) for p in media)
    w0 = sum(process_cpu_s(p) for p in workers)
    t0 = time.monotonic()
    results = run_calls(sipps)
    wall = time.monotonic() - t0
    m1 = sum(process_cpu_s(p) for p in media)
    w1 = sum(process_cpu_s(p) for p in workers)
    latencies, refs, hyps, mismatched = [], [], [], 0
    for (mine, ends, _), sipp, result in zip(plans, sipps, results, strict=True):
        ack, infos = trace_times(sipp.trace_path)
        refs.append(" ".join(p.text for p in mine))
        hyps.append(" ".join(str(b["text"]) for _, b in infos))
        if VERBOSE:
            print(f"  ref: {refs[-1]}\n  hyp: {hyps[-1]}\n  ({len(infos)} INFOs)")
        if ack is None or len(infos) != len(mine) or not result.ok:
            mismatched += 1
            continue
        latencies += [t - (ack + end) for (t, _), end in zip(infos, ends, strict=True)]
    call_seconds = sum(s for _, _, s in plans)
    print(
        f"{calls:>5} {len(latencies):>7} {mismatched:>10} {pct(latencies, 50) * 1000:>8.0f} "
        f"{pct(latencies, 95) * 1000:>8.0f} {max(latencies, default=float('nan')) * 1000:>8.0f} "
        f"{speech.wer(refs, hyps) * 100:>6.1f} {(m1 - m0) / call_seconds * 100:>12.2f} "
        f"{(w1 - w0) / call_seconds:>12.3f} {wall:>7.1f}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", default="1,12", help="comma-separated concurrent call counts")
    ap.add_argument("--prompts", type=int, default=3, help="prompts per call")
    ap.add_argument("--processes", type=int, default=4, help="media processes")
    ap.add_argument("--verbose", action="store_true", help="print each call's texts")
    args = ap.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    levels = [int(x) for x in args.calls.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        bridge = RunningBridge(work, {"media": {"processes": args.processes}}, None)
        try:
            bridge.wait_ready(600)
            media = pids(bridge.log_text(), "media")
            c0 = sum(process_cpu_s(p) for p in media)
            time.sleep(5)
            idle = (sum(process_cpu_s(p) for p in media) - c0) / 5 / len(media)
            print(
                f"media processes idle: {idle * 100:.2f}% of a core each ({len(media)} processes)"
            )
            print(f"{'calls':>5} {'finals':>7} {'mismatched':>10} {'p50 ms':>8} {'p95 ms':>8} "
                  f"{'max ms':>8} {'WER%':>6} {'media %/call':>12} {'worker s/s':>12} "
                  f"{'wall s':>7}")  # fmt: skip
            for i, calls in enumerate(levels):
                run_level(bridge, work, calls, args.prompts, stride=i * 7)
        finally:
            bridge.stop()
    print("latency: INFO arrival - end of the prompt's last voiced frame as played by sipp;")
    print("media %/call: media-process CPU per call, % of one core; worker s/s: worker CPU")
    print("seconds per call second. 'mismatched': calls whose INFO count != prompts (not timed).")


if __name__ == "__main__":
    main()

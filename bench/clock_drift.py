"""A caller whose clock runs fast or slow, for minutes, through the whole product.

``sip-bridge serve`` takes concurrent sipp calls that all play the same recorded prompts (1.5 s
apart) as G.711 RTP; each call's sender clock is off by its own error (default +0.5 %, -0.5 %, and
0 as the control). A sender 0.5 % fast sends 20 ms packets every 19.9 ms of our time: over ten
minutes, 3 s more audio than the bridge's clock plays; a slow one 3 s less. RTP timestamps count the
sender's own samples (``tests.support.rtp_pcap.drifted``). The jitter buffer must absorb that:
latency must not grow, and speech must not be dropped.

The last minute replays the first minute's prompts. For each call it prints, over the first
minute, the last minute and the whole call:

- WER of the finals against the prompts' transcripts, and the words deleted (reference words with
  nothing in the transcript: dropped speech shows here);
- end-of-speech → final latency, p50: the INFO's arrival (sipp's trace) minus the moment the
  prompt's last voiced 20 ms frame left the sender (playback starts as sipp sends the ACK);
- audio delay, p50: the final's ``end`` (the worker's end of speech, in the call's received
  timeline, counted by our clock) minus the same moment. It moves with the audio waiting in the
  jitter buffer and nothing else: a growing buffer shows here first, to the 10 ms frame;
- the same prompts' last-minute minus first-minute latency and audio delay, and both by minute;
- with a 0 % call in the run, each other call's audio delay minus the 0 % call's on the same
  prompt, by minute: the jitter buffer's own growth, with prompt and machine load taken out.

Finals are matched to prompts by time (the prompt their start..end overlaps most); a prompt with
no final counts its words as deleted.

What PJSIP does (``media.jitter_buffer.discard``): with ``none`` a fast sender fills the buffer
at 5 ms a second until it holds ``max_ms``; from then on each new 10 ms frame pushes out the
oldest, mid-word or not (a 0.5 % fast sender loses 10 ms every 2 s; no word was lost to it). A
slow sender drains the buffer; when it runs dry PJSIP waits for ``min_prefetch_ms`` of audio
again, so the call gains a short silence every 20-40 s. ``static`` and ``progressive`` hold the
latency flat, but squeeze the buffer to 20-40 ms, where it runs dry over and over.

Run:  .venv/bin/python bench/clock_drift.py [--minutes 10] [--discard none|static|progressive]
(needs kamailio, sipp, asterisk-core-sounds-en-wav, and root or CAP_NET_RAW for sipp's pcap play)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e_latency import speech_end  # noqa: E402
from bench.harness.sipp_trace import trace_times  # noqa: E402
from tests.support import speech  # noqa: E402
from tests.support.bridge import RunningBridge  # noqa: E402
from tests.support.rtp_pcap import (  # noqa: E402
    PTIME_MS,
    drifted,
    join_with_silence,
    paced,
    rtp_packets,
    write_packets_pcap,
)
from tests.support.sipp import SippCall, run_calls  # noqa: E402

RATE = 8000
LEAD_S, GAP_S, TAIL_S = 0.5, 1.5, 0.5
WINDOW_S = 60.0  # "first minute" and "last minute"


@dataclass(frozen=True, slots=True)
class Spoken:
    """One prompt as the sender played it, in our (receiver's) seconds from the playback start."""

    text: str
    start: float
    end: float  # end of its last voiced frame


@dataclass(frozen=True, slots=True)
class Final:
    text: str
    start: float  # seconds from the call's answer, as the worker heard it
    end: float
    arrival: float  # seconds from the playback start, when sipp got the INFO


def program(
    minutes: float, stride: int
) -> tuple[list[speech.Prompt], np.ndarray, list[float], int]:
    """Prompts for ``minutes`` of the sender's clock, the audio, each prompt's start (sender
    seconds), and how many make the first minute. The last minute replays the first minute's
    prompts, so the two are compared on the same speech."""
    if minutes < 2:
        raise ValueError("need 2 minutes at least: the first and the last are compared")
    pool = speech.select(120, min_s=1.5, max_s=6.0, stride=stride)
    chosen: list[speech.Prompt] = []
    t = LEAD_S
    while t < WINDOW_S:
        chosen.append(pool[len(chosen) % len(pool)])
        t += chosen[-1].seconds + GAP_S
    block = len(chosen)
    block_s = t - LEAD_S
    while t + block_s < minutes * 60.0:
        chosen.append(pool[len(chosen) % len(pool)])
        t += chosen[-1].seconds + GAP_S
    chosen += chosen[:block]
    starts = [LEAD_S + sum(p.seconds + GAP_S for p in chosen[:i]) for i in range(len(chosen))]
    pcm = join_with_silence([p.pcm() for p in chosen], gap_s=GAP_S, lead_s=LEAD_S, tail_s=TAIL_S)
    return chosen, pcm, starts, block


def edit_ops(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimum-edit alignment."""
    # Each cell: (cost, subs, dels, ins); ties go to the fewest deletions.
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i, r in enumerate(ref, 1):
        cur = [(i, 0, i, 0)]
        for j, h in enumerate(hyp, 1):
            c, s, d, n = prev[j - 1]
            diag = (c, s, d, n) if r == h else (c + 1, s + 1, d, n)
            c, s, d, n = prev[j]
            up = (c + 1, s, d + 1, n)
            c, s, d, n = cur[j - 1]
            left = (c + 1, s, d, n + 1)
            cur.append(min(diag, up, left, key=lambda x: (x[0], x[2])))
        prev = cur
    _, s, d, n = prev[-1]
    return s, d, n


def assign(spoken: list[Spoken], finals: list[Final]) -> list[list[Final]]:
    """Each final to the prompt its start..end overlaps most; finals matching nothing are left
    out of the per-prompt view (they still count in the whole-call WER)."""
    # The receive timeline starts at the answer, a few ms before playback; the VAD ends a bit
    # after the voiced frame. Their sum is constant, so the first prompt's lag stands for it.
    firsts = [f for f in finals if f.end > spoken[0].start]
    offset = firsts[0].end - spoken[0].end if firsts else 0.0
    out: list[list[Final]] = [[] for _ in spoken]
    for f in finals:
        overlaps = [min(f.end, s.end + offset) - max(f.start, s.start + offset) for s in spoken]
        k = int(np.argmax(overlaps))
        if overlaps[k] > 0:
            out[k].append(f)
    return out


def p50(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def report(name: str, spoken: list[Spoken], finals: list[Final], block: int) -> list[float | None]:
    """Print the call's figures; return each prompt's audio delay (None: no final)."""
    matched = assign(spoken, finals)
    total = spoken[-1].end
    n = len(spoken)
    windows = {
        "first min": list(range(block)),
        "last min": list(range(n - block, n)),  # the same prompts again
        "whole": list(range(n)),
    }
    print(f"\n{name}: {len(spoken)} prompts over {total / 60:.1f} min, {len(finals)} finals, "
          f"{sum(not m for m in matched)} prompts with no final")  # fmt: skip
    print(f"  {'':9} {'prompts':>7} {'ref words':>9} {'WER %':>6} {'deleted':>7} {'subst':>5} "
          f"{'inserted':>8} {'latency p50 ms':>14} {'max ms':>7} "
          f"{'audio delay p50 ms':>18}")  # fmt: skip
    for label, idx in windows.items():
        ref = [w for i in idx for w in speech.normalize(spoken[i].text)]
        if label == "whole":  # every final, matched or not
            hyp = [w for f in finals for w in speech.normalize(f.text)]
        else:
            hyp = [w for i in idx for f in matched[i] for w in speech.normalize(f.text)]
        subs, dels, ins = edit_ops(ref, hyp)
        wer = (subs + dels + ins) / max(len(ref), 1)
        latency = [matched[i][-1].arrival - spoken[i].end for i in idx if matched[i]]
        delay = [matched[i][-1].end - spoken[i].end for i in idx if matched[i]]
        print(
            f"  {label:9} {len(idx):>7} {len(ref):>9} {wer * 100:>6.1f} "
            f"{dels:>7} {subs:>5} {ins:>8} {p50(latency) * 1000:>14.0f} "
            f"{max(latency, default=float('nan')) * 1000:>7.0f} {p50(delay) * 1000:>18.0f}"
        )  # fmt: skip
    # The same prompt, last minute minus first: what the minutes in between added.
    pairs = [(i, n - block + i) for i in range(block) if matched[i] and matched[n - block + i]]
    grew = [
        (matched[j][-1].arrival - spoken[j].end) - (matched[i][-1].arrival - spoken[i].end)
        for i, j in pairs
    ]
    moved = [(matched[j][-1].end - spoken[j].end) - (matched[i][-1].end - spoken[i].end)
             for i, j in pairs]  # fmt: skip
    print(f"  last - first minute, same prompts ({len(pairs)}): latency p50 "
          f"{p50(grew) * 1000:+.0f} ms, audio delay p50 {p50(moved) * 1000:+.0f} ms "
          f"(min {min(moved, default=float('nan')) * 1000:+.0f}, "
          f"max {max(moved, default=float('nan')) * 1000:+.0f})")  # fmt: skip
    print(f"  {'minute':>8} {'prompts':>7} {'no final':>8} {'latency p50 ms':>14} {'max ms':>7} "
          f"{'audio delay p50 ms':>18}")  # fmt: skip
    for minute in range(int(np.ceil(total / 60))):
        idx = [i for i, s in enumerate(spoken) if minute * 60 <= s.end < (minute + 1) * 60]
        latency = [matched[i][-1].arrival - spoken[i].end for i in idx if matched[i]]
        delay = [matched[i][-1].end - spoken[i].end for i in idx if matched[i]]
        print(f"  {minute + 1:>8} {len(idx):>7} {sum(not matched[i] for i in idx):>8} "
              f"{p50(latency) * 1000:>14.0f} {max(latency, default=float('nan')) * 1000:>7.0f} "
              f"{p50(delay) * 1000:>18.0f}")  # fmt: skip
    return [m[-1].end - s.end if m else None for s, m in zip(spoken, matched, strict=True)]


def versus_control(name: str, spoken: list[Spoken], mine: list[float | None],
                   control: list[float | None]) -> None:  # fmt: skip
    """Audio delay minus the 0 % call's on the same prompt, per minute: the jitter buffer's own
    growth, with the prompt and the machine's load taken out."""
    cells = []
    for minute in range(int(np.ceil(spoken[-1].end / 60))):
        diffs = [
            a - b
            for s, a, b in zip(spoken, mine, control, strict=True)
            if minute * 60 <= s.end < (minute + 1) * 60 and a is not None and b is not None
        ]
        cells.append(f"{p50(diffs) * 1000:+5.0f}")
    print(f"  {name}: audio delay - the 0 % call's, p50 ms by minute: {' '.join(cells)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="call length (sender's clock)")
    ap.add_argument("--errors", default="0.005,-0.005,0",
                    help="sender clock errors, one call each (0.005: 0.5 %% fast)")  # fmt: skip
    ap.add_argument(
        "--discard",
        choices=("none", "static", "progressive"),
        default=None,
        help="media.jitter_buffer.discard for this run (default: the config's)",
    )
    ap.add_argument("--verbose", action="store_true", help="print each prompt and its finals")
    ap.add_argument("--keep", type=Path, help="work here and keep it (logs, pcaps, sipp traces)")
    args = ap.parse_args()
    errors = [float(e) for e in args.errors.split(",")]
    prompts, pcm, starts, block = program(args.minutes, stride=3)
    ends = [s + speech_end(p.pcm()) for s, p in zip(starts, prompts, strict=True)]
    clean = paced(rtp_packets(pcm))
    media: dict[str, object] = {"processes": 1}
    if args.discard:
        media["jitter_buffer"] = {"discard": args.discard}
    print(f"{len(prompts)} prompts, {len(pcm) / RATE / 60:.1f} min of audio per call; sender "
          f"clock errors {errors}; jitter buffer discard: {args.discard or 'config default'}",
          flush=True)  # fmt: skip
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = args.keep
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-drift-")))
        bridge = RunningBridge(work, {"media": media, "inference": {"workers": 1}}, None)
        try:
            bridge.wait_ready(600)
            calls = []
            for n, err in enumerate(errors):
                packets = drifted(clean, err)
                pcap = work / f"drift{n}.pcap"
                write_packets_pcap(pcap, packets)
                seconds = packets[-1][0] + PTIME_MS / 1000
                calls.append(SippCall("127.0.0.1", bridge.port, pcap, audio_s=seconds,
                                      linger_s=4.0, work_dir=work / f"drift{n}"))  # fmt: skip
            t0 = time.monotonic()
            results = run_calls(calls)
            print(f"calls done in {time.monotonic() - t0:.0f} s", flush=True)
        finally:
            bridge.stop()
        delays: dict[float, list[float | None]] = {}
        timelines: dict[float, list[Spoken]] = {}
        for err, call, result in zip(errors, calls, results, strict=True):
            name = f"sender clock {err * 100:+.1f} %"
            if not result.ok:
                print(f"\n{name}: sipp failed ({result.exit_code}): {result.errors[-500:]}")
                continue
            ack, infos = trace_times(call.trace_path)
            if ack is None:
                print(f"\n{name}: no ACK in the trace")
                continue
            spoken = [
                Spoken(p.text, s / (1 + err), e / (1 + err))
                for p, s, e in zip(prompts, starts, ends, strict=True)
            ]
            finals = [
                Final(str(b["text"]), float(str(b["start"])), float(str(b["end"])), t - ack)
                for t, b in infos
                if b.get("type") == "transcript.final"
            ]
            delays[err] = report(name, spoken, finals, block)
            timelines[err] = spoken
            if args.verbose:
                for s, got in zip(spoken, assign(spoken, finals), strict=True):
                    print(f"    {s.end:7.1f} {s.text!r} -> {[f.text for f in got]}")
    if 0.0 in delays and len(delays) > 1:
        print()
        for err, mine in delays.items():
            if err != 0.0:
                versus_control(f"{err * 100:+.1f} %", timelines[err], mine, delays[0.0])
    print("\nlatency: INFO arrival - end of the prompt's last voiced frame as sent; audio delay:")
    print("the final's end (received timeline) - the same; both must not grow from the first")
    print("minute to the last. deleted: reference words missing from the transcript.")


if __name__ == "__main__":
    main()

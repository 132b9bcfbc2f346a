"""How far live captions trail the talker, through the whole product, old and new side by side.

Real SIP calls (sipp, G.711, each call playing its own recorded prompts 1.5 s apart) go through
``sip-bridge serve``; every event reaches a webhook endpoint and a client of the captions event
stream (SSE), and sipp's trace gives each SIP INFO's arrival. For each load level, each variant
of the bridge takes the same calls in turn (so the ratios are measured in one run, on one noisy
machine). Printed per level and variant:

- word lag p50/p95 (webhook, and the SSE stream): a spoken word's end in the audio as played ->
  the first caption (partial or final) that holds it. Word end times come from a forced
  alignment of the prompts (``bench.harness.alignment``); ``bench.harness.caption_lag`` has the
  exact definitions;
- end of speech -> final, p50/p95, as SIP INFO (sipp's trace) and as webhook;
- WER of the finals (webhook), words never shown in any caption (missed), and the splits the
  endpointing made inside a prompt (mid-word / mid-sentence / at a sentence end);
- model CPU per call-second of the partials and of the finals: CPU inside ONNX Runtime by thread
  (the partials' thread, the worker's loop), measured by ``bench/harness/cpu_probe`` the same way
  for every revision;
- calls that failed (sipp error, no call.ended).

Variants: ``today`` is the bridge at ``--baseline`` (a git revision, run from an exported copy
of it with this venv), ``new`` is the working tree; ``--set key=value`` changes the new one's
config (dotted keys, YAML values) to try one lever at a time.

Run:  .venv/bin/python -m bench.word_lag --calls 1,8,16,24
(needs kamailio, sipp, asterisk-core-sounds-en-wav, pocketsphinx (``pip install -e '.[bench]'``)
and root or CAP_NET_RAW for sipp's pcap play; about 12 minutes at the default levels)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.harness.alignment import AlignedPrompt, aligned_prompts
from bench.harness.caption_lag import CallFigures, Caption, analyse, spoken_words
from bench.harness.consumers import EventStreamClient, WebhookSink
from bench.harness.figures import pct
from bench.harness.sipp_trace import trace_times
from tests.support import speech
from tests.support.bridge import RunningBridge
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall, run_calls

RATE = 8000
LEAD_S, GAP_S, TAIL_S = 0.5, 1.5, 0.5
TOKEN = "bench-word-lag-token"
REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "harness" / "cpu_probe"
# The jitter buffer's delay, roughly: call time = wall time since playback + this (see
# caption_lag); only the split and final matching use it, with 150 ms of slack.
CALL_OFFSET_S = 0.1
# sipp stands in for PBXs on other machines: as root, it runs at a higher priority than the
# bridge, so its trace's INFO arrival times are not its own wait for a busy CPU (at 16 calls on
# 2 cores that wait added 0.2 s at p50, 0.5 s at p95 to INFO latency measured at normal nice).
SIPP_PRIORITY = -10 if os.geteuid() == 0 else 0


@dataclass
class Variant:
    name: str
    source: Path  # the tree whose sip_bridge, media, inference run
    overrides: dict[str, Any]
    bridge: RunningBridge | None = None
    sink: WebhookSink | None = None
    stream: EventStreamClient | None = None
    probe_dir: Path | None = None


@dataclass
class Level:
    figures: list[CallFigures] = field(default_factory=list)
    sse: list[CallFigures] = field(default_factory=list)
    info_latencies: list[float] = field(default_factory=list)
    failed: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    call_seconds: float = 0.0


def export_revision(rev: str, into: Path) -> Path:
    """The product's packages at ``rev``, as files (git archive), to run with this venv."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "sip_bridge", "media",
                              "inference"], check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def set_key(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for key in path:
        cfg = cfg.setdefault(key, {})
    cfg[last] = value


def start(variant: Variant, work: Path, processes: int, workers: int) -> None:
    variant.sink = WebhookSink()
    variant.probe_dir = work / "cpu"
    variant.probe_dir.mkdir(parents=True)
    overrides: dict[str, Any] = {
        "media": {"processes": processes, "drain_timeout_s": 5},
        "inference": {"workers": workers},
        "captions": {"tokens": [TOKEN]},
    }
    for dotted, value in variant.overrides.items():
        set_key(overrides, dotted, value)
    env = {
        # The exported revision first: PYTHONPATH comes before the venv's editable install.
        "PYTHONPATH": os.pathsep.join([str(variant.source), str(PROBE)]),
        "SIP_BRIDGE_CPU_PROBE_DIR": str(variant.probe_dir),
    }
    variant.bridge = RunningBridge(
        work, overrides, variant.sink.url, env=env, this_tree=variant.name != "today"
    )


def wait_started(variant: Variant) -> None:
    assert variant.bridge is not None
    variant.bridge.wait_ready(600)
    variant.stream = EventStreamClient(variant.bridge.config["captions"]["port"], TOKEN)
    if not variant.stream.connected.wait(10):
        raise RuntimeError(f"{variant.name}: captions stream did not connect")


def cpu_totals(variant: Variant) -> dict[str, float]:
    """Model CPU seconds so far, summed over the workers: partial, final, vad, other."""
    out = {"partial": 0.0, "final": 0.0, "vad": 0.0, "other": 0.0}
    assert variant.probe_dir is not None
    for path in variant.probe_dir.glob("*.json"):
        try:
            totals: dict[str, float] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key, seconds in totals.items():
            thread, model = key.split("|", 1)
            if "silero" in model:
                out["vad"] += seconds
            elif thread == "partials":
                out["partial"] += seconds
            elif thread == "MainThread" and ("moonshine" in model or "model" in model
                                             or model == "in-memory graph"):  # fmt: skip
                out["final"] += seconds
            else:
                out["other"] += seconds
    return out


def info_captions(trace: list[tuple[float, dict[str, Any]]]) -> list[Caption]:
    return [
        Caption(at, True, int(b["utterance"]), str(b["text"]), float(b["start"]), float(b["end"]))
        for at, b in trace
        if b.get("type") == "transcript.final"
    ]


def plan_calls(prompts: list[AlignedPrompt], calls: int, per_call: int, work: Path) -> list[Any]:
    work.mkdir(parents=True, exist_ok=True)
    plans = []
    for i in range(calls):
        mine = prompts[i * per_call : (i + 1) * per_call]
        offsets, t = [], LEAD_S
        for p in mine:
            offsets.append(t)
            t += p.prompt.seconds + GAP_S
        pcm = join_with_silence([p.prompt.pcm() for p in mine], gap_s=GAP_S, lead_s=LEAD_S,
                                tail_s=TAIL_S)  # fmt: skip
        pcap = work / f"c{calls}-{i}.pcap"
        seconds = write_rtp_pcap(pcap, pcm)
        plans.append((list(zip(mine, offsets, strict=True)), pcap, seconds))
    return plans


def run_level(variant: Variant, plans: list[Any], work: Path) -> Level:
    assert variant.bridge is not None and variant.sink is not None and variant.stream is not None
    level = Level()
    sipps = [
        SippCall(
            "127.0.0.1",
            variant.bridge.port,
            pcap,
            audio_s=seconds,
            linger_s=3.0,
            work_dir=work / f"{variant.name}-{i}",
            priority=SIPP_PRIORITY,
        )  # fmt: skip
        for i, (_, pcap, seconds) in enumerate(plans)
    ]
    before = cpu_totals(variant)
    results = run_calls(sipps)
    ids = {r.call_id for r in results}
    variant.sink.log.wait_ended(ids, 30)
    variant.stream.log.wait_ended(ids, 10)
    time.sleep(1.0)  # the probe files are rewritten twice a second
    after = cpu_totals(variant)
    level.cpu = {k: after[k] - before[k] for k in after}
    level.call_seconds = sum(seconds for _, _, seconds in plans)
    for (plan, _, _), result, sipp in zip(plans, results, sipps, strict=True):
        ack, infos = trace_times(sipp.trace_path)
        if not result.ok or ack is None or result.call_id not in variant.sink.log.ended:
            level.failed += 1
            continue
        words = spoken_words(plan, ack)
        level.figures.append(analyse(words, variant.sink.log.captions(result.call_id), ack,
                                     CALL_OFFSET_S))  # fmt: skip
        level.sse.append(analyse(words, variant.stream.log.captions(result.call_id), ack,
                                 CALL_OFFSET_S))  # fmt: skip
        level.info_latencies += analyse(words, info_captions(infos), ack,
                                        CALL_OFFSET_S).final_latencies  # fmt: skip
    return level


def row(calls: int, name: str, lv: Level) -> str:
    lags = [x for f in lv.figures for x in f.word_lags]
    sse = [x for f in lv.sse for x in f.word_lags]
    finals = [x for f in lv.figures for x in f.final_latencies]
    words = len(lags) + sum(f.missed for f in lv.figures)
    missed = sum(f.missed for f in lv.figures)
    wer = speech.wer([f.reference for f in lv.figures], [f.finals_text for f in lv.figures])
    per = max(lv.call_seconds, 1e-9)
    part, fin = lv.cpu.get("partial", 0.0) / per, lv.cpu.get("final", 0.0) / per
    splits = "/".join(
        str(sum(getattr(f, k) for f in lv.figures))
        for k in ("splits_mid_word", "splits_mid_sentence", "splits_at_sentence_end")
    )
    return (
        f"{calls:>5} {name:>6} {pct(lags, 50):>6.2f} {pct(lags, 95):>6.2f} "
        f"{pct(sse, 50):>6.2f} {pct(sse, 95):>6.2f} "
        f"{pct(lv.info_latencies, 50):>6.2f} {pct(lv.info_latencies, 95):>6.2f} "
        f"{pct(finals, 50):>6.2f} {pct(finals, 95):>6.2f} {wer * 100:>5.1f} "
        f"{missed / max(words, 1) * 100:>6.1f} {part:>7.3f} {fin:>7.3f} "
        f"{(part / fin if fin else math.nan):>5.2f} {splits:>8} {lv.failed:>4}"
    )


HEADER = (
    f"{'calls':>5} {'':>6} {'lag50':>6} {'lag95':>6} {'sse50':>6} {'sse95':>6} "
    f"{'info50':>6} {'info95':>6} {'hook50':>6} {'hook95':>6} {'WER%':>5} {'miss%':>6} "
    f"{'part/s':>7} {'fin/s':>7} {'ratio':>5} {'splits':>8} {'fail':>4}"
)
LEGEND = """\
lag: spoken word end -> first caption holding it (webhook; sse: the captions event stream), s.
info/hook: end of a prompt's speech -> its final as SIP INFO / as webhook, s.
WER: finals vs transcripts; miss: words no caption ever held. part/s, fin/s: model CPU seconds
per call-second of partials and finals (ratio = part/fin). splits: finals that ended inside a
prompt, mid-word/mid-sentence/at a sentence end. fail: calls that failed or never ended."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", default="1,8,16,24", help="comma-separated concurrent calls")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per call")
    ap.add_argument("--baseline", default="93bfeb0", help="git revision of 'today'; '' skips it")
    ap.add_argument("--skip-new", action="store_true", help="run the baseline only")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config key of the new variant (dotted, YAML value); repeatable",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="one more variant of the working tree, beside 'new' (to compare levers in one run)",
    )
    ap.add_argument("--keep", type=Path, help="work here and keep it (serve logs), not in /tmp")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    levels = [int(x) for x in args.calls.split(",")]
    processes = max(1, math.ceil(max(levels) / 4))

    pool = aligned_prompts(speech.select(max(2 * max(levels) * args.prompts, 60), 1.5, 6.0))
    random.Random(args.seed).shuffle(pool)
    need = max(levels) * args.prompts
    if len(pool) < need:
        raise SystemExit(f"only {len(pool)} aligned prompts, {need} needed")

    with tempfile.TemporaryDirectory(prefix="bench-word-lag-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        variants = []
        if args.baseline:
            source = export_revision(args.baseline, work / "baseline-src")
            variants.append(Variant("today", source, {}))
        if not args.skip_new:
            variants.append(Variant("new", REPO, _overrides(args.set)))
        for spec in args.variant:
            name, _, items = spec.partition(":")
            variants.append(Variant(name, REPO, _overrides(items.split(",") if items else [])))
        for v in variants:
            start(v, work / v.name, processes, args.workers)
        try:
            for v in variants:
                wait_started(v)
            names = ", ".join(
                f"{v.name} ({args.baseline if v.name == 'today' else 'working tree'}"
                f"{' ' + str(v.overrides) if v.overrides else ''})"
                for v in variants
            )
            print(f"{len(pool)} aligned prompts; {processes} media processes x 4 calls, "
                  f"{args.workers} workers; variants: {names}", flush=True)  # fmt: skip
            print(HEADER, flush=True)
            for calls in levels:
                plans = plan_calls(pool, calls, args.prompts, work / f"level-{calls}")
                for v in variants:
                    lv = run_level(v, plans, work / f"level-{calls}")
                    print(row(calls, v.name, lv), flush=True)
        finally:
            for v in variants:
                if v.stream is not None:
                    v.stream.close()
                if v.bridge is not None:
                    v.bridge.stop()
                if v.sink is not None:
                    v.sink.close()
    print(LEGEND)


def _overrides(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return overrides


if __name__ == "__main__":
    main()

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
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media import wire
from media.silence_gate import SilenceGate, SuppressedStream
from sip_bridge.settings.config import SilenceGateConfig, VadConfig
from tests.support import speech

RATE = 8000
FRAME = RATE // 50  # 20 ms
TICK_S = FRAME / RATE
SPEECH_DBFS = -40.0  # a frame louder than this is speech, for the "true" speech end
NOISE_RMS = 20.0  # noise floor between prompts, int16 units (about -64 dBFS: the gate closes)
_LOUD_MS = (32768.0 * 10.0 ** (SPEECH_DBFS / 20.0)) ** 2
_BATCH_LINE = re.compile(rb"batch of (\d+) \((\d+) finals\) in (\d+) ms")


# -- the calls ----------------------------------------------------------------------------------


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
    prompts = [
        p
        for p in speech.load_prompts()
        if min_s <= p.seconds <= max_s and len(speech.normalize(p.text)) >= 2
    ]
    return [(p.text, p.pcm()) for p in prompts]


# -- the worker process ---------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """The config keys a benchmarked worker gets; everything else keeps the product default."""

    partials_ms: int  # inference.partial_interval_ms (0: partials off)
    max_batch: int = 8  # inference.max_batch
    threads: int = 1  # inference.threads
    min_silence_ms: int = 0  # vad.min_silence_ms; 0 keeps the default
    provider: str = "cpu"  # inference.provider

    def yaml(self, port: int, heartbeat_port: int) -> str:
        vad = f"vad:\n  min_silence_ms: {self.min_silence_ms}\n" if self.min_silence_ms else ""
        return (
            "log_level: DEBUG\n"
            "inference:\n"
            f"  port_base: {port}\n"
            f"  heartbeat_port_base: {heartbeat_port}\n"
            f"  partial_interval_ms: {self.partials_ms}\n"
            f"  max_batch: {self.max_batch}\n"
            f"  threads: {self.threads}\n"
            f"  provider: {self.provider}\n" + vad
        )


class WorkerProcess:
    """``sip_bridge.cli worker`` as a child process, with its config and log under ``workdir``."""

    def __init__(self, workdir: Path, name: str, setup: WorkerSetup) -> None:
        port, heartbeat_port = free_ports(2)
        self.name = name
        self.setup = setup
        self.endpoint = f"tcp://127.0.0.1:{port}"
        cfg = workdir / f"{name}.yaml"
        cfg.write_text(setup.yaml(port, heartbeat_port))
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sip_bridge.cli", "worker"]
            + ["--index", "0", "--config", str(cfg)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
        )

    def wait_ready(self, timeout_s: float = 300.0) -> str:
        """Wait for the worker's "listening" line; returns what ONNX Runtime said it runs on."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()
            if b"listening on" in text:
                found = re.search(rb"ONNX Runtime runs on ([^\n]*)", text)
                return found.group(1).decode() if found else "?"
            if self.proc.poll() is not None:
                sys.exit(f"worker exited ({self.proc.returncode}):\n{text.decode()[-3000:]}")
            time.sleep(0.2)
        sys.exit("worker not ready in time")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def batches(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(items, finals, ms) of each batch logged between two log sizes."""
        with open(self.log_path, "rb") as f:
            f.seek(start)
            text = f.read(end - start)
        return [tuple(map(int, m.groups())) for m in _BATCH_LINE.finditer(text)]  # type: ignore[misc]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# -- one load level -------------------------------------------------------------------------------


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
        values = sorted(self.latencies_ms) + [math.inf] * self.lost
        if not values:
            return math.nan
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    def sustains(self, bar_ms: float, minus_ms: float = 0.0) -> bool:
        """p95 (less ``minus_ms``) within the bar, and every call finished."""
        return self.percentile(0.95) - minus_ms <= bar_ms and self.undone == 0


class Generator:
    """The media side: one PUSH per worker, one PULL for results, one pacing loop.

    Each call is pinned to one worker when it starts (the least loaded by open calls, ties taken
    in turn) and every message of that call goes to that worker, as a media process does.
    """

    def __init__(self, ctx: zmq.Context[Any], endpoints: Sequence[str]) -> None:
        self.pushes: list[zmq.Socket[Any]] = []
        for endpoint in endpoints:
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, 50_000)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(endpoint)
            self.pushes.append(push)
        self.results = ctx.socket(zmq.PULL)
        self.results.setsockopt(zmq.LINGER, 0)
        port = self.results.bind_to_random_port("tcp://127.0.0.1")
        self.reply_to = f"tcp://127.0.0.1:{port}"
        self.received: list[tuple[float, wire.Message]] = []
        self.route: dict[str, int] = {}  # call id -> worker index
        self.open_calls = [0] * len(self.pushes)
        self.tick_lags: list[float] = []  # lateness of each tick of the last play(), seconds
        self.dropped = 0
        self.undecodable = 0
        self._turn = 0

    def close(self) -> None:
        for push in self.pushes:
            push.close(0)
        self.results.close(0)

    def assign(self, call_id: str, worker: int | None = None) -> int:
        """Pin a call to a worker: the given one, else the one with the fewest open calls."""
        if worker is None:
            count = len(self.pushes)
            order = [(self._turn + i) % count for i in range(count)]
            worker = min(order, key=lambda w: self.open_calls[w])
            self._turn = (worker + 1) % count
        self.route[call_id] = worker
        self.open_calls[worker] += 1
        return worker

    def send(self, msg: wire.CallStart | wire.Audio | wire.CallEnd) -> None:
        try:
            self.pushes[self.route[msg.call_id]].send_multipart(
                wire.encode(msg), flags=zmq.NOBLOCK, copy=False
            )
        except zmq.Again:
            self.dropped += 1

    def receive_until(self, deadline: float) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.results.poll(math.ceil(remaining * 1000)):
                return
            for _ in range(10_000):
                try:
                    frames = self.results.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    msg = wire.decode(frames)
                except wire.WireError:  # e.g. a message type newer than this bench
                    self.undecodable += 1
                    continue
                self.received.append((time.monotonic(), msg))
                if isinstance(msg, wire.CallDone) and msg.call_id in self.route:
                    self.open_calls[self.route[msg.call_id]] -= 1

    def send_frame(self, call: Call, k: int) -> None:
        """Frame k of a call through the gate, exactly as the media process's AudioSender does."""
        pcm = call.pcm[k * FRAME : (k + 1) * FRAME].tobytes()
        for offset, run in call.stream.push(pcm):
            self.send(wire.Audio(call.call_id, offset, RATE, run))

    def play(self, calls: list[Call], drain_s: float) -> float:
        """Run every call in real time, then wait for their CallDone. Returns the worst tick lag."""
        ends = {c.call_id: {s.last_frame: i for i, s in enumerate(c.spoken)} for c in calls}
        last_tick = max(c.start_tick + c.frames for c in calls)
        self.tick_lags = []
        t0 = time.monotonic() + 0.05
        for tick in range(last_tick + 1):
            deadline = t0 + tick * TICK_S
            self.receive_until(deadline)
            self.tick_lags.append(time.monotonic() - deadline)
            for call in calls:
                k = tick - call.start_tick
                if k == 0:
                    self.assign(call.call_id)
                    self.send(wire.CallStart(call.call_id, RATE, self.reply_to, call.call_id[:8]))
                if 0 <= k < call.frames:
                    self.send_frame(call, k)
                    index = ends[call.call_id].get(k)
                    if index is not None:
                        call.speech_end_sent[index] = time.monotonic()
                elif k == call.frames:
                    self.send(wire.CallEnd(call.call_id, call.stream.offset, RATE))
        done = {m.call_id for _, m in self.received if isinstance(m, wire.CallDone)}
        pending = {c.call_id for c in calls} - done
        drain_until = time.monotonic() + drain_s
        while pending and time.monotonic() < drain_until:
            seen = len(self.received)
            self.receive_until(min(drain_until, time.monotonic() + 0.2))
            for _, msg in self.received[seen:]:
                if isinstance(msg, wire.CallDone):
                    pending.discard(msg.call_id)
        for call in calls:
            call.done = call.call_id not in pending
        return max(self.tick_lags, default=0.0)


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


def covered_prompt(call: Call, msg: wire.Transcript) -> tuple[str, int] | None:
    """(call id, spoken index) of the prompt a transcript overlaps most, or None."""
    overlaps = [min(msg.end, b) - max(msg.start, a) for a, b in (s.span_s for s in call.spoken)]
    if not overlaps or max(overlaps) <= 0:
        return None
    return call.call_id, int(np.argmax(overlaps))


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


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """This process's utime+stime (all its threads, ZeroMQ's I/O thread included)."""
    times = os.times()
    return times.user + times.system


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


def run_level(
    n: int,
    worker: WorkerProcess,
    gen: Generator,
    pool: list[tuple[str, np.ndarray]],
    rng: np.random.Generator,
    args: argparse.Namespace,
) -> Level:
    calls = make_calls(n, pool, rng, args.duration_s, args.stagger_s)
    return measure(calls, [worker], gen, args.duration_s, args.drain_s)


def warm_up(
    gen: Generator, pool: list[tuple[str, np.ndarray]], worker: int = 0, calls: int = 1
) -> None:
    """Calls sent at once to one worker, so the first model runs' allocations (at up to
    ``calls`` clips a batch) fall outside the levels."""
    pcm = np.concatenate([pool[0][1], np.zeros(RATE, dtype=np.int16)])
    ids = [wire.new_call_id() for _ in range(calls)]
    for call_id in ids:
        gen.assign(call_id, worker)
        gen.send(wire.CallStart(call_id, RATE, gen.reply_to, "warm-up"))
        gen.send(wire.Audio(call_id, 0, RATE, pcm.tobytes()))
        gen.send(wire.CallEnd(call_id, len(pcm), RATE))
    pending = set(ids)
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        seen = len(gen.received)
        gen.receive_until(min(deadline, time.monotonic() + 0.2))
        pending -= {m.call_id for _, m in gen.received[seen:] if isinstance(m, wire.CallDone)}
    if pending:
        sys.exit(f"warm-up calls on worker {worker} never finished")


# -- report ---------------------------------------------------------------------------------------


def fmt_ms(value: float) -> str:
    return "inf" if math.isinf(value) else "-" if math.isnan(value) else f"{value:.0f}"


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
    best = 0
    for level in sorted(levels, key=lambda lv: lv.calls):
        if not level.sustains(bar_ms):
            break
        best = level.calls
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,4,8,12,16,24,32", help="load levels: N,N,...")
    parser.add_argument(
        "--partials-ms",
        default="1000",
        help="partial interval(s), comma-separated, one worker each; 0 = partials off (default "
        "%(default)s; '0,1000' runs both, twice as long)",
    )
    parser.add_argument("--duration-s", type=float, default=30.0, help="call length per level")
    parser.add_argument("--stagger-s", type=float, default=2.0, help="calls start within this")
    parser.add_argument("--drain-s", type=float, default=60.0, help="wait for the last results")
    parser.add_argument("--min-prompt-s", type=float, default=1.0)
    parser.add_argument("--max-prompt-s", type=float, default=10.0)
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
    if not speech.available():
        sys.exit("Asterisk prompts missing: apt-get install asterisk-core-sounds-en-wav")
    levels_n = sorted({int(x) for x in args.calls.split(",") if x.strip()})
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
            worker = WorkerProcess(Path(tmp), f"worker-{partials_ms}", setup)
            ctx: zmq.Context[Any] = zmq.Context()
            gen = Generator(ctx, [worker.endpoint])
            try:
                runs_on = worker.wait_ready()
                warm_up(gen, pool)
                label = f"partials every {partials_ms} ms" if partials_ms else "partials off"
                print(f"\nworker pid {worker.proc.pid}, {label}, ONNX Runtime on {runs_on}")
                print(HEADER, flush=True)
                levels: list[Level] = []
                for n in levels_n:
                    level = run_level(n, worker, gen, pool, rng, args)
                    levels.append(level)
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
                    f"{label}: one worker sustains {largest_sustained(levels, 500)} calls at "
                    f"p95 <= 500 ms, {largest_sustained(levels, 1000)} at p95 <= 1000 ms"
                )
            finally:
                gen.close()
                ctx.term()
                worker.stop()
    print()
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()

"""CPU per call of carrying audio from a media process to a worker: ZeroMQ or a shared-memory ring.

Two real processes (``multiprocessing``, spawn): a *sender* standing in for a media process and a
*receiver* standing in for an inference worker. The sender plays N calls; every 20 ms, against
absolute deadlines (no drift), it takes one fresh 20 ms frame of 8 kHz int16 PCM per call (a new
``bytes`` object, as the PJSIP tap's copy makes) and hands it to the transport, all calls in one
burst as PJSIP's clock thread delivers them. No silence gate: every frame is sent. Each frame is
encoded with the product's ``media.wire.encode(wire.Audio(...))`` (the wire header + PCM) and the
receiver decodes it with ``wire.decode`` and ``np.frombuffer(pcm, "<i2")``, as the worker does, then
checks two marker samples (call index, frame index: a torn or misrouted frame is counted as ``bad``)
and stamps its arrival time. Transports:

    none         the pacing loop alone: frames made and stamped, nothing sent (the baseline)
    codec        the pacing loop + encode + decode + frombuffer + check, in the sender process:
                 the floor every transport below pays; no second process, nothing crosses
    zmq-tcp      PUSH -> PULL over tcp://127.0.0.1, ``send_multipart(copy=False, NOBLOCK)`` /
                 ``poll`` then drain ``recv_multipart(copy=False)``: the product's path today
    zmq-ipc      the same over ipc:// in a temp dir
    shm-poll     a single-producer single-consumer ring in ``multiprocessing.shared_memory``: fixed
                 384-byte slots (u32 length, the wire header, PCM), a write counter the
                 sender publishes after the slot is written and a read counter the receiver
                 publishes after it has copied the slots out (so a slot is never reused under the
                 reader: the receiver copies the ready slots out in one go, since the worker keeps
                 the PCM after the slot is freed). The receiver sleeps ``--poll-ms`` when empty.
    shm-eventfd  the same ring; the sender writes an ``os.eventfd`` once per 20 ms burst, the
                 receiver blocks in ``poll`` on it (20 ms timeout) when the ring is empty.

The counters are aligned 8-byte stores through a ``memoryview``; on x86-64 (TSO) stores are seen in
program order, which is what makes "write the slot, then publish the counter" safe without a fence.
On a weakly ordered CPU (ARM) the ring would need real release/acquire atomics.

CPU is ``getrusage(RUSAGE_SELF)`` (user + sys, every thread, so ZeroMQ's I/O thread is counted) of
each process over its part of the run: the sender from the first deadline to its last send, the
receiver from just before the first deadline to its last frame. Each level runs ``--duration-s``;
one process pair per transport and level.

Columns:
    N          concurrent calls (each 50 frames/s)
    transport  as above
    send recv total   % of one core per call: CPU seconds / run seconds / N * 100
    xport      the transport's own share: total - the ``none`` sender at the same N
    us/frame   xport as CPU microseconds per frame carried (= xport * 200)
    sys        share of send + recv CPU spent in the kernel
    wake/s     context switches per second, both processes (voluntary + involuntary)
    delivered  frames the receiver decoded; lost = frames sent by the schedule but never received
               (queue or ring full, or not there by the end); bad = frames failing the marker check
    p50 p99 max  ms from the sender's stamp just before the send to the receiver's stamp on
               arrival (``time.monotonic`` in both processes: one clock on one host)
    lag        worst lateness of the sender's 20 ms deadlines, ms (large: the sender could not keep
               pace and the figures lie)

The verdict compares transport CPU (xport) of the product's ``zmq-tcp`` with the cheaper shared-
memory variant that delivered every frame with p99 under 20 ms, at the largest N.

Run from the repository root (default: 16, 64 and 256 calls, 10 s each, about 4 minutes):
    .venv/bin/python -m bench.transport
    .venv/bin/python -m bench.transport --calls 16,64 --duration-s 5 --transports zmq-tcp,shm-poll
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context, reduction
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, Final

import numpy as np
import zmq

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.cpu_time import Usage
from bench.harness.frames import FRAME, FRAME_BYTES, RATE, TICK_S
from bench.harness.shm_ring import Ring
from bench.harness.transport_ends import (
    MARKS,
    CodecOutlet,
    NullOutlet,
    Outlet,
    RingOutlet,
    Sink,
    ZmqOutlet,
    call_ids,
    ring_receive,
    source_audio,
    zmq_receive,
)

TRANSPORTS: Final = ("none", "codec", "zmq-tcp", "zmq-ipc", "shm-poll", "shm-eventfd")
ZMQ: Final = ("zmq-tcp", "zmq-ipc")
SHM: Final = ("shm-poll", "shm-eventfd")
START_DELAY_S: Final = 0.5  # from "go" to the first deadline: both sides are ready and idle
GRACE_S: Final = 1.0  # the receiver waits this long after the last deadline for late frames
DELAY_BAR_MS: Final = 20.0


# -- what crosses between the processes -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    transport: str
    calls: int
    frames: int  # per call
    address: str  # ZeroMQ endpoint to bind, or the shared-memory block's name
    ring_slots: int
    poll_s: float


@dataclass(frozen=True, slots=True)
class Ready:
    address: str  # the endpoint the receiver bound


@dataclass(frozen=True, slots=True)
class Go:
    t0: float  # time.monotonic() of the first deadline


@dataclass(frozen=True, slots=True)
class Side:
    usage: Usage
    stamps: bytes  # float64 per (call, frame): send or arrival time, 0.0 = never
    count: int  # frames sent, or received
    dropped: int  # sends refused (queue or ring full)
    bad: int  # received frames failing the marker check
    lag_s: float  # worst lateness of a sender deadline


# -- the two processes -----------------------------------------------------------------------------


def _await(conn: Connection[Any, Any], timeout_s: float) -> Any:
    if not conn.poll(timeout_s):
        raise TimeoutError(f"nothing from the other process in {timeout_s:.0f} s")
    return conn.recv()


def _sleep_until(t: float) -> None:
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def receiver_main(conn: Connection[Any, Any], spec: Spec) -> None:
    efd = reduction.recv_handle(conn) if spec.transport == "shm-eventfd" else -1
    sink = Sink(spec.calls, spec.frames)
    ctx: zmq.Context[Any] | None = None
    sock: zmq.Socket[Any] | None = None
    ring: Ring | None = None
    try:
        if spec.transport in ZMQ:
            ctx = zmq.Context()
            sock = ctx.socket(zmq.PULL)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(spec.address)
            conn.send(Ready(sock.getsockopt_string(zmq.LAST_ENDPOINT)))
        else:
            ring = Ring(SharedMemory(name=spec.address), spec.ring_slots)
            conn.send(Ready(spec.address))
        go: Go = _await(conn, 60.0)
        _sleep_until(go.t0 - 0.05)
        until = go.t0 + spec.frames * TICK_S + GRACE_S
        start = Usage.now()
        if sock is not None:
            zmq_receive(sock, sink, until)
        elif ring is not None:
            ring_receive(ring, sink, until, efd, spec.poll_s)
        used = Usage.now().since(start)
        conn.send(Side(used, sink.stamps.tobytes(), sink.count, 0, sink.bad, 0.0))
    finally:
        if sock is not None:
            sock.close()
        if ctx is not None:
            ctx.term()
        if ring is not None:
            ring.close()
        if efd >= 0:
            os.close(efd)


# -- sending ---------------------------------------------------------------------------------------


def _pace(
    outlet: Outlet, spec: Spec, t0: float, audio: list[bytes], stamps: array[float]
) -> tuple[int, int, float]:
    """Send every call's frame at each 20 ms deadline: ``(sent, dropped, worst lag)``."""
    ids = call_ids(spec.calls)
    frames = spec.frames
    sent = dropped = 0
    lag = 0.0
    for k in range(frames):
        late = time.monotonic() - (t0 + k * TICK_S)
        if late < 0:
            time.sleep(-late)
        elif late > lag:
            lag = late
        at = (k % MARKS) * FRAME_BYTES
        offset = k * FRAME
        for call in range(spec.calls):
            pcm = audio[call][at : at + FRAME_BYTES]  # a fresh copy, as the PJSIP tap makes
            stamps[call * frames + k] = time.monotonic()
            if outlet.send(ids[call], offset, pcm):
                sent += 1
            else:
                dropped += 1
        outlet.flush()
    return sent, dropped, lag


def sender_main(conn: Connection[Any, Any], spec: Spec) -> None:
    efd = reduction.recv_handle(conn) if spec.transport == "shm-eventfd" else -1
    sink = Sink(spec.calls, spec.frames)
    outlet: Outlet
    if spec.transport in ZMQ:
        outlet = ZmqOutlet(spec.address)
    elif spec.transport in SHM:
        outlet = RingOutlet(Ring(SharedMemory(name=spec.address), spec.ring_slots), efd)
    elif spec.transport == "codec":
        outlet = CodecOutlet(sink)
    else:
        outlet = NullOutlet()
    stamps = array("d", bytes(8 * spec.calls * spec.frames))
    audio = source_audio(spec.calls)
    try:
        conn.send(Ready(""))
        go: Go = _await(conn, 60.0)
        _sleep_until(go.t0)
        start = Usage.now()
        sent, dropped, lag = _pace(outlet, spec, go.t0, audio, stamps)
        used = Usage.now().since(start)
    finally:
        outlet.close()
    conn.send(Side(used, stamps.tobytes(), sent, dropped, sink.bad, lag))
    if spec.transport == "codec":  # its receiving side ran here
        conn.send(Side(Usage(0.0, 0.0, 0), sink.stamps.tobytes(), sink.count, 0, sink.bad, 0.0))


# -- one level, in the parent ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    transport: str
    calls: int
    seconds: float
    send: Side
    recv: Side | None  # None: nothing received anywhere (``none``)

    def core_pct(self, usage: Usage) -> float:
        return 100.0 * usage.cpu / self.seconds / self.calls

    @property
    def total_pct(self) -> float:
        recv = self.recv.usage if self.recv is not None else Usage(0.0, 0.0, 0)
        return self.core_pct(self.send.usage) + self.core_pct(recv)

    def delays_ms(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        if self.recv is None:
            return np.zeros(0)
        sent = np.frombuffer(self.send.stamps, dtype=np.float64)
        got = np.frombuffer(self.recv.stamps, dtype=np.float64)
        ok = got > 0.0
        return (got[ok] - sent[ok]) * 1000.0


def ring_slots(calls: int) -> int:
    """Half a second of every call's frames, as a power of two (the ZeroMQ queues hold more)."""
    need = max(1024, calls * 25)
    return 1 << (need - 1).bit_length()


def run_level(transport: str, calls: int, duration_s: float, poll_s: float, tmp: str) -> Row:
    frames = max(1, round(duration_s / TICK_S))
    ctx = get_context("spawn")
    shm: SharedMemory | None = None
    efd = -1
    slots = ring_slots(calls)
    if transport == "zmq-tcp":
        address = "tcp://127.0.0.1:*"
    elif transport == "zmq-ipc":
        address = f"ipc://{tmp}/worker-{calls}.sock"
    elif transport in SHM:
        shm = SharedMemory(create=True, size=Ring.size(slots))
        address = shm.name
    else:
        address = ""
    if transport == "shm-eventfd":
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    procs = []
    conns: list[Connection[Any, Any]] = []
    try:
        roles = [receiver_main, sender_main] if transport in ZMQ + SHM else [sender_main]
        for role in roles:
            here, there = ctx.Pipe()
            spec = Spec(transport, calls, frames, address, slots, poll_s)
            proc = ctx.Process(target=role, args=(there, spec), name=f"bench-{role.__name__}")
            proc.start()
            there.close()
            procs.append(proc)
            conns.append(here)
            if efd >= 0 and proc.pid is not None:
                reduction.send_handle(here, efd, proc.pid)
            ready: Ready = _await(here, 60.0)
            if role is receiver_main:
                address = ready.address  # the sender connects where the receiver bound
        t0 = time.monotonic() + START_DELAY_S
        for conn in conns:
            conn.send(Go(t0))
        limit = START_DELAY_S + frames * TICK_S + GRACE_S + 30.0
        if len(conns) == 2:
            recv: Side | None = _await(conns[0], limit)
            send: Side = _await(conns[1], limit)
        else:
            send = _await(conns[0], limit)
            recv = _await(conns[0], 10.0) if transport == "codec" else None
    finally:
        for proc in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)
        for conn in conns:
            conn.close()
        if efd >= 0:
            os.close(efd)
        if shm is not None:
            shm.close()
            shm.unlink()
    return Row(transport, calls, frames * TICK_S, send, recv)


# -- report -------------------------------------------------------------------------------------

_HEAD = (
    f"{'N':>4}  {'transport':<11} {'send':>6} {'recv':>6} {'total':>6} {'xport':>6} {'us/fr':>6}"
    f" {'sys':>4} {'wake/s':>6} {'delivered':>9} {'lost':>5} {'bad':>3}"
    f" {'p50':>6} {'p99':>6} {'max':>6} {'lag':>5}"
)


def xport_pct(row: Row, baseline: Row | None) -> float | None:
    return None if baseline is None else row.total_pct - row.core_pct(baseline.send.usage)


def format_row(row: Row, baseline: Row | None) -> str:
    recv = row.recv
    send_pct = row.core_pct(row.send.usage)
    recv_txt = (
        f"{row.core_pct(recv.usage):6.3f}"
        if recv is not None and row.transport != "codec"
        else "     -"
    )
    xport = xport_pct(row, baseline)
    x_txt = (
        f"{xport:6.3f} {xport * 200:6.2f}"
        if xport is not None and row.transport != "none"
        else "     -      -"
    )
    both = Usage(0.0, 0.0, 0) if recv is None else recv.usage
    cpu = row.send.usage.cpu + both.cpu
    sys_share = (row.send.usage.sys + both.sys) / cpu if cpu > 0 else 0.0
    wakes = (row.send.usage.switches + both.switches) / row.seconds
    line = (
        f"{row.calls:>4}  {row.transport:<11} {send_pct:6.3f} {recv_txt} {row.total_pct:6.3f}"
        f" {x_txt} {sys_share:4.0%} {wakes:6.0f}"
    )
    if recv is None:
        return (
            line
            + f" {'-':>9} {'-':>5} {'-':>3} {'-':>6} {'-':>6} {'-':>6} {row.send.lag_s * 1000:5.1f}"
        )
    delays = row.delays_ms()
    lost = row.calls * round(row.seconds / TICK_S) - recv.count
    if len(delays):
        p50, p99, top = np.percentile(delays, [50, 99, 100])
        d_txt = f"{p50:6.2f} {p99:6.2f} {top:6.1f}"
    else:
        d_txt = f"{'-':>6} {'-':>6} {'-':>6}"
    return line + f" {recv.count:9d} {lost:5d} {recv.bad:3d} {d_txt} {row.send.lag_s * 1000:5.1f}"


def verdict(rows: list[Row]) -> str:
    top = max(r.calls for r in rows)
    at = {r.transport: r for r in rows if r.calls == top}
    base = at.get("none")
    tcp = at.get("zmq-tcp")
    if base is None or tcp is None:
        return "verdict: needs a zmq-tcp row to compare with"
    good = []
    for name in SHM:
        r = at.get(name)
        if r is None or r.recv is None:
            continue
        lost = r.calls * round(r.seconds / TICK_S) - r.recv.count
        delays = r.delays_ms()
        if (
            lost == 0
            and r.recv.bad == 0
            and len(delays)
            and np.percentile(delays, 99) <= DELAY_BAR_MS
        ):
            good.append(r)
    if not any(name in at for name in SHM):
        return "verdict: needs a shm-* row to compare with"
    if not good:
        bar = f"{DELAY_BAR_MS:.0f} ms"
        return f"verdict: no shared-memory variant delivered every frame within {bar} at N={top}"
    shm = min(good, key=lambda r: r.total_pct)
    x_tcp = xport_pct(tcp, base) or 0.0
    x_shm = xport_pct(shm, base) or 0.0
    winner, loser = (shm.transport, "zmq-tcp") if x_shm < x_tcp else ("zmq-tcp", shm.transport)
    saving = abs(x_tcp - x_shm) / max(x_tcp, x_shm) * 100.0
    total_saving = abs(tcp.total_pct - shm.total_pct) / max(tcp.total_pct, shm.total_pct) * 100.0
    return (
        f"verdict: {winner} wins at N={top}: transport CPU {x_shm:.3f} ({shm.transport})"
        f" vs {x_tcp:.3f} (zmq-tcp) % of a core per call, {saving:.0f}% less than {loser}"
        f" ({total_saving:.0f}% of the sender+receiver total, frame making included)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.transport", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--calls", default="16,64,256", help="comma-separated levels (default 16,64,256)"
    )
    p.add_argument("--duration-s", type=float, default=10.0, help="seconds per level (default 10)")
    p.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help=f"comma-separated, of {', '.join(TRANSPORTS)} (none always runs)",
    )
    p.add_argument("--poll-ms", type=float, default=10.0, help="shm-poll's sleep (default 10)")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.calls.split(",")]
    except ValueError:
        p.error(f"--calls: not a list of integers: {args.calls!r}")
    if any(not 1 <= n <= 32767 for n in args.levels):
        p.error("--calls: each level must be 1..32767")
    names = [x.strip() for x in args.transports.split(",") if x.strip()]
    unknown = sorted(set(names) - set(TRANSPORTS))
    if unknown:
        p.error(f"--transports: unknown {', '.join(unknown)}")
    args.names = ["none"] + [n for n in TRANSPORTS if n in names and n != "none"]
    if not 0.1 <= args.duration_s <= 600:
        p.error("--duration-s must be 0.1..600")
    if not 0.1 <= args.poll_ms <= 1000:
        p.error("--poll-ms must be 0.1..1000")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(
        f"audio transport, media process -> worker: 20 ms frames of {RATE} Hz int16 per call,"
        f" {args.duration_s:g} s per level, {os.cpu_count()} CPUs"
    )
    print("CPU in % of one core per call; delays in ms (send -> arrival)")
    print(_HEAD)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-transport-") as tmp:
        for calls in args.levels:
            baseline: Row | None = None
            for name in args.names:
                row = run_level(name, calls, args.duration_s, args.poll_ms / 1000.0, tmp)
                if name == "none":
                    baseline = row
                rows.append(row)
                print(format_row(row, baseline), flush=True)
            print()
    print(verdict(rows))


if __name__ == "__main__":
    main()

"""Shipping calls' audio to the inference workers: the second half of the audio thread boundary.

:class:`AudioSender` owns one thread, one PUSH socket per worker and one SUB socket for the
workers' heartbeats. It drains its queue in order (so a call's start, audio and end reach its
worker in order), drops silence with each call's :class:`~media.silence_gate.SuppressedStream`, and
sends the rest as wire ``Audio`` messages, PCM as its own frame, with time marks through silence.

Each call is pinned to one worker by a :class:`~sip_bridge.uplink.worker_router.WorkerRouter` fed
with the heartbeats. Every run of audio sent is also kept in the call's
:class:`~media.replay_buffer.ReplayBuffer` until the main loop reports (:class:`Commit`) that a
final or a checkpoint covered it. When the router moves a call (its worker died, got stuck or
restarted), the call gets the next *epoch*: a ``CallStart`` that resumes at the buffer's start with
the next utterance number goes to the new worker, followed by the audio still held, then the live
audio. A :class:`~sip_bridge.uplink.sender_facts.WorkerEpoch` on the ``facts`` queue tells the
main loop which epoch's results are current; it is queued before the ``CallStart`` of that epoch
is sent, so no current result can beat it.

Three paths, each one way:

* ``queue`` (data, in order): PJSIP's clock thread puts ``(call_id, pcm)`` tuples on it, and the
  main loop puts :class:`StartCall`, :class:`Mute`, :class:`Commit`, :class:`EndCall` and
  :class:`Forget` behind the frames they follow. They stay in that order on purpose: a call's
  ``CallEnd`` carries the offset its audio reached and frames after it are dropped, ``Forget``
  drops the call, and ``Mute`` says which frames are hold music, so none of them may overtake
  the call's own frames. (The frames ahead of an ``EndCall`` are its call's last ones: the port
  is destroyed just before it is queued.)
* :meth:`AudioSender.stop` (control): an ``Event`` the thread checks before each item, so
  shutdown is not stuck behind queued audio. The thread then winds down: it sends what is
  queued for the calls (``StartCall``, ``EndCall``...: every call still gets its ``CallEnd``)
  but not their queued audio (``SenderStats.frames_unsent``). At shutdown the media process has
  already ended every call and closes its result socket next, so no transcript of that audio
  could be delivered.
* ``facts`` (back to the main loop): the :mod:`~sip_bridge.uplink.sender_facts` messages.

This module never touches PJSUA2.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from media import wire
from media.curve import CurveKeys
from media.log_sampling import worth_logging
from media.replay_buffer import ReplayBuffer
from media.silence_gate import SilenceGate, SuppressedStream
from sip_bridge.settings.config import (
    HEARTBEAT_TIMEOUT_MS,
    REPLAY_MAX_S,
    STALL_TIMEOUT_S,
    SilenceGateConfig,
)
from sip_bridge.uplink.sender_facts import (
    Admission,
    AudioMark,
    Forgotten,
    SenderCounts,
    SenderFact,
    WorkerEpoch,
    WorkersLive,
)
from sip_bridge.uplink.worker_router import Move, WorkerRouter

log = logging.getLogger(__name__)

# How often the sender reads heartbeats and checks the workers' liveness.
LIVENESS_TICK_S = 0.05
COUNTS_EVERY_S = 1.0  # how often the running totals go to the main loop (its metrics)


@dataclass(frozen=True, slots=True)
class StartCall:
    call_id: str
    sip_call_id: str
    sample_rate: int


@dataclass(frozen=True, slots=True)
class EndCall:
    """No more audio: the call hung up. Its state stays until :class:`Forget`."""

    call_id: str


@dataclass(frozen=True, slots=True)
class Commit:
    """The main loop got a final or a checkpoint: audio before ``offset`` is transcribed and
    delivered, and the next utterance is ``next_utterance``."""

    call_id: str
    offset: int
    next_utterance: int


@dataclass(frozen=True, slots=True)
class Mute:
    """The call is on hold (``muted``) or back: while muted, its frames count as silence, so
    music on hold is never transcribed and the call's timeline keeps running."""

    call_id: str
    muted: bool


@dataclass(frozen=True, slots=True)
class Forget:
    """The main loop is done with the call (its last results arrived, or it gave up)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class _Stop:
    """Only wakes a thread waiting on an empty queue: :meth:`AudioSender.stop` is an Event."""


Item = tuple[str, bytes] | StartCall | EndCall | Commit | Mute | Forget | _Stop


@dataclass(slots=True)
class _CallStream:
    call_id: str
    sip_call_id: str
    sample_rate: int
    stream: SuppressedStream
    replay: ReplayBuffer
    worker: int | None
    epoch: int = 0
    next_utterance: int = 0
    ended: bool = False
    muted: bool = False
    lost_reported: int = 0


@dataclass(slots=True)
class SenderStats:
    frames_in: int = 0
    bytes_in: int = 0
    bytes_sent: int = 0
    messages_sent: int = 0  # audio runs and time marks
    send_dropped: int = 0  # messages
    frames_sent: int = 0  # 20 ms frames' worth of audio sent
    frames_dropped: int = 0  # 20 ms frames' worth of audio a full worker queue refused
    moves: int = 0  # calls placed on another worker after theirs was lost
    replayed_samples: int = 0
    unreplayable_samples: int = 0  # audio the replay bound dropped before a move needed it
    bad_heartbeats: int = 0  # messages on the heartbeat socket that are not wire format
    frames_unsent: int = 0  # frames still queued at stop, not sent (see the module docstring)


@dataclass(frozen=True, slots=True)
class SenderSettings:
    worker_endpoints: tuple[str, ...]
    heartbeat_endpoints: tuple[str, ...]
    reply_to: str
    gate: SilenceGateConfig
    process_index: int = 0  # spreads the processes' first choices over the workers
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_MS / 1000.0
    stall_timeout_s: float = STALL_TIMEOUT_S
    replay_max_s: float = REPLAY_MAX_S
    curve: CurveKeys | None = None  # CURVE to the workers (None: plain, loopback only)
    calls_per_worker: int = 0  # admission limits (WorkerRouter.has_room); 0: off
    max_backlog_s: float = 0.0


class AudioSender:
    def __init__(
        self,
        ctx: zmq.Context[Any],
        settings: SenderSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        # What this thread tells the main loop (sender_facts): the main loop drains it into a
        # SenderView and reads nothing of this object's state.
        self.facts: queue.SimpleQueue[SenderFact] = queue.SimpleQueue()
        self.stats = SenderStats()  # this thread's; the main loop gets SenderCounts
        # call id -> current epoch: this thread's own record (tests read it; the main loop
        # learns it from WorkerEpoch facts).
        self.epochs: dict[str, int] = {}
        self.settings = settings
        self.router = WorkerRouter(
            len(settings.worker_endpoints),
            offset=settings.process_index,
            timeout_s=settings.heartbeat_timeout_s,
            stall_s=settings.stall_timeout_s,
            calls_per_worker=settings.calls_per_worker,
            max_backlog_s=settings.max_backlog_s,
            announce_first_up=settings.process_index == 0,
        )
        # Whether the workers take a new call (WorkerRouter.has_room), as last told the main
        # loop (Admission), which admits or refuses an INVITE by it. It is checked at each
        # heartbeat tick and placement; heartbeats come every 250 ms, so a burst over several
        # media processes overshoots it; the front's own count of this host's calls
        # (source_limits) is exact, and this check covers what it cannot see.
        self._room = True
        self._live: tuple[bool, ...] = (False,) * len(settings.worker_endpoints)
        self._next_counts = 0.0
        self._stopping = threading.Event()
        self._ctx = ctx
        self._clock = clock
        self._calls: dict[str, _CallStream] = {}
        self._sockets: list[zmq.Socket[Any]] = []
        self._beats: list[zmq.Socket[Any]] = []
        self._next_tick = 0.0
        self._thread = threading.Thread(target=self._run, name="audio-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread after the item in hand, without sending the audio still queued (the
        calls' own messages still go: see the module docstring); False if it is still running
        after ``timeout`` (its sockets are still open then: do not ``term`` the context)."""
        self._stopping.set()
        self.queue.put(_Stop())  # wakes a thread waiting on an empty queue
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread ---------------------------------------------------------------------------

    def _open(self) -> None:
        self._sockets = [self._push(e) for e in self.settings.worker_endpoints]
        # One SUB socket per worker: which socket a beat came in on says whose it is (a worker
        # on another host numbers itself among its own host's workers, not ours).
        for endpoint in self.settings.heartbeat_endpoints:
            beats = self._ctx.socket(zmq.SUB)
            beats.setsockopt(zmq.SUBSCRIBE, b"")
            beats.setsockopt(zmq.LINGER, 0)
            if self.settings.curve is not None:
                self.settings.curve.connect_side(beats)
            beats.connect(endpoint)
            self._beats.append(beats)

    def _push(self, endpoint: str) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self._ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 50_000)
        sock.setsockopt(zmq.LINGER, 1000)
        if self.settings.curve is not None:
            self.settings.curve.connect_side(sock)
        sock.connect(endpoint)
        return sock

    def _run(self) -> None:
        self._open()
        try:
            while not self._stopping.is_set():
                try:
                    item = self.queue.get(timeout=LIVENESS_TICK_S)
                except queue.Empty:
                    item = None
                if isinstance(item, tuple):
                    self._audio(*item)
                elif item is not None:
                    self._call_message(item)
                now = self._clock()
                if now >= self._next_tick:
                    self._next_tick = now + LIVENESS_TICK_S
                    self.tick(now)
            self._wind_down()
        finally:
            for sock in self._sockets:
                sock.close()
            for beats in self._beats:
                beats.close()

    def _call_message(self, item: Item) -> None:
        if isinstance(item, StartCall):
            self._start(item)
        elif isinstance(item, EndCall):
            self._end(item)
        elif isinstance(item, Commit):
            self._commit(item)
        elif isinstance(item, Mute):
            self._mute(item)
        elif isinstance(item, Forget):
            self._forget(item)

    def _wind_down(self) -> None:
        """Stopping: what is queued for the calls goes out, in order; their audio does not."""
        for _ in range(self.queue.qsize()):  # the taps are gone: nothing more is coming
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                self.stats.frames_unsent += 1
            else:
                self._call_message(item)
        if self.stats.frames_unsent:
            log.info("audio sender: stopped with %d frames of audio unsent",
                     self.stats.frames_unsent)  # fmt: skip

    def _say_room(self) -> None:
        room = self.router.has_room()
        if room != self._room:
            self._room = room
            self.facts.put(Admission(room))

    def tick(self, now: float) -> None:
        """Read the heartbeats that arrived and act on what they (or their absence) say."""
        moves: list[Move] = []
        for worker, beats in enumerate(self._beats):
            for _ in range(100):  # bounded: a few beats per worker arrive per tick
                try:
                    frames = beats.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    beat = wire.decode(frames)
                except wire.WireError as exc:
                    self.stats.bad_heartbeats += 1
                    if worth_logging(self.stats.bad_heartbeats):
                        log.warning("bad heartbeat dropped (%d so far): %s",
                                    self.stats.bad_heartbeats, exc)  # fmt: skip
                    continue
                if isinstance(beat, wire.Heartbeat):
                    beat = dataclasses.replace(beat, worker=worker)
                    moves += self.router.heartbeat(beat, now)
        moves += self.router.check(now)
        for source in sorted({m.source for m in moves if m.source is not None}):
            self._reset_socket(source)
        for move in moves:
            self._move(move)
        self._say_room()
        live = tuple(self.router.is_live(w) for w in range(len(self._live)))
        if live != self._live:
            self._live = live
            self.facts.put(WorkersLive(live))
        if now >= self._next_counts:
            self._next_counts = now + COUNTS_EVERY_S
            st = self.stats
            self.facts.put(
                SenderCounts(st.frames_in, st.frames_sent, st.frames_dropped, st.bad_heartbeats)
            )

    # -- calls --------------------------------------------------------------------------------

    def _send(self, worker: int, msg: wire.Message, call_id: str) -> bool:
        try:
            self._sockets[worker].send_multipart(wire.encode(msg), flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            self.stats.send_dropped += 1
            log.warning("call %s: worker %d queue full, message dropped", call_id, worker)
            return False

    def _start(self, s: StartCall) -> None:
        g = self.settings.gate
        gate = SilenceGate(s.sample_rate, g.threshold_dbfs, g.hangover_ms, g.preroll_ms)
        worker = self.router.assign(s.call_id)
        self._say_room()
        replay = ReplayBuffer(int(self.settings.replay_max_s * s.sample_rate))
        call = _CallStream(
            s.call_id, s.sip_call_id, s.sample_rate, SuppressedStream(gate), replay, worker
        )
        self._calls[s.call_id] = call
        self.epochs[s.call_id] = 0
        self.facts.put(WorkerEpoch(s.call_id, 0))  # before the CallStart goes out
        if worker is None:
            log.warning("call %s: no live inference worker; its audio is kept until one is up",
                        s.call_id)  # fmt: skip
            return
        log.info("call %s: on worker %d", s.call_id, worker)
        start = wire.CallStart(s.call_id, s.sample_rate, self.settings.reply_to, s.sip_call_id)
        self._send(worker, start, s.call_id)

    def _audio(self, call_id: str, pcm: bytes) -> None:
        call = self._calls.get(call_id)
        if call is None or call.ended:  # a frame after the call ended: nothing to do with it
            return
        self.stats.frames_in += 1
        self.stats.bytes_in += len(pcm)
        if call.muted:
            pcm = bytes(len(pcm))
        for offset, run in call.stream.push(pcm):
            call.replay.append(offset, run)
            if call.worker is None:
                continue
            msg = wire.Audio(call_id, offset, call.sample_rate, run, call.epoch)
            frames = len(run) * 25 // call.sample_rate  # 16-bit samples, 50 frames a second
            if self._send(call.worker, msg, call_id):
                self.stats.bytes_sent += len(run)
                self.stats.messages_sent += 1
                self.stats.frames_sent += frames
            else:
                self.stats.frames_dropped += frames
        self.facts.put(AudioMark(call_id, call.stream.offset, self._clock()))
        self._report_lost(call)

    def _end(self, e: EndCall) -> None:
        call = self._calls.get(e.call_id)
        if call is None or call.ended:
            return
        call.ended = True
        if call.worker is not None:
            msg = wire.CallEnd(e.call_id, call.stream.offset, call.sample_rate, call.epoch)
            self._send(call.worker, msg, e.call_id)

    def _commit(self, c: Commit) -> None:
        call = self._calls.get(c.call_id)
        if call is None or c.next_utterance < call.next_utterance:
            return
        call.next_utterance = c.next_utterance
        call.replay.commit(c.offset)

    def _mute(self, m: Mute) -> None:
        call = self._calls.get(m.call_id)
        if call is not None:
            call.muted = m.muted

    def _forget(self, f: Forget) -> None:
        self._calls.pop(f.call_id, None)
        self.epochs.pop(f.call_id, None)
        self.router.release(f.call_id)
        self.facts.put(Forgotten(f.call_id))

    def _report_lost(self, call: _CallStream) -> None:
        lost = call.replay.lost_samples
        if lost > call.lost_reported:
            self.stats.unreplayable_samples += lost - call.lost_reported
            if not call.lost_reported:
                log.warning("call %s: no worker confirmed its audio for %.0f s; older audio can "
                            "no longer be replayed", call.call_id,
                            self.settings.replay_max_s)  # fmt: skip
            call.lost_reported = lost

    # -- failover -----------------------------------------------------------------------------

    def _move(self, move: Move) -> None:
        call = self._calls.get(move.call_id)
        if call is None:
            return
        call.worker = move.target
        if move.target is None:
            log.warning("call %s: %s (worker %s) and no other is live; its audio is kept until "
                        "one is up", call.call_id, move.reason, move.source)  # fmt: skip
            return
        call.epoch += 1
        self.epochs[call.call_id] = call.epoch
        self.facts.put(WorkerEpoch(call.call_id, call.epoch))  # before this epoch's CallStart
        self.stats.moves += 1
        resume = call.replay.start
        runs = call.replay.runs()
        replayed = sum(len(pcm) // 2 for _, pcm in runs)
        self.stats.replayed_samples += replayed
        rate = call.sample_rate
        log.warning(
            "call %s: %s (worker %s); moved to worker %d (epoch %d), replaying %.2f s from %.2f s,"
            " utterance %d on", call.call_id, move.reason, move.source, move.target, call.epoch,
            replayed / rate, resume / rate, call.next_utterance,
        )  # fmt: skip
        start = wire.CallStart(
            call.call_id, rate, self.settings.reply_to, call.sip_call_id,
            call.epoch, resume, call.next_utterance,
        )  # fmt: skip
        self._send(move.target, start, call.call_id)
        for offset, pcm in runs:
            self._send(move.target, wire.Audio(call.call_id, offset, rate, pcm, call.epoch),
                       call.call_id)  # fmt: skip
        if call.stream.sent_until > resume:  # how far the call has got, in silence or not
            mark = wire.Audio(call.call_id, call.stream.sent_until, rate, b"", call.epoch)
            self._send(move.target, mark, call.call_id)
        if call.ended:
            end = wire.CallEnd(call.call_id, call.stream.offset, rate, call.epoch)
            self._send(move.target, end, call.call_id)

    def _reset_socket(self, worker: int) -> None:
        """Drop what is queued for a lost worker: a restarted one must not get stale audio."""
        if not self._sockets:
            return
        old = self._sockets[worker]
        old.close(linger=0)
        self._sockets[worker] = self._push(self.settings.worker_endpoints[worker])

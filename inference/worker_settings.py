"""A worker's settings (:class:`WorkerSettings`) and its counters (:class:`WorkerStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.batching import BatchPolicy
from inference.turn_taking import TurnPolicy
from media.curve import CurveKeys
from media.endpointing import EndpointerSettings


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    endpoint: str  # where this worker's PULL socket binds
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    endpointing: EndpointerSettings = field(default_factory=EndpointerSettings)
    # A call's partials at most this often (0 disables them); see partial_scheduler.
    partial_interval_s: float = 0.3
    partial_min_new_s: float = 0.2  # new audio before another partial of an utterance
    partial_cpu_share: float = 1.0  # of the partial thread's time partials may use
    # When a pausing utterance's early final may end it before min_silence_ms (turn_taking).
    turn: TurnPolicy = field(default_factory=TurnPolicy)
    # A live call sends audio or a time mark every 40 ms; one silent this long lost its media
    # process, and is ended here so its state does not leak.
    call_idle_timeout_s: float = 30.0
    poll_interval_s: float = 0.02
    index: int = 0  # this worker's number, reported in heartbeats
    heartbeat_endpoint: str | None = None  # where the heartbeat PUB socket binds; None: no beats
    heartbeat_interval_s: float = 0.25
    # Between utterances, tell the media side at most this often that it may drop old audio.
    checkpoint_interval_s: float = 1.0
    # Decode an utterance's final during the silence wait that ends it (see Transcriber.speculate).
    early_finals: bool = True
    # Partials run on their own thread this much nicer than the loop (see partial_runner);
    # None: in the loop, between finals.
    partial_nice: int | None = 10
    # CURVE on every socket to and from the media processes (None: plain, loopback only).
    curve: CurveKeys | None = None


@dataclass(slots=True)
class WorkerStats:
    messages: int = 0
    bad_messages: int = 0  # refused: not wire format, wrong type or rate, unusable reply_to
    bad_reply_to: int = 0  # of which: a CallStart whose reply_to ZeroMQ cannot connect to
    unknown_call: int = 0
    utterances: int = 0
    partials: int = 0
    batches: int = 0
    batch_items: int = 0
    model_seconds: float = 0.0
    audio_seconds: float = 0.0
    expired_calls: int = 0
    stale_messages: int = 0  # from an earlier placement of a call (it moved away and back)
    partials_dropped: int = 0  # their utterance ended or paused while they ran
    turns_ended_early: int = 0  # finals sent at a short pause because the text ended the turn
    resumed_calls: int = 0
    early_finals_used: int = 0  # finals whose decoding was done or under way at the endpoint
    early_finals_wasted: int = 0  # speech resumed: that decoding was shown as a partial only
    results_dropped: int = 0  # the media process was not reading them (its queue full)

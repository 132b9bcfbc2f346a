"""What a worker keeps per call (:class:`CallState`), per early final (:class:`EarlyFinal`) and per
decoding it queues (:class:`Job`): the :class:`~inference.transcriber.Transcriber`'s records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.silero import VadStream
from media import wire
from media.endpointing import Endpointer


@dataclass(slots=True)
class EarlyFinal:
    """A final decoded early, while its utterance pauses (see :meth:`Transcriber.speculate`)."""

    index: int
    start: int
    end: int
    result: wire.Transcript | None = None  # the decoding, once done
    promoted: bool = False  # the utterance ended exactly here: the decoding is its final


@dataclass(slots=True)
class CallState:
    call_id: str
    sample_rate: int
    reply_to: str
    vad: VadStream
    endpointer: Endpointer
    window: int
    epoch: int = 0
    pending: list[np.ndarray] = field(default_factory=list)  # received, not yet VAD'ed
    pending_offset: int = 0  # the offset of the first pending sample
    next_offset: int = 0  # the offset just past the last sample received
    outstanding: int = 0  # finals queued or running
    ending: bool = False
    last_seen: float = 0.0
    # Finals leave in utterance order, whatever order their batches ran in.
    next_final: int = 0
    held: dict[int, wire.Transcript] = field(default_factory=dict)
    checkpoint: int = 0  # the offset of the last checkpoint sent (or the resume offset)
    spec: EarlyFinal | None = None
    # The open utterance's stream (StreamingSpeechModel state) and its partials so far.
    stream_index: int = -1  # the utterance the stream belongs to
    stream: Any = None
    captioned: int = 0  # samples of the utterance in the last partial started
    last_partial_at: float | None = None


@dataclass(frozen=True, slots=True)
class Job:
    owner: CallState  # results of a call that was dropped or replaced meanwhile are discarded
    call_id: str
    utterance: int
    start: int  # samples at the call's rate
    end: int
    speech_end: int
    final: bool
    audio: np.ndarray  # float32, 16 kHz
    speculative: bool = False  # an early final (Transcriber.speculate)
    state: Any = None  # the utterance's stream state when the job was made

"""The speech model interface: what an inference worker needs from any speech-to-text model.

It owns the ``SpeechModel`` protocol and its answer type, ``Transcription``, so that Moonshine (an
offline encoder-decoder) can be swapped for another model without touching the workers, and the
incremental form the workers decode live utterances through, ``StreamingSpeechModel``: a stream
per utterance, audio in as it grows, a hypothesis out each time. ``DraftedStreams`` gives any
``SpeechModel`` that form (each step re-decodes the utterance with the previous hypothesis as its
draft); a streaming model (a transducer) implements it directly, consuming only the new audio.
It must never import ONNX Runtime or any model's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True, slots=True)
class Transcription:
    """One clip's text.

    ``confidence`` is in [0, 1]: the geometric mean of the probabilities of the tokens the model
    chose (end token included); 0.0 when the model did not run (a clip too short to hold speech).
    ``tokens`` counts the text tokens emitted, ``token_ids`` are those tokens (a model without
    token ids leaves it empty): given back as the draft of a later decoding of the same audio
    grown longer. ``draft_kept`` says how many tokens of the draft it came with were kept.
    """

    text: str
    confidence: float
    tokens: int
    token_ids: tuple[int, ...] = ()
    draft_kept: int = 0


class SpeechModel(Protocol):
    """Turns whole clips of speech into text, many clips per call."""

    @property
    def sample_rate(self) -> int:
        """The rate ``transcribe`` expects, in Hz."""
        ...

    def transcribe(
        self, clips: Sequence[np.ndarray], drafts: Sequence[Sequence[int]] | None = None
    ) -> list[Transcription]:
        """One ``Transcription`` per clip, in order.

        Each clip is a float32 mono waveform in [-1, 1] at ``sample_rate``; an empty sequence
        gives an empty list. ``drafts`` (one per clip, possibly empty) are token ids each answer
        is likely to start with, such as the ``token_ids`` of an earlier decoding of a prefix of
        the clip: they may make decoding cheaper, never change its answer (a model with no use
        for them ignores them).
        """
        ...


@dataclass(frozen=True, slots=True)
class StreamStep:
    """One decoding of a live utterance: its ``state`` (from ``open_stream`` or the previous
    step), ``audio`` (the utterance from its start, as the previous step's audio grown longer, or
    cut back at the utterance's end) and whether this answer is ``final`` (the audio ends with
    the utterance: no more will come; a final may still be followed by more steps if the pause
    that ended it turns out not to, so a stream is never closed by it)."""

    state: Any
    audio: np.ndarray
    final: bool = False


@runtime_checkable
class StreamingSpeechModel(Protocol):
    """Decodes live utterances incrementally, many streams per call.

    A stream's state is immutable: ``step`` returns the next one beside each answer, so two
    steps of one stream can run at once (a partial on its thread, the final in the loop) and the
    caller keeps whichever state belongs to the answer it uses.
    """

    @property
    def sample_rate(self) -> int: ...

    def open_stream(self) -> Any:
        """The state of a new utterance, before any audio."""
        ...

    def step(self, steps: Sequence[StreamStep]) -> list[tuple[Transcription, Any]]:
        """Each step's hypothesis of its whole utterance so far, and the stream's next state."""
        ...


# Zeros appended to a growing utterance's audio before decoding a partial. Cut in the middle of
# speech, the audio ends in a half word that Moonshine tends to answer with a loop of repeated
# words running to its token limit; a tenth of a second of silence after it removed most of them
# (measured on the Asterisk prompts cut at random points: extra words 340 -> 59, and 11% less
# decoding time per partial).
PARTIAL_TAIL_S = 0.1


@dataclass(frozen=True, slots=True)
class DraftState:
    """``DraftedStreams``' state of an utterance: the tokens of its last hypothesis."""

    tokens: tuple[int, ...] = ()


class DraftedStreams:
    """``StreamingSpeechModel`` over an offline ``SpeechModel`` that takes drafts.

    Each step decodes the whole utterance again, with the last hypothesis's tokens as the
    draft: the model checks them in one pass and decodes on from where they stop holding, so a
    step costs the encoder plus a few decoder steps instead of a whole decoding, and its answer
    is exactly what decoding from scratch would give. Partials get ``PARTIAL_TAIL_S`` of silence
    appended; finals are decoded as they are (their audio already ends in silence).

    ``partial_model`` (default: ``model``) decodes the partial steps: a cheaper approximation
    of ``model`` (Moonshine's INT8 encoder), whose answers stay drafts for the finals, which
    ``model`` always decodes. Where the two disagree the final's draft holds for fewer tokens:
    it costs decoder steps, never the final's text.
    """

    def __init__(
        self,
        model: SpeechModel,
        partial_tail_s: float = PARTIAL_TAIL_S,
        partial_model: SpeechModel | None = None,
    ) -> None:
        if partial_tail_s < 0:
            raise ValueError(f"partial_tail_s must be >= 0, got {partial_tail_s}")
        self.model = model
        self.partial_model = partial_model or model
        if self.partial_model.sample_rate != model.sample_rate:
            raise ValueError("partial_model must take the same sample rate as model")
        self._tail = np.zeros(int(partial_tail_s * model.sample_rate), dtype=np.float32)

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def open_stream(self) -> DraftState:
        return DraftState()

    def step(self, steps: Sequence[StreamStep]) -> list[tuple[Transcription, DraftState]]:
        drafts = [_draft(s.state) for s in steps]
        answers: list[Transcription | None] = [None] * len(steps)
        for model, final in ((self.model, True), (self.partial_model, False)):
            picked = [i for i, s in enumerate(steps) if s.final == final]
            if not picked:
                continue
            clips = [
                steps[i].audio
                if final or not self._tail.size
                else np.concatenate((steps[i].audio, self._tail))
                for i in picked
            ]
            for i, answer in zip(
                picked, model.transcribe(clips, [drafts[i] for i in picked]), strict=True
            ):
                answers[i] = answer
        return [(a, DraftState(a.token_ids)) for a in answers if a is not None]


def _draft(state: object) -> tuple[int, ...]:
    if not isinstance(state, DraftState):
        raise TypeError(f"not a DraftedStreams state: {type(state).__name__}")
    return state.tokens

"""The speech model interface: what an inference worker needs from any speech-to-text model.

It owns the ``SpeechModel`` protocol and its answer type, ``Transcription``, so that Moonshine (an
offline encoder-decoder) can be swapped for another model without touching the workers. It must
never import ONNX Runtime or any model's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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

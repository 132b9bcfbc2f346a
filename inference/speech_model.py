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
    ``tokens`` counts the text tokens emitted.
    """

    text: str
    confidence: float
    tokens: int


class SpeechModel(Protocol):
    """Turns whole clips of speech into text, many clips per call."""

    @property
    def sample_rate(self) -> int:
        """The rate ``transcribe`` expects, in Hz."""
        ...

    def transcribe(self, clips: Sequence[np.ndarray]) -> list[Transcription]:
        """One ``Transcription`` per clip, in order.

        Each clip is a float32 mono waveform in [-1, 1] at ``sample_rate``. Clips of similar length
        batch best; callers should bucket by length. An empty sequence gives an empty list.
        """
        ...

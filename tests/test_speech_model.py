"""DraftedStreams, the streaming form over an offline model, with fake models (sans-IO)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from inference.speech_model import (
    DraftedStreams,
    DraftState,
    StreamingSpeechModel,
    StreamStep,
    Transcription,
)


class Recorder:
    """Answers each clip with its length and the model's name; remembers what it was given."""

    def __init__(self, name: str, rate: int = 16000) -> None:
        self.name, self.rate = name, rate
        self.calls: list[tuple[list[int], list[tuple[int, ...]]]] = []

    @property
    def sample_rate(self) -> int:
        return self.rate

    def transcribe(
        self, clips: Sequence[np.ndarray], drafts: Sequence[Sequence[int]] | None = None
    ) -> list[Transcription]:
        assert drafts is not None
        self.calls.append(([c.size for c in clips], [tuple(d) for d in drafts]))
        return [Transcription(f"{self.name}:{c.size}", 1.0, 1, token_ids=(c.size,)) for c in clips]


def test_partials_go_to_the_partial_model_and_finals_to_the_exact_one() -> None:
    exact, rough = Recorder("exact"), Recorder("rough")
    streams = DraftedStreams(exact, partial_tail_s=0.01, partial_model=rough)
    assert isinstance(streams, StreamingSpeechModel)
    steps = [
        StreamStep(DraftState((1, 2)), np.zeros(800, np.float32)),
        StreamStep(DraftState((3,)), np.zeros(900, np.float32), final=True),
        StreamStep(streams.open_stream(), np.zeros(1000, np.float32)),
    ]
    answers = streams.step(steps)
    # in the steps' order, each from its own model; the tail only on partials
    assert [a.text for a, _ in answers] == ["rough:960", "exact:900", "rough:1160"]
    assert exact.calls == [([900], [(3,)])]
    assert rough.calls == [([960, 1160], [(1, 2), ()])]
    # each answer's tokens are its stream's next draft
    assert [s for _, s in answers] == [DraftState((960,)), DraftState((900,)), DraftState((1160,))]


def test_without_a_partial_model_one_model_decodes_both() -> None:
    exact = Recorder("exact")
    streams = DraftedStreams(exact, partial_tail_s=0.0)
    answers = streams.step(
        [StreamStep(DraftState(), np.zeros(5, np.float32), final=f) for f in (False, True)]
    )
    assert [a.text for a, _ in answers] == ["exact:5", "exact:5"]
    assert len(exact.calls) == 2  # finals and partials never share a model call


def test_a_partial_model_at_another_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="sample rate"):
        DraftedStreams(Recorder("a"), partial_model=Recorder("b", rate=8000))


def test_a_foreign_state_is_refused() -> None:
    streams = DraftedStreams(Recorder("a"))
    with pytest.raises(TypeError, match="DraftedStreams state"):
        streams.step([StreamStep(object(), np.zeros(5, np.float32))])

"""The partial thread: one batch at a time, results back to the loop, a lower CPU priority."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from inference.partial_runner import Finished, PartialRunner
from inference.speech_model import StreamStep, Transcription


class RecordingModel:
    """Answers each step with its audio's length (the state counts the steps); notes the nice
    value of the thread it ran on."""

    sample_rate = 16000

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.nice: list[int] = []

    def open_stream(self) -> int:
        return 0

    def step(self, steps: Sequence[StreamStep]) -> list[tuple[Transcription, int]]:
        self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        if self.fail:
            raise RuntimeError("model broke")
        return [(Transcription(str(len(s.audio)), 1.0, 1), s.state + 1) for s in steps]


def wait(runner: PartialRunner) -> Finished:
    for _ in range(1000):  # bounded: each turn waits 10 ms at most
        done = runner.poll()
        if done is not None:
            return done
        threading.Event().wait(0.01)
    raise AssertionError("no result")


def test_a_batch_comes_back_with_its_token_on_a_nicer_thread() -> None:
    model = RecordingModel()
    runner = PartialRunner(model, nice_delta=3)
    try:
        steps = [StreamStep(0, np.zeros(10, np.float32)), StreamStep(4, np.zeros(20, np.float32))]
        runner.submit("jobs", steps)
        assert runner.busy
        with pytest.raises(RuntimeError):
            runner.submit("more", [])  # one batch at a time
        done = wait(runner)
        assert done.token == "jobs"
        assert [(r.text, state) for r, state in done.results] == [("10", 1), ("20", 5)]
        assert not runner.busy and done.seconds >= 0
        assert model.nice == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + 3)]
    finally:
        runner.stop()


def test_a_model_error_reaches_the_loop() -> None:
    runner = PartialRunner(RecordingModel(fail=True))
    try:
        runner.submit(None, [StreamStep(0, np.zeros(10, np.float32))])
        with pytest.raises(RuntimeError, match="model broke"):
            wait(runner)
    finally:
        runner.stop()

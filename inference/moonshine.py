"""Moonshine base-en on ONNX Runtime: one encoder run per clip, then all clips decoded together.

Each clip is encoded alone: the encoder has no padding mask, so zero-padding a clip to batch it
with longer ones changes what the model hears (far too much padding can empty its answer), and
on the CPU a batched encoder run costs the same per clip anyway (measured: 31-33 ms per 3 s
clip at batch 1 to 16). The decoder is where batching pays (a step is bound by reading its
weights: 6.6 ms for one row, 14 ms for eight), and with ``moonshine_graph``'s masks it batches
clips of any lengths exactly, each row decoding as if alone (``moonshine_decoding``).

A clip may come with a *draft*: tokens its answer probably starts with, such as the previous
partial of the same, now longer, utterance. The decoder checks the whole draft in one call and
decodes on from the first token it disagrees with: the same answer, for much less work.

This module owns running the model. It never resamples, never cuts audio into utterances, never
chooses providers or converts files (``providers`` and ``model_files`` do). Call it from one
thread at a time per instance (the worker's loop and its partial thread share one: ONNX Runtime
sessions take concurrent runs, each run's buffers are its own).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from inference.model_files import ModelFiles
from inference.moonshine_decoding import BatchDecoder, Decoded
from inference.providers import ProviderChoice, session_options
from inference.speech_model import SAMPLE_RATE, Transcription
from inference.tokenizer import Tokenizer

log = logging.getLogger(__name__)

MIN_CLIP_SECONDS = 0.1
# Moonshine's own decoding bound: speech rarely needs more tokens per second than this.
TOKENS_PER_SECOND = 6.5
EXTRA_TOKENS = 4
# Clip lengths the warm-up runs at: short answers, the prompts' mean, the VAD's usual cap.
WARM_UP_SECONDS = (2.0, 5.0, 10.0)

_EMPTY = Transcription(text="", confidence=0.0, tokens=0)


class MoonshineModel:
    """``SpeechModel`` for Moonshine base-en files prepared by ``model_files.ensure_converted``.

    ``warm_up_max_batch`` > 0 runs every batch size from it down to 1 at each of
    ``warm_up_seconds`` before returning (see ``warm_up``): worth it on CUDA, where the arena and
    the kernels are set up per shape; on the CPU it costs ~40 s at batch 8 and gains little.
    """

    def __init__(
        self,
        files: ModelFiles,
        providers: ProviderChoice,
        threads: int = 1,
        *,
        warm_up_max_batch: int = 0,
        warm_up_seconds: Sequence[float] = WARM_UP_SECONDS,
    ) -> None:
        if warm_up_max_batch < 0:
            raise ValueError(f"warm_up_max_batch must be >= 0, got {warm_up_max_batch}")
        options = session_options(threads)
        self._files, self._providers, self._options = files, providers, options
        self._encoder = ort.InferenceSession(
            str(files.encoder), options, providers=providers.session_providers()
        )
        decoder = ort.InferenceSession(
            str(files.decoder), options, providers=providers.session_providers()
        )
        for session in (self._encoder, decoder):
            running = session.get_providers()
            if not running or running[0] != providers.name:
                log.warning("Moonshine session runs on %s, not %s", running, providers.name)
        self._tokenizer = Tokenizer.load(files.tokenizer)
        self._encoder_output = self._encoder.get_outputs()[0].name
        try:
            self._decoder = BatchDecoder(decoder, providers, self._tokenizer.vocab_size)
        except ValueError as exc:
            raise ValueError(f"{files.decoder}: {exc}") from exc
        self._device = self._decoder.device
        if warm_up_max_batch:
            self.warm_up(warm_up_max_batch, warm_up_seconds)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def transcribe(
        self, clips: Sequence[np.ndarray], drafts: Sequence[Sequence[int]] | None = None
    ) -> list[Transcription]:
        if drafts is not None and len(drafts) != len(clips):
            raise ValueError(f"{len(drafts)} drafts for {len(clips)} clips")
        waves = [_as_waveform(clip, index) for index, clip in enumerate(clips)]
        results: list[Transcription] = [_EMPTY] * len(waves)
        min_samples = int(MIN_CLIP_SECONDS * SAMPLE_RATE)
        runnable = [i for i, wave in enumerate(waves) if wave.size >= min_samples]
        if not runnable:
            return results
        answers = self._run_batch(
            [waves[i] for i in runnable],
            [list(drafts[i]) for i in runnable] if drafts is not None else None,
        )
        for index, answer in zip(runnable, answers, strict=True):
            results[index] = Transcription(
                text=answer.text(self._tokenizer),
                confidence=answer.confidence(),
                tokens=len(answer.tokens),
                token_ids=answer.tokens,
                draft_kept=answer.kept_draft,
            )
        return results

    def for_partials(self) -> MoonshineModel:
        """A model for partials: this one's decoder and tokenizer with the INT8 encoder
        (``model_files``), about half the encoder's time on the CPU for slightly different text.
        Itself where there is no INT8 encoder or it runs on CUDA (whose provider lacks the
        dynamic-quantization kernels: the INT8 products would fall back to the CPU)."""
        path = self._files.partial_encoder
        if path is None or self._providers.is_cuda:
            return self
        sibling = copy.copy(self)
        sibling._encoder = ort.InferenceSession(
            str(path), self._options, providers=self._providers.session_providers()
        )
        sibling._encoder_output = sibling._encoder.get_outputs()[0].name
        return sibling

    def warm_up(self, max_batch: int, clip_seconds: Sequence[float] = WARM_UP_SECONDS) -> float:
        """Run every batch size from ``max_batch`` down to 1 at each clip length, longest first,
        decoding to the token limit with one row stopping halfway; return the seconds it took.

        A session allocates its memory arena (and on CUDA picks its kernels) on the first run of
        each shape. Doing that here, largest shapes first, makes the arena grow at start-up in a
        few big chunks that the smaller shapes later reuse, not in the middle of a live call.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        started = time.perf_counter()
        noise = np.random.default_rng(0)
        for seconds in sorted(clip_seconds, reverse=True):
            samples = max(int(seconds * SAMPLE_RATE), int(MIN_CLIP_SECONDS * SAMPLE_RATE))
            for batch in range(max_batch, 0, -1):
                waves = list(noise.uniform(-1e-3, 1e-3, (batch, samples)).astype(np.float32))
                limit = _token_limit(samples)
                limits = [limit] * batch
                if batch > 1:
                    limits[-1] = max(1, limit // 2)  # so the row-dropping path runs too
                self._run_batch(waves, None, limits=limits, stop_at_end=False)
        elapsed = time.perf_counter() - started
        log.info(
            "Moonshine warm-up: batch 1-%d at %s s in %.1f s",
            max_batch,
            "/".join(f"{s:g}" for s in sorted(clip_seconds)),
            elapsed,
        )
        return elapsed

    def _run_batch(
        self,
        waves: Sequence[np.ndarray],
        drafts: Sequence[Sequence[int]] | None,
        *,
        limits: Sequence[int] | None = None,
        stop_at_end: bool = True,
    ) -> list[Decoded]:
        hidden = [self._encode(wave) for wave in waves]
        if limits is None:
            limits = [_token_limit(wave.size) for wave in waves]
        return self._decoder.decode(hidden, limits, drafts, stop_at_end=stop_at_end)

    def _encode(self, wave: np.ndarray) -> np.ndarray:
        """The encoder's output for one clip, ``[T, D]`` on the host (small: 26 frames a
        second; the decoder pads and uploads each batch once)."""
        (hidden,) = self._encoder.run([self._encoder_output], {"input_values": wave[None, :]})
        out: np.ndarray = hidden[0]
        return out


def _token_limit(samples: int) -> int:
    return math.ceil(TOKENS_PER_SECOND * samples / SAMPLE_RATE) + EXTRA_TOKENS


def _as_waveform(clip: np.ndarray, index: int) -> np.ndarray:
    wave = np.asarray(clip, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"clip {index}: expected a mono waveform (1-D), got shape {wave.shape}")
    return wave

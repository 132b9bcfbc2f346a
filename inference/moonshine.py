"""Moonshine base-en on ONNX Runtime: batched encoder, batched greedy decoding with a KV cache.

A batch of clips is zero-padded to its longest clip and encoded in one run. Decoding then advances
all unfinished rows together, one token per step: step 0 runs the merged decoder's no-cache branch
(empty pasts) and yields the cross-attention (``encoder``) keys and values, which stay fixed; later
steps feed back only the self-attention (``decoder``) presents. A row that emits the end token or
reaches its token limit leaves the batch at once (its row is dropped from every tensor), so short
answers never pay for long ones.

This export has no padding mask, so padding changes what the model hears; far too much of it can
make a clip come back empty. So no clip is ever padded by more than ``max_padding`` of its length: a
batch that mixes lengths is split into sub-batches here, whatever the caller's bucketing did.

This module owns running the model. It never resamples, never cuts audio into utterances, never
chooses providers or converts files (``providers`` and ``model_files`` do). Call it from one thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from inference.model_files import ModelFiles
from inference.providers import ProviderChoice, session_options
from inference.speech_model import SAMPLE_RATE, Transcription
from inference.tokenizer import END_ID, START_ID, Tokenizer

log = logging.getLogger(__name__)

MIN_CLIP_SECONDS = 0.1
# Moonshine's own decoding bound: speech rarely needs more tokens per second than this.
TOKENS_PER_SECOND = 6.5
EXTRA_TOKENS = 4
DEFAULT_MAX_PADDING = 0.25

_EMPTY = Transcription(text="", confidence=0.0, tokens=0)


class MoonshineModel:
    """``SpeechModel`` for Moonshine base-en files prepared by ``model_files.ensure_converted``."""

    def __init__(
        self,
        files: ModelFiles,
        providers: ProviderChoice,
        threads: int = 1,
        max_padding: float = DEFAULT_MAX_PADDING,
    ) -> None:
        if max_padding < 0:
            raise ValueError(f"max_padding must be >= 0, got {max_padding}")
        self._max_padding = max_padding
        options = session_options(threads)
        self._encoder = ort.InferenceSession(
            str(files.encoder), options, providers=providers.session_providers()
        )
        self._decoder = ort.InferenceSession(
            str(files.decoder), options, providers=providers.session_providers()
        )
        for session in (self._encoder, self._decoder):
            running = session.get_providers()
            if not running or running[0] != providers.name:
                log.warning("Moonshine session runs on %s, not %s", running, providers.name)
        self._tokenizer = Tokenizer.load(files.tokenizer)
        self._encoder_output = self._encoder.get_outputs()[0].name

        self._decoder_outputs: list[str] = [o.name for o in self._decoder.get_outputs()]
        past_inputs = [
            i for i in self._decoder.get_inputs() if i.name.startswith("past_key_values.")
        ]
        if not past_inputs:
            raise ValueError(f"{files.decoder} has no past_key_values inputs: not a merged decoder")
        heads, head_dim = past_inputs[0].shape[1], past_inputs[0].shape[3]
        if not isinstance(heads, int) or not isinstance(head_dim, int):
            raise ValueError(
                f"{files.decoder}: unexpected past_key_values shape {past_inputs[0].shape}"
            )
        self._cache_shape = (heads, head_dim)
        self._self_attention = [i.name for i in past_inputs if ".decoder." in i.name]
        self._cross_attention = [i.name for i in past_inputs if ".encoder." in i.name]
        # Output position of each present tensor, keyed by the past input it feeds.
        self._present_index = {
            name.replace("present.", "past_key_values.", 1): index
            for index, name in enumerate(self._decoder_outputs)
            if name.startswith("present.")
        }
        missing = [
            n for n in self._self_attention + self._cross_attention if n not in self._present_index
        ]
        if missing:
            raise ValueError(f"{files.decoder}: no present output for {missing[:3]}")

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def transcribe(self, clips: Sequence[np.ndarray]) -> list[Transcription]:
        waves = [_as_waveform(clip, index) for index, clip in enumerate(clips)]
        results: list[Transcription] = [_EMPTY] * len(waves)
        min_samples = int(MIN_CLIP_SECONDS * SAMPLE_RATE)
        runnable = [i for i, wave in enumerate(waves) if wave.size >= min_samples]
        for group in self._padding_groups(runnable, waves):
            answers = self._transcribe_batch([waves[i] for i in group])
            for index, answer in zip(group, answers, strict=True):
                results[index] = answer
        return results

    def _padding_groups(self, indices: list[int], waves: list[np.ndarray]) -> list[list[int]]:
        """Split ``indices`` so no clip is padded by more than ``max_padding`` of its length."""
        by_length = sorted(indices, key=lambda i: waves[i].size, reverse=True)
        groups: list[list[int]] = []
        longest = 0
        for index in by_length:
            size = waves[index].size
            if groups and longest <= size * (1.0 + self._max_padding):
                groups[-1].append(index)
            else:
                groups.append([index])
                longest = size
        return groups

    def _transcribe_batch(self, waves: list[np.ndarray]) -> list[Transcription]:
        count = len(waves)
        audio = np.zeros((count, max(w.size for w in waves)), dtype=np.float32)
        for row, wave in enumerate(waves):
            audio[row, : wave.size] = wave
        hidden: np.ndarray = self._encoder.run([self._encoder_output], {"input_values": audio})[0]

        limits = [math.ceil(TOKENS_PER_SECOND * w.size / SAMPLE_RATE) + EXTRA_TOKENS for w in waves]
        tokens: list[list[int]] = [[] for _ in range(count)]
        log_prob_sum = [0.0] * count
        scored = [0] * count
        rows = np.arange(count)  # original row of each row still decoding
        heads, head_dim = self._cache_shape
        empty = np.zeros((count, heads, 0, head_dim), dtype=np.float32)
        cache: dict[str, np.ndarray] = {name: empty for name in self._self_attention}
        cache.update({name: empty for name in self._cross_attention})
        input_ids = np.full((count, 1), START_ID, dtype=np.int64)
        use_cache = np.array([False])
        vocab = self._tokenizer.vocab_size

        while rows.size:
            feeds: dict[str, np.ndarray] = {
                "input_ids": input_ids,
                "encoder_hidden_states": hidden,
                "use_cache_branch": use_cache,
                **cache,
            }
            outputs = self._decoder.run(self._decoder_outputs, feeds)
            logits = outputs[0][:, -1, :vocab]
            chosen = logits.argmax(axis=1)
            peak = logits.max(axis=1)
            # log-softmax of the chosen (= largest) logit, without materialising the whole softmax
            chosen_log_prob = -np.log(np.exp(logits - peak[:, None]).sum(axis=1))

            finished = np.zeros(rows.size, dtype=bool)
            for position, row in enumerate(rows.tolist()):
                token = int(chosen[position])
                log_prob_sum[row] += float(chosen_log_prob[position])
                scored[row] += 1
                if token == END_ID:
                    finished[position] = True
                else:
                    tokens[row].append(token)
                    finished[position] = len(tokens[row]) >= limits[row]

            names = (
                self._self_attention
                if use_cache[0]
                else self._self_attention + self._cross_attention
            )
            for name in names:
                cache[name] = outputs[self._present_index[name]]
            use_cache = np.array([True])
            input_ids = chosen.astype(np.int64)[:, None]

            if finished.any():
                keep = np.flatnonzero(~finished)
                rows = rows[keep]
                if not rows.size:
                    break
                input_ids = input_ids[keep]
                hidden = hidden[keep]
                cache = {name: tensor[keep] for name, tensor in cache.items()}

        return [
            Transcription(
                text=self._tokenizer.decode(tokens[row]),
                confidence=math.exp(log_prob_sum[row] / scored[row]) if scored[row] else 0.0,
                tokens=len(tokens[row]),
            )
            for row in range(count)
        ]


def _as_waveform(clip: np.ndarray, index: int) -> np.ndarray:
    wave = np.asarray(clip, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"clip {index}: expected a mono waveform (1-D), got shape {wave.shape}")
    return wave

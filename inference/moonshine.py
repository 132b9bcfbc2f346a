"""Moonshine base-en on ONNX Runtime: batched encoder, batched greedy decoding with a KV cache.

A batch of clips is zero-padded to its longest clip and encoded in one run. Decoding then advances
all unfinished rows together, one token per step: step 0 runs the merged decoder's no-cache branch
(empty pasts) and yields the cross-attention (``encoder``) keys and values, which stay fixed; later
steps feed back only the self-attention (``decoder``) presents. A row that emits the end token or
reaches its token limit leaves the batch at once (its row is dropped from every tensor), so short
answers never pay for long ones.

Two ways to run the decoder loop, with the same tokens. The plain one passes numpy arrays to
``session.run``: on a GPU every step would copy every cache to the host and back. The IO-binding
one keeps the encoder output and the caches as ``OrtValue``s on the session's device, binds each
step's presents as the next step's pasts, and brings back only each row's chosen token and its
log-probability (a tiny pick graph reduces the logits on the device); dropping rows runs a tiny
gather graph there. On the CPU the two loops give bit-identical answers at the same speed
(measured within noise, batch 1 to 8), so IO binding is the default everywhere: the CPU tests run
the loop that a GPU runs.

This export has no padding mask, so padding changes what the model hears; far too much of it can
make a clip come back empty. So no clip is ever padded by more than ``max_padding`` of its length: a
batch that mixes lengths is split into sub-batches here, whatever the caller's bucketing did.

This module owns running the model. It never resamples, never cuts audio into utterances, never
chooses providers or converts files (``providers`` and ``model_files`` do). Call it from one thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import onnx
import onnx.helper
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
# Clip lengths the warm-up runs at: short answers, the prompts' mean, the VAD's usual cap.
WARM_UP_SECONDS = (2.0, 5.0, 10.0)

_EMPTY = Transcription(text="", confidence=0.0, tokens=0)


class MoonshineModel:
    """``SpeechModel`` for Moonshine base-en files prepared by ``model_files.ensure_converted``.

    ``io_binding`` picks the decoder loop (see the module docstring); on by default, CUDA or not.
    ``warm_up_max_batch`` > 0 runs every batch size from it down to 1 at each of
    ``warm_up_seconds`` before returning (see ``warm_up``): worth it on CUDA, where the arena and
    the kernels are set up per shape; on the CPU it costs ~40 s at batch 8 and gains little.
    """

    def __init__(
        self,
        files: ModelFiles,
        providers: ProviderChoice,
        threads: int = 1,
        max_padding: float = DEFAULT_MAX_PADDING,
        *,
        io_binding: bool = True,
        warm_up_max_batch: int = 0,
        warm_up_seconds: Sequence[float] = WARM_UP_SECONDS,
    ) -> None:
        if max_padding < 0:
            raise ValueError(f"max_padding must be >= 0, got {max_padding}")
        if warm_up_max_batch < 0:
            raise ValueError(f"warm_up_max_batch must be >= 0, got {warm_up_max_batch}")
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

        self._io_binding = io_binding
        self._device = _DeviceOps(
            providers,
            vocab=self._tokenizer.vocab_size,
            # what a row drop gathers: encoder hidden states [B, T, D], then every cache
            ranks=[3] + [4] * (len(self._self_attention) + len(self._cross_attention)),
        )
        if warm_up_max_batch:
            self.warm_up(warm_up_max_batch, warm_up_seconds)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def io_binding(self) -> bool:
        """Whether the decoder loop keeps its tensors on the device (see the module docstring)."""
        return self._io_binding

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

    def warm_up(self, max_batch: int, clip_seconds: Sequence[float] = WARM_UP_SECONDS) -> float:
        """Run every batch size from ``max_batch`` down to 1 at each clip length, longest first,
        decoding to the token limit with one row dropped halfway; return the seconds it took.

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
            limit = _token_limit(samples)
            for batch in range(max_batch, 0, -1):
                audio = noise.uniform(-1e-3, 1e-3, (batch, samples)).astype(np.float32)
                limits = [limit] * batch
                if batch > 1:
                    limits[-1] = max(1, limit // 2)  # so the row-dropping path runs too
                self._run_batch(audio, _Decoding(limits, stop_at_end=False))
        elapsed = time.perf_counter() - started
        log.info(
            "Moonshine warm-up: batch 1-%d at %s s in %.1f s (%s)",
            max_batch,
            "/".join(f"{s:g}" for s in sorted(clip_seconds)),
            elapsed,
            "IO binding" if self._io_binding else "plain runs",
        )
        return elapsed

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
        audio = np.zeros((len(waves), max(w.size for w in waves)), dtype=np.float32)
        for row, wave in enumerate(waves):
            audio[row, : wave.size] = wave
        decoding = _Decoding([_token_limit(w.size) for w in waves])
        self._run_batch(audio, decoding)
        return decoding.results(self._tokenizer)

    def _run_batch(self, audio: np.ndarray, decoding: _Decoding) -> None:
        if self._io_binding:
            binding = self._encoder.io_binding()
            binding.bind_cpu_input("input_values", audio)
            binding.bind_output(self._encoder_output, *self._device.location)
            self._encoder.run_with_iobinding(binding)
            self._decode_bound(binding.get_outputs()[0], decoding)
        else:
            encoded = self._encoder.run([self._encoder_output], {"input_values": audio})
            self._decode_plain(encoded[0], decoding)

    def _empty_cache(self, count: int) -> np.ndarray:
        heads, head_dim = self._cache_shape
        return np.zeros((count, heads, 0, head_dim), dtype=np.float32)

    def _decode_plain(self, hidden: np.ndarray, decoding: _Decoding) -> None:
        empty = self._empty_cache(hidden.shape[0])
        cache: dict[str, np.ndarray] = {name: empty for name in self._self_attention}
        cache.update({name: empty for name in self._cross_attention})
        input_ids = np.full((hidden.shape[0], 1), START_ID, dtype=np.int64)
        use_cache = np.array([False])
        vocab = self._tokenizer.vocab_size

        while True:
            feeds: dict[str, np.ndarray] = {
                "input_ids": input_ids,
                "encoder_hidden_states": hidden,
                "use_cache_branch": use_cache,
                **cache,
            }
            outputs = self._decoder.run(self._decoder_outputs, feeds)
            chosen, chosen_log_prob = _pick_on_host(outputs[0], vocab)
            keep = decoding.advance(chosen, chosen_log_prob)

            names = (
                self._self_attention
                if use_cache[0]
                else self._self_attention + self._cross_attention
            )
            for name in names:
                cache[name] = outputs[self._present_index[name]]
            use_cache = np.array([True])
            input_ids = chosen.astype(np.int64)[:, None]

            if keep is not None:
                if not keep.size:
                    return
                input_ids = input_ids[keep]
                hidden = hidden[keep]
                cache = {name: tensor[keep] for name, tensor in cache.items()}

    def _decode_bound(self, hidden: ort.OrtValue, decoding: _Decoding) -> None:
        """The plain loop's steps, with every tensor but the token ids and the cache flag left on
        the device."""
        location = self._device.location
        present = {name: self._decoder_outputs[i] for name, i in self._present_index.items()}
        binding = self._decoder.io_binding()
        empty = self._empty_cache(hidden.shape()[0])
        for name in self._self_attention + self._cross_attention:
            binding.bind_cpu_input(name, empty)
        binding.bind_ortvalue_input("encoder_hidden_states", hidden)
        input_ids = np.full((hidden.shape()[0], 1), START_ID, dtype=np.int64)
        use_cache = np.array([False])
        # Step 0 yields the cross-attention caches; later steps pass them through unchanged.
        fetched = self._self_attention + self._cross_attention
        cache: dict[str, ort.OrtValue] = {}

        while True:
            binding.bind_cpu_input("input_ids", input_ids)
            binding.bind_cpu_input("use_cache_branch", use_cache)
            # Fresh outputs each step: the ones bound last step are this step's inputs.
            binding.clear_binding_outputs()
            binding.bind_output(self._decoder_outputs[0], *location)  # the logits
            for name in fetched:
                binding.bind_output(present[name], *location)
            self._decoder.run_with_iobinding(binding)
            outputs = binding.get_outputs()
            chosen, chosen_log_prob = self._device.pick(outputs[0])
            keep = decoding.advance(chosen, chosen_log_prob)

            cache.update(zip(fetched, outputs[1:], strict=True))
            rebound = fetched
            fetched = self._self_attention
            use_cache = np.array([True])
            input_ids = chosen.astype(np.int64)[:, None]

            if keep is not None:
                if not keep.size:
                    return
                input_ids = input_ids[keep]
                names = list(cache)
                kept = self._device.gather([hidden, *cache.values()], keep)
                hidden, cache = kept[0], dict(zip(names, kept[1:], strict=True))
                binding.bind_ortvalue_input("encoder_hidden_states", hidden)
                rebound = names
            for name in rebound:
                binding.bind_ortvalue_input(name, cache[name])


class _Decoding:
    """Greedy decoding of one batch: each row's tokens and scores, and which rows still run."""

    def __init__(self, limits: list[int], stop_at_end: bool = True) -> None:
        self._limits = limits
        # Warm-up ignores the end token so that every row runs to its limit.
        self._stop_at_end = stop_at_end
        self._tokens: list[list[int]] = [[] for _ in limits]
        self._log_prob_sum = [0.0] * len(limits)
        self._scored = [0] * len(limits)
        self._rows = np.arange(len(limits))  # original row of each row still decoding

    def advance(self, chosen: np.ndarray, chosen_log_prob: np.ndarray) -> np.ndarray | None:
        """Record one step of the running rows. If any finished, return the positions (in this
        step's batch) of the rows that go on, possibly none; else None."""
        finished = np.zeros(self._rows.size, dtype=bool)
        for position, row in enumerate(self._rows.tolist()):
            token = int(chosen[position])
            self._log_prob_sum[row] += float(chosen_log_prob[position])
            self._scored[row] += 1
            if token == END_ID and self._stop_at_end:
                finished[position] = True
            else:
                self._tokens[row].append(token)
                finished[position] = len(self._tokens[row]) >= self._limits[row]
        if not finished.any():
            return None
        keep = np.flatnonzero(~finished)
        self._rows = self._rows[keep]
        return keep

    def results(self, tokenizer: Tokenizer) -> list[Transcription]:
        return [
            Transcription(
                text=tokenizer.decode(tokens),
                confidence=math.exp(log_prob / scored) if scored else 0.0,
                tokens=len(tokens),
            )
            for tokens, log_prob, scored in zip(
                self._tokens, self._log_prob_sum, self._scored, strict=True
            )
        ]


class _DeviceOps:
    """What the IO-binding loop does to tensors on the device between decoder steps: ``pick``
    reduces the logits to each row's chosen token and its log-probability, ``gather`` keeps some
    rows of many tensors. Each runs a tiny graph where the model runs.

    On the CPU the logits are host memory already, so ``pick`` reads them in place with numpy,
    which keeps the IO-binding loop's confidences bit-identical to the plain loop's (the pick
    graph's exp rounds differently, by about 1e-7); ``pick_on_device`` overrides that.
    """

    def __init__(
        self,
        providers: ProviderChoice,
        vocab: int,
        ranks: Sequence[int],
        pick_on_device: bool | None = None,
    ) -> None:
        self._providers = providers
        self._vocab = vocab
        self._ranks = list(ranks)
        self.location = (providers.device_type, providers.device_id)
        self._pick_on_device = providers.is_cuda if pick_on_device is None else pick_on_device
        # opened now, not in the middle of the first call
        self._pick = self._session(_pick_graph(vocab)) if self._pick_on_device else None
        self._gather = self._session(_gather_graph(self._ranks)) if self._ranks else None

    def pick(self, logits: ort.OrtValue) -> tuple[np.ndarray, np.ndarray]:
        if not self._pick_on_device:
            return _pick_on_host(logits.numpy(), self._vocab)
        if self._pick is None:
            self._pick = self._session(_pick_graph(self._vocab))
        binding = self._pick.io_binding()
        binding.bind_ortvalue_input("logits", logits)
        binding.bind_output("token", "cpu")
        binding.bind_output("log_prob", "cpu")
        self._pick.run_with_iobinding(binding)
        token, log_prob = binding.get_outputs()
        chosen: np.ndarray = token.numpy()
        chosen_log_prob: np.ndarray = log_prob.numpy()
        return chosen, chosen_log_prob

    def gather(self, values: Sequence[ort.OrtValue], rows: np.ndarray) -> list[ort.OrtValue]:
        if len(values) != len(self._ranks):
            raise ValueError(f"gather takes {len(self._ranks)} tensors, got {len(values)}")
        if self._gather is None:  # no tensors to gather
            return []
        binding = self._gather.io_binding()
        binding.bind_cpu_input("rows", rows.astype(np.int64))
        for index, value in enumerate(values):
            binding.bind_ortvalue_input(f"x{index}", value)
            binding.bind_output(f"y{index}", *self.location)
        self._gather.run_with_iobinding(binding)
        kept: list[ort.OrtValue] = binding.get_outputs()
        return kept

    def _session(self, model: bytes) -> ort.InferenceSession:
        return ort.InferenceSession(
            model, session_options(1), providers=self._providers.session_providers()
        )


def _pick_on_host(logits: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's largest logit at the last position and its log-softmax, as ``_pick_graph``."""
    last = logits[:, -1, :vocab]
    chosen = last.argmax(axis=1)
    peak = last.max(axis=1)
    # log-softmax of the chosen (= largest) logit, without materialising the whole softmax
    chosen_log_prob = -np.log(np.exp(last - peak[:, None]).sum(axis=1))
    return chosen, chosen_log_prob


def _pick_graph(vocab: int) -> bytes:
    """``_pick_on_host`` as a graph: logits [B, S, V] -> token int64 [B], log_prob float [B]."""
    ints, floats = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    constants = [
        onnx.helper.make_tensor("starts", ints, [2], [-1, 0]),
        onnx.helper.make_tensor("ends", ints, [2], [2**62, vocab]),
        onnx.helper.make_tensor("slice_axes", ints, [2], [1, 2]),
        onnx.helper.make_tensor("position_axis", ints, [1], [1]),
        onnx.helper.make_tensor("vocab_axis", ints, [1], [1]),
    ]
    node = onnx.helper.make_node
    nodes = [
        node("Slice", ["logits", "starts", "ends", "slice_axes"], ["last3"]),
        node("Squeeze", ["last3", "position_axis"], ["last"]),
        node("ArgMax", ["last"], ["token"], axis=1, keepdims=0),
        node("ReduceMax", ["last"], ["peak"], axes=[1], keepdims=1),
        node("Sub", ["last", "peak"], ["shifted"]),
        node("Exp", ["shifted"], ["exp"]),
        # summed in double: onnxruntime's float sum over 32000 terms drifts by ~1e-5, numpy's
        # pairwise one by ~1e-7
        node("Cast", ["exp"], ["exp64"], to=onnx.TensorProto.DOUBLE),
        node("ReduceSum", ["exp64", "vocab_axis"], ["total"], keepdims=0),
        node("Log", ["total"], ["log_total"]),
        node("Neg", ["log_total"], ["log_prob64"]),
        node("Cast", ["log_prob64"], ["log_prob"], to=floats),
    ]
    return _serialize(
        onnx.helper.make_graph(
            nodes,
            "moonshine_pick",
            [onnx.helper.make_tensor_value_info("logits", floats, ["batch", "steps", "logits"])],
            [
                onnx.helper.make_tensor_value_info("token", ints, ["batch"]),
                onnx.helper.make_tensor_value_info("log_prob", floats, ["batch"]),
            ],
            constants,
        )
    )


def _gather_graph(ranks: Sequence[int]) -> bytes:
    """rows int64 [K] and x0..x{n-1} float [B, ...] of the given ranks -> y{i} = x{i}[rows]."""
    floats = onnx.TensorProto.FLOAT

    def shape(index: int, rank: int, batch: str) -> list[str]:
        return [batch] + [f"x{index}_{axis}" for axis in range(1, rank)]

    return _serialize(
        onnx.helper.make_graph(
            [
                onnx.helper.make_node("Gather", [f"x{i}", "rows"], [f"y{i}"], axis=0)
                for i in range(len(ranks))
            ],
            "moonshine_gather",
            [onnx.helper.make_tensor_value_info("rows", onnx.TensorProto.INT64, ["kept"])]
            + [
                onnx.helper.make_tensor_value_info(f"x{i}", floats, shape(i, rank, "batch"))
                for i, rank in enumerate(ranks)
            ],
            [
                onnx.helper.make_tensor_value_info(f"y{i}", floats, shape(i, rank, "kept"))
                for i, rank in enumerate(ranks)
            ],
        )
    )


def _serialize(graph: onnx.GraphProto) -> bytes:
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the bridge supports
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def _token_limit(samples: int) -> int:
    return math.ceil(TOKENS_PER_SECOND * samples / SAMPLE_RATE) + EXTRA_TOKENS


def _as_waveform(clip: np.ndarray, index: int) -> np.ndarray:
    wave = np.asarray(clip, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"clip {index}: expected a mono waveform (1-D), got shape {wave.shape}")
    return wave

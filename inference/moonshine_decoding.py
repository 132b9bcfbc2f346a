"""Greedy decoding of many Moonshine rows at once, each with its own length, step and draft.

One :class:`BatchDecoder` run takes the encoder output of several clips (of any lengths) and,
for each, an optional *draft*: tokens believed to start its answer (the previous partial of a
growing utterance). Step 0 feeds every row ``[START] + draft`` in one no-cache decoder call;
the logits at every position say, for each draft token, whether greedy decoding would have
chosen it. A row keeps its draft up to the first disagreement, takes the decoder's own token
there, and from then on advances one token per step like any greedy decoder. The answer is the
plain greedy answer token for token (the tests check it against the unmodified decoder), but a
draft of k right tokens costs one call instead of k.

Rows differ in encoded length (zero-padded frames, hidden by ``encoder_attention_bias``), in
how much draft they kept (rejected entries stay in the cache, hidden by
``decoder_attention_bias``) and so in position (``position_ids``): the inputs that
``moonshine_graph`` adds. A row that ends (end token or token limit) leaves the batch at once:
its row is gathered out of every tensor on the device.

Tensors stay where the model runs (IO binding): the caches move from one step's outputs to the
next step's inputs without a copy; only the chosen tokens and their log-probabilities come back
(on CUDA a tiny graph reduces the logits there; on the CPU numpy reads them in place).

It owns the decoding loop only: sessions, encoder and text come from ``moonshine``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.helper
import onnxruntime as ort

from inference.moonshine_graph import DECODER_BIAS, ENCODER_BIAS, POSITION_IDS
from inference.providers import ProviderChoice, session_options
from inference.tokenizer import END_ID, START_ID, Tokenizer

# Scores of hidden keys: exp() of it underflows to exactly 0 in float32.
HIDDEN = -1e9


@dataclass(frozen=True, slots=True)
class Decoded:
    """One row's answer: its tokens (end token excluded), the log-probability of each choice
    (end token included, when it came), and how many of its draft tokens it kept."""

    tokens: tuple[int, ...]
    log_probs: tuple[float, ...]
    kept_draft: int

    def confidence(self) -> float:
        """Geometric mean of the chosen tokens' probabilities; 0.0 if nothing was scored."""
        if not self.log_probs:
            return 0.0
        return math.exp(sum(self.log_probs) / len(self.log_probs))

    def text(self, tokenizer: Tokenizer) -> str:
        return tokenizer.decode(self.tokens)


class _Rows:
    """The host side of a batch: each row's tokens, scores, limit, position and which cache
    entries it may attend to. Rows are kept in batch order; ``alive`` maps to original rows."""

    def __init__(self, limits: Sequence[int], stop_at_end: bool) -> None:
        self.limits = list(limits)
        self.stop_at_end = stop_at_end
        self.tokens: list[list[int]] = [[] for _ in limits]
        self.log_probs: list[list[float]] = [[] for _ in limits]
        self.kept = [0] * len(limits)
        self.alive = np.arange(len(limits))
        self.positions = np.zeros(len(limits), dtype=np.int64)  # of each live row's next token
        self.visible = np.zeros((len(limits), 0), dtype=bool)  # live rows x cache entries

    def take(self, position: int, token: int, log_prob: float) -> bool:
        """Record live row ``position``'s choice; True if the row is finished."""
        row = int(self.alive[position])
        self.log_probs[row].append(log_prob)
        if token == END_ID and self.stop_at_end:
            return True
        self.tokens[row].append(token)
        return len(self.tokens[row]) >= self.limits[row]

    def last_tokens(self) -> np.ndarray:
        return np.array([[self.tokens[r][-1]] for r in self.alive.tolist()], dtype=np.int64)

    def keep(self, finished: np.ndarray) -> np.ndarray | None:
        """Drop finished live rows; the positions of those that go on, or None if all do."""
        if not finished.any():
            return None
        kept = np.flatnonzero(~finished)
        self.alive = self.alive[kept]
        self.positions = self.positions[kept]
        self.visible = self.visible[kept]
        return kept

    def answers(self) -> list[Decoded]:
        return [
            Decoded(tuple(t), tuple(p), k)
            for t, p, k in zip(self.tokens, self.log_probs, self.kept, strict=True)
        ]


class BatchDecoder:
    """Runs the merged decoder (with ``moonshine_graph``'s inputs) over batches of rows."""

    def __init__(self, session: ort.InferenceSession, providers: ProviderChoice, vocab: int):
        self._session = session
        outputs = [o.name for o in session.get_outputs()]
        self._logits = outputs[0]
        past = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
        if not past:
            raise ValueError("the decoder has no past_key_values inputs: not a merged decoder")
        names = {i.name for i in session.get_inputs()}
        missing = {POSITION_IDS, DECODER_BIAS, ENCODER_BIAS} - names
        if missing:
            raise ValueError(f"the decoder lacks {sorted(missing)}: convert it again")
        heads, head_dim = past[0].shape[1], past[0].shape[3]
        if not isinstance(heads, int) or not isinstance(head_dim, int):
            raise ValueError(f"unexpected past_key_values shape {past[0].shape}")
        self._cache_shape = (heads, head_dim)
        self._self = [i.name for i in past if ".decoder." in i.name]
        self._cross = [i.name for i in past if ".encoder." in i.name]
        present = {o.replace("present.", "past_key_values.", 1): o for o in outputs}
        lost = [n for n in self._self + self._cross if n not in present]
        if lost:
            raise ValueError(f"no present output for {lost[:3]}")
        self._present = present
        # what a row drop gathers: encoder hidden states and bias, then every cache
        self.device = DeviceOps(
            providers, vocab, [3, 4] + [4] * (len(self._self) + len(self._cross))
        )

    def decode(
        self,
        hidden: Sequence[np.ndarray],
        limits: Sequence[int],
        drafts: Sequence[Sequence[int]] | None = None,
        *,
        stop_at_end: bool = True,
    ) -> list[Decoded]:
        """Greedy answers of the rows whose encoder outputs are ``hidden`` (each ``[T, D]``),
        each at most ``limits[i]`` tokens, starting from ``drafts[i]`` if given."""
        if not hidden:
            return []
        rows = _Rows(limits, stop_at_end)
        drafts = [list(d[: max(lim - 1, 0)]) for d, lim in zip(drafts or [[]] * len(hidden),
                                                                 limits, strict=True)]  # fmt: skip
        frames = max(h.shape[0] for h in hidden)
        states = np.zeros((len(hidden), frames, hidden[0].shape[1]), dtype=np.float32)
        encoder_bias = np.full((len(hidden), 1, 1, frames), HIDDEN, dtype=np.float32)
        for r, h in enumerate(hidden):
            states[r, : h.shape[0]] = h
            encoder_bias[r, :, :, : h.shape[0]] = 0.0
        location = self.device.location
        binding = self._session.io_binding()
        width = 1 + max(len(d) for d in drafts)
        ids = np.full((len(hidden), width), END_ID, dtype=np.int64)
        ids[:, 0] = START_ID
        for r, d in enumerate(drafts):
            ids[r, 1 : 1 + len(d)] = d
        empty = np.zeros((len(hidden), *self._cache_shape[:1], 0, self._cache_shape[1]),
                         dtype=np.float32)  # fmt: skip
        for name in self._self + self._cross:
            binding.bind_cpu_input(name, empty)
        # Step 0: every row's [START] + draft at once (the no-cache branch; it also yields the
        # cross-attention caches, which later steps pass through unchanged).
        hidden_value = ort.OrtValue.ortvalue_from_numpy(states, *location)
        bias_value = ort.OrtValue.ortvalue_from_numpy(encoder_bias, *location)
        binding.bind_ortvalue_input("encoder_hidden_states", hidden_value)
        binding.bind_ortvalue_input(ENCODER_BIAS, bias_value)
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input(POSITION_IDS, np.tile(np.arange(width, dtype=np.int64),
                                                     (len(hidden), 1)))  # fmt: skip
        binding.bind_cpu_input(DECODER_BIAS, np.zeros((len(hidden), 1, width, width), np.float32))
        binding.bind_cpu_input("use_cache_branch", np.array([False]))
        fetched = self._self + self._cross
        cache = self._run(binding, fetched, location)
        chosen, log_prob = self.device.pick(cache.pop(self._logits))
        rows.visible = np.zeros((len(hidden), width), dtype=bool)
        finished = np.zeros(len(hidden), dtype=bool)
        for r, draft in enumerate(drafts):
            kept, done = 0, False
            while not done and kept < len(draft) and int(chosen[r, kept]) == draft[kept]:
                done = rows.take(r, draft[kept], float(log_prob[r, kept]))
                kept += 1
            rows.kept[r] = kept
            rows.visible[r, : 1 + kept] = True
            rows.positions[r] = 1 + kept
            finished[r] = done or rows.take(r, int(chosen[r, kept]), float(log_prob[r, kept]))
        # in the order of the gather graph's ranks (see __init__)
        tensors = {"encoder_hidden_states": hidden_value, ENCODER_BIAS: bias_value, **cache}
        binding.bind_cpu_input("use_cache_branch", np.array([True]))
        while True:
            kept_rows = rows.keep(finished)
            if kept_rows is not None:
                if not kept_rows.size:
                    return rows.answers()
                names = list(tensors)
                gathered = self.device.gather([tensors[n] for n in names], kept_rows)
                tensors = dict(zip(names, gathered, strict=True))
            for name in self._self + self._cross:
                binding.bind_ortvalue_input(name, tensors[name])
            binding.bind_ortvalue_input("encoder_hidden_states", tensors["encoder_hidden_states"])
            binding.bind_ortvalue_input(ENCODER_BIAS, tensors[ENCODER_BIAS])
            rows.visible = np.concatenate(
                (rows.visible, np.ones((len(rows.alive), 1), dtype=bool)), axis=1
            )
            binding.bind_cpu_input("input_ids", rows.last_tokens())
            binding.bind_cpu_input(POSITION_IDS, rows.positions[:, None].copy())
            binding.bind_cpu_input(
                DECODER_BIAS,
                np.where(rows.visible, 0.0, HIDDEN).astype(np.float32)[:, None, None, :],
            )
            outputs = self._run(binding, self._self, location)
            chosen, log_prob = self.device.pick(outputs.pop(self._logits))
            tensors.update(outputs)
            rows.positions += 1
            finished = np.array(
                [rows.take(p, int(chosen[p, -1]), float(log_prob[p, -1]))
                 for p in range(len(rows.alive))],
                dtype=bool,
            )  # fmt: skip

    def _run(
        self, binding: ort.IOBinding, fetched: list[str], location: tuple[str, int]
    ) -> dict[str, ort.OrtValue]:
        """One decoder call: the logits, then ``fetched``'s presents, keyed by the past input
        (and the logits' own name) they feed."""
        binding.clear_binding_outputs()  # fresh outputs: the last step's are this step's inputs
        binding.bind_output(self._logits, *location)
        for name in fetched:
            binding.bind_output(self._present[name], *location)
        self._session.run_with_iobinding(binding)
        values = binding.get_outputs()
        out = {self._logits: values[0]}
        out.update(zip(fetched, values[1:], strict=True))
        return out


class DeviceOps:
    """What the loop does to tensors on the device between steps: ``pick`` reduces logits
    ``[B, S, V]`` to each position's chosen token and its log-probability, ``gather`` keeps some
    rows of many tensors. Each runs a tiny graph where the model runs.

    On the CPU the logits are host memory already, so ``pick`` reads them in place with numpy
    (the pick graph's exp rounds differently, by about 1e-7); ``pick_on_device`` overrides that.
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
            return pick_on_host(logits.numpy(), self._vocab)
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


def pick_on_host(logits: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Each position's largest logit among the first ``vocab`` and its log-softmax, as
    ``_pick_graph``: logits ``[B, S, V]`` -> tokens ``[B, S]``, log-probabilities ``[B, S]``."""
    scores = logits[:, :, :vocab]
    chosen = scores.argmax(axis=2)
    peak = scores.max(axis=2)
    # log-softmax of the chosen (= largest) logit, without materialising the whole softmax
    chosen_log_prob = -np.log(np.exp(scores - peak[:, :, None]).sum(axis=2))
    return chosen, chosen_log_prob


def _pick_graph(vocab: int) -> bytes:
    """``pick_on_host`` as a graph: logits [B, S, V] -> token int64 [B, S], log_prob [B, S]."""
    ints, floats = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    constants = [
        onnx.helper.make_tensor("starts", ints, [1], [0]),
        onnx.helper.make_tensor("ends", ints, [1], [vocab]),
        onnx.helper.make_tensor("slice_axes", ints, [1], [2]),
        onnx.helper.make_tensor("vocab_axis", ints, [1], [2]),
    ]
    node = onnx.helper.make_node
    nodes = [
        node("Slice", ["logits", "starts", "ends", "slice_axes"], ["scores"]),
        node("ArgMax", ["scores"], ["token"], axis=2, keepdims=0),
        node("ReduceMax", ["scores"], ["peak"], axes=[2], keepdims=1),
        node("Sub", ["scores", "peak"], ["shifted"]),
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
                onnx.helper.make_tensor_value_info("token", ints, ["batch", "steps"]),
                onnx.helper.make_tensor_value_info("log_prob", floats, ["batch", "steps"]),
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

"""Moonshine on ONNX Runtime with the real model, on recorded human speech (Asterisk prompts).

Conversion runs once per test run, into a temporary cache directory shared by every test here.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soxr

from inference import model_files
from inference.model_files import ModelFiles, ModelNotInstalledError, ensure_converted
from inference.moonshine import MoonshineModel, _token_limit
from inference.moonshine_decoding import DeviceOps, pick_on_host
from inference.providers import choose_providers, session_options
from inference.speech_model import (
    PARTIAL_TAIL_S,
    SAMPLE_RATE,
    DraftedStreams,
    SpeechModel,
    StreamStep,
    Transcription,
)
from inference.tokenizer import END_ID, START_ID
from tests.support import speech

PROMPTS = 20
BATCH = 8


def _wheel_missing() -> bool:
    try:
        model_files.locate_shipped()
    except ModelNotInstalledError:
        return True
    return False


needs_model = pytest.mark.skipif(_wheel_missing(), reason="moonshine-cpp wheel (the model) missing")
needs_speech = pytest.mark.skipif(
    not speech.available(),
    reason="Asterisk prompts missing: apt-get install asterisk-core-sounds-en-wav",
)


def to_model_input(prompt: speech.Prompt) -> np.ndarray:
    pcm = prompt.pcm().astype(np.float32) / 32768.0
    return np.asarray(soxr.resample(pcm, 8000, 16000), dtype=np.float32)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def files(cache_dir: Path) -> ModelFiles:
    if _wheel_missing():
        pytest.skip("moonshine-cpp wheel (the model) missing")
    return ensure_converted(cache_dir)


@pytest.fixture(scope="session")
def model(files: ModelFiles) -> MoonshineModel:
    return MoonshineModel(files, choose_providers("auto"), threads=1)


@pytest.fixture(scope="session")
def reference_decoder(
    files: ModelFiles, tmp_path_factory: pytest.TempPathFactory
) -> ort.InferenceSession:
    """The shipped decoder with none of ``moonshine_graph``'s inputs: the oracle of exactness."""
    path = tmp_path_factory.mktemp("reference") / "decoder.onnx"
    model_files.resave_as_onnx(model_files.locate_shipped().decoder, path)
    model_files.name_unnamed_graphs(path)
    return ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])


def greedy_reference(decoder: ort.InferenceSession, hidden: np.ndarray, limit: int) -> list[int]:
    """Plain greedy decoding, one row, one token per call, as the unmodified model defines it."""
    outputs = [o.name for o in decoder.get_outputs()]
    pasts = [i.name for i in decoder.get_inputs() if i.name.startswith("past_key_values.")]
    shape = decoder.get_inputs()[[i.name for i in decoder.get_inputs()].index(pasts[0])].shape
    empty = np.zeros((1, shape[1], 0, shape[3]), dtype=np.float32)
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([[START_ID]]), "encoder_hidden_states": hidden[None],
        "use_cache_branch": np.array([False]), **{name: empty for name in pasts},
    }  # fmt: skip
    tokens: list[int] = []
    cross: dict[str, np.ndarray] = {}
    while len(tokens) < limit:
        values = decoder.run(None, feeds)
        token = int(values[0][0, -1, :32000].argmax())
        if token == END_ID:
            break
        tokens.append(token)
        cache = {
            name.replace("present.", "past_key_values.", 1): value
            for name, value in zip(outputs, values, strict=True)
            if name.startswith("present.")
        }
        cross = cross or {k: v for k, v in cache.items() if ".encoder." in k}
        feeds = {
            "input_ids": np.array([[token]]), "encoder_hidden_states": hidden[None],
            "use_cache_branch": np.array([True]),
            **{k: v for k, v in cache.items() if ".decoder." in k}, **cross,
        }  # fmt: skip
    return tokens


@pytest.fixture(scope="session")
def prompts() -> list[speech.Prompt]:
    if not speech.available():
        pytest.skip("Asterisk prompts missing: apt-get install asterisk-core-sounds-en-wav")
    # select() lets through "silence/4", transcribed "(4 seconds of silence)": not words to hear.
    spoken = [p for p in speech.select(PROMPTS + 5) if not p.text.startswith(("(", "["))]
    return spoken[:PROMPTS]


@pytest.fixture(scope="session")
def clips(prompts: list[speech.Prompt]) -> list[np.ndarray]:
    return [to_model_input(p) for p in prompts]


@pytest.fixture(scope="session")
def one_by_one(model: MoonshineModel, clips: list[np.ndarray]) -> list[Transcription]:
    return [model.transcribe([clip])[0] for clip in clips]


def test_missing_wheel_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModelNotInstalledError, match="moonshine-cpp"):
        model_files.locate_shipped()


@pytest.mark.integration
@needs_model
def test_conversion_cache_is_reused(cache_dir: Path, files: ModelFiles) -> None:
    assert files.partial_encoder is not None
    paths = (files.encoder, files.decoder, files.tokenizer, files.partial_encoder)
    before = {p: p.stat().st_mtime_ns for p in paths}
    again = ensure_converted(cache_dir)
    assert not again.converted
    assert (again.encoder, again.decoder, again.tokenizer, again.partial_encoder) == paths
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # one finished entry, no staging directories left behind
    assert [p.name for p in cache_dir.iterdir() if p.is_dir()] == [files.encoder.parent.name]


@pytest.mark.integration
@needs_model
def test_concurrent_workers_convert_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from inference.model_files import ensure_converted
        print(ensure_converted(Path(sys.argv[1])).converted)
        """
    )
    env = dict(os.environ, PYTHONPATH="")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = sorted(w.communicate(timeout=120)[0].strip() for w in workers)
    assert [w.returncode for w in workers] == [0, 0]
    assert outputs == ["False", "True"]
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1
    # an entry damaged by hand is rebuilt, not half-used
    files = ensure_converted(tmp_path)
    files.tokenizer.unlink()
    rebuilt = ensure_converted(tmp_path)
    assert rebuilt.converted and rebuilt.tokenizer.is_file()


@pytest.mark.integration
@needs_model
def test_model_satisfies_the_protocol(model: MoonshineModel) -> None:
    as_protocol: SpeechModel = model
    assert as_protocol.sample_rate == 16000


@pytest.mark.integration
@needs_model
def test_no_clips_and_too_short_clips(model: MoonshineModel) -> None:
    assert model.transcribe([]) == []
    short = np.zeros(1000, dtype=np.float32)  # 62 ms
    assert model.transcribe([short]) == [Transcription("", 0.0, 0)]


@pytest.mark.integration
@needs_model
def test_rejects_non_mono_clips(model: MoonshineModel) -> None:
    with pytest.raises(ValueError, match="clip 0"):
        model.transcribe([np.zeros((2, 16000), dtype=np.float32)])


@pytest.mark.integration
@needs_model
@needs_speech
def test_word_error_rate_on_prompts(
    prompts: list[speech.Prompt], one_by_one: list[Transcription]
) -> None:
    error_rate = speech.wer([p.text for p in prompts], [t.text for t in one_by_one])
    print(f"WER batch 1 over {len(prompts)} prompts: {error_rate:.1%}")
    assert error_rate <= 0.10
    for answer in one_by_one:
        assert 0.0 < answer.confidence <= 1.0
        assert answer.tokens > 0


def _length_buckets(clips: Sequence[np.ndarray], size: int) -> list[list[int]]:
    order = sorted(range(len(clips)), key=lambda i: clips[i].size)
    return [order[start : start + size] for start in range(0, len(order), size)]


@pytest.mark.integration
@needs_model
@needs_speech
def test_batches_match_one_by_one(
    model: MoonshineModel,
    prompts: list[speech.Prompt],
    clips: list[np.ndarray],
    one_by_one: list[Transcription],
) -> None:
    batched: list[Transcription | None] = [None] * len(clips)
    for bucket in _length_buckets(clips, BATCH):
        for index, answer in zip(bucket, model.transcribe([clips[i] for i in bucket]), strict=True):
            batched[index] = answer
    # the decoder masks each row's padding: batching changes nothing, to the token
    assert [t.token_ids if t else None for t in batched] == [t.token_ids for t in one_by_one]
    refs = [p.text for p in prompts]
    print(f"WER batch {BATCH}: {speech.wer(refs, [t.text for t in batched if t]):.1%}")


@pytest.mark.integration
@needs_model
@needs_speech
def test_mixed_batch_keeps_order_and_drops_finished_rows(
    model: MoonshineModel, clips: list[np.ndarray], one_by_one: list[Transcription]
) -> None:
    # a too-short clip, then clips of very different lengths: answers come back in input order,
    # equal to their one-by-one answers (the model splits what padding would distort)
    order = sorted(range(len(clips)), key=lambda i: clips[i].size)
    chosen = [order[-1], order[0], order[len(order) // 2]]
    answers = model.transcribe([np.zeros(800, dtype=np.float32)] + [clips[i] for i in chosen])
    assert answers[0] == Transcription("", 0.0, 0)
    assert [a.text for a in answers[1:]] == [one_by_one[i].text for i in chosen]


def test_pick_graph_matches_the_host_pick() -> None:
    # what CUDA runs to reduce the logits, run here on the CPU provider
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((3, 1, 32768)) * 4).astype(np.float32)
    logits[1, 0, 32100] = 1000.0  # beyond the vocabulary: never chosen
    logits[2, 0, 7] = 50.0  # a confident row
    device = DeviceOps(choose_providers("cpu"), vocab=32000, ranks=[], pick_on_device=True)
    token, log_prob = device.pick(ort.OrtValue.ortvalue_from_numpy(logits))
    want_token, want_log_prob = pick_on_host(logits, 32000)
    assert token.tolist() == want_token.tolist()
    assert token[2, 0] == 7 and token[1, 0] < 32000
    np.testing.assert_allclose(log_prob, want_log_prob, rtol=1e-5, atol=1e-6)


def test_gather_keeps_rows_of_every_tensor() -> None:
    rng = np.random.default_rng(1)
    tensors = [
        rng.standard_normal((4, 5, 6), dtype=np.float32),
        rng.standard_normal((4, 2, 3, 2), dtype=np.float32),
        rng.standard_normal((4, 2, 0, 2), dtype=np.float32),  # an empty cache
    ]
    device = DeviceOps(choose_providers("cpu"), vocab=32000, ranks=[3, 4, 4])
    rows = np.array([3, 1])
    kept = device.gather([ort.OrtValue.ortvalue_from_numpy(t) for t in tensors], rows)
    for value, tensor in zip(kept, tensors, strict=True):
        np.testing.assert_array_equal(value.numpy(), tensor[rows])
    with pytest.raises(ValueError, match="3 tensors"):
        device.gather([ort.OrtValue.ortvalue_from_numpy(tensors[0])], rows)


@pytest.mark.integration
@needs_model
@needs_speech
def test_batched_and_drafted_answers_are_exact_greedy(
    model: MoonshineModel,
    reference_decoder: ort.InferenceSession,
    clips: list[np.ndarray],
    one_by_one: list[Transcription],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the oracle: the unmodified decoder, one row at a time, no masks, no drafts
    want = [
        greedy_reference(reference_decoder, model._encode(clip), _token_limit(clip.size))
        for clip in clips
    ]
    assert [list(t.token_ids) for t in one_by_one] == want
    gathers = 0
    gather = model._device.gather

    def counting_gather(values: Sequence[ort.OrtValue], rows: np.ndarray) -> list[ort.OrtValue]:
        nonlocal gathers
        gathers += 1
        return gather(values, rows)

    monkeypatch.setattr(model._device, "gather", counting_gather)
    # every prompt in one call: lengths from 1 s to 10 s, rows finishing at different steps
    batched = model.transcribe(clips)
    assert gathers >= 3  # rows were dropped on the device
    assert [list(t.token_ids) for t in batched] == want
    for a, b in zip(batched, one_by_one, strict=True):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-5)
    # drafts: the answers for the first 60% of each clip, a wrong draft, and a whole right one
    heads = model.transcribe([clip[: clip.size * 6 // 10] for clip in clips])
    drafts: list[Sequence[int]] = [h.token_ids for h in heads]
    drafts[0] = [want[1][0]] * 5 if want[1][0] != want[0][0] else [7] * 5
    drafts[1] = want[1]
    drafted = model.transcribe(clips, drafts)
    assert [list(t.token_ids) for t in drafted] == want
    assert drafted[0].draft_kept == 0
    assert drafted[1].draft_kept == len(want[1])
    assert sum(t.draft_kept for t in drafted[2:]) > sum(len(d) for d in drafts[2:]) // 2
    with pytest.raises(ValueError, match="drafts"):
        model.transcribe(clips[:2], drafts[:1])


@pytest.mark.integration
@needs_model
@needs_speech
def test_the_pick_graph_gives_the_same_answers(
    model: MoonshineModel,
    clips: list[np.ndarray],
    one_by_one: list[Transcription],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the loop exactly as it runs on CUDA: only the chosen tokens and log-probabilities come back
    monkeypatch.setattr(model._device, "_pick_on_device", True)
    batch = _length_buckets(clips, BATCH)[1]
    picked = model.transcribe([clips[i] for i in batch])
    assert [(a.text, a.tokens) for a in picked] == [
        (one_by_one[i].text, one_by_one[i].tokens) for i in batch
    ]
    for a, i in zip(picked, batch, strict=True):
        assert a.confidence == pytest.approx(one_by_one[i].confidence, abs=1e-5)


@pytest.mark.integration
@needs_model
def test_warm_up_runs_every_batch_size_longest_first(
    files: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: list[tuple[int, int]] = []
    run_batch = MoonshineModel._run_batch

    def recording(
        self: MoonshineModel, waves: Sequence[np.ndarray], drafts: None, **kwargs: object
    ) -> object:
        shapes.append((len(waves), waves[0].size))
        return run_batch(self, waves, drafts, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MoonshineModel, "_run_batch", recording)
    warmed = MoonshineModel(
        files, choose_providers("cpu"), warm_up_max_batch=2, warm_up_seconds=(0.2, 0.5)
    )
    assert shapes == [(2, 8000), (1, 8000), (2, 3200), (1, 3200)]
    assert warmed.warm_up(1, (0.3,)) > 0
    assert shapes[-1] == (1, 4800)
    with pytest.raises(ValueError, match="max_batch"):
        warmed.warm_up(0)
    with pytest.raises(ValueError, match="warm_up_max_batch"):
        MoonshineModel(files, choose_providers("cpu"), warm_up_max_batch=-1)


def test_incremental_partials_give_the_full_re_decodes_text(
    model: MoonshineModel, clips: list[np.ndarray]
) -> None:
    """Live utterances decoded the way the worker does (``DraftedStreams``: each partial of the
    growing audio starts from the previous one's tokens, several streams per batch) give, at
    every step, exactly the text of decoding that audio from scratch; so do their finals."""
    streams = DraftedStreams(model)
    tail = np.zeros(int(PARTIAL_TAIL_S * SAMPLE_RATE), dtype=np.float32)
    live = clips[:6]
    states = [streams.open_stream() for _ in live]
    step = int(0.4 * SAMPLE_RATE)
    reused = 0
    for end in range(step, max(map(len, live)) + step, step):
        rows = [i for i, c in enumerate(live) if end - step < len(c)]
        final = {i: end >= len(live[i]) for i in rows}
        answers = streams.step(
            [StreamStep(states[i], live[i][:end], final=final[i]) for i in rows]
        )  # fmt: skip
        for i, (answer, state) in zip(rows, answers, strict=True):
            audio = live[i][:end] if final[i] else np.concatenate((live[i][:end], tail))
            (scratch,) = model.transcribe([audio])
            assert answer.text == scratch.text and answer.token_ids == scratch.token_ids
            reused += answer.draft_kept
            states[i] = state
    assert reused > 0  # the drafts were used, not ignored


@pytest.fixture(scope="session")
def int8(model: MoonshineModel) -> MoonshineModel:
    return model.for_partials()


@pytest.mark.integration
@needs_model
@needs_speech
def test_int8_encoder_for_partials_is_close_to_the_exact_one(
    model: MoonshineModel,
    int8: MoonshineModel,
    prompts: list[speech.Prompt],
    clips: list[np.ndarray],
    one_by_one: list[Transcription],
) -> None:
    """The INT8 encoder is really another session (not the exact one under a new name), shares
    the decoder, and transcribes the prompts within 2 points of WER of the exact model."""
    assert int8 is not model and int8._encoder is not model._encoder
    assert int8._decoder is model._decoder
    answers = [int8.transcribe([clip])[0] for clip in clips]
    refs = [p.text for p in prompts]
    exact, approx = (
        speech.wer(refs, [t.text for t in one_by_one]),
        speech.wer(refs, [t.text for t in answers]),
    )
    print(f"WER exact {exact:.1%}, INT8 encoder {approx:.1%}")
    assert approx <= exact + 0.02
    assert (
        sum(a.token_ids != b.token_ids for a, b in zip(answers, one_by_one, strict=True))
        < len(clips) / 2
    )


@pytest.mark.integration
@needs_model
@needs_speech
def test_int8_partials_leave_finals_exact(
    model: MoonshineModel, int8: MoonshineModel, clips: list[np.ndarray]
) -> None:
    """With the INT8 encoder decoding the partials, each partial is what that model gives the
    audio so far, and each final is exactly the exact model's from-scratch answer, its draft
    (the last INT8 partial) notwithstanding."""
    streams = DraftedStreams(model, partial_model=int8)
    tail = np.zeros(int(PARTIAL_TAIL_S * SAMPLE_RATE), dtype=np.float32)
    live = clips[:6]
    states = [streams.open_stream() for _ in live]
    step = int(0.5 * SAMPLE_RATE)
    for end in range(step, max(map(len, live)) + step, step):
        rows = [i for i, c in enumerate(live) if end - step < len(c)]
        final = {i: end >= len(live[i]) for i in rows}
        answers = streams.step(
            [StreamStep(states[i], live[i][:end], final=final[i]) for i in rows]
        )  # fmt: skip
        for i, (answer, state) in zip(rows, answers, strict=True):
            if final[i]:
                (scratch,) = model.transcribe([live[i]])
            else:
                (scratch,) = int8.transcribe([np.concatenate((live[i][:end], tail))])
            assert answer.token_ids == scratch.token_ids
            states[i] = state

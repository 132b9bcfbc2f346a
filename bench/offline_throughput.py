"""Offline throughput of the speech model on the Asterisk prompts (all audio known in advance).

For each batch size: clips sorted by length and cut into batches (length bucketing), then
audio-seconds transcribed per wall-second and per CPU-second of this process, with the WER, so a
faster setting that loses accuracy shows it (best of ``--repeats``). ``--decoder-step`` also
times one cached decoder step on the shipped ``.ort`` file against the converted ``.onnx`` one
(the weight-folding win), and a step of the plain loop against one of the IO-binding loop at
batch 1 and 8.

It prints; nothing else in the project may. It never changes the model or the cache format.

Run from the repository root:
    .venv/bin/python -m bench.offline_throughput --prompts 100 --batch 1 8 --decoder-step
    .venv/bin/python -m bench.offline_throughput --prompts 40 --batch 1 4 16 --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.offline_model import model_audio, run_batched
from bench.harness.prompt_calls import require_prompts
from inference.model_files import default_cache_dir, ensure_converted, locate_shipped
from inference.moonshine import MoonshineModel
from inference.moonshine_graph import DECODER_BIAS, ENCODER_BIAS, POSITION_IDS
from inference.providers import choose_providers, session_options
from tests.support import speech


def load_clips(count: int, min_s: float, max_s: float) -> tuple[list[str], list[np.ndarray]]:
    # select() also returns the "(4 seconds of silence)" prompt: no words to hear, skip it
    prompts = [p for p in speech.select(count + 10, min_s, max_s) if not p.text.startswith("(")]
    prompts = prompts[:count]
    clips = [model_audio(p.pcm()) for p in prompts]
    return [p.text for p in prompts], clips


def _step_feeds(
    session: ort.InferenceSession, batch: int, encoder_frames: int, past: int
) -> dict[str, np.ndarray]:
    """Inputs of one cached decoder step: ``past`` tokens decoded, ``encoder_frames`` heard."""
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.full((batch, 1), 400, dtype=np.int64),
        "encoder_hidden_states": rng.standard_normal((batch, encoder_frames, 416), np.float32),
        "use_cache_branch": np.array([True]),
    }
    for item in session.get_inputs():
        if item.name.startswith("past_key_values."):
            length = past if ".decoder." in item.name else encoder_frames
            feeds[item.name] = rng.standard_normal((batch, 8, length, 52), dtype=np.float32)
    names = {item.name for item in session.get_inputs()}
    if POSITION_IDS in names:  # the converted decoder (moonshine_graph): every key visible
        feeds[POSITION_IDS] = np.full((batch, 1), past, dtype=np.int64)
        feeds[DECODER_BIAS] = np.zeros((batch, 1, 1, past + 1), dtype=np.float32)
        feeds[ENCODER_BIAS] = np.zeros((batch, 1, 1, encoder_frames), dtype=np.float32)
    return feeds


def _mean_ms(step: Callable[[], object], runs: int) -> float:
    step()
    started = time.perf_counter()
    for _ in range(runs):
        step()
    return (time.perf_counter() - started) / runs * 1000


def decoder_step_ms(path: Path, threads: int, encoder_frames: int, past: int, runs: int) -> float:
    """Mean time of one cached decoder step at batch 1 on the CPU."""
    session = ort.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )
    feeds = _step_feeds(session, 1, encoder_frames, past)
    return _mean_ms(lambda: session.run(None, feeds), runs)


def loop_step_ms(
    path: Path, threads: int, batch: int, encoder_frames: int, past: int, runs: int
) -> tuple[float, float]:
    """Mean time of one cached step as each decoder loop of ``MoonshineModel`` runs it on the
    CPU, pick of the chosen tokens included: (plain ``session.run``, IO binding)."""
    session = ort.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )
    feeds = _step_feeds(session, batch, encoder_frames, past)
    outputs = [o.name for o in session.get_outputs()]
    self_attention = [n for n in outputs if n.startswith("present.") and ".decoder." in n]

    def plain() -> None:
        # as the plain loop: every output fetched, logits reduced on the host
        logits = session.run(outputs, feeds)[0][:, -1, :32000]
        logits.argmax(axis=1)
        np.log(np.exp(logits - logits.max(axis=1)[:, None]).sum(axis=1))

    binding = session.io_binding()
    for name, value in feeds.items():
        if name.startswith("past_key_values.") or name == "encoder_hidden_states":
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))

    def bound() -> None:
        # as the IO-binding loop: token ids in, presents left on the device, logits read in place
        binding.bind_cpu_input("input_ids", feeds["input_ids"])
        binding.bind_cpu_input("use_cache_branch", feeds["use_cache_branch"])
        binding.clear_binding_outputs()
        for name in [outputs[0], *self_attention]:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        logits = binding.get_outputs()[0].numpy()[:, -1, :32000]
        logits.argmax(axis=1)
        np.log(np.exp(logits - logits.max(axis=1)[:, None]).sum(axis=1))

    # alternate, so drift in the machine's load hits both alike
    plain_ms, bound_ms = [], []
    for _ in range(3):
        plain_ms.append(_mean_ms(plain, runs))
        bound_ms.append(_mean_ms(bound, runs))
    return min(plain_ms), min(bound_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100, help="number of prompts (default 100)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session")
    parser.add_argument("--provider", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--repeats", type=int, default=1, help="runs per batch size; best kept")
    parser.add_argument("--min-s", type=float, default=1.5, help="shortest prompt, seconds")
    parser.add_argument("--max-s", type=float, default=8.0, help="longest prompt, seconds")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument(
        "--decoder-step", action="store_true", help="also time a decoder step, .ort vs folded .onnx"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    require_prompts()

    files = ensure_converted(args.cache_dir)
    providers = choose_providers(args.provider)
    models = [MoonshineModel(files, providers, threads=args.threads)]
    refs, clips = load_clips(args.prompts, args.min_s, args.max_s)
    audio_s = sum(c.size for c in clips) / models[0].sample_rate
    for model in models:
        model.transcribe(clips[:1])  # warm-up: first runs allocate

    print(
        f"\n{len(clips)} prompts, {audio_s:.0f} s of audio, {args.threads} thread(s), "
        f"{providers.name}, best of {args.repeats}"
    )
    print(f"{'batch':>5} {'loop':>10} {'wall s':>7} {'cpu s':>7} {'audio/wall':>10} "
          f"{'audio/cpu':>9} {'padding':>7} {'WER':>6}")  # fmt: skip
    for batch in args.batch:
        best: dict[int, tuple[list[str], float, float, float]] = {}
        for _ in range(args.repeats):
            for index, model in enumerate(models):  # alternating, so load drift hits all alike
                run = run_batched(model, clips, batch)
                if index not in best or run[1] < best[index][1]:
                    best[index] = run
        for index in range(len(models)):
            texts, wall, cpu, padding = best[index]
            loop = "IO binding"
            print(
                f"{batch:>5} {loop:>10} {wall:>7.1f} {cpu:>7.1f} {audio_s / wall:>10.1f} "
                f"{audio_s / cpu:>9.1f} {padding:>7.1%} {speech.wer(refs, texts):>6.1%}"
            )

    if args.decoder_step:
        frames, past, runs = 130, 20, 20  # ~5 s of audio, 20 tokens decoded so far
        shipped = decoder_step_ms(locate_shipped().decoder, args.threads, frames, past, runs)
        folded = decoder_step_ms(files.decoder, args.threads, frames, past, runs)
        print(f"\ndecoder step (batch 1, {frames} encoder frames, {past} past tokens):")
        print(f"  shipped .ort {shipped:6.1f} ms   folded .onnx {folded:6.1f} ms")
        print(f"decoder loop step on the CPU ({frames} encoder frames, {past} past tokens):")
        for batch in (1, 8):
            plain, bound = loop_step_ms(files.decoder, args.threads, batch, frames, past, runs)
            print(f"  batch {batch}: plain {plain:6.2f} ms   IO binding {bound:6.2f} ms")


if __name__ == "__main__":
    main()

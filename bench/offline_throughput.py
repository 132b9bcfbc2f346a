"""Offline throughput of the speech model on the Asterisk prompts (all audio known in advance).

For each batch size: clips sorted by length and cut into batches (length bucketing), then
audio-seconds transcribed per wall-second and per CPU-second of this process, with the WER, so a
faster setting that loses accuracy shows it. ``--decoder-step`` also times one cached decoder step
on the shipped ``.ort`` file against the converted ``.onnx`` one (the weight-folding win).

It prints; nothing else in the project may. It never changes the model or the cache format.

Run from the repository root:
    .venv/bin/python -m bench.offline_throughput --prompts 100 --batch 1 8 --decoder-step
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soxr

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.model_files import default_cache_dir, ensure_converted, locate_shipped
from inference.moonshine import MoonshineModel
from inference.providers import choose_providers, session_options
from tests.support import speech


def load_clips(count: int, min_s: float, max_s: float) -> tuple[list[str], list[np.ndarray]]:
    # select() also returns the "(4 seconds of silence)" prompt: no words to hear, skip it
    prompts = [p for p in speech.select(count + 10, min_s, max_s) if not p.text.startswith("(")]
    prompts = prompts[:count]
    clips = [
        np.asarray(
            soxr.resample(p.pcm().astype(np.float32) / 32768.0, 8000, 16000), dtype=np.float32
        )
        for p in prompts
    ]
    return [p.text for p in prompts], clips


def run_batched(
    model: MoonshineModel, clips: list[np.ndarray], batch: int
) -> tuple[list[str], float, float, float]:
    """Texts in input order, wall seconds, CPU seconds, padding as a share of real audio."""
    order = sorted(range(len(clips)), key=lambda i: clips[i].size)
    texts = [""] * len(clips)
    padded = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(order), batch):
        bucket = order[start : start + batch]
        answers = model.transcribe([clips[i] for i in bucket])
        for index, answer in zip(bucket, answers, strict=True):
            texts[index] = answer.text
        longest = max(clips[i].size for i in bucket)
        padded += sum(longest - clips[i].size for i in bucket)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return texts, wall, cpu, padded / sum(c.size for c in clips)


def decoder_step_ms(path: Path, threads: int, encoder_frames: int, past: int, runs: int) -> float:
    """Mean time of one cached decoder step at batch 1 on the CPU."""
    session = ort.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([[400]], dtype=np.int64),
        "encoder_hidden_states": rng.standard_normal((1, encoder_frames, 416), dtype=np.float32),
        "use_cache_branch": np.array([True]),
    }
    for item in session.get_inputs():
        if item.name.startswith("past_key_values."):
            length = past if ".decoder." in item.name else encoder_frames
            feeds[item.name] = rng.standard_normal((1, 8, length, 52), dtype=np.float32)
    session.run(None, feeds)
    started = time.perf_counter()
    for _ in range(runs):
        session.run(None, feeds)
    return (time.perf_counter() - started) / runs * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100, help="number of prompts (default 100)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session")
    parser.add_argument("--provider", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--min-s", type=float, default=1.5, help="shortest prompt, seconds")
    parser.add_argument("--max-s", type=float, default=8.0, help="longest prompt, seconds")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument(
        "--decoder-step", action="store_true", help="also time a decoder step, .ort vs folded .onnx"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not speech.available():
        sys.exit("Asterisk prompts missing: apt-get install asterisk-core-sounds-en-wav")

    files = ensure_converted(args.cache_dir)
    model = MoonshineModel(files, choose_providers(args.provider), threads=args.threads)
    refs, clips = load_clips(args.prompts, args.min_s, args.max_s)
    audio_s = sum(c.size for c in clips) / model.sample_rate
    model.transcribe(clips[:1])  # warm-up: first runs allocate

    print(f"\n{len(clips)} prompts, {audio_s:.0f} s of audio, {args.threads} thread(s)")
    print(f"{'batch':>5} {'wall s':>7} {'cpu s':>7} {'audio/wall':>10} {'audio/cpu':>9} "
          f"{'padding':>7} {'WER':>6}")  # fmt: skip
    for batch in args.batch:
        texts, wall, cpu, padding = run_batched(model, clips, batch)
        print(
            f"{batch:>5} {wall:>7.1f} {cpu:>7.1f} {audio_s / wall:>10.1f} {audio_s / cpu:>9.1f} "
            f"{padding:>7.1%} {speech.wer(refs, texts):>6.1%}"
        )

    if args.decoder_step:
        frames, past, runs = 130, 20, 20  # ~5 s of audio, 20 tokens decoded so far
        shipped = decoder_step_ms(locate_shipped().decoder, args.threads, frames, past, runs)
        folded = decoder_step_ms(files.decoder, args.threads, frames, past, runs)
        print(f"\ndecoder step (batch 1, {frames} encoder frames, {past} past tokens):")
        print(f"  shipped .ort {shipped:6.1f} ms   folded .onnx {folded:6.1f} ms")


if __name__ == "__main__":
    main()

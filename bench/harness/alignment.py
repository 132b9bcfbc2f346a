"""Word timings of the recorded prompts: a forced alignment, computed once and cached.

The word-lag benchmark needs, for every word a caller says, the moment it ends in the audio. The
prompts come with their transcripts, so the words are known; only their times are not. They come
from PocketSphinx's forced aligner (``pocketsphinx`` on PyPI ships its US English acoustic model
and dictionary; a bench-only dependency, never used by the product): the transcript is aligned
to the 8 kHz prompt upsampled to 16 kHz. The aligner stretches a word over the silence after it
(always the last one, up to the end of the file), so each end is then pulled back to the end of
the last voiced 10 ms frame inside the word's span (above ``VOICED_DBFS``), the same rule as the
older benches' end of speech.

Prompts whose transcript holds a word the dictionary lacks (``3d``, ``#``) cannot be aligned and
are left out by :func:`aligned_prompts`. Results are cached per prompt file (its name, size and
modification time) in one JSON file, so a benchmark pays the ~50 ms per prompt once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soxr

from tests.support import speech

VOICED_DBFS = -40.0
FRAME_S = 0.01
ALIGNMENT_VERSION = 1
SENTENCE_END = re.compile(r"[.?!]['\")\]]*$")


@dataclass(frozen=True, slots=True)
class Word:
    """One reference word: normalised text, times in seconds from the prompt's first sample,
    and whether the transcript ends a sentence after it."""

    text: str
    start: float
    end: float
    sentence_end: bool


@dataclass(frozen=True, slots=True)
class AlignedPrompt:
    prompt: speech.Prompt
    words: tuple[Word, ...]

    @property
    def speech_end(self) -> float:
        return self.words[-1].end


def reference_words(text: str) -> list[tuple[str, bool]]:
    """The transcript's words as ``speech.normalize`` makes them, each with whether a sentence
    ends after it (the raw token carried a full stop, question or exclamation mark)."""
    out: list[tuple[str, bool]] = []
    for token in text.split():
        words = speech.normalize(token)
        for i, word in enumerate(words):
            out.append((word, i == len(words) - 1 and bool(SENTENCE_END.search(token))))
    if out:
        out[-1] = (out[-1][0], True)  # a prompt ends its caller's turn
    return out


def _cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sip-bridge" / f"bench-alignments-v{ALIGNMENT_VERSION}.json"


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{int(st.st_mtime)}"


def _voiced_end(pcm: np.ndarray, rate: int, start: float, end: float) -> float:
    frame = int(FRAME_S * rate)
    lo, hi = int(start * rate) // frame, int(np.ceil(end * rate / frame))
    frames = pcm[: len(pcm) // frame * frame].astype(np.float64).reshape(-1, frame)[lo:hi]
    if not len(frames):
        return end
    rms = np.sqrt((frames**2).mean(axis=1)) / 32768.0
    voiced = np.nonzero(20 * np.log10(rms + 1e-12) > VOICED_DBFS)[0]
    if not len(voiced):
        return end
    return float(min(end, (lo + voiced[-1] + 1) * FRAME_S))


class Aligner:
    """PocketSphinx in alignment mode (imported here: only the benches need it)."""

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:  # pragma: no cover - depends on the venv
            raise SystemExit(
                "the word-lag benchmark needs pocketsphinx: .venv/bin/pip install -e '.[bench]'"
            ) from exc
        self._decoder = Decoder(samprate=16000, lm=None, loglevel="FATAL")

    def align(self, prompt: speech.Prompt) -> AlignedPrompt | None:
        pcm, rate = speech.read_wav(prompt.path)
        ref = reference_words(prompt.text)
        if not ref:
            return None
        audio = soxr.resample(pcm.astype(np.float32), rate, 16000)
        audio = np.clip(audio, -32768, 32767).astype(np.int16)
        try:
            self._decoder.set_align_text(" ".join(w for w, _ in ref))
        except RuntimeError:
            return None  # a word the dictionary lacks
        self._decoder.start_utt()
        self._decoder.process_raw(audio.tobytes(), full_utt=True)
        self._decoder.end_utt()
        found = self._decoder.seg()
        if found is None:
            return None  # no path through the transcript
        segments = [
            (re.sub(r"\(\d+\)$", "", s.word), s.start_frame / 100, (s.end_frame + 1) / 100)
            for s in found
            if not s.word.startswith("<") and s.word not in ("[NOISE]", "</s>", "<s>")
        ]
        if [w for w, _, _ in segments] != [w for w, _ in ref]:
            return None
        words = tuple(
            Word(word, start, _voiced_end(pcm, rate, start, end), sentence_end)
            for (word, start, end), (_, sentence_end) in zip(segments, ref, strict=True)
        )
        return AlignedPrompt(prompt, words)


def aligned_prompts(prompts: Sequence[speech.Prompt]) -> list[AlignedPrompt]:
    """The prompts that align, each with its word timings (from the cache when it has them)."""
    path = _cache_path()
    try:
        cache: dict[str, list[dict[str, object]] | None] = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    aligner: Aligner | None = None
    out: list[AlignedPrompt] = []
    dirty = False
    for prompt in prompts:
        key = _file_key(prompt.path)
        if key not in cache:
            aligner = aligner or Aligner()
            found = aligner.align(prompt)
            cache[key] = None if found is None else [asdict(w) for w in found.words]
            dirty = True
        entry = cache[key]
        if entry is not None:
            out.append(AlignedPrompt(prompt, tuple(Word(**w) for w in entry)))  # type: ignore[arg-type]
    if dirty:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(path)
    return out

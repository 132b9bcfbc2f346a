"""Recorded human telephone prompts (Debian's asterisk-core-sounds-en-wav) with their transcripts,
text normalisation and word error rate: the ground truth for accuracy tests and benchmarks."""

from __future__ import annotations

import gzip
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOUNDS = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")

_NUMBERS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine", "10": "ten",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    text: str
    path: Path  # 8 kHz 16-bit mono wav

    def pcm(self) -> np.ndarray:
        """int16 samples at 8 kHz."""
        return read_wav(self.path)[0]

    @property
    def seconds(self) -> float:
        with wave.open(str(self.path)) as w:
            return float(w.getnframes()) / float(w.getframerate())


def available() -> bool:
    return SOUNDS.is_dir() and TRANSCRIPTS.is_file()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()


def wav_rate(path: Path) -> int:
    """The sample rate of a 16-bit mono wav file (what the clients' file players take)."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: a client's file player needs 16-bit mono")
        return int(w.getframerate())


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def load_prompts() -> list[Prompt]:
    """Every prompt with speech (bracketed non-speech entries skipped) whose wav exists, by name."""
    prompts = []
    with gzip.open(TRANSCRIPTS, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    for line in lines:
        if line.startswith(";") or ":" not in line:
            continue
        name, text = (part.strip() for part in line.split(":", 1))
        if not text or text.startswith(("[", "(")):  # [tones], (4 seconds of silence)
            continue
        path = SOUNDS / f"{name}.wav"
        if path.is_file():
            prompts.append(Prompt(name, text, path))
    return sorted(prompts, key=lambda p: p.name)


def select(count: int, min_s: float = 1.5, max_s: float = 8.0, stride: int = 0) -> list[Prompt]:
    """A deterministic spread of ``count`` prompts between min_s and max_s seconds long."""
    pool = [p for p in load_prompts() if min_s <= p.seconds <= max_s and len(p.text.split()) >= 3]
    if len(pool) < count:
        raise ValueError(f"only {len(pool)} prompts between {min_s} and {max_s} s")
    step = len(pool) / count
    return [pool[(int(i * step) + stride) % len(pool)] for i in range(count)]


def normalize(text: str) -> list[str]:
    """Lower case, digits spelt out, punctuation dropped (apostrophes kept inside words)."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    words = []
    for word in text.split():
        word = word.strip("'")
        if word:
            words.append(_NUMBERS.get(word, word))
    return words


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus word error rate: total edits over total reference words."""
    if len(refs) != len(hyps):
        raise ValueError("refs and hyps differ in length")
    edits = sum(edit_distance(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True))
    words = sum(len(normalize(r)) for r in refs)
    return edits / max(words, 1)

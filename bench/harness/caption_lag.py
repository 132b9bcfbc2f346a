"""How far captions trail the talker: word lag, end of speech to final, splits, WER.

Sans-IO: the words a call's caller spoke (with wall-clock times, from the prompts' alignment and
the moment playback started) and the captions a consumer received (with their arrival times) go
in; figures come out. Nothing here touches a socket or a clock, so it is unit-tested with made-up
captions (tests/test_caption_lag.py).

Definitions (the README's performance section quotes them):

- **Word lag**: for each spoken word, the arrival of the first caption that holds it minus the
  moment the word ended in the audio as played. "The captions" are what a consumer shows after
  each event: every final so far, in utterance order, then the newest partial of an utterance not
  yet final. After each event that view is aligned (edit distance, words as
  ``speech.normalize`` makes them) to the words spoken so far (those begun before the event
  arrived); a spoken word is *held* when the alignment matches it exactly. A word never held
  is *missed* (the recogniser got it wrong everywhere) and has no lag.
- **End of speech to final**: per prompt (one turn of the caller), the arrival of the first
  final whose audio reaches the prompt's last word minus the end of that word.
- **Splits**: a final that ends inside a prompt's speech cut the turn; it is *mid-word* when it
  ends inside a word (more than ``WORD_MARGIN_S`` from both of its edges), *mid-sentence* when the
  word before the cut does not end a sentence in the transcript, else *at a sentence end*.

Call time (the ``start``/``end`` of captions: seconds from the answer, as the media process counts
them) is wall time minus the playback start plus ``call_offset_s`` (the jitter buffer's delay,
roughly): only the split and final matching use it, with ``TIME_TOLERANCE_S`` of slack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.harness.alignment import AlignedPrompt
from tests.support import speech

TIME_TOLERANCE_S = 0.15
WORD_MARGIN_S = 0.06


@dataclass(frozen=True, slots=True)
class Caption:
    """One transcript event as a consumer received it."""

    at: float  # arrival, wall clock
    final: bool
    utterance: int
    text: str
    start: float  # call time
    end: float


@dataclass(frozen=True, slots=True)
class SpokenWord:
    text: str
    start: float  # wall clock
    end: float
    prompt: int  # index of its prompt in the call
    last_of_prompt: bool
    sentence_end: bool


@dataclass(slots=True)
class CallFigures:
    word_lags: list[float] = field(default_factory=list)
    missed: int = 0
    final_latencies: list[float] = field(default_factory=list)
    finals_missing: int = 0  # prompts no final reached
    splits_mid_word: int = 0
    splits_mid_sentence: int = 0
    splits_at_sentence_end: int = 0
    reference: str = ""
    finals_text: str = ""


def spoken_words(
    plan: Sequence[tuple[AlignedPrompt, float]], play_start: float
) -> list[SpokenWord]:
    """The words of ``plan`` ((prompt, its offset in the call's audio)) on the wall clock."""
    out = []
    for index, (prompt, offset) in enumerate(plan):
        for k, w in enumerate(prompt.words):
            t0 = play_start + offset
            out.append(
                SpokenWord(
                    w.text,
                    t0 + w.start,
                    t0 + w.end,
                    index,
                    k == len(prompt.words) - 1,
                    w.sentence_end,
                )  # fmt: skip
            )
    return out


def _matches(ref: Sequence[str], hyp: Sequence[str]) -> list[int]:
    """Indices of ``ref`` words that a minimum edit-distance alignment pairs with an equal word
    of ``hyp`` (ties go to matching, so a word is not lost to an equally cheap substitution)."""
    n, m = len(ref), len(hyp)
    if not n or not m:
        return []
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        row, prev = cost[i], cost[i - 1]
        r = ref[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r != hyp[j - 1]))
    out = []
    i, j = n, m
    while i and j:
        if ref[i - 1] == hyp[j - 1] and cost[i][j] == cost[i - 1][j - 1]:
            out.append(i - 1)
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j - 1] + 1:
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return out


def view(finals: dict[int, str], partial: tuple[int, str] | None) -> str:
    """What a consumer shows: the finals in order, then a newer utterance's partial."""
    parts = [finals[k] for k in sorted(finals)]
    if partial is not None and partial[0] not in finals:
        parts.append(partial[1])
    return " ".join(parts)


def analyse(
    words: Sequence[SpokenWord], captions: Sequence[Caption], play_start: float,
    call_offset_s: float = 0.0,
) -> CallFigures:  # fmt: skip
    """The figures of one call (see the module docstring)."""
    fig = CallFigures()
    ordered = sorted(captions, key=lambda c: c.at)
    finals: dict[int, str] = {}
    partial: tuple[int, str] | None = None
    held: list[float | None] = [None] * len(words)
    ref = [w.text for w in words]
    for cap in ordered:
        if cap.final:
            finals[cap.utterance] = cap.text
        elif cap.utterance not in finals and (partial is None or cap.utterance >= partial[0]):
            partial = (cap.utterance, cap.text)
        else:
            continue  # a late partial of an utterance already final, or of an older one
        begun = sum(1 for w in words if w.start <= cap.at)
        for i in _matches(ref[:begun], speech.normalize(view(finals, partial))):
            if held[i] is None:
                held[i] = cap.at
    for word, at in zip(words, held, strict=True):
        if at is None:
            fig.missed += 1
        else:
            fig.word_lags.append(at - word.end)

    def call_time(wall: float) -> float:
        return wall - play_start + call_offset_s

    finals_in_order = sorted((c for c in ordered if c.final), key=lambda c: c.utterance)
    first_final: dict[int, Caption] = {}
    for cap in ordered:
        if cap.final and cap.utterance not in first_final:
            first_final[cap.utterance] = cap
    prompts = sorted({w.prompt for w in words})
    for p in prompts:
        mine = [w for w in words if w.prompt == p]
        end = call_time(mine[-1].end)
        reaching = [
            c for c in first_final.values()
            if c.end >= end - TIME_TOLERANCE_S and c.start <= end + TIME_TOLERANCE_S
        ]  # fmt: skip
        if reaching:
            fig.final_latencies.append(min(c.at for c in reaching) - mine[-1].end)
        else:
            fig.finals_missing += 1
        for cap in finals_in_order:
            cut = cap.end
            if not call_time(mine[0].start) < cut < end - TIME_TOLERANCE_S:
                continue
            inside = [
                w for w in mine
                if call_time(w.start) + WORD_MARGIN_S < cut < call_time(w.end) - WORD_MARGIN_S
            ]  # fmt: skip
            before = [w for w in mine if call_time(w.end) <= cut + WORD_MARGIN_S]
            if inside:
                fig.splits_mid_word += 1
            elif before and before[-1].sentence_end:
                fig.splits_at_sentence_end += 1
            else:
                fig.splits_mid_sentence += 1
    fig.reference = " ".join(" ".join(w.text for w in words if w.prompt == p) for p in prompts)
    fig.finals_text = " ".join(c.text for c in finals_in_order)
    return fig

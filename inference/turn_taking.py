"""Whether a pausing talker has finished the turn: the rule that lets a final go out early.

An utterance ends for sure after ``min_silence_ms`` of silence. Most turns are over much
sooner, and the early final (decoded once the end padding has been heard, see the worker's
``speculate``) says so itself: its text ends a sentence. Measured on 150 Asterisk prompts cut at
their real end, a 160 ms pause and Moonshine's text ending in ``.``, ``?`` or ``!`` marked 142
ends (95%); Pipecat's Smart Turn v3.2 on the same audio (8 kHz, upsampled) marked 133 at 0.5
and cost ~33 ms a decision, so the punctuation cue is the default and the only one built in.
A pause inside a turn that does end a sentence ("Please." then more) becomes two finals at
that sentence boundary, never a cut mid-word.

Sans-IO: text and pause length in, a verdict out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TurnCue = Literal["punctuation", "off"]
SENTENCE_ENDS = (".", "?", "!")


@dataclass(frozen=True, slots=True)
class TurnPolicy:
    cue: TurnCue = "punctuation"  # "off": utterances end only after min_silence_ms
    min_pause_ms: int = 200  # the pause before the early final may end the turn

    def __post_init__(self) -> None:
        if self.cue not in ("punctuation", "off"):
            raise ValueError(f"cue must be 'punctuation' or 'off', got {self.cue!r}")
        if self.min_pause_ms < 0:
            raise ValueError(f"min_pause_ms must be >= 0, got {self.min_pause_ms}")

    def turn_over(self, text: str, pause_ms: float) -> bool:
        """Does a pause of ``pause_ms`` after speech whose transcript is ``text`` end the turn?"""
        if self.cue == "off" or pause_ms < self.min_pause_ms:
            return False
        words = text.strip().rstrip("\"')]")
        return bool(words) and words.endswith(SENTENCE_ENDS) and not words.endswith("...")

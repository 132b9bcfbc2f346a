"""The audio the bridge carries between its parts, as the benchmarks make and count it: 8 kHz
mono int16 PCM in 20 ms frames (as PJSIP hands it over); the speech model hears 16 kHz."""

from __future__ import annotations

from typing import Final

RATE: Final = 8000
FRAME: Final = RATE // 50  # samples in 20 ms
FRAME_BYTES: Final = FRAME * 2
TICK_S: Final = FRAME / RATE
MODEL_RATE: Final = 16000

"""The end-of-turn rule, sans-IO."""

from __future__ import annotations

import pytest

from inference.turn_taking import TurnPolicy


@pytest.mark.parametrize(
    ("text", "over"),
    [
        ("Please try again.", True),
        ("Is that correct?", True),
        ("Goodbye!", True),
        ('He said "stop."', True),
        ("Press one for", False),
        ("Please wait...", False),  # a trailing-off, not an end
        ("", False),
        ("   ", False),
    ],
)
def test_punctuation_cue(text: str, over: bool) -> None:
    assert TurnPolicy(min_pause_ms=120).turn_over(text, pause_ms=150) is over


def test_pause_must_be_long_enough_and_off_never_ends() -> None:
    p = TurnPolicy(min_pause_ms=200)
    assert not p.turn_over("Thank you.", 199)
    assert p.turn_over("Thank you.", 200)
    assert not TurnPolicy(cue="off").turn_over("Thank you.", 10_000)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TurnPolicy(cue="model")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TurnPolicy(min_pause_ms=-1)

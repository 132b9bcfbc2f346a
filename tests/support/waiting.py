"""Waiting for a condition another process or thread makes true: polled, always bounded."""

from __future__ import annotations

import time
from collections.abc import Callable


def within(condition: Callable[[], object], timeout_s: float, every_s: float = 0.05) -> bool:
    """Whether ``condition()`` is true within ``timeout_s`` (asked every ``every_s``, and once
    more at the end)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)  # polling, bounded by the deadline
    return bool(condition())


def wait_until(
    what: str, condition: Callable[[], object], within_s: float, every_s: float = 0.1
) -> None:
    """Fail the test, saying ``what`` did not happen, unless ``condition()`` is true in time."""
    assert within(condition, within_s, every_s), f"{what}: not within {within_s} s"

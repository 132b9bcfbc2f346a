"""When to log a problem that repeats (a bad message on a socket, a dropped event): the first
few times, then one in many, so a flood of garbage neither goes unseen nor fills the log. The
count itself goes to the metrics every time; the log line carries it. Pure arithmetic."""

from __future__ import annotations

FIRST = 10  # the first this many occurrences are each logged
EVERY = 1000  # then every this many-th


def worth_logging(count: int, first: int = FIRST, every: int = EVERY) -> bool:
    """Whether the ``count``-th occurrence (counting from 1) gets a log line."""
    return 0 < count <= first or (count > 0 and count % every == 0)

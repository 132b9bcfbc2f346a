"""Which load levels hold: the largest of an unbroken run, and the search for the capacity.

Sans-IO: whether a level holds is the caller's (a callable that may measure the level first);
this module only decides which levels to ask about and what the answers add up to.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence


def largest_unbroken(results: Iterable[tuple[int, bool]]) -> int:
    """The largest level of an unbroken run of holding levels from the smallest; 0 when the
    smallest fails. ``results`` are (level, holds) pairs, one per level, in any order."""
    best = 0
    for n, ok in sorted(results, key=lambda r: r[0]):
        if not ok:
            break
        best = n
    return best


def search_capacity(
    holds: Callable[[int], bool],
    ladder: Sequence[int],
    measured: Collection[int],
    refine: int,
) -> tuple[int, int | None]:
    """(largest level that holds, smallest that fails; None when none failed).

    The ``ladder`` runs upward until a level fails; if its first rung fails, the levels already
    ``measured`` below it are tried downward; then up to ``refine`` bisection steps between the
    last pass and the first failure. ``measured`` is read when the ladder's first rung has failed
    (a live view, such as a dict's keys, sees what ``holds`` measured meanwhile).
    """
    passed, failed = 0, None
    for n in sorted(set(ladder)):  # bounded: one level each
        if not holds(n):
            failed = n
            break
        passed = n
    if failed is not None and passed == 0:  # the first rung failed: the levels below it
        for n in sorted((n for n in measured if n < failed), reverse=True):
            if holds(n):
                passed = n
                break
            failed = n
    for _ in range(refine):  # bounded bisection
        if failed is None or failed - passed <= 1:
            break
        middle = (passed + failed) // 2
        if middle in (passed, failed):
            break
        if holds(middle):
            passed = middle
        else:
            failed = middle
    return passed, failed

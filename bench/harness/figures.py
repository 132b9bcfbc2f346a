"""The benchmarks' statistics and table cells: percentiles two ways, and milliseconds as a cell.

Two percentile definitions are in use and stay apart on purpose: :func:`nearest_rank` (a value
that was measured; the latency benches pad it with ``inf`` for each lost result, so a lost final
counts as infinitely late) and :func:`pct` (numpy's linear interpolation, for the benches that
have always reported it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def nearest_rank(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def pct(values: Sequence[float], q: float) -> float:
    """numpy's ``q``-th percentile (0..100) of ``values``; NaN when there are none."""
    return float(np.percentile(values, q)) if values else math.nan


def fmt_ms(value: float) -> str:
    """A millisecond cell: ``inf`` (lost), ``-`` (nothing measured) or a whole number."""
    return "inf" if math.isinf(value) else "-" if math.isnan(value) else f"{value:.0f}"

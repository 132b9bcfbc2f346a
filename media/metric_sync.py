"""Running counts kept on hot paths as plain integers (a stats field's ``+= 1``), brought into
a labelled Prometheus counter once a second by whoever owns the metric.

Shared by both sides (the worker's drops, the media process's frames and webhooks); it holds
no metric itself and imports no metrics library: anything with ``labels(label).inc(n)`` will do.
"""

from __future__ import annotations

from typing import Protocol


class _Child(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class LabelledCounter(Protocol):
    def labels(self, *labelvalues: str) -> _Child: ...


_synced: dict[tuple[int, str], int] = {}


def sync_counter(counter: LabelledCounter, label: str, total: int) -> None:
    """Bring a labelled counter up to ``total``, a running count kept elsewhere (a stats
    field), so hot paths keep their plain ``+= 1`` and the metric follows once a second."""
    key = (id(counter), label)
    delta = total - _synced.get(key, 0)
    if delta > 0:
        counter.labels(label).inc(delta)
        _synced[key] = total

"""Which inference worker a call is pinned to (sans-IO).

Each media process holds one PUSH socket per worker; a call's audio always goes to the worker it
was assigned when it started, so the worker keeps its VAD and utterance state. New calls go to the
worker with the fewest calls from this process; ties go to the first worker counting from this
process's own offset, so that the processes of a pool, each seeing only its own calls, do not all
start on worker 0.
"""

from __future__ import annotations


class WorkerRouter:
    def __init__(self, workers: int, offset: int = 0) -> None:
        if workers < 1:
            raise ValueError("at least one worker")
        self._offset = offset
        self._load = [0] * workers
        self._assigned: dict[str, int] = {}

    def assign(self, call_id: str) -> int:
        if call_id in self._assigned:
            return self._assigned[call_id]
        n = len(self._load)
        index = min(range(n), key=lambda i: (self._load[i], (i - self._offset) % n))
        self._load[index] += 1
        self._assigned[call_id] = index
        return index

    def worker_of(self, call_id: str) -> int | None:
        return self._assigned.get(call_id)

    def release(self, call_id: str) -> None:
        index = self._assigned.pop(call_id, None)
        if index is not None:
            self._load[index] -= 1

    def loads(self) -> list[int]:
        return list(self._load)

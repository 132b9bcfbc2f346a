"""The audio of one call that its worker has not yet turned into delivered finals.

Sans-IO. The media side keeps every run of audio it sends to a call's worker until the worker
confirms (with a final's end offset, or a :class:`~media.wire.Checkpoint`) that no later utterance
needs it. If the worker dies, the runs still held are replayed to the next one, which resumes the
call at :attr:`ReplayBuffer.start`, so the open utterance loses nothing.

Memory is bounded: beyond ``max_samples`` the oldest runs are dropped, and :attr:`lost_samples`
says how much audio a replay could no longer cover (only a worker that confirms nothing for that
long, i.e. one that is dead or hung, lets this happen).
"""

from __future__ import annotations

from collections import deque


class ReplayBuffer:
    __slots__ = ("_runs", "_samples", "max_samples", "start", "lost_samples")

    def __init__(self, max_samples: int, start: int = 0) -> None:
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        self.max_samples = max_samples
        self.start = start  # the earliest offset a replay covers
        self.lost_samples = 0
        self._runs: deque[tuple[int, bytes]] = deque()
        self._samples = 0

    @property
    def samples(self) -> int:
        """Samples held (whole runs, so possibly a little before :attr:`start`)."""
        return self._samples

    def append(self, offset: int, pcm: bytes) -> None:
        """Keep a run of int16 PCM that starts at ``offset`` (runs come in increasing order)."""
        if not pcm:
            return
        self._runs.append((offset, pcm))
        self._samples += len(pcm) // 2
        while self._samples > self.max_samples and len(self._runs) > 1:
            old_offset, old = self._runs.popleft()
            n = len(old) // 2
            self._samples -= n
            end = old_offset + n
            if end > self.start:
                self.lost_samples += end - max(old_offset, self.start)
                self.start = end

    def commit(self, offset: int) -> None:
        """Audio before ``offset`` is no longer needed."""
        if offset <= self.start:
            return
        self.start = offset
        runs = self._runs
        while runs and runs[0][0] + len(runs[0][1]) // 2 <= offset:
            self._samples -= len(runs.popleft()[1]) // 2

    def runs(self) -> list[tuple[int, bytes]]:
        """What a replay sends: the runs held, the first one trimmed to start at :attr:`start`."""
        out: list[tuple[int, bytes]] = []
        for offset, pcm in self._runs:
            if offset < self.start:
                skip = self.start - offset
                if skip * 2 >= len(pcm):
                    continue
                pcm, offset = pcm[skip * 2 :], self.start
            out.append((offset, pcm))
        return out

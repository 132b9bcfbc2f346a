"""Partials on a thread of their own, at a lower CPU priority than the worker's loop.

A partial batch takes 150-250 ms of a core on the CPU; run in the worker's loop, a final that
becomes ready meanwhile waits for it (the live benchmark showed finals' p95 set by exactly that).
:class:`PartialRunner` runs partial batches on its own thread, whose Linux nice value is
``nice_delta`` above the process's: while the loop runs a final, the kernel gives it the core
(about nine tenths of it at +10), and the partial finishes later. ONNX Runtime releases the GIL
while it runs and one session serves concurrent runs, so both threads share the model.

The worker's loop owns it: :meth:`submit` one batch of stream steps at a time, :meth:`poll` for
the answers. The thread touches nothing but the model and its two queues (stream states are
immutable: the loop keeps or drops the new ones the answers come with).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inference.speech_model import StreamingSpeechModel, StreamStep, Transcription

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Finished:
    token: Any  # what the caller submitted with the steps
    results: list[tuple[Transcription, Any]]  # each step's answer and the stream's next state
    seconds: float  # wall time inside the model


class PartialRunner:
    def __init__(self, model: StreamingSpeechModel, nice_delta: int = 10) -> None:
        self._model = model
        self._nice_delta = nice_delta
        self._inbox: queue.SimpleQueue[tuple[Any, Sequence[StreamStep]] | None] = (
            queue.SimpleQueue()
        )
        self._done: queue.SimpleQueue[Finished | BaseException] = queue.SimpleQueue()
        self.busy = False  # a batch is submitted and not yet polled (the loop's view)
        self._thread = threading.Thread(target=self._run, name="partials", daemon=True)
        self._thread.start()

    def submit(self, token: Any, steps: Sequence[StreamStep]) -> None:
        if self.busy:
            raise RuntimeError("a partial batch is already running")
        self.busy = True
        self._inbox.put((token, steps))

    def poll(self) -> Finished | None:
        """The finished batch, if any. Re-raises what the model raised on the thread."""
        try:
            done = self._done.get_nowait()
        except queue.Empty:
            return None
        self.busy = False
        if isinstance(done, BaseException):
            raise done
        return done

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(10.0)

    def _lower_priority(self) -> None:
        try:
            tid = threading.get_native_id()
            now = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, now + self._nice_delta))
        except (AttributeError, OSError) as exc:  # not Linux: same priority as the loop
            log.warning("partials run at the loop's priority: %s", exc)

    def _run(self) -> None:
        self._lower_priority()
        while True:
            item = self._inbox.get()
            if item is None:
                return
            token, steps = item
            started = time.perf_counter()
            try:
                results = self._model.step(steps)
            except Exception as exc:  # handed to the loop, which fails loudly
                self._done.put(exc)
                continue
            self._done.put(Finished(token, results, time.perf_counter() - started))

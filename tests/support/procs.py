"""Child processes of test clients: wait with a bound, kill what overruns."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any


def wait_or_kill(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, bool]:
    """(exit code, timed out): waits ``timeout`` seconds, then kills the process."""
    try:
        return proc.wait(timeout), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10), True


def kill(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

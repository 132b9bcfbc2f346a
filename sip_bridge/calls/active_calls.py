"""The calls in progress, for ``sip-bridge calls``: each media process publishes its own as a JSON
file in the runtime directory (``calls-media<i>.json``), rewritten whole, atomically (write then
rename), whenever one of its calls starts or ends. Readers take every file whose writer is still
alive (its pid), so a crashed process's calls are not shown."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PATTERN = "calls-media*.json"


def path_for(runtime_dir: Path, index: int) -> Path:
    return runtime_dir / f"calls-media{index}.json"


def publish(path: Path, calls: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "calls": calls}, separators=(",", ":")))
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def read_all(runtime_dir: Path) -> list[dict[str, Any]]:
    """Every call of every live media process, oldest first."""
    calls: list[dict[str, Any]] = []
    for path in sorted(runtime_dir.glob(PATTERN)):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced, or left half-written by a crash
        if isinstance(doc, dict) and isinstance(doc.get("pid"), int) and _alive(doc["pid"]):
            calls += [c for c in doc.get("calls", []) if isinstance(c, dict)]
    return sorted(calls, key=lambda c: float(c.get("started", 0.0)))

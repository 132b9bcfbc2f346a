"""The live benches' command lines: the options they share, load-level lists, and the lines a run
prints so that its figures can be reproduced (the command, and the code it ran).

Each bench keeps its own parser and its own options; only what is the same in several, to the
help text, is here.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def levels(text: str) -> list[int]:
    """``"16,1,8,8"`` -> ``[1, 8, 16]``: load levels, each once, smallest first."""
    return sorted({int(x) for x in text.split(",") if x.strip()})


def add_call_options(parser: argparse.ArgumentParser, duration_s: float) -> None:
    """The calls a live bench plays: their length, start spread, drain and prompt lengths."""
    parser.add_argument(
        "--duration-s", type=float, default=duration_s, help="call length per level"
    )
    parser.add_argument("--stagger-s", type=float, default=2.0, help="calls start within this")
    parser.add_argument("--drain-s", type=float, default=60.0, help="wait for the last results")
    parser.add_argument("--min-prompt-s", type=float, default=1.0)
    parser.add_argument("--max-prompt-s", type=float, default=10.0)


def invocation(module: str) -> str:
    """This run's command line, as ``python -m module ...`` with the interpreter's path."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return shlex.join([str(python), "-m", module, *sys.argv[1:]])


def revision() -> str:
    """The commit the workers run, and whether the tree differs from it (others edit it too)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
    except OSError:
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head or '?'}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")

"""Times out of sipp's message trace (``-trace_msg``): when the ACK went out (playback starts
then) and when each SIP INFO arrived, with its JSON body. sipp stamps every entry with the wall
clock, the same clock as the benchmarks' webhook and event-stream consumers."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_ENTRY = re.compile(
    r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n(.*?)(?=^-{20,} |\Z)", re.M | re.S
)


def entries(path: Path) -> Iterator[tuple[float, str, str, str]]:
    """Each traced message: (wall time, sipp's header line saying sent/received, the message's
    first line, the whole entry)."""
    for stamp, block in _ENTRY.findall(path.read_text(errors="replace")):
        t = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        lines = block.replace("\r\n", "\n").split("\n")
        first = next((ln for ln in lines[1:] if ln.strip()), "")
        yield t, lines[0], first, block


def trace_times(path: Path) -> tuple[float | None, list[tuple[float, dict[str, Any]]]]:
    """(ACK sent time, [(INFO arrival time, JSON body)]), each INFO once (by its ``seq``)."""
    ack, infos, seen = None, [], set()
    for t, header, first, block in entries(path):
        lines = [header]
        if "sent" in lines[0] and first.startswith("ACK ") and ack is None:
            ack = t
        elif "received" in lines[0] and "unexpected" not in lines[0] and first.startswith("INFO "):
            body = block.split("\n\n", 2)[-1].strip()
            try:
                obj = json.loads(body[: body.rindex("}") + 1])
            except ValueError:
                continue
            if obj.get("seq") not in seen:
                seen.add(obj.get("seq"))
                infos.append((t, obj))
    return ack, infos

"""How every process of the bridge logs: one line per record on stderr, as text or as JSON.

Text (the default) is for a console: ``time level role logger: message``. JSON (``--log-format
json``, or ``log_format: json``) is one object per line for log shippers (journald, Vector,
Fluent Bit, Loki), with the call id as a field of its own: every line about a call starts with
``call <id>:`` by the house rule, and that id becomes ``call_id``.

``serve`` passes its choice to the parts it starts through the environment (:data:`LEVEL_ENV`,
:data:`FORMAT_ENV`), so ``--log-level DEBUG`` on ``serve`` reaches every process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import TextIO, get_args

from sip_bridge.settings.config import LogFormat, LogLevel

LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)
FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
LEVEL_ENV = "SIP_BRIDGE_LOG_LEVEL"
FORMAT_ENV = "SIP_BRIDGE_LOG_FORMAT"

_CALL = re.compile(r"call ([0-9A-Za-z_.:@-]+):")


def call_id_of(message: str) -> str | None:
    """The call a log line is about (``call <id>: ...`` at its start), or None."""
    m = _CALL.match(message)
    return m.group(1) if m else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (ISO 8601, UTC, ms), ``level``, ``role`` (serve,
    media[0], worker[1], ...), ``logger``, ``msg``, ``call_id`` when the line is about a call,
    and ``exc`` with the traceback when there is one."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, object] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "role": self.role,
            "logger": record.name,
            "msg": message,
        }
        call_id = call_id_of(message)
        if call_id is not None:
            out["call_id"] = call_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def chosen(level: str | None, fmt: str | None, configured_level: str,
           configured_format: str) -> tuple[str, LogFormat]:  # fmt: skip
    """The level and format a process logs with: its command line's, else what ``serve`` passed
    down in the environment, else the config's."""
    lvl = (level or os.environ.get(LEVEL_ENV) or configured_level).upper()
    form = fmt or os.environ.get(FORMAT_ENV) or configured_format
    if lvl not in LEVELS:
        raise ValueError(f"log level {lvl!r}: one of {', '.join(LEVELS)}")
    if form not in FORMATS:
        raise ValueError(f"log format {form!r}: one of {', '.join(FORMATS)}")
    return lvl, form


def setup(level: str, fmt: LogFormat, role: str, stream: TextIO | None = None) -> None:
    """Log ``level`` and above to ``stream`` (stderr) in ``fmt``, replacing any handler set
    before."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s {role} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def pass_down(level: str, fmt: LogFormat) -> None:
    """Make the parts ``serve`` starts log as it does (they read the environment)."""
    os.environ[LEVEL_ENV] = level
    os.environ[FORMAT_ENV] = fmt

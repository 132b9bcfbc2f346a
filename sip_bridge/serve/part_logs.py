"""The output of parts that do not log through Python: Kamailio's log, PJSIP's console.

Each line goes, in full, to a file of the runtime directory (``kamailio.log``,
``pjsip-media<N>.log``), and the lines that need an operator (Kamailio's WARNING and above)
also to ``serve``'s own log, so the console shows what matters and the files keep the rest.
One thread per part's pipe copies it; a part is never slowed by the console.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

log = logging.getLogger("kamailio")

# Kamailio, with -E: " 0(1234) ERROR: <core> [core/tcp_main.c:1234]: ..." (and xlog's L_WARN
# lines: "WARNING: <script>: ...").
_KAMAILIO_LEVEL = re.compile(rb"\b(ALERT|BUG|CRITICAL|ERROR|WARNING|NOTICE|INFO|DEBUG):")
_LEVELS = {
    b"ALERT": logging.CRITICAL, b"BUG": logging.CRITICAL, b"CRITICAL": logging.CRITICAL,
    b"ERROR": logging.ERROR, b"WARNING": logging.WARNING, b"NOTICE": logging.INFO,
    b"INFO": logging.INFO, b"DEBUG": logging.DEBUG,
}  # fmt: skip


def kamailio_level(line: bytes) -> int:
    """The logging level of a line of Kamailio's; a line without one (its "Listening on"
    block) is INFO."""
    m = _KAMAILIO_LEVEL.search(line)
    return _LEVELS[m.group(1)] if m else logging.INFO


def pjsip_level(line: bytes) -> int:
    """PJSIP's console carries no level (its errors reach our own log as failed calls; an
    abort goes to stderr, which stays on the console): the file only."""
    return logging.DEBUG


def log_path(rundir: Path, role: str, index: int) -> Path:
    return rundir / ("kamailio.log" if role == "front" else f"pjsip-{role}{index}.log")


class Pump:
    """Copy ``stream`` to ``path`` (appended, private), line by line, until it closes; lines whose
    level (``level_of``) is WARNING and above are logged as well, for the console."""

    def __init__(
        self, stream: IO[bytes], path: Path, level_of: Callable[[bytes], int], name: str
    ) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._out = os.fdopen(fd, "ab", buffering=0)
        self._stream = stream
        self._level_of = level_of
        self._thread = threading.Thread(target=self._run, name=f"log-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Never stop reading while the part runs (a full pipe would block it): a file that
        cannot be written (disk full) is given up, logged once, and the console goes on."""
        writing = True
        for line in self._stream:
            if writing:
                try:
                    self._out.write(line)
                except OSError as exc:
                    writing = False
                    log.error("%s: %s; its log goes on only to the console (WARNING and up)",
                              self._out.name, exc)  # fmt: skip
            level = self._level_of(line)
            if level >= logging.WARNING:
                log.log(level, "%s", line.decode("utf-8", "replace").strip())
        self._out.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

"""serve/part_logs: a part's output goes whole to its file; Kamailio's WARNING and up also to
our log. Driven by a real child process writing to a real pipe."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sip_bridge.serve import part_logs

KAMAILIO_LINES = [
    " 0(101) INFO: <core> [main.c:2963]: main(): processes (at least): 18",
    "Listening on ",
    " 5(106) WARNING: <script>: INVITE abc: every media process is full or down, 503",
    " 0(101) ERROR: <core> [core/cfg.y:3672]: yyerror_at(): parse error in config file",
    " 7(108) NOTICE: <script>: OPTIONS from 192.0.2.7:5060: unlisted source, dropped",
]


def pumped(argv: list[str], path: Path, level_of: Callable[[bytes], int], merge: bool) -> None:
    """Run ``argv`` with its stdout (and stderr, ``merge``) through a Pump into ``path``."""
    stderr = subprocess.STDOUT if merge else None
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr)
    assert proc.stdout is not None
    pump = part_logs.Pump(proc.stdout, path, level_of, path.stem)
    assert proc.wait(30) == 0
    pump.join(10)


def test_every_line_goes_to_the_file_and_only_warnings_and_up_to_our_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = "import sys\nfor line in sys.argv[1:]: print(line, file=sys.stderr)\n"
    path = part_logs.log_path(tmp_path, "front", 0)
    with caplog.at_level(logging.DEBUG, logger="kamailio"):
        pumped([sys.executable, "-c", script, *KAMAILIO_LINES], path,
               part_logs.kamailio_level, merge=True)  # fmt: skip
    assert path.read_text().splitlines() == KAMAILIO_LINES
    assert path.stat().st_mode & 0o777 == 0o600
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "kamailio"]
    assert logged == [
        (logging.WARNING, KAMAILIO_LINES[2].strip()),
        (logging.ERROR, KAMAILIO_LINES[3].strip()),
    ]


def test_pjsip_lines_go_to_the_file_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    line = "00:50:57.869         os_core_unix.c !pjlib 2.15.1 for POSIX initialized"
    path = part_logs.log_path(tmp_path, "media", 3)
    with caplog.at_level(logging.DEBUG, logger="kamailio"):
        pumped([sys.executable, "-c", f"print({line!r})"], path, part_logs.pjsip_level,
               merge=False)  # fmt: skip
    assert path.name == "pjsip-media3.log" and path.read_text() == line + "\n"
    assert not [r for r in caplog.records if r.name == "kamailio"]

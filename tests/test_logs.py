"""sip_bridge.logs: text or JSON lines, the call id as a field, the level and format a process
takes from its command line, from serve (the environment) or from its config."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sip_bridge import logs

CALL = "3f87a5ac23b74512a7e9491d65644eab"


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """Where the tests' setup() logs; the root logger's handlers are put back after."""
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield out
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_a_json_line_carries_the_call_id_as_a_field(stderr: io.StringIO) -> None:
    logs.setup("INFO", "json", "media[2]", stderr)
    logging.getLogger("sip_bridge.calls").info("call %s: answered (%s)", CALL, "PCMU/8000")
    logging.getLogger("sip_bridge.serve").warning("no call here: %d", 3)
    logging.getLogger("x").debug("below the level")
    first, second = (json.loads(line) for line in stderr.getvalue().splitlines())
    assert first["call_id"] == CALL and first["msg"] == f"call {CALL}: answered (PCMU/8000)"
    assert first["level"] == "INFO" and first["role"] == "media[2]"
    assert first["logger"] == "sip_bridge.calls" and first["ts"].endswith("Z")
    assert "call_id" not in second and second["level"] == "WARNING"


def test_a_traceback_stays_inside_its_json_line(stderr: io.StringIO) -> None:
    logs.setup("INFO", "json", "serve", stderr)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("t").exception("call %s: failed", CALL)
    (line,) = stderr.getvalue().splitlines()
    record = json.loads(line)
    assert "RuntimeError: boom" in record["exc"] and record["call_id"] == CALL


def test_text_is_the_console_format_and_setup_replaces_the_handler(stderr: io.StringIO) -> None:
    logs.setup("WARNING", "text", "worker[0]", stderr)
    logs.setup("INFO", "text", "worker[0]", stderr)  # again: one handler, not two
    logging.getLogger("inference").info("call %s: done", CALL)
    (line,) = stderr.getvalue().splitlines()
    assert f" INFO    worker[0] inference: call {CALL}: done" in line


def test_the_command_line_wins_then_serve_then_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    assert logs.chosen(None, None, "INFO", "text") == ("INFO", "text")
    monkeypatch.setenv(logs.LEVEL_ENV, "DEBUG")
    monkeypatch.setenv(logs.FORMAT_ENV, "json")
    assert logs.chosen(None, None, "INFO", "text") == ("DEBUG", "json")
    assert logs.chosen("warning", "text", "INFO", "text") == ("WARNING", "text")
    with pytest.raises(ValueError, match="log format"):
        logs.chosen(None, "yaml", "INFO", "text")


def test_call_ids_are_read_only_at_the_start_of_a_line() -> None:
    assert logs.call_id_of(f"call {CALL}: on worker 0") == CALL
    assert logs.call_id_of("worker 0 is up") is None
    assert logs.call_id_of(f"a call {CALL}: not at the start") is None


def test_the_command_refuses_an_unknown_log_format() -> None:
    cli = [sys.executable, "-m", "sip_bridge.cli", "check-config", "--log-format", "yaml"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--log-format" in done.stderr, done.stderr

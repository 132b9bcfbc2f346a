from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sip_bridge.calls import active_calls


def test_published_calls_are_read_back_oldest_first(tmp_path: Path) -> None:
    a = {"call_id": "a" * 32, "started": 20.0}
    b = {"call_id": "b" * 32, "started": 10.0}
    active_calls.publish(active_calls.path_for(tmp_path, 0), [a])
    active_calls.publish(active_calls.path_for(tmp_path, 1), [b])
    assert active_calls.read_all(tmp_path) == [b, a]
    active_calls.publish(active_calls.path_for(tmp_path, 0), [])  # process 0's call ended
    assert active_calls.read_all(tmp_path) == [b]
    assert not list(tmp_path.glob("*.tmp"))


def test_calls_of_a_dead_process_and_broken_files_are_skipped(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = {"pid": int(gone.stdout), "calls": [{"call_id": "c" * 32, "started": 1.0}]}
    active_calls.path_for(tmp_path, 0).write_text(json.dumps(dead))
    active_calls.path_for(tmp_path, 1).write_text('{"pid": 1, "calls": [')  # cut short
    assert active_calls.read_all(tmp_path) == []


def test_a_siprec_rows_conversation_is_read_back_whole(tmp_path: Path) -> None:
    conversation = {
        "id": "rs-1@src",
        "kind": "siprec",
        "participants": [{"participant_id": "p1", "name": "Alice", "aor": "sip:alice@a.example"}],
        "streams": [{"stream": "96", "name": "Alice", "on_hold": False}],
    }
    row = {"call_id": "d" * 32, "started": 5.0, "conversation": conversation}
    active_calls.publish(active_calls.path_for(tmp_path, 0), [row])
    assert active_calls.read_all(tmp_path) == [row]

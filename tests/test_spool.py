import os
import sqlite3
from pathlib import Path

import pytest

from sip_bridge.delivery.events import Event
from sip_bridge.delivery.spool import Delivery, RetryPolicy, Spool, SpoolError

A, B = "http://a/hook", "http://b/hook"
T0 = 1_800_000_000.0


def ev(call: str, seq: int) -> Event:
    return Event("transcript.final", call, seq, f'{{"call_id":"{call}","seq":{seq}}}'.encode())


class Rand:
    """A stand-in for random.random that returns what it is told."""

    def __init__(self, value: float = 0.5) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def spool(tmp_path: Path, rand: Rand | None = None, **policy: float) -> Spool:
    return Spool(tmp_path / "spool.sqlite", RetryPolicy(**policy), rand or Rand())


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.event_id for d in deliveries]


def test_a_call_is_delivered_in_order_and_other_calls_are_not_held_up(tmp_path: Path) -> None:
    s = spool(tmp_path, backoff_s=1.0)
    for e in (ev("x", 1), ev("y", 1), ev("x", 2), ev("y", 2)):
        s.add(e, [A, B], T0)
    due = s.due(A, T0)
    assert ids(due) == ["x-1", "y-1"]  # one head per call
    x1, y1 = due
    assert s.failed(x1, T0, "503") == 0  # x backs off ...
    s.delivered(y1)
    assert ids(s.due(A, T0)) == ["y-2"]  # ... y goes on; x-2 waits behind x-1
    assert ids(s.due(B, T0)) == ["x-1", "y-1"]  # the other endpoint is untouched
    assert s.next_due_at(A) == T0  # y-2
    assert ids(s.due(A, T0 + 1.0)) == ["y-2", "x-1"]
    s.delivered(s.due(A, T0 + 1.0)[1])
    assert ids(s.due(A, T0 + 1.0)) == ["x-2", "y-2"]  # both due since T0: spooling order
    assert s.pending_count(A) == 2 and s.pending_count() == 6


def test_adding_is_idempotent_and_durable(tmp_path: Path) -> None:
    s = spool(tmp_path)
    s.add(ev("x", 1), [A], T0)
    s.add(ev("x", 1), [A], T0 + 5)
    s.close()
    again = spool(tmp_path)
    (d,) = again.due(A, T0)
    assert (d.event_id, d.call_id, d.seq, d.attempts) == ("x-1", "x", 1, 0)
    assert d.type == "transcript.final"
    assert d.body == ev("x", 1).body
    assert os.stat(tmp_path / "spool.sqlite").st_mode & 0o777 == 0o600
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_back_off_doubles_with_full_jitter_to_a_cap(tmp_path: Path) -> None:
    rand = Rand(0.999)
    s = spool(tmp_path, rand, backoff_s=0.5, max_backoff_s=10.0)
    s.add(ev("x", 1), [A], T0)
    now, waits = T0, []
    for _ in range(8):
        (d,) = s.due(A, now)
        assert s.failed(d, now, "boom") == 0
        nxt = s.next_due_at(A)
        assert nxt is not None
        waits.append(nxt - now)
        now = nxt
    ceilings = [0.5, 1, 2, 4, 8, 10, 10, 10]
    assert waits == pytest.approx([c * 0.999 for c in ceilings])
    rand.value = 0.0  # full jitter: the wait may be anything from zero to the ceiling
    (d,) = s.due(A, now)
    s.failed(d, now, "boom")
    assert s.next_due_at(A) == now
    (d,) = s.due(A, now)
    assert d.attempts == 9 and d.last_error == "boom"


def test_past_the_horizon_an_event_is_parked_and_its_call_goes_on(tmp_path: Path) -> None:
    s = spool(tmp_path, backoff_s=1.0, max_backoff_s=60.0, horizon_s=3600.0)
    s.add(ev("x", 1), [A], T0)
    s.add(ev("x", 2), [A], T0 + 3000)  # still within its own horizon when x-1 is parked
    (x1,) = s.due(A, T0)
    assert s.failed(x1, T0 + 3599, "timed out") == 0  # just inside the horizon: retried
    (x1,) = s.due(A, T0 + 3700)
    assert s.failed(x1, T0 + 3700, "timed out") == 1  # past it: parked
    assert ids(s.due(A, T0 + 3700)) == ["x-2"]  # the call's next event is not stuck behind
    (dead,) = s.dead_letters()
    assert (dead.event_id, dead.attempts, dead.last_error) == ("x-1", 2, "timed out")
    assert dead.created_at == T0 and dead.parked_at == T0 + 3700
    assert s.dead_letters(B) == []


def test_a_parked_event_takes_its_calls_stale_events_with_it(tmp_path: Path) -> None:
    s = spool(tmp_path, horizon_s=60.0)
    for seq in (1, 2, 3):
        s.add(ev("x", seq), [A], T0 + seq)
    s.add(ev("x", 4), [A], T0 + 100)
    s.add(ev("y", 1), [A], T0)
    (_, x1) = s.due(A, T0 + 200)
    assert s.failed(x1, T0 + 70, "refused") == 3  # x-2 and x-3 are past 60 s too; x-4 not
    assert ids(s.due(A, T0 + 200)) == ["y-1", "x-4"]
    assert [d.event_id for d in s.dead_letters()] == ["x-1", "x-2", "x-3"]


def test_replay_moves_dead_letters_back_in_their_calls_order(tmp_path: Path) -> None:
    s = spool(tmp_path, horizon_s=0.0)
    s.add(ev("x", 1), [A, B], T0)
    s.add(ev("x", 2), [A], T0 + 10)
    (x1,) = s.due(A, T0)
    assert s.failed(x1, T0 + 1, "dead") == 1
    (dead,) = s.dead_letters(A)
    assert s.replay([dead.id, 9999], T0 + 20) == 1
    assert s.dead_letters() == []
    (again,) = s.due(A, T0 + 20)  # x-1 (lower seq) goes before x-2 again
    assert (again.event_id, again.attempts, again.created_at) == ("x-1", 0, T0 + 20)
    assert s.replay([], T0) == 0


def test_endpoints_no_longer_configured_are_parked(tmp_path: Path) -> None:
    s = spool(tmp_path)
    s.add(ev("x", 1), [A, B], T0)
    assert s.park_other_endpoints([A], T0 + 1) == 1
    (dead,) = s.dead_letters()
    assert (dead.endpoint, dead.last_error) == (B, "endpoint no longer configured")
    assert ids(s.due(A, T0)) == ["x-1"]


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(SpoolError, match="schema 99"):
        Spool(path)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(SpoolError):
        Spool(tmp_path / "junk.sqlite")


def test_an_endpoint_down_for_ten_minutes_gets_everything_once_it_returns(
    tmp_path: Path,
) -> None:
    """Issue 6: the webhook target down for minutes. Three calls make an event every 2 s for
    ten minutes while every attempt fails (a sender that tries whatever is due, as the
    dispatcher's thread does); the endpoint returns: within one max back-off everything is
    delivered, each call in order, nothing parked, and the attempts made meanwhile stayed few
    (the back-off, not a retry storm)."""
    s = spool(tmp_path, Rand(0.999), backoff_s=0.5, max_backoff_s=30.0)
    now, attempts, made = T0, 0, {c: 0 for c in "xyz"}
    while now < T0 + 600:
        for c in made:
            made[c] += 1
            s.add(ev(c, made[c]), [A], now)
        for d in s.due(A, now):
            attempts += 1
            assert s.failed(d, now, "connection refused") == 0  # retried, never parked
        now += 2.0
    back = now
    delivered: dict[str, list[int]] = {c: [] for c in made}
    while s.pending_count(A) and now < back + 30.0 + 60.0:
        for d in s.due(A, now):
            delivered[d.call_id].append(d.seq)
            s.delivered(d)
        now += 0.05
    assert s.pending_count(A) == 0 and s.dead_letters() == []
    assert {c: seqs for c, seqs in delivered.items()} == {
        c: list(range(1, n + 1)) for c, n in made.items()
    }
    assert now - back <= 30.0 + 1.0, now - back  # the heads' next try was at most 30 s away
    assert attempts < 3 * 40, attempts  # ~20 back-off steps per call head, not one per event

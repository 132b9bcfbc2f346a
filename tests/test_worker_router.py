"""Routing and liveness, sans-IO with a fake clock: heartbeats are plain values."""

import logging

import pytest

from media.wire import Heartbeat
from sip_bridge.uplink.worker_router import Move, WorkerRouter


def beat(worker: int, calls: int = 0, inc: str = "", backlog: float = 0.0, age: float = 0.0):
    incarnation = inc or f"{worker:032x}"
    return Heartbeat(incarnation, worker, calls, backlog, 0.0, age)


def up(r: WorkerRouter, now: float, *workers: int) -> None:
    for w in workers:
        r.heartbeat(beat(w), now)


def test_no_live_worker_means_the_call_waits_and_moves_when_one_comes_up() -> None:
    r = WorkerRouter(2)
    assert r.assign("a") is None and r.waiting() == ["a"]
    moves = r.heartbeat(beat(1), now=0.1)
    assert moves == [Move("a", None, 1, "a worker is up")]
    assert r.worker_of("a") == 1 and r.waiting() == []


def test_least_loaded_by_reported_calls_then_backlog_and_sticky() -> None:
    r = WorkerRouter(3)
    r.heartbeat(beat(0, calls=5), 0.0)
    r.heartbeat(beat(1, calls=2, backlog=3.0), 0.0)
    r.heartbeat(beat(2, calls=2, backlog=0.5), 0.0)
    assert r.assign("a") == 2  # same calls as worker 1, less waiting audio
    assert r.assign("b") == 1  # worker 2 now counts the call placed since its beat
    assert r.assign("a") == 2  # sticky
    r.heartbeat(beat(1, calls=9), 0.1)
    assert r.assign("c") == 2
    assert r.worker_of("c") == 2 and r.worker_of("zz") is None
    r.release("c")
    r.release("nope")  # unknown: harmless
    assert r.calls_on(2) == ["a"]


def test_processes_of_a_pool_start_on_different_workers() -> None:
    firsts = []
    for p in range(4):
        r = WorkerRouter(2, offset=p)
        up(r, 0.0, 0, 1)
        firsts.append(r.assign("x"))
    assert firsts == [0, 1, 0, 1]


def test_a_silent_worker_is_declared_down_after_the_timeout_and_its_calls_move() -> None:
    r = WorkerRouter(2, timeout_s=1.5)
    up(r, 0.0, 0, 1)
    assert [r.assign(c) for c in "abc"] == [0, 1, 0]
    r.heartbeat(beat(1), 1.0)
    assert r.check(1.4) == []  # worker 0's last beat is 1.4 s old: not yet
    moves = r.check(1.6)
    assert moves == [Move("a", 0, 1, "worker down"), Move("c", 0, 1, "worker down")]
    assert not r.is_live(0) and r.live_workers() == [1]
    assert r.assign("d") == 1  # new calls avoid the dead worker
    assert r.check(1.7) == []  # declared once


def test_a_worker_that_comes_back_rejoins_but_moved_calls_stay_put() -> None:
    r = WorkerRouter(2, timeout_s=1.0)
    up(r, 0.0, 0, 1)
    r.assign("a")  # worker 0
    r.heartbeat(beat(1), 1.0)
    r.check(1.5)
    assert r.worker_of("a") == 1
    assert r.heartbeat(beat(0, inc="f" * 32), 2.0) == []  # restarted; nothing of it to move
    assert r.is_live(0)
    assert r.worker_of("a") == 1  # calls never move while their worker lives
    r.heartbeat(beat(1, calls=1), 2.0)
    assert r.assign("b") == 0


def test_a_restart_noticed_only_by_its_new_incarnation_moves_its_calls() -> None:
    r = WorkerRouter(1, timeout_s=5.0)
    up(r, 0.0, 0)
    r.assign("a")
    moves = r.heartbeat(beat(0, inc="e" * 32), 0.5)  # restarted faster than the timeout
    assert moves == [Move("a", 0, 0, "worker restarted")]  # same worker, new process: replay


def test_every_worker_dead_makes_calls_wait_then_resume() -> None:
    r = WorkerRouter(1, timeout_s=1.0)
    up(r, 0.0, 0)
    r.assign("a")
    assert r.check(2.0) == [Move("a", 0, None, "worker down")]
    assert r.assign("b") is None
    assert r.waiting() == ["a", "b"]
    moves = r.heartbeat(beat(0, inc="d" * 32), 3.0)
    assert [(m.call_id, m.target) for m in moves] == [("a", 0), ("b", 0)]


def test_a_stuck_loop_takes_the_worker_out_until_it_turns_again() -> None:
    r = WorkerRouter(2, timeout_s=1.0, stall_s=10.0)
    up(r, 0.0, 0, 1)
    r.assign("a")  # worker 0
    assert r.heartbeat(beat(0, age=9.0), 1.0) == []
    moves = r.heartbeat(beat(0, age=11.0), 2.0)  # heartbeats still come: the loop does not
    assert moves == [Move("a", 0, 1, "worker stuck")]
    assert not r.is_live(0)
    r.heartbeat(beat(0, age=0.01), 3.0)
    assert r.is_live(0) and r.worker_of("a") == 1


def test_unknown_worker_index_and_bad_settings() -> None:
    r = WorkerRouter(1)
    assert r.heartbeat(beat(7), 0.0) == []
    with pytest.raises(ValueError):
        WorkerRouter(0)
    with pytest.raises(ValueError):
        WorkerRouter(1, timeout_s=0)


def test_admission_stops_at_calls_per_worker_counting_every_process_and_own_placements() -> None:
    r = WorkerRouter(2, calls_per_worker=3)
    assert r.has_room()  # no live worker yet: the call is taken and waits for one
    r.heartbeat(beat(0, calls=3), 0.0)  # full with other processes' calls
    r.heartbeat(beat(1, calls=1), 0.0)
    assert r.has_room()
    assert r.assign("a") == 1 and r.assign("b") == 1  # placed here since worker 1's beat
    assert not r.has_room()
    r.heartbeat(beat(1, calls=2), 0.1)  # a call of another process ended meanwhile
    assert r.has_room()
    r.heartbeat(beat(0, calls=3), 0.2)
    r.heartbeat(beat(1, calls=3), 0.2)
    assert not r.has_room()
    r.check(2.0)  # both silent past the timeout: down
    assert not r.live_workers() and r.has_room()  # taken, and waits as during a restart


def test_a_worker_behind_on_two_beats_in_a_row_takes_no_new_call() -> None:
    r = WorkerRouter(2, calls_per_worker=0, max_backlog_s=5.0)
    r.heartbeat(beat(0, calls=9, backlog=6.0), 0.0)
    r.heartbeat(beat(1, calls=1, backlog=6.0), 0.0)
    assert r.has_room()  # one beat over: a burst of finals, not yet behind
    r.heartbeat(beat(0, calls=9, backlog=7.0), 0.25)
    assert r.has_room()  # worker 1 is over on one beat only
    assert r.assign("a") == 1  # the worker that still takes calls, though it has more of them
    r.heartbeat(beat(1, calls=2, backlog=9.0), 0.25)
    assert not r.has_room()
    r.heartbeat(beat(1, calls=2, backlog=0.5), 0.5)  # caught up
    assert r.has_room()


def test_admission_limits_off_by_default_and_checked() -> None:
    r = WorkerRouter(1)
    r.heartbeat(beat(0, calls=500, backlog=100.0), 0.0)
    r.heartbeat(beat(0, calls=500, backlog=100.0), 0.1)
    assert r.has_room()
    with pytest.raises(ValueError):
        WorkerRouter(1, calls_per_worker=-1)
    with pytest.raises(ValueError):
        WorkerRouter(1, max_backlog_s=-0.5)


def test_a_quiet_router_logs_a_workers_first_coming_up_at_debug_and_its_return_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Media processes other than the first say nothing of a host's workers starting (the
    first says it for all), but every one of them says when a worker comes back."""
    caplog.set_level(logging.DEBUG, logger="sip_bridge.uplink.worker_router")

    def ups() -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in caplog.records if "is up" in r.getMessage()]

    quiet, loud = WorkerRouter(1, timeout_s=1.0, announce_first_up=False), WorkerRouter(1)
    for r in (quiet, loud):
        r.heartbeat(beat(0), 0.0)
    assert ups() == [(logging.DEBUG, "worker 0 is up"), (logging.INFO, "worker 0 is up")]
    caplog.clear()
    quiet.heartbeat(beat(0), 0.5)  # still up: nothing
    quiet.check(2.0)  # down
    quiet.heartbeat(beat(0), 2.1)
    assert ups() == [(logging.INFO, "worker 0 is up")]

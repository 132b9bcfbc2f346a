from sip_bridge.worker_router import WorkerRouter


def test_least_loaded_and_sticky() -> None:
    r = WorkerRouter(3)
    assert [r.assign(c) for c in "abcd"] == [0, 1, 2, 0]
    assert r.assign("b") == 1  # sticky
    r.release("b")
    r.release("c")
    assert r.loads() == [2, 0, 0]
    assert r.assign("e") == 1
    assert r.worker_of("e") == 1 and r.worker_of("b") is None
    r.release("nope")  # unknown: harmless


def test_processes_of_a_pool_start_on_different_workers() -> None:
    firsts = [WorkerRouter(2, offset=p).assign("x") for p in range(4)]
    assert firsts == [0, 1, 0, 1]
    r = WorkerRouter(3, offset=2)
    assert [r.assign(c) for c in "abcd"] == [2, 0, 1, 2]

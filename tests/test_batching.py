from inference.batching import Batcher, BatchPolicy, Request


def req(key: str, samples: int, at: float, final: bool = True) -> Request:
    return Request(key=key, samples=samples, ready_at=at, final=final)


def test_waits_for_deadline_then_runs_what_it_has() -> None:
    b = Batcher(BatchPolicy(max_batch=4, max_wait_ms=50))
    b.add(req("a", 16000, 0.0))
    assert b.next_batch(0.01) == []
    assert b.deadline() == 0.05
    batch = b.next_batch(0.05)
    assert [r.key for r in batch] == ["a"]
    assert len(b) == 0 and b.deadline() is None


def test_full_batch_runs_at_once() -> None:
    b = Batcher(BatchPolicy(max_batch=3, max_wait_ms=1000))
    for i in range(3):
        b.add(req(f"k{i}", 16000 + i * 100, 0.0))
    assert len(b.next_batch(0.0)) == 3


def test_lengths_batched_together_stay_within_padding_bound() -> None:
    b = Batcher(BatchPolicy(max_batch=8, max_wait_ms=0, max_padding=0.25))
    for i, n in enumerate([16000, 19000, 40000, 64000, 17000, 48000]):
        b.add(req(f"k{i}", n, float(i) * 1e-3))
    seen = []
    for _ in range(10):
        batch = b.next_batch(1.0)
        if not batch:
            break
        lengths = [r.samples for r in batch]
        assert max(lengths) <= 1.25 * min(lengths)
        seen += [r.key for r in batch]
    assert sorted(seen) == sorted(f"k{i}" for i in range(6))  # each exactly once


def test_finals_outrank_partials_and_partials_are_superseded() -> None:
    b = Batcher(BatchPolicy(max_batch=1, max_wait_ms=0))
    b.add(req("u1", 16000, 0.0, final=False))
    b.add(req("u1", 20000, 0.1, final=False))  # replaces the first partial
    b.add(req("u2", 16000, 0.2, final=True))
    assert len(b) == 2
    first = b.next_batch(1.0)
    assert [(r.key, r.final) for r in first] == [("u2", True)]
    second = b.next_batch(1.0)
    assert [(r.key, r.samples) for r in second] == [("u1", 20000)]


def test_final_replaces_partial_of_same_utterance_and_discard_keeps_finals() -> None:
    b = Batcher(BatchPolicy(max_batch=8, max_wait_ms=0))
    b.add(req("u1", 16000, 0.0, final=False))
    b.add(req("u1", 24000, 0.1, final=True))
    b.add(req("u2", 16000, 0.1, final=False))
    assert len(b) == 2
    assert b.discard(lambda r: not r.final) == 1
    assert [(r.key, r.final) for r in b.next_batch(1.0)] == [("u1", True)]


def test_nothing_coming_runs_without_waiting_for_the_deadline() -> None:
    b = Batcher(BatchPolicy(max_batch=4, max_wait_ms=50))
    b.add(req("a", 16000, 0.0))
    assert b.next_batch(0.001) == []
    assert [r.key for r in b.next_batch(0.001, nothing_coming=True)] == ["a"]


def test_partials_ride_along_only_when_no_final_is_left_waiting() -> None:
    b = Batcher(BatchPolicy(max_batch=2, max_wait_ms=0))
    b.add(req("f1", 16000, 0.0))
    b.add(req("p1", 16000, 0.0, final=False))
    assert [r.key for r in b.next_batch(1.0)] == ["f1", "p1"]  # room, and no final waits

    b.add(req("f2", 16000, 0.0))
    b.add(req("f3", 40000, 0.0))  # cannot join f2 (padding): it waits for the next batch
    b.add(req("p2", 16000, 0.0, final=False))
    assert [r.key for r in b.next_batch(1.0)] == ["f2"]  # p2 would make f3 wait longer
    assert [r.key for r in b.next_batch(1.0)] == ["f3"]
    assert [r.key for r in b.next_batch(1.0)] == ["p2"]


def test_a_full_batch_of_finals_keeps_partials_out() -> None:
    b = Batcher(BatchPolicy(max_batch=2, max_wait_ms=0))
    for key in ("f1", "f2", "f3"):
        b.add(req(key, 16000, 0.0))
    b.add(req("p1", 16000, 0.0, final=False))
    assert [r.final for r in b.next_batch(1.0)] == [True, True]
    assert [r.key for r in b.next_batch(1.0)] == ["f3", "p1"]


def test_waiting_samples_counts_every_request() -> None:
    b = Batcher(BatchPolicy())
    b.add(req("a", 16000, 0.0))
    b.add(req("b", 8000, 0.0, final=False))
    assert b.waiting_samples() == 24000


def test_only_finals_or_only_partials() -> None:
    b = Batcher(BatchPolicy(max_batch=8, max_wait_ms=0))
    b.add(req("p1", 16000, 0.0, final=False))
    b.add(req("f1", 16000, 0.1))
    b.add(req("p2", 16000, 0.0, final=False))
    assert [r.key for r in b.next_batch(1.0, only="partial")] == ["p1", "p2"]
    assert b.next_batch(1.0, only="partial") == []
    assert [r.key for r in b.next_batch(1.0, only="final")] == ["f1"]
    assert len(b) == 0

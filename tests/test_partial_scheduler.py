"""The partial scheduler, sans-IO: utterances and a fake clock in, keys out."""

from __future__ import annotations

import pytest

from inference.partial_scheduler import Growing, PartialPolicy, PartialScheduler


def test_stalest_caption_goes_first_and_batches_are_capped() -> None:
    s = PartialScheduler(PartialPolicy(max_batch=2))
    calls = [
        Growing("a", audio_s=2.0, captioned_s=1.8, last_at=0.0),  # 0.2 s stale
        Growing("b", audio_s=3.0, captioned_s=1.0, last_at=0.0),  # 2.0 s stale
        Growing("c", audio_s=1.0, captioned_s=0.0, last_at=None),  # 1.0 s stale
    ]
    assert s.choose(calls, now=1.0) == ["b", "c"]


def test_min_interval_new_audio_and_first_partial_length() -> None:
    s = PartialScheduler(PartialPolicy(min_interval_s=0.3, min_new_audio_s=0.2, min_audio_s=0.3))
    assert s.choose([Growing("short", 0.25)], now=5.0) == []  # too little to decode
    assert s.choose([Growing("x", 1.0, 0.9, last_at=4.0)], now=5.0) == []  # 0.1 s new
    assert s.choose([Growing("x", 1.5, 0.9, last_at=4.9)], now=5.0) == []  # 0.1 s ago
    assert s.choose([Growing("x", 1.5, 0.9, last_at=4.6)], now=5.0) == ["x"]


def test_budget_spaces_batches_by_their_cost() -> None:
    s = PartialScheduler(PartialPolicy(cpu_share=0.25))
    u = [Growing("x", 2.0)]
    assert s.choose(u, now=0.0) == ["x"]
    s.ran(model_s=0.1, now=0.1)  # at 25 % a 0.1 s batch buys 0.3 s of rest
    assert s.next_start() == pytest.approx(0.4)
    assert s.choose(u, now=0.39) == []
    assert s.choose(u, now=0.4) == ["x"]


def test_full_share_never_waits_and_zero_interval_disables() -> None:
    s = PartialScheduler(PartialPolicy(cpu_share=1.0))
    s.ran(model_s=0.5, now=1.0)
    assert s.choose([Growing("x", 2.0)], now=1.0) == ["x"]
    off = PartialScheduler(PartialPolicy(min_interval_s=0))
    assert not off.policy.enabled
    assert off.choose([Growing("x", 2.0)], now=1.0) == []


def test_lag_grows_evenly_under_load() -> None:
    """Ten talking calls, a batch of two at a time: every call gets its turn (none is starved)
    and the stalest is always served, so their captions' lags stay within one round."""
    s = PartialScheduler(
        PartialPolicy(min_interval_s=0.0001, min_new_audio_s=0.0, min_audio_s=0.0, max_batch=2)
    )
    captioned = dict.fromkeys(range(10), 0.0)
    served = dict.fromkeys(range(10), 0)
    now = 0.0
    for _ in range(50):
        now += 0.2
        keys = s.choose([Growing(k, now, captioned[k], None) for k in captioned], now)
        assert len(keys) == 2
        for k in keys:
            captioned[int(str(k))] = now
            served[int(str(k))] += 1
        s.ran(0.2, now)
    assert min(served.values()) >= 9 and max(served.values()) <= 11
    assert max(now - c for c in captioned.values()) <= 5 * 0.2 + 1e-9


@pytest.mark.parametrize(
    "kwargs", [{"max_batch": 0}, {"cpu_share": 0}, {"cpu_share": 1.5}, {"min_interval_s": -1}]
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PartialPolicy(**kwargs)  # type: ignore[arg-type]

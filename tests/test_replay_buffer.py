import pytest

from media.replay_buffer import ReplayBuffer


def pcm(samples: int, value: int = 1) -> bytes:
    return value.to_bytes(2, "little") * samples


def test_runs_after_a_commit_are_kept_and_the_first_is_trimmed() -> None:
    buf = ReplayBuffer(max_samples=10_000)
    buf.append(0, pcm(160, 1))
    buf.append(160, pcm(160, 2))
    buf.append(800, pcm(320, 3))  # after a suppressed gap
    buf.commit(200)
    assert buf.start == 200
    runs = buf.runs()
    assert [(o, len(p) // 2) for o, p in runs] == [(200, 120), (800, 320)]
    assert runs[0][1] == pcm(120, 2)
    assert buf.samples == 480  # the first run went, the second is held whole
    buf.commit(100)  # never backwards
    assert buf.start == 200


def test_commit_past_everything_empties_it() -> None:
    buf = ReplayBuffer(max_samples=1000)
    buf.append(0, pcm(160))
    buf.commit(5000)
    assert buf.runs() == [] and buf.samples == 0 and buf.start == 5000
    buf.append(5000, b"")  # empty runs (time marks) are not audio
    assert buf.samples == 0


def test_the_bound_drops_the_oldest_audio_and_says_how_much() -> None:
    buf = ReplayBuffer(max_samples=400)
    for k in range(5):
        buf.append(k * 160, pcm(160, k + 1))
    assert buf.samples == 320  # two whole runs fit in 400 samples
    assert buf.start == 480
    assert buf.lost_samples == 480
    assert [o for o, _ in buf.runs()] == [480, 640]
    buf.commit(500)  # a commit inside the lost range only moves forward
    assert buf.lost_samples == 480 and buf.start == 500
    with pytest.raises(ValueError):
        ReplayBuffer(0)

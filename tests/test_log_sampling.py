"""Which occurrences of a repeated problem get a log line."""

from media.log_sampling import worth_logging


def test_the_first_ten_then_every_thousandth() -> None:
    logged = [n for n in range(1, 5001) if worth_logging(n)]
    assert logged == [*range(1, 11), 1000, 2000, 3000, 4000, 5000]
    assert not worth_logging(0)


def test_the_first_one_only_then_every_thousandth() -> None:
    assert [n for n in range(1, 3001) if worth_logging(n, first=1)] == [1, 1000, 2000, 3000]

from __future__ import annotations

import random
from typing import Any

import pytest

from runtime.sources._backoff import Backoff


def nominal(initial: float, factor: float, cap: float, n: int) -> float:
    return min(cap, initial * factor**n)


def test_without_jitter_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert backoff.attempts == 7


def test_factor_sets_the_growth() -> None:
    backoff = Backoff(1.0, 100.0, factor=3.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(4)] == [1.0, 3.0, 9.0, 27.0]


@pytest.mark.parametrize("jitter", [0.1, 0.5, 0.9])
def test_jittered_delays_stay_within_bounds_and_under_the_cap(jitter: float) -> None:
    backoff = Backoff(0.2, 3.0, factor=2.0, jitter=jitter, rng=random.Random(1234))
    for n in range(40):
        base = nominal(0.2, 2.0, 3.0, n)
        delay = backoff.next_delay()
        assert base * (1 - jitter) <= delay <= base
        assert delay <= 3.0


def test_jitter_actually_varies_the_delays_and_is_reproducible_with_a_seed() -> None:
    def delays(seed: int) -> list[float]:
        backoff = Backoff(1.0, 1.0, jitter=0.5, rng=random.Random(seed))
        return [backoff.next_delay() for _ in range(20)]

    first = delays(7)
    assert len(set(first)) == 20  # at the cap every draw still differs
    assert min(first) < 0.75 < max(first)  # spread over the jitter range, not clustered
    assert delays(7) == first
    assert delays(8) != first


def test_reset_starts_again_from_initial() -> None:
    backoff = Backoff(0.5, 30.0, jitter=0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 0.5
    assert backoff.next_delay() == 1.0


def test_long_outages_do_not_overflow() -> None:
    backoff = Backoff(0.5, 30.0, jitter=0.0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 30.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_s": 0.0, "max_s": 1.0}, "initial_s must be > 0"),
        ({"initial_s": 2.0, "max_s": 1.0}, "max_s must be >= initial_s"),
        ({"initial_s": 1.0, "max_s": 2.0, "factor": 0.5}, "factor must be >= 1"),
        ({"initial_s": 1.0, "max_s": 2.0, "jitter": 1.0}, r"jitter must be in \[0, 1\)"),
        ({"initial_s": 1.0, "max_s": 2.0, "jitter": -0.1}, r"jitter must be in \[0, 1\)"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)

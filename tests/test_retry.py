"""The one retry policy (vastkit.retry): backoff, deadlines and retry_call on a virtual clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vastkit.clock import ManualClock
from vastkit.retry import RetryPolicy, retry_call


class Flaky(Exception):
    pass


def _failing(times: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise Flaky(f"failure {len(calls)}")
        return "done"

    return calls, fn


def test_retry_call_retries_what_it_is_told_and_returns_the_answer() -> None:
    clock = ManualClock()
    calls, fn = _failing(2)
    policy = RetryPolicy(attempts=3, initial_delay=1.0, jitter=False)
    assert retry_call(fn, policy=policy, clock=clock, retry_if=lambda e: True) == "done"  # type: ignore[arg-type]
    assert len(calls) == 3
    assert clock.slept == [1.0, 2.0]


def test_attempts_count_every_try_and_the_last_error_is_raised() -> None:
    clock = ManualClock()
    calls, fn = _failing(5)
    with pytest.raises(Flaky, match="failure 3"):
        retry_call(fn, policy=RetryPolicy(attempts=3), clock=clock, retry_if=lambda e: True)  # type: ignore[arg-type]
    assert len(calls) == 3


def test_an_error_not_worth_retrying_is_raised_at_once() -> None:
    clock = ManualClock()
    calls, fn = _failing(5)
    with pytest.raises(Flaky):
        retry_call(fn, policy=RetryPolicy(attempts=9), clock=clock, retry_if=lambda e: False)  # type: ignore[arg-type]
    assert len(calls) == 1
    assert clock.slept == []


def test_a_wait_asked_for_by_the_error_wins_over_backoff() -> None:
    clock = ManualClock()
    _, fn = _failing(1)
    retry_call(
        fn,  # type: ignore[arg-type]
        policy=RetryPolicy(attempts=2),
        clock=clock,
        retry_if=lambda e: True,
        wait_for=lambda e: 7.5,
    )
    assert clock.slept == [7.5]


def test_a_deadline_stops_retries_whose_wait_would_end_past_it() -> None:
    clock = ManualClock()
    calls, fn = _failing(100)
    policy = RetryPolicy(
        attempts=None, initial_delay=4.0, multiplier=1.0, deadline=10.0, jitter=False
    )
    with pytest.raises(Flaky):
        retry_call(fn, policy=policy, clock=clock, retry_if=lambda e: True)  # type: ignore[arg-type]
    assert clock.slept == [4.0, 4.0]
    assert len(calls) == 3


def test_a_persistent_policy_keeps_trying_until_the_deadline_has_passed() -> None:
    clock = ManualClock()
    calls, fn = _failing(100)
    policy = RetryPolicy(
        attempts=None,
        initial_delay=4.0,
        multiplier=1.0,
        deadline=10.0,
        jitter=False,
        persistent=True,
    )
    with pytest.raises(Flaky):
        retry_call(fn, policy=policy, clock=clock, retry_if=lambda e: True)  # type: ignore[arg-type]
    assert clock.slept == [4.0, 4.0, 4.0]
    assert len(calls) == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": None},
        {"attempts": True},
        {"initial_delay": -1.0},
        {"initial_delay": float("nan")},
        {"multiplier": 0.5},
        {"deadline": -1.0},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(
    st.integers(1, 30),
    st.floats(0.0, 10.0),
    st.floats(1.0, 4.0),
    st.floats(0.0, 60.0),
    st.integers(0, 2**32 - 1),
)
def test_waits_are_jittered_within_half_and_full_step_and_capped(
    retry: int, initial: float, multiplier: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(initial_delay=initial, multiplier=multiplier, max_delay=cap)
    step = policy.delay(retry)
    assert step <= cap + 1e-9
    jittered = policy.delay(retry, random.Random(seed))
    assert step / 2 - 1e-9 <= jittered <= step + 1e-9

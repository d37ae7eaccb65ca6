"""A change dated after the fact: ``Ledger.backdate_change`` puts it where it happened.

A poll sees an outbid only after it happened and charges the GPU up to the poll; when the worker's
record of its stop signal arrives later, the ledger moves the change back to that time, so the
attempt costs what the bill charges (GPU per second up to the stop, storage after it).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vastkit.cost_report import cost_report
from vastkit.errors import LedgerError
from vastkit.ledger import Fence, LeaseLost, Ledger

from .conftest import NOW

GPU = 3.6  # $/h: a dollar-thousandth per second
DISK = 0.36


def _attempt(ledger: Ledger, run_id: str = "r1") -> int:
    ledger.record_run(run_id, name="job", project="vision", at=NOW)
    return ledger.record_attempt(run_id, 1, instance_id=42, storage_dph=DISK)


def _cost(ledger: Ledger, attempt: int) -> float:
    record = ledger.get_attempt(attempt)
    assert record is not None
    return record.cost_usd


def test_a_stop_seen_late_is_moved_back_to_the_stop(ledger: Ledger) -> None:
    attempt = _attempt(ledger)
    ledger.add_cost_sample(attempt, state="loading", rate_dph=DISK, at=NOW)
    ledger.add_cost_sample(attempt, state="running", rate_dph=GPU + DISK, at=NOW + 10)
    ledger.add_cost_sample(attempt, state="running", rate_dph=GPU + DISK, at=NOW + 20)
    # outbid at NOW + 21; the poll at NOW + 30 saw it and charged the GPU up to itself
    ledger.add_cost_sample(attempt, state="outbid", rate_dph=DISK, at=NOW + 30)
    ledger.add_cost_sample(attempt, state="destroyed", rate_dph=0.0, at=NOW + 40)
    assert _cost(ledger, attempt) == pytest.approx((GPU * 20 + DISK * 40) / 3600)

    moved = ledger.backdate_change(attempt, state="outbid", rate_dph=DISK, at=NOW + 21)

    assert moved == pytest.approx(-GPU * 9 / 3600)
    assert _cost(ledger, attempt) == pytest.approx((GPU * 11 + DISK * 40) / 3600)
    assert ledger.spend(project="vision") == pytest.approx(_cost(ledger, attempt))
    samples = [(s.at - NOW, s.state) for s in ledger.cost_samples(attempt)]
    assert samples == [
        (0, "loading"),
        (10, "running"),
        (20, "running"),
        (21, "outbid"),
        (30, "outbid"),
        (40, "destroyed"),
    ]
    (row,) = cost_report(ledger, "job").rows
    assert row.cost_usd == pytest.approx(_cost(ledger, attempt))


def test_the_next_samples_extra_survives_the_recount(ledger: Ledger) -> None:
    """Traffic billed with the poll that saw the stop is kept when that poll's GPU time goes."""
    attempt = _attempt(ledger)
    ledger.add_cost_sample(attempt, state="running", rate_dph=GPU, at=NOW)
    ledger.add_cost_sample(attempt, state="stopped", rate_dph=0.0, at=NOW + 10, extra_usd=0.5)
    ledger.backdate_change(attempt, state="stopped", rate_dph=0.0, at=NOW + 4)
    assert _cost(ledger, attempt) == pytest.approx(0.5 + GPU * 4 / 3600)


def test_a_change_after_the_last_sample_is_an_ordinary_sample(ledger: Ledger) -> None:
    attempt = _attempt(ledger)
    ledger.add_cost_sample(attempt, state="running", rate_dph=GPU, at=NOW)
    assert ledger.backdate_change(
        attempt, state="stopped", rate_dph=DISK, at=NOW + 10
    ) == pytest.approx(GPU * 10 / 3600)
    ledger.add_cost_sample(attempt, state="destroyed", rate_dph=0.0, at=NOW + 20)
    assert _cost(ledger, attempt) == pytest.approx((GPU * 10 + DISK * 10) / 3600)


def test_what_cannot_be_backdated_says_why_and_writes_nothing(ledger: Ledger) -> None:
    attempt = _attempt(ledger)
    ledger.add_cost_sample(attempt, state="running", rate_dph=GPU, at=NOW + 10)
    with pytest.raises(ValueError, match=r"before the first cost sample of attempt"):
        ledger.backdate_change(attempt, state="stopped", rate_dph=0.0, at=NOW + 5)
    with pytest.raises(ValueError, match="rate_dph cannot be negative"):
        ledger.backdate_change(attempt, state="stopped", rate_dph=-1.0, at=NOW + 11)
    with pytest.raises(LedgerError, match="no attempt 999 in the ledger"):
        ledger.backdate_change(999, state="stopped", rate_dph=0.0, at=NOW + 11)
    assert [s.at for s in ledger.cost_samples(attempt)] == [NOW + 10]


def test_a_stale_driver_cannot_backdate(ledger: Ledger) -> None:
    ledger.enqueue("job-1", name="j", spec={}, at=NOW)
    ledger.record_run("job-1", name="j", at=NOW)
    entry = ledger.claim_queued(owner="host:a", token="a" * 8, ttl_s=10.0, at=NOW, only="job-1")
    assert entry is not None
    first = Fence(entry.job_id, "a" * 8, entry.claims)
    attempt = ledger.record_attempt("job-1", 1, instance_id=7)
    ledger.add_cost_sample(attempt, state="running", rate_dph=GPU, at=NOW, fence=first)
    ledger.add_cost_sample(attempt, state="stopped", rate_dph=0.0, at=NOW + 10, fence=first)
    taken = ledger.claim_queued(owner="host:b", token="b" * 8, ttl_s=10.0, at=NOW + 60)
    assert taken is not None
    with pytest.raises(LeaseLost):
        ledger.backdate_change(attempt, state="stopped", rate_dph=0.0, at=NOW + 5, fence=first)
    assert _cost(ledger, attempt) == pytest.approx(GPU * 10 / 3600)


_steps = st.lists(
    st.tuples(
        st.floats(min_value=0.5, max_value=600.0),  # seconds since the previous sample
        st.sampled_from([0.0, DISK, GPU, GPU + DISK]),  # the rate from this sample on
        st.floats(min_value=0.0, max_value=0.01),  # extra dollars (traffic)
    ),
    min_size=2,
    max_size=8,
)


@given(
    steps=_steps,
    where=st.integers(min_value=0, max_value=6),
    fraction=st.floats(min_value=0.05, max_value=0.95),
    rate=st.sampled_from([0.0, DISK, GPU]),
)
def test_backdating_counts_as_if_the_change_had_been_sampled_in_time(
    steps: list[tuple[float, float, float]], where: int, fraction: float, rate: float
) -> None:
    """Property: samples taken in order with the change among them, and the same samples with
    the change backdated afterwards, cost the same."""
    times, t = [], NOW
    for gap, _, _ in steps:
        t += gap
        times.append(t)
    k = min(where, len(steps) - 2)
    at = times[k] + fraction * (times[k + 1] - times[k])
    samples = [(when, r, extra) for when, (_, r, extra) in zip(times, steps, strict=True)]
    with Ledger(":memory:") as in_order, Ledger(":memory:") as late:
        first, second = _attempt(in_order), _attempt(late)
        for when, r, extra in samples:
            if when > at and not any(s.at == at for s in in_order.cost_samples(first)):
                in_order.add_cost_sample(first, state="changed", rate_dph=rate, at=at)
            in_order.add_cost_sample(first, state="s", rate_dph=r, at=when, extra_usd=extra)
            late.add_cost_sample(second, state="s", rate_dph=r, at=when, extra_usd=extra)
        before = _cost(late, second)
        moved = late.backdate_change(second, state="changed", rate_dph=rate, at=at)
        assert _cost(late, second) == pytest.approx(_cost(in_order, first), abs=1e-12)
        assert before + moved == pytest.approx(_cost(late, second), abs=1e-12)

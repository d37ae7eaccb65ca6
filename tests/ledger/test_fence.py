"""Fencing on both backends: a driver's money writes check its lease epoch in their transaction.

A claim and every takeover bump the job's lease epoch (``claims``) and give it a new token; a
:class:`~vastkit.ledger.Fence` from an older claim writes nothing and raises ``LeaseLost``.
"""

from __future__ import annotations

import pytest

from vastkit.ledger import Fence, LeaseLost, Ledger

from .conftest import NOW

TTL = 10.0


def _claim(ledger: Ledger, token: str, at: float) -> Fence:
    entry = ledger.claim_queued(owner=f"host:{token}", token=token, ttl_s=TTL, at=at, only="job-1")
    assert entry is not None
    assert entry.lease_token == token
    return Fence(entry.job_id, token, entry.claims)


def _begin(ledger: Ledger, fence: Fence, attempt: int) -> tuple[int, int]:
    return ledger.begin_attempt(
        "job-1",
        attempt,
        offer_id=7,
        label=f"vastkit/{ledger.ledger_id}/job-1/{attempt}",
        at=NOW,
        fence=fence,
        machine_id=70,
        storage_dph=0.01,
    )


def test_a_stale_fence_writes_nothing_and_the_new_epoch_goes_on(ledger: Ledger) -> None:
    ledger.enqueue("job-1", name="j", spec={}, at=NOW)
    ledger.record_run("job-1", name="j", at=NOW)
    first = _claim(ledger, "a" * 8, NOW)
    assert first.epoch == 1
    assert ledger.fence_holds(first)
    intent_a, attempt_a = _begin(ledger, first, 1)
    # the first driver stalls past its lease; a second one takes the job over
    second = _claim(ledger, "b" * 8, NOW + TTL + 1)
    assert second.epoch == 2
    assert not ledger.fence_holds(first)
    assert ledger.fence_holds(second)

    with pytest.raises(LeaseLost):
        _begin(ledger, first, 2)
    with pytest.raises(LeaseLost):
        ledger.record_created(
            intent_a, attempt_a, instance_id=501, storage_dph=0.01, at=NOW + 20, fence=first
        )
    with pytest.raises(LeaseLost):
        ledger.add_cost_sample(attempt_a, state="running", rate_dph=1.0, at=NOW + 20, fence=first)
    with pytest.raises(LeaseLost):
        ledger.settle_attempt(attempt_a, reason="done", at=NOW + 21, fence=first)
    (attempt,) = ledger.attempts("job-1")
    assert attempt.instance_id is None
    assert attempt.ended_at is None
    assert ledger.cost_samples(attempt_a) == []
    assert [i.status for i in ledger.intents("job-1")] == ["pending"]

    # the new epoch numbers its attempt past the old one and writes freely
    intent_b, attempt_b = _begin(ledger, second, 2)
    ledger.record_created(
        intent_b, attempt_b, instance_id=502, storage_dph=0.01, at=NOW + 30, fence=second
    )
    ledger.settle_attempt(attempt_b, reason="succeeded", at=NOW + 3630, fence=second)
    record = ledger.get_attempt(attempt_b)
    assert record is not None
    assert record.destroyed_at == NOW + 3630
    assert record.cost_usd == pytest.approx(0.01)


def test_a_create_that_raced_a_takeover_is_recorded_on_the_old_attempt(ledger: Ledger) -> None:
    ledger.enqueue("job-1", name="j", spec={}, at=NOW)
    ledger.record_run("job-1", name="j", at=NOW)
    first = _claim(ledger, "a" * 8, NOW)
    intent_id, attempt_id = _begin(ledger, first, 1)
    assert not ledger.attempt_adopted(attempt_id, 501)
    ledger.record_superseded(
        intent_id,
        attempt_id,
        instance_id=501,
        created_at=NOW + 10,
        gone_at=NOW + 10 + 360,
        storage_dph=0.01,
    )
    record = ledger.get_attempt(attempt_id)
    assert record is not None
    assert (record.instance_id, record.end_reason) == (501, "superseded")
    assert record.destroyed_at == NOW + 370
    assert record.cost_usd == pytest.approx(0.001)
    assert ledger.pending_intents() == []


def test_every_job_write_of_a_stale_driver_is_refused_and_writes_nothing(ledger: Ledger) -> None:
    """Not only the money rows: the run's record and end, phase marks, the bid, the create
    intent's closing and machine blocks all check the fence in their transaction."""
    ledger.enqueue("job-1", name="j", spec={}, at=NOW)
    first = _claim(ledger, "a" * 8, NOW)
    ledger.record_run("job-1", name="j", at=NOW, fence=first)
    intent, attempt = _begin(ledger, first, 1)
    ledger.mark_phase(attempt, "loading", at=NOW + 1, fence=first)
    second = _claim(ledger, "b" * 8, NOW + TTL + 1)
    before = (
        ledger.get_run("job-1"),
        ledger.get_attempt(attempt),
        ledger.intents("job-1"),
        ledger.blocked_machines(now=NOW + 20),
    )

    writes = {
        "record_run": lambda: ledger.record_run("job-2", name="j", at=NOW, fence=first),
        "update_run": lambda: ledger.update_run("job-1", status="running", fence=first),
        "end_run": lambda: ledger.end_run("job-1", "failed", at=NOW + 20, fence=first),
        "mark_phase": lambda: ledger.mark_phase(attempt, "running", at=NOW + 20, fence=first),
        "bid": lambda: ledger.update_attempt(attempt, bid=0.5, fence=first),
        "complete_intent": lambda: ledger.complete_intent(intent, error="x", fence=first),
        "block_machine": lambda: ledger.block_machine(70, reason="x", at=NOW + 20, fence=first),
    }
    for name, write in writes.items():
        with pytest.raises(LeaseLost):
            write()
        after = (
            ledger.get_run("job-1"),
            ledger.get_attempt(attempt),
            ledger.intents("job-1"),
            ledger.blocked_machines(now=NOW + 20),
        )
        assert after == before, f"{name} wrote with a stale fence"
    assert ledger.get_run("job-2") is None

    ledger.end_run("job-1", "succeeded", at=NOW + 30, fence=second)
    run = ledger.get_run("job-1")
    assert run is not None
    assert run.status == "succeeded"

"""The ledger's behaviour on both backends (SQLite, PostgreSQL), and what is PostgreSQL's own.

The backend-neutral tests of ``tests/policy/test_ledger.py`` run here again with the ``ledger``
fixture parametrized over both backends (they are imported, so the behaviour stays written once).
"""

from __future__ import annotations

import threading

import pytest

from tests.policy.test_ledger import (
    test_a_failed_transaction_leaves_nothing_behind,
    test_api_errors_read_well,
    test_blocked_machines_expire_and_extend,
    test_cost_samples_accrue_at_the_rate_in_force,
    test_ledger_is_a_spend_source_for_the_guard,
    test_run_attempt_lifecycle,
)
from vastkit.clock import ManualClock
from vastkit.errors import LedgerError
from vastkit.ledger import SCHEMA_VERSION, Ledger

from .conftest import NOW

__all__ = [
    "test_a_failed_transaction_leaves_nothing_behind",
    "test_api_errors_read_well",
    "test_blocked_machines_expire_and_extend",
    "test_cost_samples_accrue_at_the_rate_in_force",
    "test_ledger_is_a_spend_source_for_the_guard",
    "test_run_attempt_lifecycle",
]


def test_a_ledger_opens_at_the_current_schema_with_its_id(ledger_target: str) -> None:
    with Ledger(ledger_target) as first, Ledger(ledger_target) as second:
        assert first.schema_version == second.schema_version == SCHEMA_VERSION
        assert first.ledger_id == second.ledger_id
        assert len(first.ledger_id) == 8


def test_a_statement_error_is_a_ledger_error(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="nowhere"), ledger._db.write() as tx:
        tx.execute("INSERT INTO nowhere VALUES (1)")
    ledger.record_run("after")  # the failed transaction left the connection usable
    assert [r.run_id for r in ledger.runs()] == ["after"]


def test_running_spend_and_the_queue_read_back_alike(ledger: Ledger) -> None:
    ledger.record_run("r1", project="vision", team="ml")
    attempt = ledger.record_attempt("r1", 1, machine_id=9, instance_id=12_345_678_901)
    ledger.add_cost_sample(attempt, state="running", rate_dph=3.6, at=NOW)
    assert ledger.running(project="vision", now=NOW + 10) == (pytest.approx(0.01), 3.6)
    assert ledger.attempts(instance_id=12_345_678_901)[0].id == attempt
    ledger.enqueue("j1", name="j", spec={"a": [1, 2]}, project="vision", priority=2)
    ledger.enqueue("j2", name="j", spec={}, project="vision")
    entry = ledger.claim_queued(owner="me", token="t1", ttl_s=60, project_caps={"vision": 1})
    assert entry is not None
    assert (entry.job_id, entry.spec, entry.claims) == ("j1", {"a": [1, 2]}, 1)
    assert ledger.claim_queued(owner="me", token="t2", ttl_s=60, project_caps={"vision": 1}) is None
    assert ledger.renew_lease("j1", "t1", ttl_s=60)
    assert not ledger.renew_lease("j1", "other", ttl_s=60)
    assert ledger.finish_queued("j1", "t1", status="succeeded", reason="done", result={"x": 1})
    assert ledger.queue_counts() == {"succeeded": 1, "queued": 1}
    assert ledger.request_cancel("j2")
    assert ledger.queue_entry("j2").cancel_requested  # type: ignore[union-attr]


def test_claims_are_atomic_between_connections(ledger_target: str) -> None:
    with Ledger(ledger_target) as ledger:
        for n in range(60):
            ledger.enqueue(f"job-{n}", name="j", spec={}, project=f"p{n % 4}", priority=n % 3)
    claimed: list[list[str]] = [[], [], [], []]
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        try:
            with Ledger(ledger_target) as mine:
                while True:
                    entry = mine.claim_queued(
                        owner=f"p{index}",
                        token=f"t{index}",
                        ttl_s=60,
                        project_caps={"p0": 100, "p1": 100},
                    )
                    if entry is None:
                        return
                    claimed[index].append(entry.job_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    every = [job for mine in claimed for job in mine]
    assert len(every) == 60
    assert len(set(every)) == 60  # no job claimed twice


def test_a_project_cap_holds_between_connections(ledger_target: str) -> None:
    with Ledger(ledger_target) as ledger:
        for n in range(20):
            ledger.enqueue(f"job-{n}", name="j", spec={}, project="vision")
    got: list[str] = []
    barrier = threading.Barrier(6)

    def claimer(index: int) -> None:
        with Ledger(ledger_target, clock=ManualClock(NOW)) as mine:
            barrier.wait()
            entry = mine.claim_queued(
                owner=f"p{index}", token=f"t{index}", ttl_s=600, project_caps={"vision": 2}
            )
            if entry is not None:
                got.append(entry.job_id)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 2  # six drivers at once, a cap of two: two claims


def test_drivers_creating_one_ledger_at_once_agree_on_its_id(ledger_target: str) -> None:
    barrier = threading.Barrier(4)
    ids: list[str] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            barrier.wait()
            with Ledger(ledger_target) as ledger:
                ids.append(ledger.ledger_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ids) == 4
    assert len(set(ids)) == 1

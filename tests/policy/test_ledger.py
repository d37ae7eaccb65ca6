"""The ledger: API, schema versioning, several processes, crash consistency."""

from __future__ import annotations

import multiprocessing
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.processes import HANG_S, ProcessGroups
from vastkit.budget import BudgetAction, BudgetGuard, Budgets
from vastkit.clock import ManualClock
from vastkit.errors import LedgerError
from vastkit.ledger import SCHEMA_VERSION, Ledger, default_ledger_path

from .conftest import NOW


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db", clock=ManualClock(NOW)) as opened:
        yield opened


def test_default_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VASTKIT_LEDGER", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_ledger_path() == tmp_path / "state" / "vastkit" / "ledger.db"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_ledger_path() == tmp_path / ".local" / "state" / "vastkit" / "ledger.db"
    monkeypatch.setenv("VASTKIT_LEDGER", str(tmp_path / "x.db"))
    assert default_ledger_path() == tmp_path / "x.db"


def test_opens_in_wal_mode_with_current_schema(ledger: Ledger, tmp_path: Path) -> None:
    assert ledger.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(tmp_path / "ledger.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"runs", "attempts", "cost_samples", "blocked_machines", "create_intents"} <= tables


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LedgerError) as info:
        Ledger(path)
    assert str(info.value) == (
        f"the ledger at {path} has schema version {SCHEMA_VERSION + 1}, newer than this vastkit "
        f"understands ({SCHEMA_VERSION}); upgrade vastkit"
    )


def test_not_a_database_is_a_ledger_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match=f"cannot use the ledger at {path}"):
        Ledger(path)


def test_run_attempt_lifecycle(ledger: Ledger) -> None:
    run = ledger.record_run("r1", name="train", project="vision", team="ml", profile="dev-test")
    assert (run.status, run.created_at) == ("pending", NOW)
    assert ledger.record_run("r1", project="other").project == "vision"  # idempotent
    intent = ledger.begin_intent("r1", 1, offer_id=77, label="vastkit/r1/1", at=NOW + 1)
    assert [i.label for i in ledger.pending_intents()] == ["vastkit/r1/1"]
    ledger.complete_intent(intent, instance_id=555, at=NOW + 2)
    assert ledger.pending_intents() == []
    assert ledger.intents("r1")[0].instance_id == 555
    attempt = ledger.record_attempt(
        "r1",
        1,
        offer_id=77,
        machine_id=9,
        instance_id=555,
        label="vastkit/r1/1",
        rental="interruptible",
        bid=0.12,
        gpu_name="RTX 4090",
        num_gpus=1,
        dph_total=0.13,
        storage_cost=0.72,
        storage_dph=0.01,
        created_at=NOW + 2,
    )
    ledger.mark_phase(attempt, "running", at=NOW + 60)
    ledger.update_attempt(attempt, end_reason="succeeded", ended_at=NOW + 3660)
    stored = ledger.get_attempt(attempt)
    assert stored is not None
    assert (stored.bid, stored.running_at, stored.end_reason) == (0.12, NOW + 60, "succeeded")
    assert ledger.attempts(instance_id=555)[0].id == attempt
    ledger.end_run("r1", "succeeded", at=NOW + 3700)
    assert ledger.runs(project="vision")[0].status == "succeeded"


def test_api_errors_read_well(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="cannot record attempt 1 of run 'nope'"):
        ledger.record_attempt("nope", 1)
    ledger.record_run("r1")
    ledger.record_attempt("r1", 1)
    with pytest.raises(LedgerError, match="attempt numbers are unique per run"):
        ledger.record_attempt("r1", 1)
    with pytest.raises(ValueError, match="unknown attempt field"):
        ledger.record_attempt("r1", 2, offerid=3)
    with pytest.raises(ValueError, match="rental must be 'on-demand' or 'interruptible'"):
        ledger.record_attempt("r1", 2, rental="spot")
    with pytest.raises(ValueError, match="no attempt 999 in the ledger"):
        ledger.update_attempt(999, end_reason="x")
    with pytest.raises(ValueError, match="unknown phase 'booting'"):
        ledger.mark_phase(1, "booting")
    ledger.begin_intent("r1", 1, offer_id=1, label="vastkit/r1/1")
    with pytest.raises(LedgerError, match="a create intent with label 'vastkit/r1/1' already"):
        ledger.begin_intent("r1", 2, offer_id=2, label="vastkit/r1/1")
    with pytest.raises(ValueError, match="run_id must not be empty"):
        ledger.record_run("")
    ledger.close()
    ledger.close()
    with pytest.raises(LedgerError, match="is closed"):
        ledger.runs()


def test_a_row_that_does_not_fit_its_record_is_a_ledger_error(
    ledger: Ledger, tmp_path: Path
) -> None:
    ledger.record_run("r1")
    ledger.record_run("r2")
    conn = sqlite3.connect(tmp_path / "ledger.db")
    conn.execute("UPDATE runs SET metadata = 'not json' WHERE run_id = 'r1'")
    conn.execute("UPDATE runs SET created_at = 'yesterday' WHERE run_id = 'r2'")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="the metadata of a ledger row is not JSON"):
        ledger.get_run("r1")
    with pytest.raises(LedgerError, match=r"RunRecord.*\$\.created_at"):
        ledger.get_run("r2")


def test_no_sqlite_error_escapes_a_write(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="no such table"), ledger._db.write() as tx:
        tx.execute("INSERT INTO nowhere VALUES (1)")
    ledger.enqueue("j1", name="j", spec={})
    with pytest.raises(LedgerError, match="cannot queue job 'j1'"):
        ledger.enqueue("j1", name="j", spec={})


def test_cost_samples_accrue_at_the_rate_in_force(ledger: Ledger) -> None:
    ledger.record_run("r1", project="vision", team="ml")
    attempt = ledger.record_attempt("r1", 1)
    assert ledger.add_cost_sample(attempt, state="provisioning", rate_dph=0.01, at=NOW) == 0.0
    assert ledger.add_cost_sample(attempt, state="running", rate_dph=0.41, at=NOW + 360) == (
        pytest.approx(0.001)
    )
    cost = ledger.add_cost_sample(attempt, state="destroyed", rate_dph=0.0, at=NOW + 3960)
    assert cost == pytest.approx(0.41)
    assert ledger.spend(project="vision") == pytest.approx(0.411)
    assert ledger.spend(team="ml", since=NOW + 1000) == pytest.approx(0.41)
    assert ledger.spend(project="other") == 0.0
    assert ledger.get_attempt(attempt).cost_usd == pytest.approx(0.411)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="before the previous one"):
        ledger.add_cost_sample(attempt, state="running", rate_dph=0.1, at=NOW)


def test_blocked_machines_expire_and_extend(ledger: Ledger) -> None:
    ledger.block_machine(9, reason="image pull failed", for_s=600, at=NOW)
    ledger.block_machine(9, reason="host lost", for_s=60, at=NOW + 10)  # never shortens
    ledger.block_machine(10, reason="exited", for_s=100, at=NOW)
    assert ledger.blocked_machines(NOW + 50) == {9, 10}
    assert ledger.blocked_machines(NOW + 200) == {9}
    assert ledger.blocked_machines(NOW + 601) == frozenset()
    (block,) = ledger.blocks(NOW + 200)
    assert (block.reason, block.count, block.expires_at) == ("host lost", 2, NOW + 600)
    ledger.unblock_machine(9)
    assert ledger.blocked_machines(NOW) == {10}


def test_ledger_is_a_spend_source_for_the_guard(ledger: Ledger) -> None:
    ledger.record_run("r1", project="vision")
    attempt = ledger.record_attempt("r1", 1)
    ledger.add_cost_sample(attempt, state="running", rate_dph=1.0, at=NOW)
    ledger.add_cost_sample(attempt, state="running", rate_dph=1.0, at=NOW + 9 * 3600)
    clock = ManualClock(NOW + 9 * 3600)
    guard = BudgetGuard(
        Budgets(), ledger, run_id="r1", job_limit_usd=10, poll_interval_s=3600, clock=clock
    )
    assert guard.check(1.0).action == BudgetAction.STOP


def test_a_failed_transaction_leaves_nothing_behind(ledger: Ledger) -> None:
    ledger.record_run("r1")
    attempt = ledger.record_attempt("r1", 1)

    def crash() -> None:
        with ledger._db.write() as tx:
            tx.execute(
                "INSERT INTO cost_samples (attempt_id, at, state, rate_dph, cost_usd) "
                "VALUES (?, ?, 'running', 1, 5)",
                (attempt, NOW),
            )
            raise RuntimeError("crash in the middle of a write")

    with pytest.raises(RuntimeError):
        crash()
    assert ledger.spend() == 0.0


_CRASH = """
import os, sys
from vastkit.ledger import Ledger
ledger = Ledger(sys.argv[1])
with ledger._db.write() as tx:
    tx.execute("INSERT INTO runs (run_id, status, created_at, metadata) "
                 "VALUES ('half', 'pending', 0, '{}')")
    os._exit(1)  # the process dies mid-transaction
"""


def test_a_process_killed_mid_write_leaves_the_ledger_consistent(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    result = processes.run([sys.executable, "-c", _CRASH, str(path)], text=True)
    assert result.returncode == 1, result.stderr
    with Ledger(path) as reopened:
        assert reopened.get_run("half") is None
        reopened.record_run("after")
        assert [r.run_id for r in reopened.runs()] == ["after"]


def _worker(path: str, worker: int, count: int) -> None:
    with Ledger(path, clock=ManualClock(NOW)) as ledger:
        run_id = f"w{worker}"
        ledger.record_run(run_id, project="shared")
        attempt = ledger.record_attempt(run_id, 1)
        for index in range(count):
            ledger.add_cost_sample(attempt, state="running", rate_dph=3.6, at=NOW + index)
            ledger.block_machine(index % 5, reason=f"w{worker}", for_s=100, at=NOW)


@pytest.mark.slow
def test_several_processes_write_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    Ledger(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(path, n, 40)) for n in range(4)]
    try:
        for process in workers:
            process.start()
        for process in workers:
            process.join(HANG_S)  # a hang guard
            assert process.exitcode == 0
    finally:  # a failed or hung test leaves no process behind
        for process in workers:
            if process.is_alive():
                process.kill()
            if process.pid is not None:
                process.join()
    with Ledger(path) as ledger:
        # each worker: 39 intervals of 1 s at 3.6 $/h = 0.039 $
        assert ledger.spend(project="shared") == pytest.approx(4 * 0.039)
        assert len(ledger.runs()) == 4
        assert ledger.blocked_machines(NOW) == {0, 1, 2, 3, 4}
        assert {b.count for b in ledger.blocks(NOW)} == {32}

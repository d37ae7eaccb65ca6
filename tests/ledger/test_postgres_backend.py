"""What is PostgreSQL's own: schema translation, dropped connections, stalled and killed writers,
several processes writing at once."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys

import psycopg
import pytest

from tests._support.processes import HANG_S, ProcessGroups
from tests._support.waiting import wait_until
from tests.policy.test_ledger import _CRASH, _worker
from vastkit.errors import LedgerError
from vastkit.ledger import Ledger

from .conftest import NOW

_HOLD_THE_LOCK = """
import sys, time
from vastkit.ledger import Ledger
ledger = Ledger(sys.argv[1], busy_timeout_s=2.0)
with ledger._db.write() as tx:
    tx.execute("INSERT INTO runs (run_id, status, created_at, metadata) "
               "VALUES ('stalled', 'pending', 0, '{}')")
    print("holding", flush=True)
    time.sleep(3600)  # SIGSTOPped here: a laptop asleep mid-write
"""


def _columns(url: str, table: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = current_schema()",
            (table,),
        ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def test_the_schema_is_translated(postgres_url: str) -> None:
    Ledger(postgres_url).close()
    attempts = _columns(postgres_url, "attempts")
    assert attempts["id"] == "bigint"
    assert attempts["instance_id"] == "bigint"
    assert attempts["dph_total"] == "double precision"
    assert _columns(postgres_url, "ledger_meta") == {"key": "text", "value": "text"}
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM ledger_schema").fetchall() == [(3,)]


def test_a_dropped_connection_is_opened_again(postgres_url: str) -> None:
    with Ledger(postgres_url) as ledger:
        ledger.record_run("r1")
        pid = ledger._db.read("SELECT pg_backend_pid() AS pid")[0]["pid"]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert [r.run_id for r in ledger.runs()] == ["r1"]  # a read, on a new connection
        pid = ledger._db.read("SELECT pg_backend_pid() AS pid")[0]["pid"]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        ledger.record_run("r2")  # a write begins on a new connection
        assert [r.run_id for r in ledger.runs()] == ["r1", "r2"]


def test_a_caught_statement_error_rolls_the_transaction_back(postgres_url: str) -> None:
    with Ledger(postgres_url) as ledger:

        def swallow_a_failed_statement() -> None:
            with ledger._db.write() as tx:
                tx.execute(
                    "INSERT INTO runs (run_id, status, created_at, metadata) "
                    "VALUES ('lost', 'pending', 0, '{}')"
                )
                with pytest.raises(LedgerError):
                    tx.execute("SELECT * FROM nowhere")

        with pytest.raises(LedgerError, match="rolled back"):
            swallow_a_failed_statement()
        assert ledger.get_run("lost") is None


def test_a_writer_stopped_mid_write_does_not_block_the_others(
    postgres_url: str, processes: ProcessGroups
) -> None:
    Ledger(postgres_url).close()
    holder = processes.popen(
        [sys.executable, "-c", _HOLD_THE_LOCK, postgres_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding", holder.stderr
    holder.send_signal(signal.SIGSTOP)
    try:
        # The holder's session idles in its transaction past its busy_timeout_s (2 s): the
        # server ends it, the lock is released, and this writer goes on.
        with Ledger(postgres_url, busy_timeout_s=2.0) as other:
            wait_until(lambda: _try_write(other), "the stalled writer's lock was released")
            assert other.get_run("stalled") is None  # its write was rolled back
    finally:
        holder.send_signal(signal.SIGCONT)


def _try_write(ledger: Ledger) -> bool:
    try:
        ledger.record_run("after")
    except LedgerError:
        return False
    return True


def test_a_process_killed_mid_write_leaves_the_ledger_consistent(
    postgres_url: str, processes: ProcessGroups
) -> None:
    Ledger(postgres_url).close()
    result = processes.run([sys.executable, "-c", _CRASH, postgres_url], text=True)
    assert result.returncode == 1, result.stderr
    with Ledger(postgres_url) as reopened:
        assert reopened.get_run("half") is None
        reopened.record_run("after")
        assert [r.run_id for r in reopened.runs()] == ["after"]


@pytest.mark.slow
def test_several_processes_write_at_once(postgres_url: str) -> None:
    Ledger(postgres_url).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(postgres_url, n, 40)) for n in range(4)]
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
    with Ledger(postgres_url) as ledger:
        assert ledger.spend(project="shared") == pytest.approx(4 * 0.039)
        assert len(ledger.runs()) == 4
        assert ledger.blocked_machines(NOW) == {0, 1, 2, 3, 4}
        assert {b.count for b in ledger.blocks(NOW)} == {32}

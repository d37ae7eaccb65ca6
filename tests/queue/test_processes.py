"""JobQueue across processes: a SIGKILLed orchestrator loses nothing, two share the work.

The emulator runs on loopback in this process and the fleet plays the workers; the
orchestrators are subprocesses (``_queue_process.py``) pointed at the emulator's URL and at one
ledger file.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests._support.processes import HANG_S, ProcessGroups
from tests._support.waiting import wait_until
from vastkit.emulator import Emulator
from vastkit.ledger import Ledger
from vastkit.queue import JobQueue

from .conftest import Fleet, make_job, queue_process

LEASE_TTL = 1.5
"""A short lease, so the restarted queue adopts the dead one's jobs quickly."""

SHARED_LEASE_TTL = 60.0
"""The lease of two live processes that share a queue: long enough that a process the machine's
load stalls for a while keeps its jobs (a lost lease would be claimed by the other)."""


def creates(emu: Emulator) -> int:
    return sum(
        1
        for method, endpoint, status in emu.requests
        if method == "PUT" and "create" in endpoint and status == 200
    )


def start(
    processes: ProcessGroups,
    emu: Emulator,
    ledger_path: Path,
    concurrency: int,
    *,
    ttl: float = LEASE_TTL,
    budgets: Path | None = None,
) -> subprocess.Popen[str]:
    """An orchestrator subprocess, killed with its process group when the test ends."""
    extra = [str(budgets)] if budgets is not None else []
    return processes.popen(
        queue_process(emu.url, emu.api_key, str(ledger_path), str(concurrency), str(ttl), *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_orchestrator_is_replaced_without_duplicates_or_leaks(
    emu: Emulator, fleet: Fleet, tmp_path: Path, store_url: str, processes: ProcessGroups
) -> None:
    fleet.work_s = 1.0
    ledger_path = tmp_path / "ledger.db"
    with JobQueue(ledger_path) as queue:
        ids = [queue.submit(make_job(store_url, f"job-{n}")) for n in range(10)]

    first = start(processes, emu, ledger_path, concurrency=3)
    with Ledger(ledger_path) as ledger:

        def some_ended_others_run() -> bool:
            assert first.poll() is None, first.communicate()
            return len(ledger.queue_entries("succeeded")) >= 2 and fleet.live_count() >= 2

        # Kill it once some jobs have ended and others have instances running.
        wait_until(some_ended_others_run, "the first orchestrator made progress")
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    orphans = {v.id for v in emu.instances}
    assert orphans  # the dead orchestrator left instances running

    second = start(processes, emu, ledger_path, concurrency=3)
    _out, err = second.communicate(timeout=HANG_S)
    assert second.returncode == 0, err

    with JobQueue(ledger_path) as queue:
        records = queue.list()
    assert [r.status for r in records] == ["succeeded"] * 10, [r.reason for r in records]
    assert sorted(r.job_id for r in records) == sorted(ids)
    assert emu.instances == []  # nothing leaked
    assert creates(emu) == 10  # no job was ever rented twice
    with Ledger(ledger_path) as ledger:
        for job_id in ids:
            rented = [a for a in ledger.attempts(job_id) if a.instance_id is not None]
            assert len(rented) == 1, rented  # one attempt per job, adopted across the restart
            assert rented[0].destroyed_at is not None
        assert ledger.pending_intents() == []
    adopted = [r for r in records if r.claims == 2]
    assert {r.attempts for r in adopted} == {1}
    # every instance the dead orchestrator left was adopted and closed by the second one
    assert orphans <= {i for r in records for i in fleet.instances_by_run[r.job_id]}
    assert len(adopted) >= len(orphans)


def test_two_orchestrators_share_the_work_without_overlap(
    emu: Emulator, fleet: Fleet, tmp_path: Path, store_url: str, processes: ProcessGroups
) -> None:
    fleet.work_s = 0.8
    fleet.gate = 4  # no work ends before both processes drive two jobs each
    ledger_path = tmp_path / "ledger.db"
    with JobQueue(ledger_path) as queue:
        ids = [queue.submit(make_job(store_url, f"job-{n}")) for n in range(8)]
    procs = [start(processes, emu, ledger_path, 2, ttl=SHARED_LEASE_TTL) for _ in range(2)]
    outputs = [p.communicate(timeout=HANG_S) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    done_counts = [int(out.split()[1]) for out, _ in outputs]
    with JobQueue(ledger_path) as queue:
        records = queue.list()
    assert [r.status for r in records] == ["succeeded"] * 8, [r.reason for r in records]
    assert sum(done_counts) == 8  # each job ended in exactly one process
    assert all(n >= 1 for n in done_counts), done_counts  # both took part
    drivers = {r.driver for r in records}
    assert len(drivers) == 2
    assert all(r.claims == 1 for r in records)  # never claimed twice
    assert creates(emu) == 8
    assert fleet.max_live <= 4
    assert emu.instances == []
    assert sorted(r.job_id for r in records) == sorted(ids)


def test_sigterm_stops_the_jobs_destroys_their_instances_and_requeues_them(
    emu: Emulator, fleet: Fleet, tmp_path: Path, store_url: str, processes: ProcessGroups
) -> None:
    fleet.work_s = 0.5
    ledger_path = tmp_path / "ledger.db"
    with JobQueue(ledger_path) as queue:
        ids = [queue.submit(make_job(store_url, f"job-{n}")) for n in range(3)]
    fleet.hold.update(ids)  # the work never ends while the first orchestrator runs
    first = start(processes, emu, ledger_path, concurrency=2)

    def both_run() -> bool:
        assert first.poll() is None, first.communicate()
        return len(fleet.running_since) >= 2

    wait_until(both_run, "the jobs ran")
    first.send_signal(signal.SIGTERM)
    _out, err = first.communicate(timeout=HANG_S)
    assert first.returncode != 0
    assert emu.instances == []  # it destroyed what it rented before exiting
    with JobQueue(ledger_path) as queue:
        records = queue.list()
    assert [r.status for r in records] == ["queued"] * 3, err
    stopped = [r for r in records if r.claims == 1]
    assert len(stopped) == 2
    assert all((r.reason or "").startswith("put back in the queue") for r in stopped)
    with Ledger(ledger_path) as ledger:
        for record in stopped:
            (attempt,) = ledger.attempts(record.job_id)
            assert attempt.destroyed_at is not None
            assert attempt.cost_usd > 0  # what it ran for is recorded

    fleet.hold.clear()
    second = start(processes, emu, ledger_path, concurrency=2)
    _out, err = second.communicate(timeout=HANG_S)
    assert second.returncode == 0, err
    with JobQueue(ledger_path) as queue:
        assert [r.status for r in queue.list()] == ["succeeded"] * 3
    assert emu.instances == []

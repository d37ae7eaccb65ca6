"""A project budget holds across a queue of running jobs, by the emulator's own bill (issue 15).

Each job's guard sees the spend of every running instance in the ledger (samples on every poll,
plus what the other running attempts accrued since their last sample), so the jobs stop together
before the project passes its cap by more than one poll interval of their summed rates.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests._support.processes import HANG_S, ProcessGroups
from vastkit.api.client import Client
from vastkit.budget import Budget, Budgets
from vastkit.emulator import Emulator
from vastkit.queue import JobQueue

from .conftest import FAST, PROFILE, Fleet, make_job

POLL = 0.5
SMALL = attrs.evolve(PROFILE, disk_gb=8.0)
"""A small disk, so the worst case of a one-minute job (its preflight) fits a small cap."""
SLOW = attrs.evolve(FAST, poll_interval=POLL, max_duration=60.0)
"""The queue tests' deadlines, with a half-second poll and a one-minute limit per job."""


@pytest.fixture
def client(emu: Emulator) -> Iterator[Client]:
    with Client(emu.api_key, base_url=emu.url, min_intervals={}) as c:
        yield c


def test_four_jobs_under_one_project_cap_stop_together_by_the_bill(
    emu: Emulator, fleet: Fleet, client: Client, tmp_path: Path, store_url: str
) -> None:
    rate = SMALL.max_dph  # what each running job may cost per hour at most
    cap = 0.0105  # about 23 s of four running jobs (a preflight prices at least a minute)
    budgets = Budgets(projects={"vision": Budget(scope="project", name="vision", limit_usd=cap)})
    fleet.gate = 4  # all four run at once
    with JobQueue(
        tmp_path / "ledger.db", client=client, concurrency=4, budgets=budgets, claim_interval=0.2
    ) as queue:
        ids = [
            queue.submit(
                make_job(store_url, f"v{n}", project="vision", profile=SMALL, timeouts=SLOW)
            )
            for n in range(4)
        ]
        for job_id in ids:
            fleet.hold.add(job_id)  # the work never ends: only the budget stops them
        queue.run()
        records = queue.list()
    assert fleet.max_live == 4
    assert {r.status for r in records} == {"budget_exceeded"}, [r.reason for r in records]
    assert emu.instances == []
    bill = emu.user.total_spend
    one_poll = 4 * rate * POLL / 3600
    assert bill <= cap + one_poll, (bill, cap, one_poll)
    assert bill > cap / 2  # it did spend up to near the cap


def test_two_driver_processes_sharing_the_queue_hold_the_same_cap(
    emu: Emulator, fleet: Fleet, tmp_path: Path, store_url: str, processes: ProcessGroups
) -> None:
    """The same cap with the four jobs split between two driver processes on one ledger: each
    driver's guards see the other's running instances through the ledger."""
    from .test_processes import SHARED_LEASE_TTL, start

    cap = 0.0105
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(f"projects:\n  vision:\n    limit_usd: {cap}\n")
    ledger_path = tmp_path / "ledger.db"
    fleet.gate = 4  # all four run at once, two in each process
    with JobQueue(ledger_path) as queue:
        ids = [
            queue.submit(
                make_job(store_url, f"v{n}", project="vision", profile=SMALL, timeouts=SLOW)
            )
            for n in range(4)
        ]
    fleet.hold.update(ids)  # the work never ends: only the budget stops them
    procs = [
        start(processes, emu, ledger_path, 2, ttl=SHARED_LEASE_TTL, budgets=budgets)
        for _ in range(2)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=HANG_S)
        assert proc.returncode == 0, err
    with JobQueue(ledger_path) as queue:
        records = queue.list()
    assert {r.status for r in records} == {"budget_exceeded"}, [r.reason for r in records]
    assert len({r.driver for r in records}) == 2  # both processes drove jobs
    assert fleet.max_live == 4
    assert emu.instances == []
    bill = emu.user.total_spend
    one_poll = 4 * SMALL.max_dph * POLL / 3600
    assert bill <= cap + one_poll, (bill, cap, one_poll)
    assert bill > cap / 2

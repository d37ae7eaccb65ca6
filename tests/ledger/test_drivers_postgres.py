"""Two driver processes on two "machines" (separate home folders) share one PostgreSQL ledger.

The emulator runs on loopback in this process and the queue tests' fleet plays the workers; the
drivers are subprocesses (``_driver_process.py``), each with its own ``HOME`` and
``XDG_STATE_HOME`` (nothing local is shared), pointed at one PostgreSQL ledger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._support.processes import HANG_S, ProcessGroups
from tests.queue.conftest import Fleet, emu, fleet, make_job, store_url
from vastkit.emulator import Emulator
from vastkit.ledger import Ledger
from vastkit.queue import JobQueue

__all__ = ["emu", "fleet", "store_url"]

HERE = Path(__file__).parent
JOBS = 20
VISION_JOBS = 8
VISION_CAP = 2
"""The vision project's cap: jobs of it running at once, counted across both drivers."""
CONCURRENCY = 3
LEASE_TTL = 60.0
"""Long enough that a driver the machine's load stalls keeps its jobs."""


def _creates(emu: Emulator) -> int:
    return sum(
        1
        for method, endpoint, status in emu.requests
        if method == "PUT" and "create" in endpoint and status == 200
    )


def _driver(
    processes: ProcessGroups, emu: Emulator, ledger: str, home: Path
) -> subprocess.Popen[str]:
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"))
    env.pop("VASTKIT_LEDGER", None)
    caps = json.dumps({"vision": VISION_CAP})
    args = [sys.executable, str(HERE / "_driver_process.py"), emu.url, emu.api_key, ledger]
    args += [str(CONCURRENCY), str(LEASE_TTL), caps]
    return processes.popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_drivers_on_two_homes_run_every_job_exactly_once(  # noqa: PLR0917 - fixtures
    emu: Emulator,
    fleet: Fleet,
    tmp_path: Path,
    store_url: str,
    postgres_url: str,
    processes: ProcessGroups,
) -> None:
    fleet.work_s = 0.3
    fleet.gate = CONCURRENCY + 1  # no work ends before both drivers drive jobs at once
    with JobQueue(postgres_url) as queue:
        ids = []
        for n in range(JOBS):
            project = "vision" if n < VISION_JOBS else "text"
            ids.append(queue.submit(make_job(store_url, f"job-{n}", project=project)))
            fleet.project_of[ids[-1]] = project
    drivers = [_driver(processes, emu, postgres_url, tmp_path / f"home-{n}") for n in range(2)]
    outputs = [d.communicate(timeout=HANG_S * 2) for d in drivers]
    for driver, (_out, err) in zip(drivers, outputs, strict=True):
        assert driver.returncode == 0, err
    done_counts = [int(out.split()[1]) for out, _ in outputs]

    with JobQueue(postgres_url) as queue:
        records = queue.list()
    assert sorted(r.job_id for r in records) == sorted(ids)
    assert [r.status for r in records] == ["succeeded"] * JOBS, [r.reason for r in records]
    assert sum(done_counts) == JOBS  # each job ended in exactly one driver
    assert all(n >= 1 for n in done_counts), done_counts  # both took part
    assert len({r.driver for r in records}) == 2
    assert [r.claims for r in records] == [1] * JOBS  # never claimed twice
    assert _creates(emu) == JOBS  # one rental per job
    assert fleet.max_live <= 2 * CONCURRENCY  # no driver passed its concurrency
    assert fleet.max_live_by_project["vision"] == VISION_CAP  # reached, never passed
    assert emu.instances == []  # nothing left running
    with Ledger(postgres_url) as ledger:
        assert ledger.pending_intents() == []
        for job_id in ids:
            tried = ledger.attempts(job_id)
            (attempt,) = [a for a in tried if a.instance_id is not None]  # rented once
            assert attempt.destroyed_at is not None
            assert attempt.cost_usd > 0
            # an offer the other driver rented first is another attempt that rented nothing
            assert {a.end_reason for a in tried if a is not attempt} <= {"offer_gone"}
    for n in range(2):  # neither driver made a local ledger file: the state is on the server
        assert not (tmp_path / f"home-{n}" / "state" / "vastkit" / "ledger.db").exists()

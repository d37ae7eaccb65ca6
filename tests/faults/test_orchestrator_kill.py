"""The orchestrator-died row: SIGKILL at each phase of a job, then a restart that resumes it.

The orchestrator runs as a subprocess against a loopback emulator in this process and kills
itself with SIGKILL at a phase (``_dying_orchestrator.py``); the workers are played here in
real time by the fleet. Then ``run_job(job, run_id=...)`` in this process restarts the run: it
must adopt the live instance (never renting a second one while it lives), or rent anew when
there was none, take the job to its end, and leave nothing billing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import CellRecord, Fleet, Probe, matrix_of, torn_checkpoints
from tests.jobs._restart_job import make_job
from tests.jobs.conftest import HookedSystemClock
from vastkit.api.client import Client
from vastkit.emulator import Emulator, Timings, serve
from vastkit.jobs import JobEvent, run_job
from vastkit.ledger import Ledger

pytestmark = pytest.mark.faults

HERE = Path(__file__).parent

KILL_POINTS = (
    "searching",
    "creating_before",
    "creating_after",
    "provisioning",
    "loading",
    "worker_starting",
    "running",
    "checkpointing",
    "finishing_before_destroy",
    "finishing_after_destroy",
)

KNOWN_BUGS: dict[str, str] = {}


@pytest.fixture
def live_emu() -> Iterator[Emulator]:
    with serve(
        seed=0, offers=300, rate_limits=False, timings=Timings(provision_s=0.3, loading_s=0.8)
    ) as emulator:
        yield emulator


@pytest.mark.parametrize(
    "point",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[p]))
        if p in KNOWN_BUGS
        else p
        for p in KILL_POINTS
    ],
)
def test_sigkill_then_restart(
    live_emu: Emulator, tmp_path: Path, point: str, request: pytest.FixtureRequest
) -> None:
    emu = live_emu
    store = (tmp_path / "store").as_uri()
    ledger_path = tmp_path / "ledger.db"
    probe = Probe(emu)
    fleet = Fleet(
        emu=emu, store_url=store, total_steps=40, steps_per_second=40.0, checkpoint_every=5
    )
    stop = threading.Event()

    def play() -> None:  # the workers, while the first orchestrator lives
        while not stop.wait(0.05):
            fleet(time.time())
            probe.sample()

    player = threading.Thread(target=play, daemon=True)
    player.start()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                str(HERE / "_dying_orchestrator.py"),
                emu.url,
                emu.api_key,
                store,
                str(ledger_path),
                point,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        stop.set()
        player.join(5)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    lines = proc.stdout.split("\n")
    run_id = lines[0].split()[1]
    died = next(line.split()[1] for line in lines if line.startswith("DIED"))
    # under load a fast phase can slip between two polls: then it died at the next point
    assert KILL_POINTS.index(died) - KILL_POINTS.index(point) in (0, 1), died
    creates_before = sum(1 for m, n, _ in emu.requests if m == "PUT" and n == "create")
    left = [v.id for v in emu.instances]

    clock = HookedSystemClock()

    def hook(now: float) -> None:
        fleet(now)
        probe.sample()

    clock.hook = hook
    events: list[JobEvent] = []
    with (
        Client(emu.api_key, base_url=emu.url, min_intervals={}, clock=clock) as client,
        Ledger(ledger_path, clock=clock) as ledger,
    ):
        result = run_job(
            make_job(store),
            client=client,
            ledger=ledger,
            clock=clock,
            run_id=run_id,
            on_event=events.append,
            progress=False,
        )
        pending = ledger.pending_intents()
        run = ledger.get_run(run_id)
        open_attempts = [a for a in ledger.attempts(run_id) if a.ended_at is None]
    fleet.close()
    probe.sample()
    creates = sum(1 for m, n, _ in emu.requests if m == "PUT" and n == "create")
    record = CellRecord(
        cell=request.node.name,
        leaked=len(emu.instances),
        torn=torn_checkpoints(f"{store}/{run_id}"),
        duplicates=probe.duplicates,
    )
    matrix_of(request.config).record(request.node.nodeid, record)

    assert result.status == "succeeded", result.summary()
    assert result.run_id == run_id
    assert run is not None
    assert run.status == "succeeded"
    assert pending == []
    assert open_attempts == []
    if left:  # the dead orchestrator left an instance: adopted, or destroyed before a new one
        if died == "creating_after":
            assert creates - creates_before <= 1
        else:
            assert creates == creates_before, "a second instance was rented"
            assert "adopted" in [e.kind for e in events]
            assert [a.instance_id for a in result.attempts][-1] == left[0]
    elif died.startswith("finishing"):
        assert creates == creates_before, "a finished run was run again"
    assert record.leaked == 0, emu.instances
    assert record.torn == 0
    assert record.duplicates == 0, probe.labels
    assert fleet.max_live == 1

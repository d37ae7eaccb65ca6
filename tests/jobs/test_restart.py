"""An orchestrator that dies mid-job is replaced by one that adopts its instance.

The first orchestrator runs in a subprocess and is killed (``os._exit``) once its instance
runs, leaving a live, labelled instance and open ledger rows. ``run_job(job, run_id=...)``
in this process adopts that instance (never renting a second one), watches it to the end and
destroys it.

No check depends on the machine's speed: the crashing orchestrator runs under a hang guard, and
"adopted at once" is measured as the time the adopting orchestrator chose to sleep.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.processes import ProcessGroups
from tests._support.world import FakeWorkers, HookedSystemClock
from vastkit.api.client import Client
from vastkit.emulator import Emulator, Timings, serve
from vastkit.jobs import JobEvent, run_job
from vastkit.ledger import Ledger

from ._restart_job import make_job

HERE = Path(__file__).parent


@pytest.fixture
def real_emu() -> Iterator[Emulator]:
    with serve(
        seed=0, offers=400, rate_limits=False, timings=Timings(provision_s=0.3, loading_s=0.3)
    ) as emulator:
        yield emulator


def test_a_restarted_orchestrator_adopts_the_live_instance(
    real_emu: Emulator, tmp_path: Path, processes: ProcessGroups
) -> None:
    emu = real_emu
    store = (tmp_path / "store").as_uri()
    ledger_path = tmp_path / "ledger.db"
    crashed = processes.run(
        [
            sys.executable,
            str(HERE / "_crashing_orchestrator.py"),
            emu.url,
            emu.api_key,
            store,
            str(ledger_path),
        ],
        text=True,
    )
    assert crashed.returncode == 3, crashed.stderr
    run_id = crashed.stdout.split()[0]
    (left,) = emu.instances  # the dead orchestrator left its instance running
    with Ledger(ledger_path) as ledger:
        assert left.label == f"vastkit/{ledger.ledger_id}/{run_id}/1"

    clock = HookedSystemClock()
    fleet = FakeWorkers(emu=emu, store_url=store, total_steps=20, steps_per_second=20.0)
    clock.hook = fleet
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
        run = ledger.get_run(run_id)
        assert run is not None
        assert run.status == "succeeded"
        assert ledger.pending_intents() == []
    # It waited out none of the job's deadlines (20 s each): it adopted and watched at once.
    assert clock.slept < 20, clock.slept
    assert result.status == "succeeded", result.summary()
    assert result.run_id == run_id
    assert [a.instance_id for a in result.attempts] == [left.id]  # adopted, not re-rented
    assert "adopted" in [e.kind for e in events]
    creates = [r for r in emu.requests if r[0] == "PUT" and "create" in r[1]]
    assert len(creates) == 1  # only the dead orchestrator ever created
    assert fleet.max_live == 1
    assert emu.instances == []

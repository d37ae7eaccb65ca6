"""The outbid container is killed with no SIGTERM at all: the periodic checkpoint is the guarantee.

Vast's documentation says an outbid interruptible instance is "stopped"; whether the container
gets SIGTERM first, and for how long, is not documented. Here the emulator's ``ProcessRunner``
stops it with ``stop_signal="kill"``: SIGKILL to the whole container, no SIGTERM, no grace, so the
worker never writes an attempt result and the training script never gets its "save now" chance.
The job (a real worker process running the demo's training script against a local-folder store)
must still resume from its last periodic checkpoint, losing less than one checkpoint interval.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.fault_matrix import CellRecord, record_cell
from tests.faults.conftest import torn_checkpoints
from vastkit.api.client import Client
from vastkit.checkpoint import CheckpointManager
from vastkit.emulator import Emulator, ProcessRunner, Timings
from vastkit.jobs import Job, JobEvent, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile
from vastkit.rundir import CheckpointSettings, RunDir

pytestmark = [pytest.mark.faults, pytest.mark.slow]

EVERY = 5
TOTAL = 40
PREEMPT_AT = 10

PROFILE = GpuProfile(
    name="no-sigterm",
    gpu_name="RTX_3090",
    max_dph=0.20,
    max_duration_hours=1,
    disk_gb=16,
    rental="interruptible",
)


@pytest.fixture
def killing_emu(tmp_path: Path) -> Iterator[Emulator]:
    runner = ProcessRunner(tmp_path / "containers", grace_s=10.0, stop_signal="kill")
    with Emulator(
        0, offers=400, runner=runner, timings=Timings(provision_s=0.5, loading_s=0.5)
    ) as emu:
        emu.serve()
        yield emu


def _job(store_url: str) -> Job:
    return Job(
        name="no-sigterm",
        command=(sys.executable, "-m", "vastkit._demo_train"),
        profile=PROFILE,
        store_url=store_url,
        env={"DEMO_TOTAL_STEPS": str(TOTAL), "DEMO_STEP_SECONDS": "0.15"},
        checkpoint=CheckpointSettings(every_steps=EVERY, keep_last=20),
        outbid=OutbidPolicy.raise_bid(then_wait_s=1.0),
        timeouts=JobTimeouts(
            poll_interval=0.5,
            provisioning=60,
            loading=60,
            running=120,
            worker_ready=90,
            heartbeat_stale=60,
            host_lost_grace=10,
            stop_grace=5,
            heartbeat_interval=0.5,
            worker_grace=10,
            orchestrator_timeout=120,
            log_flush_seconds=0.5,
            relaunch_delay=0.5,
            destroy=60,
        ),
        max_cost_usd=1.0,
    )


def test_outbid_container_killed_without_sigterm_resumes_from_the_periodic_checkpoint(
    killing_emu: Emulator, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store_url = f"file://{tmp_path}/store"
    seen: list[int] = []

    def on_event(event: JobEvent) -> None:
        if (
            event.kind == "checkpoint"
            and not seen
            and event.step is not None
            and event.step >= PREEMPT_AT
            and event.instance_id is not None
        ):
            seen.append(event.step)
            killing_emu.preempt(event.instance_id, price=5.0)

    with (
        Client(killing_emu.api_key, base_url=killing_emu.url) as client,
        Ledger(tmp_path / "ledger.db") as ledger,
    ):
        result = run_job(_job(store_url), client=client, ledger=ledger, on_event=on_event)
    leaked = len(killing_emu.instances)
    torn = torn_checkpoints(result.run_url)
    record_cell(request.node, CellRecord(cell=request.node.name, leaked=leaked, torn=torn))
    assert seen, "the job never reached the preemption point"
    assert result.status == "succeeded", result.summary()
    assert len(result.attempts) == 2, result.summary()
    assert leaked == 0
    assert torn == 0

    rundir = RunDir(result.run_url)
    first = rundir.read_log(1).decode("utf-8", errors="replace")
    second = rundir.read_log(2).decode("utf-8", errors="replace")
    # No SIGTERM reached the worker, so neither it nor the script saved on the way out.
    assert "SIGTERM" not in first
    assert "asked to stop" not in first
    assert rundir.read_attempt_result(1) is None
    marker = "resumed from checkpoint step "
    [line] = [ln for ln in second.splitlines() if marker in ln]
    resumed = int(line.split(marker, 1)[1].split()[0])
    # The latest periodic checkpoint the orchestrator had seen committed (or a later one) ...
    assert resumed >= seen[0]
    # ... which is the newest checkpoint the first attempt committed: what it lost since is less
    # than one interval (it would have committed another otherwise).
    manager = CheckpointManager(result.run_url)
    try:
        steps = sorted(info.step for info in manager.list())
    finally:
        manager.close()
    first_attempt_steps = [s for s in steps if s <= resumed]
    assert first_attempt_steps[-1] == resumed
    assert all(b - a == EVERY for a, b in itertools.pairwise(first_attempt_steps))
    assert "finished 40 steps" in second

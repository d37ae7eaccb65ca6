"""run_job end to end: the emulator runs each instance's onstart as a real process.

The onstart installs nothing (vastkit is importable) and starts ``python -m vastkit.worker``,
which runs a real PyTorch training script (:mod:`vastkit._demo_train`) that checkpoints to the
store. The test outbids the instance twice; each relaunch runs on another machine and resumes
from the checkpoint the previous attempt committed when it was told to stop.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vastkit.api.client import Client
from vastkit.emulator import Emulator, ProcessRunner, Timings, serve
from vastkit.jobs import Job, JobEvent, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.rundir import CheckpointSettings, RunDir

from .conftest import BID_PROFILE

REAL = JobTimeouts(
    poll_interval=0.5,
    provisioning=30,
    loading=30,
    running=60,
    worker_ready=60,
    heartbeat_stale=30,
    host_lost_grace=5,
    stop_grace=15,
    heartbeat_interval=0.5,
    worker_grace=10,
    orchestrator_timeout=60,
    log_flush_seconds=0.5,
    relaunch_delay=0.5,
    destroy=30,
)


@pytest.fixture
def live_emu(tmp_path: Path) -> Iterator[Emulator]:
    runner = ProcessRunner(tmp_path / "containers", grace_s=10.0)
    with serve(
        seed=0,
        offers=400,
        runner=runner,
        rate_limits=False,
        timings=Timings(provision_s=0.5, loading_s=0.5),
    ) as emulator:
        yield emulator


def resumed_step(rundir: RunDir, attempt: int) -> int | None:
    text = rundir.read_log(attempt).decode("utf-8", errors="replace")
    marker = "resumed from checkpoint step "
    for line in text.splitlines():
        if marker in line:
            return int(line.split(marker, 1)[1].split()[0])
    return None


@pytest.mark.slow  # three real PyTorch processes: ~20 s idle, ~55 s on a loaded 2-core box
def test_preempted_twice_resumes_from_the_last_checkpoint_each_time(
    live_emu: Emulator, tmp_path: Path
) -> None:
    emu = live_emu
    events: list[JobEvent] = []
    checkpoints_seen: dict[int, int] = {}

    def on_event(event: JobEvent) -> None:
        events.append(event)
        if event.kind != "checkpoint" or event.attempt is None or event.instance_id is None:
            return
        seen = checkpoints_seen.get(event.attempt, 0) + 1
        checkpoints_seen[event.attempt] = seen
        # the first checkpoint an attempt is seen to commit: the orchestrator sees checkpoints
        # through heartbeats, so on a busy machine it may see only one before the work ends
        if event.attempt in (1, 2) and seen == 1:
            emu.preempt(event.instance_id, price=5.0)

    store = (tmp_path / "store").as_uri()
    job = Job(
        name="e2e",
        command=(sys.executable, "-m", "vastkit._demo_train"),
        profile=BID_PROFILE,
        store_url=store,
        env={"DEMO_TOTAL_STEPS": "60", "DEMO_STEP_SECONDS": "0.05"},
        checkpoint=CheckpointSettings(every_steps=5, keep_last=3),
        outbid=OutbidPolicy.give_up(),
        timeouts=REAL,
    )
    with (
        Client(emu.api_key, base_url=emu.url, min_intervals={}) as client,
        Ledger(tmp_path / "ledger.db") as ledger,
    ):
        result = run_job(job, client=client, ledger=ledger, on_event=on_event, progress=False)
        assert ledger.pending_intents() == []
    assert result.status == "succeeded", result.summary()
    assert [a.end_reason for a in result.attempts] == ["outbid", "outbid", "succeeded"]
    assert len({a.machine_id for a in result.attempts}) == 3  # moved each time
    rundir = RunDir(result.run_url)
    assert resumed_step(rundir, 1) is None  # the first attempt started from scratch
    for attempt in (2, 3):
        previous = rundir.read_attempt_result(attempt - 1)
        assert previous is not None
        assert previous.status.value == "preempted"
        assert previous.checkpoint_step is not None
        assert previous.checkpoint_step > 0
        # it resumed from exactly the checkpoint the previous attempt committed on SIGTERM
        assert resumed_step(rundir, attempt) == previous.checkpoint_step
    assert result.checkpoints[-1].step == 59
    assert result.exit_code == 0
    assert emu.instances == []
    assert result.total_cost_usd > 0
    kinds = [e.kind for e in events]
    assert kinds.count("outbid") == 2
    assert kinds[-1] == "finished"

"""Fixtures for the artifact tests: an emulator in virtual time whose workers are played by the
test (they succeed as soon as their instance runs), and one that runs real worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._support.world import HookedClock
from vastkit.api.client import Client
from vastkit.emulator import Emulator, ProcessRunner, Timings, serve
from vastkit.jobs import Job, JobEvent, JobResult, JobTimeouts, run_job
from vastkit.labels import parse_label
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile
from vastkit.rundir import AttemptResult, ResultStatus, RunDir

PROFILE = GpuProfile(
    name="test-4090", gpu_name="RTX_4090", max_dph=0.40, max_duration_hours=24, disk_gb=16
)
"""An on-demand profile the seed-0 catalog has offers for."""

BID_PROFILE = GpuProfile(
    name="test-bid",
    gpu_name="RTX_3090",
    max_dph=0.20,
    max_duration_hours=2000,
    disk_gb=16,
    rental="interruptible",
)
"""An interruptible profile (for preemption)."""

VIRTUAL = JobTimeouts(
    poll_interval=10,
    provisioning=60,
    loading=60,
    running=300,
    worker_ready=120,
    heartbeat_stale=60,
    stop_grace=30,
    destroy=120,
    relaunch_delay=5,
)

REAL = JobTimeouts(
    poll_interval=0.3,
    provisioning=30,
    loading=30,
    running=60,
    worker_ready=60,
    heartbeat_stale=30,
    host_lost_grace=5,
    stop_grace=15,
    heartbeat_interval=0.3,
    worker_grace=10,
    orchestrator_timeout=60,
    log_flush_seconds=0.3,
    relaunch_delay=0.3,
    destroy=30,
)


@dataclass
class InstantWorkers:
    """Plays the worker: once an attempt's instance runs, it records the job spec it would have
    read and writes a succeeded result."""

    emu: Emulator
    store_url: str
    specs: list[Any] = field(default_factory=list)

    def __call__(self, now: float) -> None:
        for view in self.emu.instances:
            parsed = parse_label(view.label)
            if parsed is None or view.actual_status != "running":
                continue
            run_id, attempt = parsed
            rundir = RunDir(f"{self.store_url}/{run_id}")
            if rundir.read_attempt_result(attempt) is not None:
                continue
            self.specs.append(rundir.read_job())
            rundir.write_attempt_result(
                AttemptResult(
                    attempt=attempt,
                    status=ResultStatus.SUCCEEDED,
                    exit_code=0,
                    ended_at=now,
                    reason="the command exited 0",
                )
            )


@dataclass
class World:
    """An emulator in virtual time, a client, a ledger and the played workers."""

    emu: Emulator
    client: Client
    ledger: Ledger
    clock: HookedClock
    store_url: str
    workers: InstantWorkers
    events: list[JobEvent] = field(default_factory=list)

    def job(self, **overrides: Any) -> Job:
        values: dict[str, Any] = {
            "name": "artifacts",
            "command": "python train.py",
            "profile": PROFILE,
            "store_url": self.store_url,
            "timeouts": VIRTUAL,
        }
        values.update(overrides)
        return Job(**values)

    def run(self, job: Job) -> JobResult:
        return run_job(
            job,
            client=self.client,
            ledger=self.ledger,
            clock=self.clock,
            on_event=self.events.append,
            progress=False,
        )

    def creates(self) -> int:
        return sum(1 for _, endpoint, _ in self.emu.requests if endpoint.startswith("create"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = HookedClock()
    store_url = (tmp_path / "store" / "runs").as_uri()
    with (
        serve(
            seed=0,
            clock=clock,
            offers=300,
            rate_limits=False,
            timings=Timings(provision_s=10, loading_s=30),
        ) as emu,
        httpx.Client(transport=emu.transport) as http,
        Client(
            emu.api_key,
            base_url=emu.url,
            clock=clock,
            max_retries=2,
            min_intervals={},
            http_client=http,
        ) as client,
        Ledger(tmp_path / "ledger.db", clock=clock) as ledger,
    ):
        workers = InstantWorkers(emu=emu, store_url=store_url)
        clock.hook = workers
        yield World(emu, client, ledger, clock, store_url, workers)


@pytest.fixture
def live_emu(tmp_path: Path) -> Iterator[Emulator]:
    """An emulator whose instances run their onstart (a real worker) as local processes."""
    runner = ProcessRunner(
        tmp_path / "containers",
        grace_s=10.0,
        extra_env={"VASTKIT_INPUTS_DIR": str(tmp_path / "inputs")},
    )
    with serve(
        seed=0,
        offers=300,
        runner=runner,
        rate_limits=False,
        timings=Timings(provision_s=0.3, loading_s=0.3),
    ) as emulator:
        yield emulator

"""Fixtures for the queue tests: an emulator on loopback, and a fleet that plays the workers.

The emulator's scripted runner starts no process inside an instance, so :class:`Fleet` plays
every worker's side of the run directory protocol from a background thread: while an instance
with a vastkit label is ``running`` it writes heartbeats; once it has run ``work_s`` seconds it
commits the terminal ``result.json``. It also samples the emulator, so the tests can assert
how many instances were alive at once (in all, and per project).

Time is real but small: the emulator's phases take 0.2 s, jobs poll every 0.2 s, and a job's
"work" takes well under a second, so ten jobs finish in a few seconds and the orchestrator
subprocesses of the restart tests share the clock with this process. No assertion depends on
how fast the machine is: a test that wants to see jobs run at the same time sets
:attr:`Fleet.gate`, so the work waits until they do.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vastkit.emulator import Emulator, Timings, serve
from vastkit.jobs import Job, JobTimeouts
from vastkit.labels import parse_label
from vastkit.profiles import GpuProfile
from vastkit.rundir import AttemptResult, Heartbeat, Phase, ResultStatus, RunDir

HERE = Path(__file__).parent

PROFILE = GpuProfile(
    name="queue-4090", gpu_name="RTX_4090", max_dph=0.40, max_duration_hours=1, disk_gb=16
)
"""An on-demand profile the seed-0 catalog (400 offers) has 22 offers for."""

FAST = JobTimeouts(
    poll_interval=0.2,
    provisioning=20,
    loading=20,
    running=30,
    worker_ready=20,
    heartbeat_stale=20,
    host_lost_grace=5,
    stop_grace=1,
    destroy=20,
    relaunch_delay=0.2,
)
"""Sub-second polling: a job takes about a second on the emulator."""


def make_job(store_url: str, name: str = "q", **overrides: Any) -> Job:
    """A short on-demand job (the command is never run: the fleet plays the worker)."""
    values: dict[str, Any] = {
        "name": name,
        "command": "python train.py",
        "profile": PROFILE,
        "store_url": store_url,
        "timeouts": FAST,
    }
    values.update(overrides)
    return Job(**values)


@dataclass
class Fleet:
    """Plays the workers of every run in ``store_url`` (see the module docstring)."""

    emu: Emulator
    store_url: str
    work_s: float = 0.6
    hold: set[str] = field(default_factory=set)
    """Run ids whose work never ends (for cancel tests)."""
    gate: int = 0
    """Hold all work until this many instances run at once, then let it go on (0: no gate)."""
    max_live: int = 0
    max_live_by_project: dict[str, int] = field(default_factory=dict)
    project_of: dict[str, str] = field(default_factory=dict)
    instances_by_run: dict[str, set[int]] = field(default_factory=dict)
    running_since: dict[int, float] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def step(self) -> None:
        now = time.time()
        live = []
        for view in self.emu.instances:
            parsed = parse_label(view.label)
            if parsed is not None:
                live.append((view, *parsed))
        self.max_live = max(self.max_live, len(live))
        counts: dict[str, int] = {}
        for _, run_id, _ in live:
            project = self.project_of.get(run_id)
            if project is not None:
                counts[project] = counts.get(project, 0) + 1
        for project, count in counts.items():
            self.max_live_by_project[project] = max(self.max_live_by_project.get(project, 0), count)
        if sum(1 for view, _, _ in live if view.actual_status == "running") >= self.gate:
            self.gate = 0
        for view, run_id, attempt in live:
            self.instances_by_run.setdefault(run_id, set()).add(view.id)
            if view.actual_status != "running" or view.id in self.done:
                continue
            started = self.running_since.setdefault(view.id, now)
            rundir = RunDir(f"{self.store_url}/{run_id}")
            if now - started >= self.work_s and run_id not in self.hold and not self.gate:
                self.done.add(view.id)
                rundir.write_attempt_result(
                    AttemptResult(
                        attempt=attempt,
                        status=ResultStatus.SUCCEEDED,
                        exit_code=0,
                        ended_at=now,
                        step=10,
                        reason="the command exited 0",
                    )
                )
                continue
            rundir.write_heartbeat(
                Heartbeat(attempt=attempt, time=now, phase=Phase.RUNNING, step=int(now - started))
            )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except BaseException as exc:  # surfaced by the fixture
                self.errors.append(exc)
            self._stop.wait(0.05)

    def live_count(self) -> int:
        return sum(1 for v in self.emu.instances if parse_label(v.label) is not None)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with serve(
        seed=0, offers=400, rate_limits=False, timings=Timings(provision_s=0.2, loading_s=0.2)
    ) as emulator:
        yield emulator


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A file store: the orchestrator subprocesses of the restart tests share it."""
    return (tmp_path / "store").as_uri()


@pytest.fixture
def fleet(emu: Emulator, store_url: str) -> Iterator[Fleet]:
    fake = Fleet(emu=emu, store_url=store_url)
    thread = threading.Thread(target=fake._loop, name="fleet", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake._stop.set()
        thread.join()
    assert not fake.errors, fake.errors


def queue_process(*args: str) -> list[str]:
    """The command line of an orchestrator subprocess (see ``_queue_process.py``)."""
    return [sys.executable, str(HERE / "_queue_process.py"), *args]

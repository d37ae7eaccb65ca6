"""Fixtures for the job tests: an emulator in virtual time whose "workers" are played by the test.

With the scripted runner no process runs inside an instance, so :class:`FakeWorkers` plays the
worker's side of the run directory protocol: every time the orchestrator sleeps on the clock, it
advances the world, writes a heartbeat for each running attempt, commits checkpoints (as steps),
writes ``result.json`` when the work is done, and, at random, injures the fleet: outbids an
instance, takes its host offline, freezes its heartbeat, or makes the next instance hang in
``loading``. It also records the invariants the tests assert: how many instances of the run
existed at once.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pytest

from vastkit.api.client import Client
from vastkit.clock import ManualClock, SystemClock
from vastkit.emulator import Emulator, Timings, serve
from vastkit.jobs import Job, JobEvent, JobResult, JobTimeouts, run_job
from vastkit.labels import parse_label
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile
from vastkit.rundir import AttemptResult, Heartbeat, Phase, ResultStatus, RunDir

BID_PROFILE = GpuProfile(
    name="test-bid",
    gpu_name="RTX_3090",
    max_dph=0.20,
    max_duration_hours=2000,
    disk_gb=16,
    rental="interruptible",
)
"""An interruptible profile the seed-0 catalog has many offers for."""

ON_DEMAND = GpuProfile(
    name="test-4090", gpu_name="RTX_4090", max_dph=0.40, max_duration_hours=24, disk_gb=16
)
"""An on-demand profile."""

FAST = JobTimeouts(
    poll_interval=10,
    provisioning=60,
    loading=60,
    running=300,
    worker_ready=120,
    heartbeat_stale=40,
    host_lost_grace=20,
    stop_grace=30,
    destroy=120,
    machine_block=900,
    relaunch_delay=5,
    no_offer_wait=1800,
    heartbeat_interval=10,
)
"""Deadlines for virtual time, well above the emulator's phase timings (10 s + 30 s)."""


class HookedClock(ManualClock):
    """A ManualClock that calls ``hook(now)`` after every sleep (the world moves on)."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Callable[[float], None] | None = None
        self._in_hook = False

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.hook is not None and not self._in_hook:
            self._in_hook = True
            try:
                self.hook(self.now())
            finally:
                self._in_hook = False


class HookedSystemClock(SystemClock):
    """Real time that calls ``hook(now)`` after every sleep."""

    def __init__(self) -> None:
        self.hook: Callable[[float], None] | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.hook is not None:
            self.hook(self.now())


@dataclass
class _Seat:
    attempt: int
    run_id: str
    step: int
    last: float
    frozen: bool = False
    done: bool = False


@dataclass
class FakeWorkers:
    """Plays the workers of a run (see the module docstring)."""

    emu: Emulator
    store_url: str
    total_steps: int = 200
    steps_per_second: float = 1.0
    checkpoint_every: int = 20
    exit_code: int = 0
    mtbf_s: float | None = None
    seed: int = 0
    kinds: tuple[str, ...] = ("outbid", "offline", "freeze", "stuck")
    committed: int = 0
    max_live: int = 0
    seats: dict[int, _Seat] = field(default_factory=dict)
    injured: dict[str, int] = field(default_factory=dict)
    offline_until: dict[int, float] = field(default_factory=dict)
    resumed_from: list[tuple[int, int]] = field(default_factory=list)
    last_now: float | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def rundir(self, run_id: str) -> RunDir:
        return RunDir(f"{self.store_url}/{run_id}")

    def __call__(self, now: float) -> None:
        dt = 0.0 if self.last_now is None else max(now - self.last_now, 0.0)
        self.last_now = now
        for machine_id, until in list(self.offline_until.items()):
            if now >= until:
                self.emu.set_host_status("online", machine_id=machine_id)
                del self.offline_until[machine_id]
        ours = [(v, parse_label(v.label)) for v in self.emu.instances]
        live = [(v, p) for v, p in ours if p is not None]
        self.max_live = max(self.max_live, len(live))
        for view, parsed in live:
            assert parsed is not None
            run_id, attempt = parsed
            seat = self.seats.get(view.id)
            if seat is None:
                seat = _Seat(attempt=attempt, run_id=run_id, step=self.committed, last=now)
                self.seats[view.id] = seat
            running = view.actual_status == "running" and not view.outbid
            if not running or seat.frozen or seat.done:
                seat.last = now
                continue
            if seat.step == self.committed and not any(a == attempt for a, _ in self.resumed_from):
                self.resumed_from.append((attempt, seat.step))
            seat.step = min(
                self.total_steps, seat.step + int((now - seat.last) * self.steps_per_second)
            )
            seat.last = now
            checkpoint = seat.step // self.checkpoint_every * self.checkpoint_every
            self.committed = max(self.committed, checkpoint)
            rundir = self.rundir(run_id)
            if seat.step >= self.total_steps:
                seat.done = True
                status = ResultStatus.SUCCEEDED if self.exit_code == 0 else ResultStatus.FAILED
                rundir.write_attempt_result(
                    AttemptResult(
                        attempt=attempt,
                        status=status,
                        exit_code=self.exit_code,
                        ended_at=now,
                        step=seat.step,
                        checkpoint_step=checkpoint,
                        reason=f"the command exited {self.exit_code}",
                    )
                )
                if self.exit_code != 0:
                    seat.step = self.committed  # a restart resumes from the checkpoint
                continue
            rundir.write_heartbeat(
                Heartbeat(
                    attempt=attempt,
                    time=now,
                    phase=Phase.RUNNING,
                    step=seat.step,
                    checkpoint_step=checkpoint,
                )
            )
            hit = self.mtbf_s is not None and dt > 0
            if hit and self.rng.random() < 1.0 - math.exp(-dt / (self.mtbf_s or 1.0)):
                self.injure(view.id, view.machine_id, seat, now)

    def injure(self, instance_id: int, machine_id: int, seat: _Seat, now: float) -> None:
        kind = self.rng.choice(self.kinds)
        self.injured[kind] = self.injured.get(kind, 0) + 1
        if kind == "outbid":
            self.emu.preempt(instance_id, price=50.0, duration=600.0)
        elif kind == "offline":
            self.emu.set_host_status(
                self.rng.choice(["offline", "unknown"]), instance_id=instance_id
            )
            self.offline_until[machine_id] = now + 900.0
        elif kind == "freeze":
            seat.frozen = True
        elif kind == "stuck":
            self.emu.fail_next_instances("stuck_loading")
            self.emu.preempt(instance_id, price=50.0, duration=600.0)


@pytest.fixture
def clock() -> HookedClock:
    return HookedClock()


@pytest.fixture
def emu(clock: HookedClock) -> Iterator[Emulator]:
    with serve(
        seed=0,
        clock=clock,
        offers=600,
        rate_limits=False,
        timings=Timings(provision_s=10, loading_s=30),
    ) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator, clock: HookedClock) -> Iterator[Client]:
    """A client on the emulator's in-process transport (same app as over loopback, no sockets:
    the chaos test makes thousands of requests)."""
    with (
        httpx.Client(transport=emu.transport) as http,
        Client(
            emu.api_key,
            base_url=emu.url,
            clock=clock,
            max_retries=2,
            min_intervals={},
            http_client=http,
        ) as c,
    ):
        yield c


@pytest.fixture
def ledger(tmp_path: Path, clock: HookedClock) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db", clock=clock) as led:
        yield led


@pytest.fixture
def store_url() -> Iterator[str]:
    """A fresh in-memory fsspec store (the chaos test writes thousands of small objects)."""
    url = f"memory://jobs-test-{uuid.uuid4().hex[:10]}"
    try:
        yield url
    finally:
        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)


@pytest.fixture
def make_job(store_url: str) -> Callable[..., Job]:
    def build(**overrides: Any) -> Job:
        values: dict[str, Any] = {
            "name": "test-job",
            "command": "python train.py",
            "profile": BID_PROFILE,
            "store_url": store_url,
            "timeouts": FAST,
            "max_attempts": 1000,
            "outbid": OutbidPolicy.raise_bid(then_wait_s=20.0),
        }
        values.update(overrides)
        return Job(**values)

    return build


@pytest.fixture
def workers(emu: Emulator, clock: HookedClock, store_url: str) -> Callable[..., FakeWorkers]:
    def build(**options: Any) -> FakeWorkers:
        fake = FakeWorkers(emu=emu, store_url=store_url, **options)
        clock.hook = fake
        return fake

    return build


@pytest.fixture
def events() -> list[JobEvent]:
    return []


@dataclass
class World:
    """Everything a job test needs, as one fixture."""

    emu: Emulator
    client: Client
    ledger: Ledger
    clock: HookedClock
    store_url: str
    events: list[JobEvent]
    make_job: Callable[..., Job]
    workers: Callable[..., FakeWorkers]

    def run(self, job: Job, **kwargs: Any) -> JobResult:
        """``run_job`` wired to this world, without a progress line."""
        kwargs.setdefault("progress", False)
        return run_job(
            job,
            client=self.client,
            ledger=self.ledger,
            clock=self.clock,
            on_event=self.events.append,
            **kwargs,
        )

    def kinds(self) -> list[str]:
        """The kinds of the events seen so far."""
        return [e.kind for e in self.events]


@pytest.fixture
def world(  # noqa: PLR0917 - pytest passes fixtures by position
    emu: Emulator,
    client: Client,
    ledger: Ledger,
    clock: HookedClock,
    store_url: str,
    events: list[JobEvent],
    make_job: Callable[..., Job],
    workers: Callable[..., FakeWorkers],
) -> World:
    return World(emu, client, ledger, clock, store_url, events, make_job, workers)

"""A job's world in virtual time whose "workers" are played by the test.

With the scripted runner no process runs inside an instance, so :class:`FakeWorkers` plays the
worker's side of the run directory protocol: every time the orchestrator sleeps on the clock (a
:class:`HookedClock`), it advances the world, writes a heartbeat for each running attempt, commits
checkpoints (as steps), writes ``result.json`` when the work is done, and, at random, injures the
fleet: outbids an instance, takes its host offline, freezes its heartbeat, or makes the next
instance hang in ``loading``. It also records the invariants the tests assert: how many instances
of the run existed at once.

The job tests (``tests/jobs``) and the fault matrix (``tests/faults``) both build on it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from vastkit.clock import ManualClock, SystemClock
from vastkit.emulator import Emulator
from vastkit.jobs import JobTimeouts
from vastkit.labels import parse_label
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
    """Real time that calls ``hook(now)`` after every sleep, and adds up what its users chose
    to sleep (``slept``: how long they waited, whatever the machine's load)."""

    def __init__(self) -> None:
        self.hook: Callable[[float], None] | None = None
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.slept += max(seconds, 0.0)
        super().sleep(seconds)
        if self.hook is not None:
            self.hook(self.now())


@dataclass
class Seat:
    """One instance as the fake workers see it: its attempt, progress and injuries."""

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
    seats: dict[int, Seat] = field(default_factory=dict)
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
                seat = Seat(attempt=attempt, run_id=run_id, step=self.committed, last=now)
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

    def injure(self, instance_id: int, machine_id: int, seat: Seat, now: float) -> None:
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


__all__ = [
    "BID_PROFILE",
    "FAST",
    "ON_DEMAND",
    "FakeWorkers",
    "HookedClock",
    "HookedSystemClock",
    "Seat",
]

"""The fault matrix: every failure class of the design crossed with every phase of a job.

Each cell runs one job in virtual time against the in-process emulator, injects its fault the
first time the job reaches the phase, and asserts what a user sees (how the job ended, what each
attempt ended with, which reaction happened), then the four invariants (no leaked instance, no
torn checkpoint, no budget overrun, no duplicate rental). Cells that cannot happen are skipped
with the reason; the orchestrator-died row runs as real SIGKILLed processes in
``test_orchestrator_kill.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import httpx
import pytest

from tests._support.world import Seat
from tests.faults.conftest import (
    BID,
    DEMAND,
    FAST,
    PHASES,
    FaultWorld,
    ended,
    reasons,
    succeeded,
)
from vastkit.budget import Budget, Budgets
from vastkit.errors import BudgetExceededError

pytestmark = pytest.mark.faults

ENDPOINT = {
    "searching": "search",
    "creating": "create",
    "provisioning": "list",
    "loading": "list",
    "worker_starting": "list",
    "running": "list",
    "checkpointing": "list",
    "finishing": "destroy",
}
"""The endpoint the orchestrator calls next in each phase (where an API fault lands)."""

Scenario = Callable[[FaultWorld, str, str], None]
SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = fn
        return fn

    return register


NO_INSTANCE = "no instance exists yet in this phase"
STARTED = "the container already runs: a later loss is outbid, host lost or user code"
BEFORE_WORKER = "user code runs only once the worker started"
OFFER_ONLY = "an offer can vanish only before it is rented; afterwards the instance is ours"
SEEN_AT_END = "a non-zero exit is seen when result.json is written: the running cell"

# class -> phase -> variants (or a skip reason)
CELLS: dict[str, dict[str, tuple[str, ...] | str]] = {
    "rate_limit": dict.fromkeys(PHASES, ("429",)),
    "server_error": {
        "searching": ("503",),
        "creating": ("answer_lost", "500"),
        "provisioning": ("500",),
        "loading": ("reset",),
        "worker_starting": ("timeout",),
        "running": ("502",),
        "checkpointing": ("503",),
        "finishing": ("answer_lost",),
    },
    "offer_gone": {p: ("404_410",) if p == "creating" else OFFER_ONLY for p in PHASES},
    "never_starts": {
        "searching": NO_INSTANCE,
        "creating": NO_INSTANCE,
        "provisioning": ("oci_error",),
        "loading": ("stuck_loading",),
        "worker_starting": ("exited", "no_worker"),
        "running": STARTED,
        "checkpointing": STARTED,
        "finishing": STARTED,
    },
    "outbid": {
        "searching": NO_INSTANCE,
        "creating": "nothing rented yet: a bid refused at create is a create failure",
        **dict.fromkeys(PHASES[2:], ("outbid",)),
    },
    "host_lost": {
        "searching": NO_INSTANCE,
        "creating": NO_INSTANCE,
        "provisioning": ("offline",),
        "loading": ("unknown",),
        "worker_starting": ("offline",),
        "running": ("unknown", "heartbeat_stale"),
        "checkpointing": ("offline", "heartbeat_stale"),
        "finishing": ("offline",),
    },
    "user_failed": {
        **dict.fromkeys(PHASES[:4], BEFORE_WORKER),
        "worker_starting": ("exit_at_once",),
        "running": ("exit_3",),
        "checkpointing": ("exit_then_restart",),
        "finishing": SEEN_AT_END,
    },
    "budget": {p: ("relaunch", "first") if p == "searching" else ("cap",) for p in PHASES},
    "max_duration": dict.fromkeys(PHASES, ("deadline",)),
}


KNOWN_BUGS: dict[tuple[str, str], str] = {}


def _params() -> list[object]:
    out: list[object] = []
    for klass, row in CELLS.items():
        for phase in PHASES:
            cell = row[phase]
            if isinstance(cell, str):
                out.append(
                    pytest.param(
                        klass, phase, "-", id=f"{klass}-{phase}", marks=pytest.mark.skip(cell)
                    )
                )
                continue
            bug = KNOWN_BUGS.get((klass, phase))
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            for variant in cell:
                out.append(
                    pytest.param(
                        klass, phase, variant, id=f"{klass}-{phase}-{variant}", marks=marks
                    )
                )
    return out


@pytest.mark.parametrize(("klass", "phase", "variant"), _params())
def test_cell(fault_world: FaultWorld, klass: str, phase: str, variant: str) -> None:
    SCENARIOS[klass](fault_world, phase, variant)


# --------------------------------------------------------------------------------------------
# helpers


def _status_count(world: FaultWorld, status: int) -> int:
    return sum(1 for _, _, s in world.emu.requests if s == status)


def _arm_api_fault(world: FaultWorld, phase: str, **rule: object) -> list[object]:
    fired: list[object] = []

    def inject() -> None:
        fired.append(world.emu.inject(endpoint=ENDPOINT[phase], **rule))  # type: ignore[arg-type]

    world.at(phase, inject)
    return fired


def _checkpointed_then(world: FaultWorld, action: Callable[[int], None]) -> Callable[[], None]:
    """At the first checkpoint: a second save is killed half way (torn), then ``action``."""

    def fire() -> None:
        fleet = world.fleet
        assert fleet is not None
        (run_id,) = world.run_ids
        fleet.torn_save(run_id, fleet.committed + fleet.checkpoint_every)
        action(world.current())

    return fire


# --------------------------------------------------------------------------------------------
# 429 and transient API failures


@scenario("rate_limit")
def rate_limit(world: FaultWorld, phase: str, variant: str) -> None:
    """429s (more than the client's retries) on the phase's endpoint: paced and retried; no
    attempt is lost to a 429 and the job succeeds on its first instance."""
    world.workers(total_steps=100)
    count = 2 if phase == "creating" else 4
    shape = {"search": "detail", "create": "detail", "list": "text", "destroy": "error"}
    fired = _arm_api_fault(
        world, phase, kind="rate_limit", count=count, shape=shape[ENDPOINT[phase]]
    )
    result = succeeded(world.run(world.job()))
    assert fired, f"the job never reached {phase}"
    assert _status_count(world, 429) >= count
    assert reasons(result) == ["succeeded"]
    assert world.creates() == 1 + 2 * (phase == "creating")
    world.assert_invariants()


@scenario("server_error")
def server_error(world: FaultWorld, phase: str, variant: str) -> None:
    """5xx, reset and timeout on the phase's endpoint: idempotent calls are retried; a create
    whose answer was lost is reconciled by label (never a second instance)."""
    world.workers(total_steps=100)
    rules: dict[str, dict[str, object]] = {
        "503": {"kind": "status", "status": 503, "count": 4},
        "500": {"kind": "status", "status": 500, "count": 2 if phase == "creating" else 4},
        "502": {"kind": "status", "status": 502, "count": 4},
        "reset": {"kind": "drop", "count": 4},
        "timeout": {"kind": "slow", "delay_s": 3600.0, "count": 4},
        "answer_lost": {"kind": "drop", "processed": True, "count": 1},
    }
    fired = _arm_api_fault(world, phase, **rules[variant])
    result = succeeded(world.run(world.job()))
    assert fired, f"the job never reached {phase}"
    assert reasons(result) == ["succeeded"]
    if phase == "creating":
        labels = set(world.probe.labels)
        assert len(labels) == 1, labels  # one attempt, one instance
        if variant == "answer_lost":
            assert world.creates() == 1  # found by label, never sent again
    world.assert_invariants()


# --------------------------------------------------------------------------------------------
# offers and containers


@scenario("offer_gone")
def offer_gone(world: FaultWorld, phase: str, variant: str) -> None:
    """Vast's 404 then 410 ``no_such_ask`` on create: the next offer each time, machine avoided."""
    world.workers(total_steps=60)
    world.at("creating", lambda: world.emu.inject("offer_gone", "create", status=404))
    world.at("creating", lambda: world.emu.inject("offer_gone", "create", status=410), nth=2)
    result = succeeded(world.run(world.job()))
    assert reasons(result) == ["offer_gone", "offer_gone", "succeeded"]
    machines = [a.machine_id for a in result.attempts]
    assert len(set(machines)) == 3
    world.assert_invariants()


@scenario("never_starts")
def never_starts(world: FaultWorld, phase: str, variant: str) -> None:
    """A container that never starts: destroyed, its machine blocked, the next offer runs."""
    fleet = world.workers(total_steps=60)
    expected = {
        "oci_error": "failed",
        "stuck_loading": "loading_deadline",
        "exited": "worker_crashed",
        "no_worker": "worker_never_started",
    }[variant]
    if variant in ("oci_error", "stuck_loading"):
        world.at("creating", lambda: world.emu.fail_next_instances(variant))  # type: ignore[arg-type]
    elif variant == "exited":
        # The emulator marks only `args` containers exited (an onstart container outlives its
        # script), so the API's answer is rewritten to say what Vast says when one exits.
        world.at("worker_starting", lambda: _show_exited(world, world.current()))
    else:

        def no_worker() -> None:
            iid = world.current()
            (run_id,) = world.run_ids
            fleet.seats[iid] = Seat(
                attempt=1, run_id=run_id, step=0, last=world.clock.now(), frozen=True
            )

        world.at("provisioning", no_worker)  # its worker will never write a heartbeat
    result = succeeded(world.run(world.job()))
    assert reasons(result)[0] in (expected, "exited"), result.summary()
    assert reasons(result)[-1] == "succeeded"
    assert len(result.attempts) == 2
    first = result.attempts[0].machine_id
    assert first in {b.machine_id for b in world.ledger.blocks(now=world.clock.now())}
    assert result.attempts[1].machine_id != first
    world.assert_invariants()


def _show_exited(world: FaultWorld, instance_id: int) -> None:
    def garble(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if request.method != "GET" or "/instances" not in request.url.path:
            return None
        body = response.json()
        rows = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            return None
        for row in rows:
            if row.get("id") == instance_id:
                row["actual_status"] = "exited"
                row["status_msg"] = "container exited with code 1"
        return httpx.Response(
            response.status_code, headers=response.headers, json=body, request=request
        )

    world.transport.garble = garble


# --------------------------------------------------------------------------------------------
# losing the machine


def _fleet_resumed_from_checkpoint(world: FaultWorld) -> None:
    fleet = world.fleet
    assert fleet is not None
    # the second attempt started from the last committed checkpoint, not from scratch
    assert len(fleet.resumed_from) >= 2
    assert fleet.resumed_from[1][1] >= fleet.checkpoint_every


@scenario("outbid")
def outbid(world: FaultWorld, phase: str, variant: str) -> None:
    """A competitor far above the cap takes the machine: the bid cannot follow, the attempt
    moves to another machine (after a checkpoint, it resumes from it); after the result it
    does not matter."""
    world.workers(total_steps=100)

    def preempt(iid: int) -> None:
        world.emu.preempt(iid, price=50.0, duration=600.0)

    if phase == "checkpointing":
        world.at(phase, _checkpointed_then(world, preempt))
    else:
        world.at(phase, lambda: preempt(world.current()))
    result = succeeded(world.run(world.job()))
    if phase == "finishing":
        assert reasons(result) == ["succeeded"]
    else:
        assert reasons(result) == ["outbid", "succeeded"], result.summary()
        assert result.attempts[1].machine_id != result.attempts[0].machine_id
    if phase == "checkpointing":
        _fleet_resumed_from_checkpoint(world)
    world.assert_invariants()


@scenario("host_lost")
def host_lost(world: FaultWorld, phase: str, variant: str) -> None:
    """The host goes offline/unknown past the grace period, or the heartbeat stops: destroyed,
    machine blocked, relaunched, resumed. After the result, the job still succeeds."""
    fleet = world.workers(total_steps=100)

    def lose(iid: int) -> None:
        if variant == "heartbeat_stale":
            for seat_id, seat in fleet.seats.items():
                if seat_id == iid:
                    seat.frozen = True
            return
        world.emu.set_host_status(variant, instance_id=iid)  # type: ignore[arg-type]
        machine = world.emu.instance(iid).machine_id
        fleet.offline_until[machine] = world.clock.now() + 900.0

    if phase == "checkpointing":
        world.at(phase, _checkpointed_then(world, lose))
    else:
        world.at(phase, lambda: lose(world.current()))
    result = succeeded(world.run(world.job()))
    if phase == "finishing":
        assert reasons(result) == ["succeeded"]
    else:
        want = "heartbeat_stale" if variant == "heartbeat_stale" else "host_lost"
        assert reasons(result) == [want, "succeeded"], result.summary()
        first = result.attempts[0].machine_id
        assert first in {b.machine_id for b in world.ledger.blocks(now=world.clock.now())}
    if phase == "checkpointing":
        _fleet_resumed_from_checkpoint(world)
    world.assert_invariants()


# --------------------------------------------------------------------------------------------
# user code


@scenario("user_failed")
def user_failed(world: FaultWorld, phase: str, variant: str) -> None:
    """A non-zero exit in result.json is terminal unless restarts are allowed; a restart
    resumes from the last checkpoint."""
    if variant == "exit_at_once":
        world.workers(total_steps=0, exit_code=3)
        result = ended(world.run(world.job()), "failed")
        assert result.exit_code == 3
        assert reasons(result) == ["failed"]
    elif variant == "exit_3":
        world.workers(total_steps=100, exit_code=3)
        result = ended(world.run(world.job()), "failed")
        assert result.exit_code == 3
        assert reasons(result) == ["failed"]
        assert [c.step for c in result.checkpoints][-1] == 100
    else:
        fleet = world.workers(total_steps=100, exit_code=3)
        fleet.flip_exit_after_failure = True
        result = succeeded(world.run(world.job(restarts_on_error=1)))
        assert reasons(result) == ["failed", "succeeded"]
        _fleet_resumed_from_checkpoint(world)
    world.assert_invariants()


# --------------------------------------------------------------------------------------------
# money and time


PROJECT_CAP = 3.0
BUDGET_PROFILE = attrs.evolve(BID, max_duration_hours=10)
"""Worst case $2.00 plus storage: fits the $3 project cap at the start."""
COLLEAGUE_DPH = 1.0


@scenario("budget")
def budget(world: FaultWorld, phase: str, variant: str) -> None:
    """A colleague's spending brings the shared project to its cap at this phase: the job
    stops within one poll (saving when the worker runs), destroys, and ends budget_exceeded;
    after the result it has succeeded."""
    budgets = Budgets(
        projects={"vision": Budget(scope="project", name="vision", limit_usd=PROJECT_CAP)}
    )
    ledger, clock = world.ledger, world.clock
    world.cap = PROJECT_CAP
    world.extra_rate_dph = COLLEAGUE_DPH
    world.spend_of = lambda: ledger.spend(project="vision")
    job = world.job(project="vision", max_cost_usd=None, profile=BUDGET_PROFILE)
    world.cap = PROJECT_CAP
    if variant == "first":
        ledger.record_run("colleague", project="vision", status="running", at=clock.now())
        other = ledger.record_attempt("colleague", 1, label="x")
        ledger.add_cost_sample(other, state="running", rate_dph=0.0, at=clock.now(), extra_usd=2.9)
        world.workers()
        outcome = world.run(job, budgets=budgets)
        assert isinstance(outcome.error, BudgetExceededError), outcome
        assert "worst case" in str(outcome.error) or "cannot cover" in str(outcome.error)
        assert world.creates() == 0
        world.assert_invariants()
        return
    ledger.record_run("colleague", project="vision", status="running", at=clock.now())
    other = ledger.record_attempt("colleague", 1, label="x")
    ledger.add_cost_sample(other, state="running", rate_dph=0.0, at=clock.now())
    fleet = world.workers(total_steps=10**6 if phase != "finishing" else 100)
    spending = [False]
    spent_at = [0.0]

    def colleague_spends() -> None:
        now = clock.now()
        spent_at[0] = now
        left = PROJECT_CAP - ledger.spend(project="vision")
        ledger.add_cost_sample(
            other, state="running", rate_dph=COLLEAGUE_DPH, at=now, extra_usd=max(left - 4e-4, 0)
        )
        spending[0] = True

    def hook(now: float) -> None:
        fleet(now)
        world.probe.sample()
        if spending[0] and "budget_stop" not in world.kinds():
            ledger.add_cost_sample(other, state="running", rate_dph=COLLEAGUE_DPH, at=now)

    clock.hook = hook
    if variant == "relaunch":
        world.at("creating", lambda: world.emu.fail_next_instances("oci_error"))
        world.on("relaunching", colleague_spends)
    else:
        world.at(phase, colleague_spends)
    start_creates = world.creates
    outcome = world.run(job, budgets=budgets)
    if phase == "finishing":
        result = succeeded(outcome)
    else:
        result = ended(outcome, "budget_exceeded")
        assert "project:vision" in result.reason
        if variant == "relaunch":
            assert reasons(result) == ["failed"]  # the relaunch was refused before renting
        else:
            assert "budget_stop" in world.kinds()
            # it stopped at the first look after the colleague's spending, within one poll
            stop_at = next(e.time for e in world.events if e.kind == "budget_stop")
            assert stop_at - spent_at[0] <= FAST.poll_interval + 1e-6
        assert start_creates() == 1  # a relaunch is refused before renting
    if phase in ("running", "checkpointing"):
        assert "stopping" in world.kinds()  # the worker was asked to save first
    world.assert_invariants()


@scenario("max_duration")
def max_duration(world: FaultWorld, phase: str, variant: str) -> None:
    """The clock reaches the job's max duration in this phase: it stops within a poll (plus
    the save grace), destroys, ends timed_out; after the result it has succeeded."""
    limit = 7200.0
    fleet = world.workers(total_steps=10**9 if phase != "finishing" else 100)
    clock = world.clock
    start = clock.now()
    fleet.last_now = None

    def expire() -> None:
        clock.advance(max(start + limit - clock.now(), 0.0))
        fleet.last_now = clock.now()  # the workers do not live through the jump
        for seat in fleet.seats.values():
            seat.last = clock.now()

    if phase == "searching":
        world.at("creating", lambda: world.emu.fail_next_instances("oci_error"))
        world.on("relaunching", expire)
    else:
        world.at(phase, expire)
    job = world.job(timeouts=attrs.evolve(FAST, max_duration=limit), profile=DEMAND)
    outcome = world.run(job)
    if phase == "finishing":
        succeeded(outcome)
    else:
        result = ended(outcome, "timed_out")
        want = ["failed"] if phase == "searching" else ["timed_out"]  # no relaunch when late
        assert reasons(result) == want
        elapsed = clock.now() - start
        assert limit <= elapsed <= limit + 2 * FAST.poll_interval + FAST.stop_grace + 60
        assert world.creates() == 1
    world.assert_invariants(poll_rate_dph=0.45)

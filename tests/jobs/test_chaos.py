"""run_job in virtual time against the emulator's scripted runner, with the fleet under fire.

The workers are played by :class:`FakeWorkers` (see conftest): it outbids instances, takes hosts
offline, freezes heartbeats and makes instances hang in ``loading``, hundreds of times. Whatever
happens: the job finishes, at most one instance of the run exists at any time, nothing is left
running, and the spend never passes the cap by more than one poll at the running rate.
"""

from __future__ import annotations

from collections import Counter

import attrs
import pytest

from vastkit.budget import Budget, Budgets
from vastkit.errors import BudgetExceededError
from vastkit.profiles import GpuProfile

from .conftest import BID_PROFILE, FAST, World


def test_hundreds_of_failures_never_two_attempts_never_a_leak(world: World) -> None:
    fleet = world.workers(total_steps=25_000, mtbf_s=150.0, checkpoint_every=20, seed=7)
    result = world.run(world.make_job())
    assert result.status == "succeeded", result.summary()
    reasons = Counter(a.end_reason for a in result.attempts)
    # hundreds of attempts, and every failure class was met and survived
    assert len(result.attempts) >= 200, reasons
    assert reasons["outbid"] >= 20, reasons
    assert reasons["host_lost"] >= 20, reasons
    assert reasons["heartbeat_stale"] >= 20, reasons
    assert reasons["loading_deadline"] >= 10, reasons
    assert reasons["succeeded"] == 1
    # never two instances of the run at once, never a leak, no create left unaccounted
    assert fleet.max_live == 1
    assert world.emu.instances == []
    assert world.ledger.pending_intents() == []
    assert all(a.ended_at is not None for a in world.ledger.attempts(result.run_id))
    # the ledger's cost agrees with what the emulator billed (step-function sampling)
    assert result.total_cost_usd == pytest.approx(world.emu.user.total_spend, rel=0.02)
    run = world.ledger.get_run(result.run_id)
    assert run is not None
    assert run.status == "succeeded"
    # machines that failed us were blocked; outbid ones were only left for a while
    assert world.ledger.blocks(now=0.0)


def test_a_shared_budget_stops_the_job_within_one_poll(world: World) -> None:
    """A colleague's run in the same project spends $1/h; the job must stop before the
    project passes its cap by more than one poll of the running rates."""
    cap = 3.0
    profile = attrs.evolve(BID_PROFILE, max_duration_hours=10)
    budgets = Budgets(projects={"vision": Budget(scope="project", name="vision", limit_usd=cap)})
    ledger, clock = world.ledger, world.clock
    ledger.record_run("colleague", project="vision", status="running", at=clock.now())
    other = ledger.record_attempt("colleague", 1, label="x")
    ledger.add_cost_sample(other, state="running", rate_dph=1.0, at=clock.now())
    fleet = world.workers(total_steps=10**9)

    def spend_too(now: float) -> None:
        fleet(now)
        if "budget_stop" not in world.kinds():  # the colleague stops when we are told to
            ledger.add_cost_sample(other, state="running", rate_dph=1.0, at=now)

    clock.hook = spend_too
    result = world.run(world.make_job(profile=profile, project="vision"), budgets=budgets)
    assert result.status == "budget_exceeded", result.summary()
    assert "project:vision" in result.reason
    one_poll = (profile.max_dph + 1.0) * FAST.poll_interval / 3600.0
    assert ledger.spend(project="vision") <= cap + one_poll
    assert ledger.spend(project="vision") > cap - one_poll  # it did run up to the cap
    assert "budget_stop" in world.kinds()
    assert fleet.max_live == 1
    assert world.emu.instances == []
    assert result.attempts[-1].end_reason == "budget_exceeded"


def test_a_budget_that_cannot_cover_the_worst_case_rents_nothing(world: World) -> None:
    with pytest.raises(BudgetExceededError, match="worst case"):
        world.run(world.make_job(max_cost_usd=0.05))
    assert world.emu.instances == []
    assert not any(method == "PUT" for method, _, _ in world.emu.requests)


def test_max_duration_ends_the_job_as_timed_out(world: World) -> None:
    world.workers(total_steps=10**9)
    start = world.clock.now()
    job = world.make_job(timeouts=attrs.evolve(FAST, max_duration=3600.0))
    result = world.run(job)
    assert result.status == "timed_out"
    elapsed = world.clock.now() - start
    assert 3600 <= elapsed <= 3600 + 2 * FAST.poll_interval + FAST.stop_grace + 60
    assert world.emu.instances == []
    assert result.attempts[-1].end_reason == "timed_out"


def test_user_error_is_terminal_unless_restarts_are_allowed(world: World) -> None:
    world.workers(total_steps=100, exit_code=3)
    result = world.run(world.make_job())
    assert result.status == "failed"
    assert result.exit_code == 3
    assert [a.end_reason for a in result.attempts] == ["failed"]
    assert world.emu.instances == []

    result = world.run(world.make_job(restarts_on_error=2))
    assert result.status == "failed"
    assert [a.end_reason for a in result.attempts] == ["failed", "failed", "failed"]
    assert world.emu.instances == []


def test_an_impossible_profile_fails_at_once(world: World) -> None:
    impossible = GpuProfile(name="nope", gpu_name="H100_SXM", max_dph=0.01, disk_gb=16)
    from vastkit.errors import NoOfferError

    with pytest.raises(NoOfferError):
        world.run(world.make_job(profile=impossible))
    assert world.emu.instances == []

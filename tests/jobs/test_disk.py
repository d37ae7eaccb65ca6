"""The disk you rent is the disk you price (issue 16).

A job's ``disk_gb`` overrides its profile's. Before, offers were filtered and the worst case
priced with the profile's disk while the rental used the job's: 2,000 GB rented at $1.19/h on a
$0.40/h profile, and a preflight that priced the run at a third of its worst case.
"""

from __future__ import annotations

import attrs
import pytest

from tests._support.world import ON_DEMAND
from tests.jobs.conftest import World
from vastkit.api.models import HOURS_PER_STORAGE_MONTH
from vastkit.budget import load_budgets
from vastkit.errors import BudgetExceededError, NoOfferError
from vastkit.money import worst_case_usd
from vastkit.outbid import OutbidPolicy


def creates(world: World) -> int:
    return sum(1 for m, name, _ in world.emu.requests if m == "PUT" and name == "create")


def test_a_big_disk_is_rented_only_within_max_dph(world: World) -> None:
    offers = {o["id"]: o for o in world.emu.search({"gpu_name": {"eq": "RTX 4090"}})}
    world.workers(total_steps=20)
    job = world.make_job(profile=ON_DEMAND, disk_gb=400, outbid=OutbidPolicy.give_up())

    result = world.run(job)

    assert result.status == "succeeded", result.summary()
    assert result.attempts
    for attempt in result.attempts:
        assert attempt.offer_id is not None
        offer = offers[attempt.offer_id]
        hourly = offer["dph_base"] + offer["storage_cost"] * 400 / HOURS_PER_STORAGE_MONTH
        assert offer["disk_space"] >= 400
        assert hourly <= ON_DEMAND.max_dph
        assert attempt.dph_total == pytest.approx(hourly, rel=1e-3)


def test_a_disk_no_offer_can_price_under_max_dph_rents_nothing(world: World) -> None:
    world.workers(total_steps=20)
    job = world.make_job(profile=ON_DEMAND, disk_gb=2000, outbid=OutbidPolicy.give_up())

    with pytest.raises(NoOfferError, match=r"no RTX 4090 at <= \$0.4/h on demand; cheapest is"):
        world.run(job)
    assert creates(world) == 0
    assert world.emu.instances == []


def test_the_preflight_prices_the_jobs_disk(world: World) -> None:
    """A cap between the profile-disk worst case and the job-disk worst case stops the job."""
    small = worst_case_usd(ON_DEMAND)
    big = worst_case_usd(attrs.evolve(ON_DEMAND, disk_gb=300))
    assert big > small
    budgets = load_budgets({"job": {"limit_usd": (small + big) / 2}})
    world.workers(total_steps=20)

    with pytest.raises(BudgetExceededError, match=f"{big:.2f}"):
        world.run(
            world.make_job(profile=ON_DEMAND, disk_gb=300, outbid=OutbidPolicy.give_up()),
            budgets=budgets,
        )
    assert creates(world) == 0
    assert world.emu.instances == []

    fits = world.run(
        world.make_job(profile=ON_DEMAND, outbid=OutbidPolicy.give_up()), budgets=budgets
    )
    assert fits.status == "succeeded", fits.summary()


def test_the_worker_is_told_what_the_attempt_may_spend(world: World) -> None:
    """The rate, the create time and what the job's cap leaves travel in the instance's env, so
    the worker can keep the attempt within the cap while the orchestrator is away (issue 17)."""
    from vastkit.rundir import AttemptLimits

    seen: list[AttemptLimits | None] = []
    fleet = world.workers(total_steps=20)

    def look(now: float) -> None:
        fleet(now)
        for view in world.emu.instances:
            seen.append(AttemptLimits.from_environ(view.env))

    world.clock.hook = look
    result = world.run(world.make_job(profile=ON_DEMAND, max_cost_usd=20.0))
    assert result.status == "succeeded", result.summary()
    limits = next(x for x in seen if x is not None)
    (attempt,) = result.attempts
    assert limits.rate_dph == pytest.approx(attempt.dph_total)
    assert 0 < limits.max_cost_usd <= 20.0
    assert limits.billed_since == pytest.approx(attempt.created_at, abs=60)


def test_a_jobs_summary_adds_up(world: World) -> None:
    """The parts shown add up to the total shown (was: cost $0.0009 = GPU $0.0009 + storage
    $0.0001, each rounded on its own)."""
    import re

    world.workers(total_steps=20)
    result = world.run(world.make_job(profile=ON_DEMAND))
    line = result.summary().splitlines()[1]
    total, *parts = (float(x) for x in re.findall(r"\$(\d+\.\d{4})", line))
    assert len(parts) >= 2
    assert sum(parts) == pytest.approx(total, abs=1e-9)
    assert total == pytest.approx(result.total_cost_usd, abs=1e-4)

"""Budgets: the file format and its errors, cost arithmetic, and the guard's spending bound."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vastkit.api.models import InstanceInfo, InstanceState
from vastkit.budget import BudgetAction, BudgetGuard, Budgets, load_budgets
from vastkit.clock import ManualClock
from vastkit.errors import BudgetExceededError, ConfigError
from vastkit.money import ContractPrice, accrued_cost, hourly_rate, worst_case_usd
from vastkit.profiles import get_profile

from .conftest import NOW, make_offer

BUDGETS = """\
warn_at: [0.5, 0.9]
teams:
  ml: {limit_usd: 100, period: monthly}
projects:
  vision:
    team: ml
    limit_usd: 20
    period: daily
    warn_at: [0.8]
job:
  limit_usd: 5
"""


class FakeSpend:
    """A SpendSource with a single running total per scope (every run is in project vision)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.calls: list[dict[str, object]] = []

    def spend(self, **filters: object) -> float:
        self.calls.append(filters)
        return self.total


# --- budgets.yaml ------------------------------------------------------------------------------


def test_load_budgets() -> None:
    budgets = load_budgets(BUDGETS)
    assert budgets.teams["ml"].limit_usd == 100
    assert budgets.teams["ml"].warn_at == (0.5, 0.9)
    vision = budgets.projects["vision"]
    assert (vision.limit_usd, vision.period, vision.warn_at, vision.team) == (
        20,
        "daily",
        (0.8,),
        "ml",
    )
    assert budgets.job is not None
    assert budgets.job.limit_usd == 5
    assert [b.label for b in budgets.applicable(project="vision")] == [
        "job:*",
        "project:vision",
        "team:ml",
    ]


def test_example_budgets_file_loads() -> None:
    example = Path(__file__).parents[2] / "examples" / "config" / "budgets.yaml"
    budgets = load_budgets(example)
    assert set(budgets.teams) == {"ml-research", "platform"}
    assert budgets.projects["nightly-eval"].period == "daily"
    assert budgets.job is not None


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (
            "teams:\n  ml: {limit_usd: 1, perod: daily}\n",
            2,
            "teams.ml.perod",
            "unknown key 'perod' in team 'ml'; did you mean 'period'?",
        ),
        (
            "teams:\n  ml:\n    limit_usd: -5\n",
            3,
            "teams.ml.limit_usd",
            "team 'ml': limit_usd must be 0 or more (got -5)",
        ),
        (
            "projects:\n  v:\n    limit_usd: 5\n    period: weekly\n",
            4,
            "projects.v.period",
            "project 'v': period must be total or monthly or daily (got 'weekly')",
        ),
        (
            "projects:\n  v: {period: daily}\n",
            2,
            "projects.v",
            "project 'v' is missing required key 'limit_usd'",
        ),
        (
            "projects:\n  v: {limit_usd: 5, warn_at: [80]}\n",
            2,
            "projects.v.warn_at",
            "warn_at must be fractions of the limit between 0 and 1, like [0.5, 0.8] (got 80)",
        ),
        (
            "projcts: {}\n",
            1,
            "projcts",
            "unknown top-level key 'projcts'; did you mean 'projects'?",
        ),
        (
            "job: {limit_usd: 5, period: daily}\n",
            1,
            "job.period",
            "the job budget: period must be total (got 'daily')",
        ),
        (
            "teams:\n  ml: {limit_usd: 5}\nprojects:\n  v: {limit_usd: 1, team: mll}\n",
            4,
            "projects.v.team",
            "project 'v' belongs to team 'mll', which has no budget; known teams: ml; "
            "did you mean 'ml'?",
        ),
    ],
)
def test_budget_file_errors(text: str, line: int, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_budgets(text)
    assert str(info.value) == f"<string>:{line}: {key}: {message}"


def test_unknown_project_lists_known_ones() -> None:
    budgets = load_budgets(BUDGETS)
    with pytest.raises(ConfigError) as info:
        budgets.applicable(project="visoin")
    assert str(info.value) == (
        "<string>: projects: no budget for project 'visoin'; known projects: vision; "
        "did you mean 'vision'?"
    )


def test_missing_budgets_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="budgets file not found"):
        load_budgets(tmp_path / "budgets.yaml")
    assert load_budgets("") == Budgets(path="<string>")


# --- cost arithmetic ---------------------------------------------------------------------------


def test_hourly_rate_by_state() -> None:
    price = ContractPrice(gpu_dph=0.4, storage_dph=0.01)
    assert hourly_rate(price, InstanceState.RUNNING) == pytest.approx(0.41)
    assert hourly_rate(price, InstanceState.UNKNOWN) == pytest.approx(0.41)
    for state in ("provisioning", "loading", "stopped", "outbid", "exited", "failed"):
        assert hourly_rate(price, state) == 0.01, state
    assert hourly_rate(price, InstanceState.OFFLINE) == 0.0
    assert hourly_rate(price, None) == 0.0


def test_accrued_cost_and_bandwidth() -> None:
    price = ContractPrice(
        gpu_dph=0.36, storage_dph=0.0072, inet_up_cost_per_gb=0.01, inet_down_cost_per_gb=0.02
    )
    cost = accrued_cost(
        price,
        [("loading", 600), ("running", 3600), ("offline", 1800), ("stopped", 3600)],
        bytes_up=2e9,
        bytes_down=5e9,
    )
    expected = 0.0072 * (600 + 3600 + 3600) / 3600 + 0.36 + 2 * 0.01 + 5 * 0.02
    assert cost == pytest.approx(expected)
    with pytest.raises(ValueError, match="negative time"):
        accrued_cost(price, [("running", -1)])


def test_contract_price_from_offer_and_instance() -> None:
    offer = make_offer(dph_base=0.3, storage_cost_per_gb_month=0.72, min_bid=0.1)
    assert ContractPrice.from_offer(offer, disk_gb=10).dph_total == pytest.approx(0.31)
    assert ContractPrice.from_offer(offer, disk_gb=10, bid=0.12).gpu_dph == 0.12
    instance = InstanceInfo(
        id=1, dph_base=0.12, disk_space_gb=10, storage_cost_per_gb_month=0.72, is_bid=True
    )
    assert ContractPrice.from_instance(instance).storage_dph == pytest.approx(0.01)


def test_worst_case() -> None:
    profile = get_profile("dev-test")  # 0.35 $/h x 4 h, 16 GB disk
    assert worst_case_usd(profile, storage_dph=0.01) == pytest.approx(1.41)
    assert worst_case_usd(profile) == pytest.approx(1.4 + 16 * 0.30 / 720)


# --- the guard ---------------------------------------------------------------------------------


def test_preflight_refuses_when_worst_case_does_not_fit() -> None:
    spend = FakeSpend()
    spend.total = 4.5
    budgets = load_budgets(BUDGETS)
    guard = BudgetGuard(budgets, spend, project="vision", run_id="r1", clock=ManualClock(NOW))
    with pytest.raises(BudgetExceededError) as info:
        guard.preflight(get_profile("dev-test"), storage_dph=0.0)
    assert str(info.value) == (
        "job:r1 budget cannot cover profile 'dev-test': worst case $1.40 (0.35 $/h x 4 h plus "
        "storage) but only $0.50 of $5.00 remains (total); lower max_dph or "
        "max_duration_hours, or raise the limit"
    )
    assert (info.value.scope, info.value.limit_usd, info.value.spent_usd) == ("job:r1", 5.0, 4.5)
    spend.total = 1.0
    ok = guard.preflight(get_profile("dev-test"), storage_dph=0.0)
    assert ok.worst_case_usd == pytest.approx(1.4)
    assert ok.remaining_usd == pytest.approx(4.0)


def test_guard_queries_each_scope_for_its_period() -> None:
    spend = FakeSpend()
    clock = ManualClock(NOW + 3 * 86400 + 7200)  # 2026-01-04 02:00 UTC
    guard = BudgetGuard(load_budgets(BUDGETS), spend, project="vision", run_id="r1", clock=clock)
    guard.check(0.1)
    assert spend.calls == [
        {"run_id": "r1", "since": None},
        {"project": "vision", "since": NOW + 3 * 86400},
        {"team": "ml", "since": NOW},
    ]


def test_check_warns_once_per_threshold_then_stops() -> None:
    spend = FakeSpend()
    guard = BudgetGuard(
        Budgets(),
        spend,
        run_id="r1",
        job_limit_usd=10.0,
        poll_interval_s=3600,
        clock=ManualClock(NOW),
    )
    assert guard.check(1.0).action == BudgetAction.CONTINUE
    spend.total = 5.0
    decision = guard.check(1.0)
    assert decision.action == BudgetAction.WARN
    assert decision.crossed == (("job:r1", 0.5),)
    assert decision.message == "budget warning: job:r1 at 50%; job:r1 budget: $5.00 of $10.00 spent"
    assert guard.check(1.0).action == BudgetAction.CONTINUE
    spend.total = 8.9
    assert guard.check(1.0).action == BudgetAction.WARN  # 80 %
    spend.total = 9.0
    stop = guard.check(1.0)  # 9 + 1 $/h x 1 h reaches the cap
    assert stop.action == BudgetAction.STOP
    assert stop.message == (
        "job:r1 budget: $9.00 of $10.00 spent and 1.000 $/h would pass the cap before the next "
        "check; stop"
    )


def test_guard_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="poll_interval_s must be positive"):
        BudgetGuard(Budgets(), FakeSpend(), poll_interval_s=0)
    with pytest.raises(ValueError, match="job_limit_usd must be 0 or more"):
        BudgetGuard(Budgets(), FakeSpend(), job_limit_usd=-1)
    with pytest.raises(ConfigError, match="no budget for team 'mll'"):
        BudgetGuard(load_budgets(BUDGETS), FakeSpend(), team="mll")


states = st.sampled_from(list(InstanceState))


@settings(max_examples=200, deadline=None)
@given(
    limit=st.floats(0.5, 50),
    poll=st.floats(5, 600),
    price=st.builds(ContractPrice, gpu_dph=st.floats(0, 40), storage_dph=st.floats(0, 1)),
    steps=st.lists(
        st.tuples(states, st.floats(0.01, 3.0), st.floats(0, 5)), min_size=1, max_size=60
    ),
)
def test_spend_never_passes_cap_by_more_than_one_poll_at_the_running_rate(
    limit: float,
    poll: float,
    price: ContractPrice,
    steps: list[tuple[InstanceState, float, float]],
) -> None:
    """For any sequence of states, price changes (a rebid) and poll times, a caller that obeys
    the guard overshoots the cap by at most the rate in force times the last interval, and not at
    all when polls come at most ``poll_interval_s`` apart."""
    clock = ManualClock(NOW)
    spend = FakeSpend()
    guard = BudgetGuard(
        Budgets(), spend, run_id="r", job_limit_usd=limit, poll_interval_s=poll, clock=clock
    )
    on_time = all(fraction <= 1.0 for _, fraction, _ in steps)
    last_overshoot_allowance = 0.0
    for state, fraction, price_factor in steps:
        contract = ContractPrice(
            gpu_dph=price.gpu_dph * price_factor, storage_dph=price.storage_dph
        )
        rate = hourly_rate(contract, state)
        if guard.check(rate).action == BudgetAction.STOP:
            break
        interval = fraction * poll
        spend.total += rate * interval / 3600.0
        clock.advance(interval)
        last_overshoot_allowance = rate * interval / 3600.0
    assert spend.total <= limit + last_overshoot_allowance + 1e-9
    if on_time:
        assert spend.total <= limit + 1e-9

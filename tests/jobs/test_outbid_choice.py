"""The price-aware outbid policy (``OutbidPolicy.cheapest_expected``): its decision rule as
properties over generated quotes and histories, on a ManualClock, and carried out by ``run_job``
against the emulator."""

from __future__ import annotations

import itertools
import logging
import math
import re
import time

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._support.world import FAST
from vastkit.clock import ManualClock
from vastkit.errors import ConfigTypeError, ConfigValueError
from vastkit.jobs import Job
from vastkit.jobs.watch import REMIND_EVERY_S
from vastkit.labels import parse_label
from vastkit.outbid import (
    MAX_WAIT_S,
    RAISE_MARGIN,
    BidHistory,
    OutbidPolicy,
    OutbidQuote,
    expected_costs,
)

from .conftest import World

_money = st.floats(min_value=0.0, max_value=20.0, allow_nan=False)
_seconds = st.floats(min_value=0.0, max_value=100_000.0, allow_nan=False)

quotes = st.builds(
    OutbidQuote,
    current_bid=st.floats(min_value=0.001, max_value=10.0),
    storage_dph=st.floats(min_value=0.0, max_value=1.0),
    min_bid=st.none() | _money,
    cap=_money,
    alternative_dph=st.none() | _money,
    recovery_s=_seconds,
    restart_s=_seconds,
    remaining_s=st.none() | _seconds,
)


@st.composite
def histories(draw: st.DrawFn) -> BidHistory:
    holds = tuple(draw(st.lists(_seconds, max_size=5)))
    left = tuple(draw(st.lists(_seconds, max_size=5)))
    return BidHistory(
        running_s=draw(_seconds),
        outbids=len(holds) + len(left) + draw(st.integers(0, 3)),
        holds_s=holds,
        left_s=left,
    )


policies = st.builds(
    OutbidPolicy.cheapest_expected,
    max_bid=st.none() | st.floats(min_value=0.001, max_value=20.0),
    time_value_dph=st.floats(min_value=0.0, max_value=50.0),
    max_wait_s=st.floats(min_value=1.0, max_value=100_000.0),
    prior_hold_s=st.floats(min_value=1.0, max_value=10_000.0),
    prior_mtbp_s=st.floats(min_value=60.0, max_value=100_000.0),
)


def _options(policy: OutbidPolicy, quote: OutbidQuote, history: BidHistory, outbid_for: float):
    return expected_costs(
        attrs.evolve(quote, cap=policy.cap(quote.cap)),
        history,
        outbid_for=outbid_for,
        prior_hold_s=policy.prior_hold_s,
        prior_mtbp_s=policy.prior_mtbp_s,
        time_value_dph=policy.time_value_dph,
    )


@given(policies, quotes, histories(), st.floats(min_value=0.0, max_value=1.0))
def test_it_never_chooses_an_option_dearer_than_another(policy, quote, history, frac) -> None:
    outbid_for = frac * policy.wait_s * 0.999
    decision = policy.decide(
        outbid_for=outbid_for,
        current_bid=quote.current_bid,
        min_bid=quote.min_bid,
        cap=quote.cap,
        quote=quote,
        history=history,
    )
    options = _options(policy, quote, history, outbid_for)
    chosen = next(o for o in options if o.action == decision.action)
    assert all(chosen.cost_usd <= o.cost_usd for o in options)
    assert decision.bid == chosen.bid
    # the reason shows the figures a person needs to check the choice
    assert f"${chosen.cost_usd:.4f}" in decision.reason


@given(policies, quotes, histories(), _seconds)
def test_a_raise_never_passes_the_cap_and_always_beats_the_winning_bid(
    policy, quote, history, outbid_for
) -> None:
    for option in _options(policy, quote, history, outbid_for):
        if option.action != "raise":
            continue
        assert option.bid is not None
        assert option.bid <= policy.cap(quote.cap) + 1e-9
        if policy.max_bid is not None:
            assert option.bid <= policy.max_bid + 1e-9
        assert quote.min_bid is not None
        assert option.bid >= quote.min_bid + RAISE_MARGIN - 1e-6
        assert option.bid > quote.current_bid


@given(policies, quotes, histories(), _seconds, _seconds)
def test_waiting_longer_never_makes_waiting_look_cheaper(
    policy, quote, history, earlier, extra
) -> None:
    def wait_cost(t: float) -> float:
        return next(o.cost_usd for o in _options(policy, quote, history, t) if o.action == "wait")

    assert wait_cost(earlier + extra) >= wait_cost(earlier) - 1e-12


@given(policies, quotes, histories())
def test_no_raise_without_a_higher_min_bid_and_no_move_without_an_offer(
    policy, quote, history
) -> None:
    actions = {o.action for o in _options(policy, quote, history, 0.0)}
    assert "wait" in actions
    if quote.min_bid is None or quote.min_bid < quote.current_bid:
        assert "raise" not in actions
    assert ("give_up" in actions) == (quote.alternative_dph is not None)


def test_it_waits_then_moves_once_the_outbid_has_lasted_too_long_for_waiting_to_pay() -> None:
    """With no hold seen to end, the expected rest of an outbid grows as it lasts (censored
    exponential), until storage for it costs more than moving: here after 1,580 s."""
    clock = ManualClock()
    policy = OutbidPolicy.cheapest_expected(max_wait_s=7200.0)
    quote = OutbidQuote(
        current_bid=0.10,
        storage_dph=0.05,
        min_bid=5.0,  # far above the cap: no raise
        cap=0.2,
        alternative_dph=0.16,
        recovery_s=100.0,
        restart_s=100.0,
    )
    history = BidHistory(outbids=1)
    since = clock.now()
    seen: list[tuple[float, str]] = []
    while clock.now() - since < 3000.0:
        outbid_for = clock.now() - since
        decision = policy.decide(
            outbid_for=outbid_for,
            current_bid=quote.current_bid,
            min_bid=quote.min_bid,
            cap=quote.cap,
            quote=quote,
            history=history,
        )
        seen.append((outbid_for, decision.action))
        clock.sleep(15.0)
    waits = [t for t, action in seen if action == "wait"]
    moves = [t for t, action in seen if action == "give_up"]
    # wait: (600 + t) * 0.05 + 100 * 0.15; move: (0.16 - 0.15) * 21600 / 2 + 100 * 0.16
    assert max(waits) < 1580.0 <= min(moves)
    assert max(waits) > 1560.0
    assert {action for _, action in seen} == {"wait", "give_up"}
    assert [a for _, a in seen] == sorted((a for _, a in seen), key=lambda a: a == "give_up")


def test_holds_seen_to_end_quickly_keep_it_waiting_past_the_prior() -> None:
    quote = OutbidQuote(
        current_bid=0.10,
        storage_dph=0.05,
        min_bid=None,
        cap=0.2,
        alternative_dph=0.16,
        recovery_s=100.0,
        restart_s=100.0,
    )
    policy = OutbidPolicy.cheapest_expected(max_wait_s=7200.0)
    quick = BidHistory(running_s=7200.0, outbids=5, holds_s=(60.0, 90.0, 30.0, 120.0))
    decide = {
        "prior only": BidHistory(outbids=1),
        "short holds seen": quick,
    }
    actions = {
        name: policy.decide(
            outbid_for=2000.0,
            current_bid=0.10,
            min_bid=None,
            cap=0.2,
            quote=quote,
            history=history,
        ).action
        for name, history in decide.items()
    }
    assert actions == {"prior only": "give_up", "short holds seen": "wait"}


def test_it_gives_up_at_its_longest_wait_and_without_prices() -> None:
    policy = OutbidPolicy.cheapest_expected(max_wait_s=300.0)
    quote = OutbidQuote(
        current_bid=0.1, storage_dph=0.0, min_bid=None, cap=0.2, alternative_dph=None
    )
    common = {"current_bid": 0.1, "min_bid": None, "cap": 0.2}
    assert policy.decide(outbid_for=299.0, quote=quote, **common).action == "wait"
    late = policy.decide(outbid_for=300.0, quote=quote, **common)
    assert (late.action, late.reason) == ("give_up", "outbid for 300 s (waits up to 300 s)")
    assert policy.decide(outbid_for=0.0, **common).action == "give_up"


def test_after_its_raise_it_waits_for_the_restart_unless_outbid_again() -> None:
    policy = OutbidPolicy.cheapest_expected(time_value_dph=100.0)
    quote = OutbidQuote(
        current_bid=0.121, storage_dph=0.01, min_bid=0.12, cap=0.2, alternative_dph=0.5
    )
    common = {"current_bid": 0.121, "cap": 0.2, "outbid_for": 20.0, "quote": quote}
    assert policy.decide(min_bid=0.12, raised_at_current=True, **common).action == "wait"
    again = attrs.evolve(quote, min_bid=0.15)
    decision = policy.decide(min_bid=0.15, raised_at_current=True, **{**common, "quote": again})
    assert (decision.action, decision.bid) == ("raise", 0.151)


@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({"running_s": -1.0}, "running_s", ConfigValueError),
        ({"running_s": math.inf}, "running_s", ConfigValueError),
        ({"running_s": math.nan}, "running_s", ConfigValueError),
        ({"outbids": -1}, "outbids", ConfigValueError),
        ({"outbids": 1.5}, "outbids", ConfigTypeError),
        ({"holds_s": (10.0, -5.0), "outbids": 2}, "holds_s", ConfigValueError),
        ({"holds_s": [10.0], "outbids": 1}, "holds_s", ConfigTypeError),
        ({"left_s": ("soon",), "outbids": 1}, "left_s", ConfigTypeError),
        ({"holds_s": (1.0,), "left_s": (2.0,), "outbids": 1}, "outbids", ConfigValueError),
    ],
)
def test_a_bad_bid_history_gets_a_typed_error_naming_the_field(changes, field, error) -> None:
    with pytest.raises(error) as caught:
        BidHistory(**changes)
    assert caught.value.key == field
    assert str(caught.value).startswith(f"BidHistory.{field} must ")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"current_bid": -0.1}, "current_bid"),
        ({"alternative_dph": math.nan}, "alternative_dph"),
        ({"recovery_s": -1.0}, "recovery_s"),
        ({"remaining_s": math.inf}, "remaining_s"),
    ],
)
def test_a_bad_quote_gets_a_typed_error_naming_the_field(changes, field) -> None:
    values = {
        "current_bid": 0.1,
        "storage_dph": 0.01,
        "min_bid": 0.2,
        "cap": 0.3,
        "alternative_dph": 0.15,
    }
    with pytest.raises(ConfigValueError) as caught:
        OutbidQuote(**{**values, **changes})
    assert caught.value.key == field


def test_a_bad_policy_setting_gets_a_typed_error() -> None:
    with pytest.raises(ConfigValueError, match=r"OutbidPolicy\.time_value_dph must be"):
        OutbidPolicy.cheapest_expected(time_value_dph=-1.0)
    with pytest.raises(ConfigValueError, match=r"OutbidPolicy\.prior_hold_s must be"):
        OutbidPolicy.cheapest_expected(prior_hold_s=0.0)


# ---------------------------------------------------------------------------------------------
# carried out by run_job against the emulator


def _outbid_first_running(world: World, *, price: float | None, duration: float | None):
    """A clock hook that has a competitor outbid the job's first running instance once."""
    done: list[tuple[int, float]] = []
    fleet = world.workers(total_steps=300, checkpoint_every=50)

    def hook(now: float) -> None:
        fleet(now)
        if done or "worker_ready" not in world.kinds():
            return
        for view in world.emu.instances:
            if view.actual_status == "running" and parse_label(view.label) is not None:
                bid = view.price
                world.emu.preempt(
                    view.id, price=price if price is not None else bid + 0.002, duration=duration
                )
                done.append((view.machine_id, bid))
                return

    world.clock.hook = hook
    return done


def test_a_short_outbid_is_waited_out_on_the_same_machine(world: World) -> None:
    done = _outbid_first_running(world, price=5.0, duration=120.0)
    result = world.run(world.make_job(outbid=OutbidPolicy.cheapest_expected()))
    assert result.status == "succeeded", result.summary()
    assert done, "the test never outbid the instance"
    kinds = world.kinds()
    assert {"outbid", "outbid_waiting", "outbid_recovered"} <= set(kinds)
    assert "bid_raised" not in kinds
    assert [a.end_reason for a in result.attempts] == ["succeeded"]
    assert result.attempts[0].machine_id == done[0][0]
    waiting = next(e for e in world.events if e.kind == "outbid_waiting")
    assert "wait expected $" in waiting.message
    assert "against move $" in waiting.message


def test_a_cheap_raise_is_taken_when_time_is_worth_more_than_the_raise(world: World) -> None:
    done = _outbid_first_running(world, price=None, duration=None)
    policy = OutbidPolicy.cheapest_expected(time_value_dph=20.0)
    result = world.run(world.make_job(outbid=policy))
    assert result.status == "succeeded", result.summary()
    machine, bid = done[0]
    raised = [e for e in world.events if e.kind == "bid_raised"]
    assert len(raised) == 1, world.kinds()
    want = round(round(bid + 0.002, 4) + RAISE_MARGIN, 6)
    assert "raise expected $" in raised[0].message
    assert [a.end_reason for a in result.attempts] == ["succeeded"]
    assert result.attempts[0].machine_id == machine
    assert result.attempts[0].bid == pytest.approx(want)


def test_an_outbid_that_outlasts_the_longest_wait_moves(world: World) -> None:
    done = _outbid_first_running(world, price=5.0, duration=None)
    policy = OutbidPolicy.cheapest_expected(max_wait_s=200.0)
    result = world.run(world.make_job(outbid=policy))
    assert result.status == "succeeded", result.summary()
    first, *later = result.attempts
    assert first.end_reason == "outbid"
    assert first.machine_id == done[0][0]
    assert later
    assert all(a.machine_id != done[0][0] for a in later)
    assert world.emu.instances == []


# ---------------------------------------------------------------------------------------------
# the default: a job that names no outbid policy


def _default_outbid_job(world: World) -> Job:
    """The world's job with no ``outbid`` given (the world's own names a fixed policy)."""
    base = world.make_job()
    fields = {f.name: getattr(base, f.name) for f in attrs.fields(Job) if f.name != "outbid"}
    return Job(**fields)


def _clock_time(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


def test_a_job_naming_no_policy_prices_its_outbids() -> None:
    job = Job(name="j", command="python train.py", profile="test-4090", store_url="/tmp/runs")
    assert job.outbid == OutbidPolicy.cheapest_expected()
    assert job.outbid.action == "cheapest_expected"
    assert (job.outbid.wait_s, job.outbid.time_value_dph) == (MAX_WAIT_S, 0.0)


def test_by_default_a_short_outbid_is_waited_out_and_the_wait_says_when_it_would_move(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    done = _outbid_first_running(world, price=5.0, duration=300.0)
    with caplog.at_level(logging.WARNING, logger="vastkit.jobs"):
        result = world.run(_default_outbid_job(world))
    assert result.status == "succeeded", result.summary()
    assert done, "the test never outbid the instance"
    machine = done[0][0]
    assert [(a.end_reason, a.machine_id) for a in result.attempts] == [("succeeded", machine)]
    outbid = next(e for e in world.events if e.kind == "outbid")
    waits = [e for e in world.events if e.kind == "outbid_waiting"]
    # said once (the outbid lasted less than REMIND_EVERY_S), with the figures and the plan
    assert len(waits) == 1, [e.message for e in waits]
    message = waits[0].message
    assert f"waiting for machine {machine} to come back: wait expected $" in message
    assert "against move $" in message
    move_at = _clock_time(outbid.time + MAX_WAIT_S)
    assert f"will move to another offer at {move_at} (3600 s after the outbid)" in message
    # a user with Python's default logging (WARNING) sees it too
    assert any(message in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert "outbid_recovered" in world.kinds()


def test_by_default_an_outbid_that_outlasts_an_hour_moves_and_reminds_meanwhile(
    world: World,
) -> None:
    done = _outbid_first_running(world, price=5.0, duration=None)
    result = world.run(_default_outbid_job(world))
    assert result.status == "succeeded", result.summary()
    machine = done[0][0]
    first, *later = result.attempts
    assert (first.end_reason, first.machine_id) == ("outbid", machine)
    assert later
    assert all(a.machine_id != machine for a in later)
    outbid = next(e for e in world.events if e.kind == "outbid")
    waits = [e for e in world.events if e.kind == "outbid_waiting"]
    # waited the hour (one 10 s poll late at most), and said so when it moved
    ended = next(e for e in world.events if e.kind == "attempt_ended")
    waited = re.search(
        r"ended: outbid \(outbid for (\d+) s \(waits up to 3600 s\)\)", ended.message
    )
    assert waited is not None, ended.message
    assert MAX_WAIT_S <= float(waited[1]) < MAX_WAIT_S + FAST.poll_interval
    assert all(e.time < outbid.time + MAX_WAIT_S for e in waits)
    # said at the outbid, then every REMIND_EVERY_S while waiting
    assert len(waits) == int(MAX_WAIT_S // REMIND_EVERY_S), [e.message for e in waits]
    assert all("still outbid after" in e.message for e in waits[1:])
    gaps = [b.time - a.time for a, b in itertools.pairwise(waits)]
    assert all(REMIND_EVERY_S <= g < REMIND_EVERY_S + FAST.poll_interval for g in gaps)
    assert world.emu.instances == []

"""run_job in virtual time against the emulator's scripted runner, with the fleet under fire.

The workers are played by :class:`FakeWorkers` (see conftest): it outbids instances, takes hosts
offline, freezes heartbeats and makes instances hang in ``loading``, hundreds of times. Whatever
happens: the job finishes, at most one instance of the run exists at any time, nothing is left
running, and the spend never passes the cap by more than one poll at the running rate.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from vastkit.api.client import Client
from vastkit.emulator import Emulator
from vastkit.jobs import Job, JobEvent, run_job
from vastkit.ledger import Ledger

from .conftest import BID_PROFILE, FAST, FakeWorkers, HookedClock

MakeJob = Callable[..., Job]
MakeWorkers = Callable[..., FakeWorkers]


def test_hundreds_of_failures_never_two_attempts_never_a_leak(
    make_job: MakeJob,
    workers: MakeWorkers,
    client: Client,
    ledger: Ledger,
    emu: Emulator,
    clock: HookedClock,
    events: list[JobEvent],
) -> None:
    fleet = workers(total_steps=40_000, mtbf_s=150.0, checkpoint_every=20, seed=7)
    started = time.monotonic()
    result = run_job(
        make_job(), client=client, ledger=ledger, clock=clock, on_event=events.append,
        progress=False,
    )
    wall = time.monotonic() - started
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
    assert emu.instances == []
    assert ledger.pending_intents() == []
    assert all(a.ended_at is not None for a in ledger.attempts(result.run_id))
    # the ledger's cost agrees with what the emulator billed (step-function sampling)
    assert result.total_cost_usd == pytest.approx(emu.user.total_spend, rel=0.02)
    run = ledger.get_run(result.run_id)
    assert run is not None
    assert run.status == "succeeded"
    assert wall < 60


def test_budget_cap_is_never_passed_by_more_than_one_poll(
    make_job: MakeJob,
    workers: MakeWorkers,
    client: Client,
    ledger: Ledger,
    emu: Emulator,
    clock: HookedClock,
    events: list[JobEvent],
) -> None:
    fleet = workers(total_steps=10**9, mtbf_s=1800.0, seed=3)
    cap = 0.05
    result = run_job(
        make_job(max_cost_usd=cap),
        client=client, ledger=ledger, clock=clock, on_event=events.append, progress=False,
    )
    assert result.status == "budget_exceeded"
    one_poll = BID_PROFILE.max_dph * FAST.poll_interval / 3600.0
    assert emu.user.total_spend <= cap + one_poll
    assert ledger.spend(run_id=result.run_id) <= cap + one_poll
    assert emu.user.total_spend > cap * 0.8  # it did use the budget
    assert any(e.kind == "budget_stop" for e in events)
    assert fleet.max_live == 1
    assert emu.instances == []


def test_max_duration_ends_the_job_as_timed_out(
    make_job: MakeJob,
    workers: MakeWorkers,
    client: Client,
    ledger: Ledger,
    emu: Emulator,
    clock: HookedClock,
) -> None:
    workers(total_steps=10**9)
    start = clock.now()
    job = make_job(timeouts=attrs_evolve(FAST, max_duration=3600.0))
    result = run_job(job, client=client, ledger=ledger, clock=clock, progress=False)
    assert result.status == "timed_out"
    assert 3600 <= clock.now() - start <= 3600 + 2 * FAST.poll_interval + FAST.stop_grace + 60
    assert emu.instances == []
    assert result.attempts[-1].end_reason == "timed_out"


def test_user_error_is_terminal_unless_restarts_are_allowed(
    make_job: MakeJob,
    workers: MakeWorkers,
    client: Client,
    ledger: Ledger,
    emu: Emulator,
    clock: HookedClock,
) -> None:
    workers(total_steps=100, exit_code=3)
    result = run_job(make_job(), client=client, ledger=ledger, clock=clock, progress=False)
    assert result.status == "failed"
    assert result.exit_code == 3
    assert [a.end_reason for a in result.attempts] == ["failed"]
    assert emu.instances == []

    result = run_job(
        make_job(restarts_on_error=2), client=client, ledger=ledger, clock=clock, progress=False
    )
    assert result.status == "failed"
    assert [a.end_reason for a in result.attempts] == ["failed", "failed", "failed"]
    assert emu.instances == []


def attrs_evolve(value: object, **changes: object) -> object:
    import attrs

    return attrs.evolve(value, **changes)  # type: ignore[misc]

"""vastkit.Instance against the emulator over loopback HTTP, in virtual time.

Each failure class of DESIGN.md is provoked at the phase where it can happen; every test ends
by checking that the emulator bills nothing we did not mean to keep.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest

from vastkit.api.client import Client
from vastkit.api.models import InstanceState
from vastkit.budget import BudgetGuard, Budgets, load_budgets
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator
from vastkit.errors import (
    BudgetExceededError,
    ConfigError,
    NoOfferError,
    ProvisioningError,
    ServerError,
)
from vastkit.instance import Instance, InstanceEvent, InstanceTimeouts
from vastkit.labels import parse_label
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile
from vastkit.reconcile import reconcile

Make = Callable[..., Instance]


def kinds(events: list[InstanceEvent]) -> list[str]:
    return [e.kind for e in events]


def live_ids(emu: Emulator) -> list[int]:
    return [i.id for i in emu.instances]


# -- the happy path ----------------------------------------------------------------------------


def test_with_block_rents_waits_and_destroys(
    make: Make, emu: Emulator, ledger: Ledger, clock: ManualClock, events: list[InstanceEvent]
) -> None:
    start = clock.now()
    with make() as inst:
        assert inst.state is InstanceState.RUNNING
        assert live_ids(emu) == [inst.id]
        assert parse_label(emu.instance(inst.id).label) == (inst.run_id, 1)
        assert inst.machine_id == inst.offer.machine_id == emu.instance(inst.id).machine_id
        assert inst.ssh_command
        assert inst.ssh_command.startswith("ssh -p ")
        assert inst.public_ip
        assert inst.dph == pytest.approx(inst.offer.dph_base + inst.offer.storage_dph(16), rel=1e-4)
        # 10 s provisioning + 30 s loading, seen through 5 s polls
        assert 40 <= clock.now() - start <= 50
        clock.advance(3600)
        inst.refresh()
        billed = emu.instance(inst.id).total_cost
        assert inst.cost_so_far == pytest.approx(billed, rel=0.01)
        # the ledger (what budgets read) has the spend of the running instance too
        assert ledger.spend(run_id=inst.run_id) == pytest.approx(billed, rel=0.01)
    assert live_ids(emu) == []
    assert inst.destroyed
    assert inst.end_reason == "exit"
    (attempt,) = ledger.attempts(inst.run_id)
    assert attempt.instance_id == inst.id
    assert attempt.destroyed_at is not None
    assert attempt.end_reason == "exit"
    assert attempt.running_at is not None
    assert attempt.loading_at is not None
    assert attempt.cost_usd == pytest.approx(emu.user.total_spend, rel=0.01)
    assert ledger.pending_intents() == []
    assert [k for k in kinds(events) if k != "no_ssh_key"][:3] == [
        "searching",
        "offer_chosen",
        "created",
    ]
    assert kinds(events)[-2:] == ["destroying", "destroyed"]


def test_exception_in_the_block_destroys_and_propagates(make: Make, emu: Emulator) -> None:
    with pytest.raises(ZeroDivisionError):
        with make() as inst:
            1 / 0  # noqa: B018
    assert live_ids(emu) == []
    assert inst.end_reason == "exception"


def test_keyboard_interrupt_in_the_block_destroys(make: Make, emu: Emulator) -> None:
    with pytest.raises(KeyboardInterrupt):
        with make() as inst:
            raise KeyboardInterrupt
    assert live_ids(emu) == []
    assert inst.end_reason == "interrupted"


def test_entering_twice_is_an_error_and_destroy_is_idempotent(make: Make, emu: Emulator) -> None:
    inst = make()
    with inst:
        with pytest.raises(RuntimeError, match="entered only once"):
            inst.__enter__()
        inst.destroy()
        inst.destroy()
        assert inst.destroyed
        assert live_ids(emu) == []
    inst.destroy()


def test_launch_without_with_and_destroy(make: Make, emu: Emulator, client: Client) -> None:
    inst = make()
    inst = Instance.launch(
        inst.profile,
        client=client,
        ledger=inst._ledger,
        clock=inst._clock,
        timeouts=inst.timeouts,
        progress=False,
    )
    assert inst.state is InstanceState.RUNNING
    assert live_ids(emu) == [inst.id]
    assert "logs" in dir(inst)
    inst.destroy()
    assert live_ids(emu) == []


def test_a_live_instance_garbage_collected_warns(make: Make, emu: Emulator, client: Client) -> None:
    template = make()
    inst = Instance.launch(
        template.profile,
        client=client,
        ledger=template._ledger,
        clock=template._clock,
        timeouts=template.timeouts,
        progress=False,
    )
    instance_id = inst.id
    with pytest.warns(ResourceWarning, match=f"Instance {instance_id}"):  # noqa: PT031
        del inst
        gc.collect()
    assert live_ids(emu) == [instance_id]
    client.destroy_instance(instance_id)


def test_keep_leaves_it_running_with_a_warning_and_a_ledger_record(
    make: Make, emu: Emulator, ledger: Ledger, client: Client
) -> None:
    with pytest.warns(UserWarning, match="keeping instance"):
        with make(keep=True) as inst:
            pass
    assert live_ids(emu) == [inst.id]
    (attempt,) = ledger.attempts(inst.run_id)
    assert attempt.end_reason == "kept"
    assert attempt.destroyed_at is None
    report = reconcile(client, ledger)
    assert [a.instance_id for a in report.adopted] == [inst.id]
    assert live_ids(emu) == [inst.id]
    client.destroy_instance(inst.id)


def test_inside_the_block(make: Make, emu: Emulator, clock: ManualClock) -> None:
    with make() as inst:
        assert "RTX 4090" in repr(emu.instance(inst.id)) or inst.offer.gpu_name == "RTX 4090"
        emu.write_log(inst.id, "hello from the container\n")
        assert "hello from the container" in inst.logs(tail=10)
        inst.stop()
        view = inst.wait_until("stopped", timeout=60)
        assert view.state is InstanceState.STOPPED
        inst.start()
        inst.wait_until(InstanceState.RUNNING, timeout=120)
        with pytest.raises(TimeoutError, match="not exited"):
            inst.wait_until("exited", timeout=20)
    assert live_ids(emu) == []


def test_profile_forms_and_bad_arguments(
    make: Make,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "gpu_profiles.yaml"
    path.write_text("profiles:\n  mine:\n    gpu_name: RTX_4090\n    max_dph: 0.4\n")
    assert make((path, "mine")).profile.max_dph == 0.4
    assert make("dev-test").profile.name == "dev-test"
    bigger = make(disk_gb=40)
    assert bigger.disk_gb == 40
    assert bigger.profile.disk_gb == 40  # searched and priced with the disk rented
    with pytest.raises(TypeError, match="profile must be"):
        make(42)
    with pytest.raises(ValueError, match="max_offers"):
        make(max_offers=0)
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no Vast API key"):
        Instance("dev-test")  # settings resolve in the constructor, before anything is rented


# -- failures while starting: destroy, block the machine, next offer --------------------------


def test_oci_error_destroys_blocks_and_moves_on(
    make: Make, emu: Emulator, ledger: Ledger, events: list[InstanceEvent]
) -> None:
    emu.fail_next_instances("oci_error")
    with make() as inst:
        first, second = inst.attempts
        assert first.outcome == "failed"
        assert "OCI" in first.detail
        assert first.machine_blocked
        assert first.machine_id in ledger.blocked_machines()
        assert second.outcome == "running"
        assert second.offer_id != first.offer_id
        assert live_ids(emu) == [inst.id]
        assert inst.label.endswith("/2")
    assert live_ids(emu) == []
    assert "offer_failed" in kinds(events)
    assert [a.end_reason for a in ledger.attempts(inst.run_id)] == ["failed", "exit"]


def test_stuck_loading_hits_the_loading_deadline(make: Make, emu: Emulator, ledger: Ledger) -> None:
    emu.fail_next_instances("stuck_loading")
    with make() as inst:
        first = inst.attempts[0]
        assert first.outcome == "loading_deadline"
        assert "deadline 120" in first.detail
        assert first.machine_id in ledger.blocked_machines()
    assert live_ids(emu) == []


def test_every_offer_overrunning_provisioning_raises_with_each_attempt(
    make: Make, emu: Emulator, ledger: Ledger
) -> None:
    timeouts = InstanceTimeouts(provisioning=5, loading=120, running=300, poll_interval=2)
    with pytest.raises(ProvisioningError) as info:
        with make(timeouts=timeouts, max_offers=3):
            pytest.fail("must not get here")
    attempts = info.value.attempts
    assert [a.outcome for a in attempts] == ["provisioning_deadline"] * 3
    assert len({a.machine_id for a in attempts}) == 3
    assert "3 offer(s)" in str(info.value)
    assert "provisioning_deadline" in str(info.value)
    assert live_ids(emu) == []
    assert {a.machine_id for a in attempts} <= ledger.blocked_machines()


def test_container_exiting_while_starting(make: Make, emu: Emulator, clock: ManualClock) -> None:
    done: list[int] = []

    def hook(event: InstanceEvent) -> None:
        if event.kind == "phase" and event.state is InstanceState.LOADING and not done:
            # the container starts and its main process dies before the next poll
            done.append(event.instance_id or 0)
            clock.advance(31)
            emu.tick()
            emu.finish(event.instance_id or 0, 1)

    # with runtype "args" the image's own command is the container's life (ssh ones stay up)
    with make(hook=hook, runtype="args") as inst:
        assert inst.attempts[0].outcome == "exited"
        assert inst.attempts[0].machine_blocked
    assert live_ids(emu) == []


@pytest.mark.parametrize("status", ["offline", "unknown"])
def test_host_lost_while_starting(make: Make, emu: Emulator, status: str) -> None:
    def hook(event: InstanceEvent) -> None:
        if event.kind == "created" and event.attempt == 1:
            emu.set_host_status(status, instance_id=event.instance_id)  # type: ignore[arg-type]

    with make(hook=hook) as inst:
        assert inst.attempts[0].outcome == "host_lost"
        assert status in inst.attempts[0].detail
    assert live_ids(emu) == []


def test_offer_gone_moves_to_the_next_offer(make: Make, emu: Emulator, ledger: Ledger) -> None:
    def hook(event: InstanceEvent) -> None:
        if event.kind == "offer_chosen" and event.attempt == 1:
            emu.add_competitor(event.machine_id or 0, price=None)  # someone rents it first

    with make(hook=hook) as inst:
        first = inst.attempts[0]
        assert first.outcome == "offer_gone"
        assert first.instance_id is None
        assert not first.machine_blocked
        assert live_ids(emu) == [inst.id]
    assert [i.status for i in ledger.intents(inst.run_id)] == ["failed", "completed"]


# -- creates that may have rented: never two instances for one attempt -------------------------


def test_5xx_on_create_that_rented_nothing_is_retried_after_listing(
    make: Make, emu: Emulator
) -> None:
    rule = emu.inject("status", "create", status=500)
    with make() as inst:
        assert rule.fired == 1
        assert live_ids(emu) == [inst.id]
        assert len(inst.attempts) == 1
    list_calls = [r for r in emu.requests if r[1] == "list"]
    assert list_calls, "must list by label before retrying a create"


@pytest.mark.parametrize("kind", ["status", "drop"])
def test_create_whose_answer_was_lost_is_adopted_not_duplicated(
    make: Make, emu: Emulator, kind: str
) -> None:
    emu.inject(kind, "create", status=502, processed=True)  # type: ignore[arg-type]
    with make() as inst:
        assert live_ids(emu) == [inst.id]
        assert inst.attempts[0].outcome == "running"
    assert live_ids(emu) == []


def test_a_failing_list_during_create_recovery_is_an_error_not_zero(
    make: Make, emu: Emulator, client: Client, ledger: Ledger
) -> None:
    emu.inject("status", "create", status=500, processed=True)

    def hook(event: InstanceEvent) -> None:
        if event.kind == "offer_chosen":
            emu.inject("status", "list", status=500, count=None)

    with pytest.raises(ServerError):
        with make(hook=hook):
            pass
    assert len(emu.instances) == 1  # rented, but we could not learn it
    emu.clear_faults()
    # The rented instance is labelled and its run is closed: reconcile destroys it.
    report = reconcile(client, ledger)
    assert len(report.destroyed) == 1
    assert live_ids(emu) == []


def test_reconcile_on_entry_with_a_failing_list_rents_nothing(make: Make, emu: Emulator) -> None:
    emu.inject("status", "list", status=500, count=None)
    with pytest.raises(ServerError):
        with make():
            pass
    assert live_ids(emu) == []
    assert not [r for r in emu.requests if r[1] == "create"]


# -- budget and offers -------------------------------------------------------------------------


def test_budget_refusal_rents_nothing(make: Make, emu: Emulator, ledger: Ledger) -> None:
    budgets: Budgets = load_budgets({"projects": {"vision": {"limit_usd": 0.5, "period": "total"}}})
    guard = BudgetGuard(budgets, ledger, project="vision")
    with pytest.raises(BudgetExceededError, match="worst case"):
        with make(budget=guard, project="vision"):
            pass
    assert live_ids(emu) == []
    assert ledger.pending_intents() == []


def test_impossible_profile_says_why(make: Make, emu: Emulator) -> None:
    cheap = GpuProfile(name="too-cheap", gpu_name="RTX_4090", max_dph=0.01)
    with pytest.raises(NoOfferError) as info:
        with make(cheap):
            pass
    assert info.value.explanation is not None
    assert live_ids(emu) == []


# -- interruptible -----------------------------------------------------------------------------


def test_bid_is_min_bid_plus_margin_within_the_cap(
    make: Make, emu: Emulator, interruptible: GpuProfile
) -> None:
    with make(interruptible) as inst:
        offer = inst.offer
        assert inst.bid is not None
        assert offer.min_bid is not None
        expected = min(offer.min_bid * 1.1, 0.20 - offer.storage_dph(16))
        assert inst.bid == pytest.approx(expected, rel=1e-6)
        view = emu.instance(inst.id)
        assert view.is_bid
        assert view.price == pytest.approx(inst.bid, rel=1e-3)
    assert live_ids(emu) == []


def test_outbid_while_running_raises_the_bid_and_recovers(
    make: Make,
    emu: Emulator,
    interruptible: GpuProfile,
    clock: ManualClock,
    events: list[InstanceEvent],
) -> None:
    with make(interruptible, outbid=OutbidPolicy.raise_bid(step=0.2)) as inst:
        first_bid = inst.bid
        assert first_bid is not None
        emu.preempt(inst.id, price=round(first_bid * 1.1, 4))
        assert inst.refresh().state in (
            InstanceState.OUTBID,
            InstanceState.LOADING,
            InstanceState.RUNNING,
        )
        assert "outbid" in kinds(events)
        assert "bid_raised" in kinds(events)
        assert inst.bid is not None
        assert inst.bid > first_bid * 1.1
        assert emu.instance(inst.id).price == pytest.approx(inst.bid, rel=1e-3)
        inst.wait_until("running", timeout=120)
        assert "outbid_recovered" in kinds(events)
    assert live_ids(emu) == []


def test_outbid_with_give_up_policy_destroys(
    make: Make,
    emu: Emulator,
    interruptible: GpuProfile,
    ledger: Ledger,
    events: list[InstanceEvent],
) -> None:
    with make(interruptible, outbid=OutbidPolicy.give_up()) as inst:
        emu.preempt(inst.id)
        inst.refresh()
        assert inst.destroyed
        assert inst.end_reason == "outbid"
        assert inst.state is InstanceState.OUTBID
        assert live_ids(emu) == []
        with pytest.raises(ProvisioningError, match="outbid"):
            inst.wait_until("running", timeout=60)
    assert "outbid_gave_up" in kinds(events)
    assert ledger.attempts(inst.run_id)[-1].end_reason == "outbid"


def test_outbid_with_wait_policy_waits_for_the_gpus(
    make: Make,
    emu: Emulator,
    interruptible: GpuProfile,
    clock: ManualClock,
    events: list[InstanceEvent],
) -> None:
    with make(interruptible, outbid=OutbidPolicy.wait(600)) as inst:
        bid = inst.bid
        emu.preempt(inst.id, duration=100)
        assert inst.refresh().state is InstanceState.OUTBID
        inst.wait_until("running", timeout=400)
        assert inst.bid == bid
        assert {"outbid", "outbid_waiting", "outbid_recovered"} <= set(kinds(events))
    assert live_ids(emu) == []


def test_the_price_aware_policy_waits_for_a_short_outbid_and_gives_up_after_its_longest_wait(
    make: Make, emu: Emulator, interruptible: GpuProfile, events: list[InstanceEvent]
) -> None:
    """An instance has no move: ``cheapest_expected`` weighs waiting (storage) against a raise
    (a competitor at $5/h is above any cap, so none), waits, and gives up at ``max_wait_s``."""
    policy = OutbidPolicy.cheapest_expected(max_wait_s=300)
    with make(interruptible, outbid=policy) as inst:
        assert inst.outbid_policy == policy
        bid = inst.bid
        emu.preempt(inst.id, price=5.0, duration=100)
        assert inst.refresh().state is InstanceState.OUTBID
        assert not inst.destroyed  # before, it gave up at once: no move to price
        inst.wait_until("running", timeout=400)
        assert inst.bid == bid
        waiting = next(e for e in events if e.kind == "outbid_waiting")
        assert f"waiting for machine {inst.machine_id} to come back: wait expected $" in (
            waiting.message
        )
        assert "gives the instance up 300 s after the outbid" in waiting.message
        assert "outbid_recovered" in kinds(events)

        emu.preempt(inst.id, price=5.0)  # this competitor stays
        with pytest.raises(ProvisioningError):
            inst.wait_until("running", timeout=900)
        assert inst.end_reason == "outbid"
    gave_up = next(e for e in events if e.kind == "outbid_gave_up")
    assert "(waits up to 300 s)" in gave_up.message
    assert live_ids(emu) == []


def test_an_instance_keeps_raising_the_bid_by_default(
    make: Make, interruptible: GpuProfile
) -> None:
    with make(interruptible) as inst:
        assert inst.outbid_policy == OutbidPolicy.raise_bid()


def test_outbid_wait_policy_gives_up_after_its_time(
    make: Make, emu: Emulator, interruptible: GpuProfile
) -> None:
    with make(interruptible, outbid=OutbidPolicy.wait(60)) as inst:
        emu.preempt(inst.id)  # the competitor stays
        with pytest.raises(ProvisioningError):
            inst.wait_until("running", timeout=600)
        assert inst.end_reason == "outbid"
    assert live_ids(emu) == []


def test_bid_too_low_at_creation_destroys_that_instance_and_rebids(
    make: Make, emu: Emulator, interruptible: GpuProfile, events: list[InstanceEvent]
) -> None:
    rivals: list[int] = []

    def hook(event: InstanceEvent) -> None:
        if event.kind == "offer_chosen" and event.attempt == 1:
            offer = emu.offer(event.offer_id or 0, kind="bid")
            # a rival bid just above ours: our first create is refused but leaves a contract
            rivals.append(emu.add_competitor(event.machine_id or 0, price=offer["min_bid"] * 1.15))

    with make(interruptible, hook=hook) as inst:
        first = inst.attempts[0]
        assert first.outcome == "bid_too_low"
        assert first.instance_id is not None
        assert "bid_too_low" in kinds(events)
        assert live_ids(emu) == [inst.id]  # the refused contract is gone
        assert inst.id != first.instance_id
    assert live_ids(emu) == []


# -- rate limits on: the whole life paces itself -----------------------------------------------


def test_full_life_with_the_documented_rate_limits(clock: ManualClock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vastkit.emulator import Timings, serve

    with (
        serve(
            seed=1, clock=clock, offers=300, timings=Timings(provision_s=10, loading_s=30)
        ) as emu,
        Client(emu.api_key, base_url=emu.url, clock=clock) as client,
        Ledger(tmp_path / "l.db", clock=clock) as ledger,
    ):
        profile = GpuProfile(name="t", gpu_name="RTX_4090", max_dph=0.5, max_duration_hours=4)
        with Instance(profile, client=client, ledger=ledger, clock=clock, progress=False) as inst:
            assert inst.state is InstanceState.RUNNING
        assert emu.instances == []
        assert not [r for r in emu.requests if r[2] == 429]

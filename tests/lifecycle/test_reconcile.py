"""vastkit.reconcile against the emulator: what is destroyed, adopted, left and closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastkit._owner import owner_metadata
from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest, Offer
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator
from vastkit.errors import ServerError
from vastkit.labels import make_label
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile
from vastkit.reconcile import reconcile
from vastkit.selector import build_query


def offers(client: Client, profile: GpuProfile, n: int) -> list[Offer]:
    found = client.search_offers(build_query(profile))
    assert len(found) >= n
    return found[:n]


def rent(client: Client, offer: Offer, label: str | None) -> int:
    request = CreateInstanceRequest(image="pytorch/pytorch:latest", disk_gb=16, label=label)
    return client.create_instance(offer.id, request).id


def live(emu: Emulator) -> set[int]:
    return {i.id for i in emu.instances}


def test_destroys_our_unknown_instances_and_never_touches_others(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile
) -> None:
    a, b, c = offers(client, on_demand, 3)
    orphan = rent(client, a, make_label("lost-run", 1, ledger_id=ledger.ledger_id))
    foreign = rent(client, b, "someone-elses-label")
    unlabelled = rent(client, c, None)
    report = reconcile(client, ledger)
    assert live(emu) == {foreign, unlabelled}
    assert [x.instance_id for x in report.destroyed] == [orphan]
    assert "no row" in report.destroyed[0].reason
    assert (report.listed, report.ours) == (3, 1)
    assert "destroyed 1" in report.summary()


def test_lists_every_page(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile
) -> None:
    many = client.search_offers(None, limit=60)[:30]
    assert len(many) == 30
    for number, offer in enumerate(many, start=1):
        rent(client, offer, make_label("many", number, ledger_id=ledger.ledger_id))
    report = reconcile(client, ledger)
    assert report.listed == 30
    assert len(report.destroyed) == 30
    assert live(emu) == set()


def test_dry_run_changes_nothing(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile
) -> None:
    (offer,) = offers(client, on_demand, 1)
    orphan = rent(client, offer, make_label("lost-run", 1, ledger_id=ledger.ledger_id))
    report = reconcile(client, ledger, dry_run=True)
    assert report.dry_run
    assert [(x.action, x.instance_id) for x in report.destroyed] == [("would_destroy", orphan)]
    assert live(emu) == {orphan}
    assert "would destroy 1" in report.summary()


def record(
    ledger: Ledger,
    run_id: str,
    offer: Offer,
    *,
    owner: dict | None,
    clock: ManualClock,  # type: ignore[type-arg]
    instance_id: int | None = None,
    complete: bool = True,
) -> int:
    ledger.record_run(run_id, metadata={"owner": owner} if owner else {}, status="running")
    label = make_label(run_id, 1, ledger_id=ledger.ledger_id)
    intent = ledger.begin_intent(run_id, 1, offer_id=offer.id, label=label)
    attempt = ledger.record_attempt(
        run_id,
        1,
        offer_id=offer.id,
        machine_id=offer.machine_id,
        label=label,
        intent_at=clock.now(),
    )
    if complete and instance_id is not None:
        ledger.complete_intent(intent, instance_id=instance_id)
        ledger.update_attempt(attempt, instance_id=instance_id, created_at=clock.now())
        ledger.add_cost_sample(attempt, state="running", rate_dph=0.36)
    return attempt


def test_adopts_live_rows_of_a_live_owner(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile, clock: ManualClock
) -> None:
    (offer,) = offers(client, on_demand, 1)
    instance_id = rent(client, offer, make_label("mine", 1, ledger_id=ledger.ledger_id))
    record(ledger, "mine", offer, owner=owner_metadata(), clock=clock, instance_id=instance_id)
    report = reconcile(client, ledger)
    assert [x.instance_id for x in report.adopted] == [instance_id]
    assert live(emu) == {instance_id}
    client.destroy_instance(instance_id)


def test_destroys_rows_of_a_dead_owner_and_records_the_cost(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile, clock: ManualClock
) -> None:
    (offer,) = offers(client, on_demand, 1)
    instance_id = rent(client, offer, make_label("dead", 1, ledger_id=ledger.ledger_id))
    dead = {**owner_metadata(), "pid": 2**22 + 4321}
    attempt = record(ledger, "dead", offer, owner=dead, clock=clock, instance_id=instance_id)
    clock.advance(3600)
    report = reconcile(client, ledger)
    assert "is gone" in report.destroyed[0].reason
    assert live(emu) == set()
    row = ledger.get_attempt(attempt)
    assert row is not None
    assert row.end_reason == "reconciled"
    assert row.destroyed_at is not None
    assert row.cost_usd == pytest.approx(0.36, rel=0.01)  # an hour at the recorded rate


def test_an_instance_whose_row_ended_is_destroyed(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile, clock: ManualClock
) -> None:
    (offer,) = offers(client, on_demand, 1)
    instance_id = rent(client, offer, make_label("ended", 1, ledger_id=ledger.ledger_id))
    attempt = record(
        ledger, "ended", offer, owner=owner_metadata(), clock=clock, instance_id=instance_id
    )
    ledger.update_attempt(attempt, end_reason="exit", ended_at=clock.now())
    report = reconcile(client, ledger)
    assert "ended" in report.destroyed[0].reason
    assert live(emu) == set()


def test_intent_never_completed_by_a_dead_owner(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile, clock: ManualClock
) -> None:
    a, b = offers(client, on_demand, 2)
    dead = {**owner_metadata(), "pid": 2**22 + 999}
    record(ledger, "crashed", a, owner=dead, clock=clock, complete=False)
    created = rent(
        client, a, make_label("crashed", 1, ledger_id=ledger.ledger_id)
    )  # rented, never written down
    record(ledger, "no-create", b, owner=dead, clock=clock, complete=False)
    report = reconcile(client, ledger)
    assert [x.instance_id for x in report.destroyed] == [created]
    assert [x.run_id for x in report.closed] == ["no-create"]
    assert live(emu) == set()
    assert ledger.pending_intents() == []


def test_unknown_owner_intents_wait_for_the_grace_period(
    client: Client, ledger: Ledger, on_demand: GpuProfile, clock: ManualClock
) -> None:
    (offer,) = offers(client, on_demand, 1)
    record(
        ledger, "elsewhere", offer, owner={"host": "other", "pid": 1}, clock=clock, complete=False
    )
    assert reconcile(client, ledger, intent_grace=600).closed == ()
    clock.advance(601)
    assert len(reconcile(client, ledger, intent_grace=600).closed) == 1


def test_a_live_row_owned_elsewhere_is_left_alone(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile, clock: ManualClock
) -> None:
    (offer,) = offers(client, on_demand, 1)
    instance_id = rent(client, offer, make_label("remote", 1, ledger_id=ledger.ledger_id))
    record(
        ledger,
        "remote",
        offer,
        owner={"host": "ci-runner-7", "pid": 12},
        clock=clock,
        instance_id=instance_id,
    )
    report = reconcile(client, ledger)
    assert [x.instance_id for x in report.left] == [instance_id]
    assert "ci-runner-7" in report.left[0].reason
    assert live(emu) == {instance_id}
    client.destroy_instance(instance_id)


def test_a_failed_list_is_an_error_never_zero_instances(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile
) -> None:
    (offer,) = offers(client, on_demand, 1)
    orphan = rent(client, offer, make_label("lost", 1, ledger_id=ledger.ledger_id))
    emu.inject("status", "list", status=500, count=None)
    with pytest.raises(ServerError):
        reconcile(client, ledger)
    emu.clear_faults()
    assert live(emu) == {orphan}
    client.destroy_instance(orphan)


def test_a_destroy_that_keeps_failing_is_reported(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile, clock: ManualClock
) -> None:
    (offer,) = offers(client, on_demand, 1)
    orphan = rent(client, offer, make_label("stuck", 1, ledger_id=ledger.ledger_id))
    emu.inject("status", "destroy", status=500, count=None)
    start = clock.now()
    report = reconcile(client, ledger, destroy_deadline=300)
    assert [x.instance_id for x in report.failed] == [orphan]
    assert "may still be billing" in report.failed[0].reason
    assert "FAILED to destroy 1" in report.summary()
    assert 300 <= clock.now() - start < 400
    emu.clear_faults()
    assert len(reconcile(client, ledger).destroyed) == 1
    assert live(emu) == set()


def test_two_ledgers_on_one_account_never_destroy_each_others_instances(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile, tmp_path: Path
) -> None:
    """A colleague's ledger (or CI's) on the same Vast account: its reap leaves ours alone."""
    a, b, c, d = offers(client, on_demand, 4)
    with Ledger(tmp_path / "colleague.db") as theirs:
        assert theirs.ledger_id != ledger.ledger_id
        # our live run, recorded in our ledger (even with a dead owner it is not theirs to kill)
        ledger.record_run("ours", status="running", metadata={"owner": {"pid": -1}})
        mine = rent(client, a, make_label("ours", 1, ledger_id=ledger.ledger_id))
        ledger.record_attempt("ours", 1, label=make_label("ours", 1, ledger_id=ledger.ledger_id))
        # their orphan, which their own reconcile should clean up
        orphan = rent(client, b, make_label("gone", 1, ledger_id=theirs.ledger_id))

        report = reconcile(client, theirs)
        assert live(emu) == {mine}
        assert [x.instance_id for x in report.destroyed] == [orphan]
        assert [x.instance_id for x in report.foreign] == [mine]
        assert f"ledger {ledger.ledger_id}" in report.foreign[0].reason
        assert "foreign 1" in report.summary()

        # and ours never touches theirs, nor an old-style label nobody here knows
        other = rent(client, c, make_label("theirs", 1, ledger_id=theirs.ledger_id))
        legacy = rent(client, d, make_label("from-an-old-version", 1))
        mine_report = reconcile(client, ledger)
        assert {mine, other, legacy} <= live(emu)
        assert {x.instance_id for x in mine_report.foreign} == {other, legacy}


def test_foreign_instances_are_destroyed_only_when_asked(
    client: Client, ledger: Ledger, emu: Emulator, on_demand: GpuProfile
) -> None:
    (offer,) = offers(client, on_demand, 1)
    stranger = rent(client, offer, make_label("run", 1, ledger_id="0badf00d"))
    assert [x.instance_id for x in reconcile(client, ledger, dry_run=True).foreign] == [stranger]
    assert live(emu) == {stranger}
    report = reconcile(client, ledger, foreign=True)
    assert [x.instance_id for x in report.destroyed] == [stranger]
    assert "ledger 0badf00d" in report.destroyed[0].reason
    assert live(emu) == set()

"""The machinery under :class:`vastkit.Instance`: one rental driven through the attempt engine.

:class:`RentalBase` holds what an :class:`~vastkit.Instance` does between ``__enter__`` and
``__exit__`` that a user does not call: trying offers through the :class:`Provisioner` until one
runs, metering its cost, writing the ledger, applying the outbid policy, and cleaning up after a
launch that failed half way. :class:`vastkit.Instance` adds the user's API on top.
"""

from __future__ import annotations

import atexit
import enum
import logging
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import attrs

from vastkit._console import Progress, SignalGuard
from vastkit._owner import owner_metadata
from vastkit._provision import (
    MACHINE_FAILURES,
    AttemptTicket,
    CreateFailure,
    CreateFailureKind,
    InstanceTimeouts,
    Provisioner,
)
from vastkit.access import AccessPlan
from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest, InstanceInfo, InstanceState
from vastkit.budget import BudgetGuard
from vastkit.clock import Clock
from vastkit.errors import APIError, ProvisioningError
from vastkit.labels import make_label
from vastkit.ledger import Ledger
from vastkit.money import ContractPrice, CostMeter, bid_cap, hourly_rate
from vastkit.outbid import OutbidPolicy, OutbidQuote
from vastkit.profiles import GpuProfile
from vastkit.selector import Candidate

__all__ = [
    "MAX_REBIDS",
    "SAMPLE_EVERY_S",
    "InstanceEvent",
    "ProvisioningAttempt",
    "RentalBase",
    "Stage",
    "Trial",
    "live_instances",
]

logger = logging.getLogger("vastkit.instance")

MAX_REBIDS = 3
"""How many times one offer is retried with a higher bid after "bid too low"."""

SAMPLE_EVERY_S = 60.0
"""Cost samples go to the ledger on every state change and at least this often while polled,
so budgets read the spend of a running instance."""


@attrs.frozen(kw_only=True)
class InstanceEvent:
    """Something that happened to an instance, passed to ``on_event``.

    Kinds: ``searching``, ``offer_chosen``, ``created``, ``phase``, ``running``,
    ``offer_failed`` (destroyed, next offer), ``bid_too_low``, ``outbid``, ``bid_raised``,
    ``outbid_waiting``, ``outbid_recovered``, ``outbid_gave_up``, ``host_lost``,
    ``destroying``, ``destroyed``, ``kept``.
    """

    kind: str
    """What happened (see above)."""
    message: str
    """One line for people."""
    time: float
    """When (clock time)."""
    run_id: str
    """The run."""
    attempt: int | None = None
    """The attempt number (the last part of the label)."""
    instance_id: int | None = None
    """The instance, once created."""
    offer_id: int | None = None
    """The offer."""
    machine_id: int | None = None
    """The machine."""
    state: InstanceState | None = None
    """The instance's state when it happened, if known."""


@attrs.frozen(kw_only=True)
class ProvisioningAttempt:
    """What happened on one create (one attempt), as listed by ``ProvisioningError.attempts``."""

    attempt: int
    """The attempt number."""
    offer_id: int
    """The offer tried."""
    machine_id: int
    """Its machine."""
    outcome: str
    """``running``, or why it failed: ``offer_gone``, ``bid_too_low``, ``create_failed``,
    ``provisioning_deadline``, ``loading_deadline``, ``running_deadline``, ``exited``,
    ``failed``, ``host_lost``, ``outbid``, ``vanished``."""
    detail: str = ""
    """The explanation."""
    instance_id: int | None = None
    """The instance, when one was created."""
    bid: float | None = None
    """The bid sent, for an interruptible rental."""
    seconds: float = 0.0
    """How long the attempt took."""
    machine_blocked: bool = False
    """Whether the machine was blocked because of it."""

    def __str__(self) -> str:
        where = f"offer {self.offer_id} (machine {self.machine_id})"
        inst = f", instance {self.instance_id}" if self.instance_id is not None else ""
        return f"#{self.attempt} {where}{inst}: {self.outcome}" + (
            f" - {self.detail}" if self.detail else ""
        )


@attrs.frozen
class Trial:
    """One create on one offer: what is needed to report it."""

    number: int
    """The attempt number."""
    candidate: Candidate
    """The offer tried."""
    bid: float | None
    """The bid sent (None: on demand)."""
    started: float
    """When it began."""
    ticket: AttemptTicket
    """Its ledger rows."""

    def report(
        self,
        outcome: str,
        now: float,
        *,
        detail: str = "",
        instance_id: int | None = None,
        blocked: bool = False,
    ) -> ProvisioningAttempt:
        """The :class:`ProvisioningAttempt` for how it ended at ``now``."""
        return ProvisioningAttempt(
            attempt=self.number,
            offer_id=self.candidate.offer.id,
            machine_id=self.candidate.offer.machine_id,
            outcome=outcome,
            detail=detail,
            instance_id=instance_id,
            bid=self.bid,
            seconds=now - self.started,
            machine_blocked=blocked,
        )


class Stage(enum.Enum):
    """Where one rental is in its life."""

    NEW = "new"
    """Not launched yet."""
    LAUNCHED = "launched"
    """Launching or live: an instance may exist and bill."""
    KEPT = "kept"
    """Left running on purpose (``keep=True``)."""
    DESTROYED = "destroyed"
    """Confirmed gone."""


class RentalBase:
    """One rental's state and the steps that change it (see the module docstring)."""

    profile: GpuProfile
    image: str
    disk_gb: float
    env: dict[str, str]
    onstart: str | None
    runtype: str | None
    timeouts: InstanceTimeouts
    max_offers: int
    keep: bool
    outbid_policy: OutbidPolicy
    project: str | None
    team: str | None
    reconcile_on_enter: bool
    run_id: str
    attempts: list[ProvisioningAttempt]
    _on_event: Callable[[InstanceEvent], None] | None
    _progress_setting: bool | None
    _client: Client
    _clock: Clock
    _ledger: Ledger | None
    _budget: BudgetGuard | None
    _access: AccessPlan

    def _init_rental(self) -> None:
        self._attempt_no = 0
        self._stage = Stage.NEW
        self._view: InstanceInfo | None = None
        self._candidate: Candidate | None = None
        self._bid: float | None = None
        self._bid_cap_value: float | None = None
        self._meter: CostMeter | None = None
        self._outbid_since: float | None = None
        self._raised_for_outbid = False
        self._end_reason: str | None = None
        self._signals = SignalGuard()
        self._progress: Progress | None = None
        self._engine: Provisioner | None = None
        self._ticket: AttemptTicket | None = None
        self._pending_label: str | None = None
        self._sampled: tuple[str, float] | None = None

    # -- plumbing ------------------------------------------------------------------------------

    def _emit(self, kind: str, message: str, *, state: InstanceState | None = None) -> None:
        event = _event(self, kind, message, state)
        logger.info("%s: %s", self.run_id, message)
        if self._on_event is not None:
            self._on_event(event)

    def _status(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(text)

    def _get_ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger()
        return self._ledger

    def _provisioner(self) -> Provisioner:
        if self._engine is None:
            self._engine = Provisioner(
                self._client,
                self._get_ledger(),
                self._clock,
                destroy_deadline=self.timeouts.destroy,
                create_retries=self.timeouts.create_retries,
                retry_interval=self.timeouts.poll_interval,
                access=self._access,
            )
        return self._engine

    def _sample(self, state: InstanceState, now: float) -> None:
        """Record the rate when the state changes, and at least every minute while it bills."""
        if self._meter is None or self._ticket is None:
            return
        last = self._sampled
        if last is not None and last[0] == state.value and now - last[1] < SAMPLE_EVERY_S:
            return
        self._sampled = (state.value, now)
        self._get_ledger().add_cost_sample(
            self._ticket.attempt_id,
            state=state.value,
            rate_dph=hourly_rate(self._meter.price, state),
            at=now,
        )

    def destroy(self, *, reason: str = "destroy") -> None:
        raise NotImplementedError

    def _create_onstart(self) -> str | None:
        """The onstart script of the next create."""
        return self.onstart

    @property
    def ssh_command(self) -> str | None:
        raise NotImplementedError

    @property
    def dph(self) -> float:
        raise NotImplementedError

    # -- launching -----------------------------------------------------------------------------

    def _launch(self) -> None:
        if self._stage is not Stage.NEW:
            raise RuntimeError("this Instance was already launched")
        self._stage = Stage.LAUNCHED
        self._progress = Progress(self._progress_setting)
        ledger = self._get_ledger()
        engine = self._provisioner()
        access = engine.access.resolve()  # a wrong key file fails before any API call
        if access.public_key is None:
            self._emit("no_ssh_key", access.missing)
        profile = self.profile
        if self.reconcile_on_enter:
            self._status(f"{profile.name}: reconciling instances left by earlier runs")
            from vastkit.reconcile import reconcile

            report = reconcile(self._client, ledger, clock=self._clock)
            if report.destroyed:
                logger.warning("%s", report.summary())
        if self._budget is not None:
            self._budget.preflight(profile)
        ledger.record_run(
            self.run_id,
            name=f"instance:{profile.name}",
            project=self.project,
            team=self.team,
            profile=profile.name,
            status="running",
            metadata={"kind": "instance", "owner": owner_metadata()},
            at=self._clock.now(),
        )
        self._status(f"{profile.name}: searching offers")
        self._emit("searching", f"searching offers for profile {profile.name!r}")
        tried = 0
        for candidate in engine.candidates(profile):
            if tried >= self.max_offers:
                break
            if engine.is_blocked(candidate.offer.machine_id):
                continue  # blocked by another process meanwhile
            tried += 1
            if self._rent_offer(candidate):
                self._progress.close(
                    f"instance {self._require_view().id} running on machine "
                    f"{candidate.offer.machine_id} at {self.dph:.3f} $/h"
                )
                live_instances.add(self)
                return
        self._progress.close()
        ledger.end_run(self.run_id, "failed", at=self._clock.now())
        lines = "\n  ".join(str(a) for a in self.attempts)
        raise ProvisioningError(
            f"no instance came up for profile {profile.name!r} after {tried} "
            f"offer(s) ({len(self.attempts)} attempt(s)):\n  {lines}",
            attempts=list(self.attempts),
        )

    def _require_view(self) -> InstanceInfo:
        assert self._view is not None
        return self._view

    def _rent_offer(self, candidate: Candidate) -> bool:
        """Try ``candidate``, raising the bid after "bid too low" up to :data:`MAX_REBIDS`."""
        bid = candidate.bid
        for _ in range(MAX_REBIDS + 1):
            running, rebid = self._try_offer(candidate, bid)
            if running:
                return True
            if rebid is None:
                return False
            bid = rebid
        return False

    def _bid_cap(self, storage_dph: float) -> float:
        return bid_cap(self.profile, storage_dph=storage_dph, policy=self.outbid_policy)

    def _try_offer(self, candidate: Candidate, bid: float | None) -> tuple[bool, float | None]:
        """One create on ``candidate`` and the wait that follows.

        Returns:
            ``(True, None)`` when it runs; else ``(False, a higher bid to retry the same offer
            with, or None to move on)``.
        """
        engine = self._provisioner()
        offer = candidate.offer
        self._attempt_no += 1
        attempt = self._attempt_no
        self._candidate = candidate
        self._view = None
        label = make_label(self.run_id, attempt, ledger_id=self._get_ledger().ledger_id)
        started = self._clock.now()
        request = CreateInstanceRequest(
            image=self.image,
            disk_gb=self.disk_gb,
            env=self.env,
            onstart=self._create_onstart(),
            label=label,
            price=bid,
            runtype=self.runtype,
        )
        price = ContractPrice.from_offer(offer, disk_gb=self.disk_gb, bid=bid)
        self._status(
            f"{self.profile.name}: renting offer {offer.id} (machine {offer.machine_id}, "
            f"{price.dph_total:.3f} $/h{', bid' if bid is not None else ''}), attempt {attempt}"
        )
        self._emit("offer_chosen", f"attempt {attempt}: renting offer {offer.id}")
        ticket = engine.begin(
            self.run_id,
            attempt,
            offer=offer,
            label=label,
            bid=bid,
            price=price,
            disk_gb=self.disk_gb,
        )
        trial = Trial(attempt, candidate, bid, started, ticket)
        self._pending_label = label
        created = engine.create(offer, request)
        self._pending_label = None
        if isinstance(created, CreateFailure):
            return False, self._create_failed(trial, created)
        self._meter = CostMeter(price, start=self._clock.now())
        engine.created(ticket, created, price)
        self._ticket = ticket
        self._sampled = None
        self._bid = bid
        self._bid_cap_value = self._bid_cap(price.storage_dph) if bid is not None else None
        self._view = InstanceInfo(
            id=created, machine_id=offer.machine_id, label=label, is_bid=bid is not None
        )
        self._emit("created", f"attempt {attempt}: instance {created} created")
        return self._wait_running(trial, created)

    def _create_failed(self, trial: Trial, failure: CreateFailure) -> float | None:
        candidate, bid = trial.candidate, trial.bid
        self._provisioner().failed(trial.ticket, failure)
        if failure.error is not None:
            raise failure.error  # the create route itself is missing: no offer can help
        if failure.kind is CreateFailureKind.REJECTED:
            raise ProvisioningError(
                f"Vast refused the create on offer {candidate.offer.id}: {failure.detail}",
                attempts=list(self.attempts),
            )
        outcome = failure.kind.value
        self.attempts.append(
            trial.report(
                outcome, self._clock.now(), detail=failure.detail, instance_id=failure.contract
            )
        )
        self._emit(
            "bid_too_low" if failure.kind is CreateFailureKind.BID_TOO_LOW else "offer_failed",
            f"attempt {self._attempt_no} on offer {candidate.offer.id}: {outcome}: "
            f"{failure.detail}",
        )
        if failure.kind is CreateFailureKind.BID_TOO_LOW and bid is not None:
            price = ContractPrice.from_offer(candidate.offer, disk_gb=self.disk_gb, bid=bid)
            return self.outbid_policy.next_bid(
                current_bid=bid,
                min_bid=candidate.offer.min_bid,
                cap=self._bid_cap(price.storage_dph),
            )
        return None

    def _wait_running(self, trial: Trial, instance_id: int) -> tuple[bool, float | None]:
        engine = self._provisioner()
        ticket, bid, offer = trial.ticket, trial.bid, trial.candidate.offer
        last_phase: list[str] = [""]

        def on_state(view: InstanceInfo, phase: str, in_phase: float) -> None:
            now = self._clock.now()
            self._observe(view, now)
            if phase != last_phase[0]:
                last_phase[0] = phase
                if phase in ("loading", "running"):
                    self._get_ledger().mark_phase(ticket.attempt_id, phase, at=now)
                self._emit("phase", f"instance {instance_id}: {phase}", state=view.state)
            msg = (view.status_msg or "").strip()
            self._status(
                f"{self.profile.name}: instance {instance_id} {phase} {in_phase:.0f} s"
                + (f" - {msg[:60]}" if msg else "")
            )

        outcome = engine.wait_running(
            lambda: self._client.get_instance(instance_id),
            self.timeouts,
            on_state=on_state,
            expect_bid_stop=bid is not None,
        )
        if outcome.ok:
            assert outcome.instance is not None
            now = self._clock.now()
            self._observe(outcome.instance, now)
            self._get_ledger().mark_phase(ticket.attempt_id, "running", at=now)
            self.attempts.append(trial.report("running", now, instance_id=instance_id))
            self._emit("running", f"instance {instance_id} is running", state=InstanceState.RUNNING)
            return True, None

        # Failed: destroy it, block the machine when it is to blame, and move on.
        blocked = outcome.blame_machine and outcome.reason in MACHINE_FAILURES
        self._status(f"{self.profile.name}: instance {instance_id} {outcome.reason}; destroying")
        with self._signals.deferring():
            gone_at = engine.retire(
                ticket.attempt_id,
                instance_id,
                outcome.reason,
                detail=outcome.detail,
                block_machine=offer.machine_id if blocked else None,
                block_for=self.timeouts.machine_block,
            )
        assert self._meter is not None
        self._meter.close(gone_at)
        self._view = None
        self._ticket = None
        self.attempts.append(
            trial.report(
                outcome.reason,
                self._clock.now(),
                detail=outcome.detail,
                instance_id=instance_id,
                blocked=blocked,
            )
        )
        self._emit(
            "offer_failed",
            f"attempt {trial.number}: instance {instance_id} on machine {offer.machine_id} "
            f"{outcome.reason}: {outcome.detail}; destroyed"
            + (", machine blocked" if blocked else ""),
        )
        if outcome.reason == "outbid" and bid is not None:
            last = outcome.instance
            assert self._meter is not None
            return False, self.outbid_policy.next_bid(
                current_bid=bid,
                min_bid=last.min_bid if last is not None else None,
                cap=self._bid_cap(self._meter.price.storage_dph),
            )
        return False, None

    # -- observing and ending ------------------------------------------------------------------

    def _observe(self, view: InstanceInfo, now: float) -> None:
        self._view = view
        if self._meter is not None:
            self._meter.observe(now, view.state)
        self._sample(view.state, now)

    def _apply_outbid_policy(self, view: InstanceInfo, now: float) -> None:
        state = view.state
        if state is not InstanceState.OUTBID or self._bid is None:
            if self._outbid_since is not None and state is InstanceState.RUNNING:
                self._outbid_since = None
                self._raised_for_outbid = False
                self._emit("outbid_recovered", f"instance {view.id} runs again")
            if state in (InstanceState.OFFLINE, InstanceState.UNKNOWN):
                self._emit("host_lost", f"instance {view.id}: host is {state.value}")
            return
        if self._outbid_since is None:
            self._outbid_since = now
            self._emit("outbid", f"instance {view.id} was outbid (bid {self._bid:.4f} $/h)")
        assert self._bid_cap_value is not None
        decision = self.outbid_policy.decide(
            outbid_for=now - self._outbid_since,
            current_bid=self._bid,
            min_bid=view.min_bid,
            cap=self._bid_cap_value,
            raised_at_current=self._raised_for_outbid,
            quote=_outbid_quote(
                self.outbid_policy, self._bid, self._bid_cap_value, self._meter, view
            ),
        )
        if decision.action == "raise" and decision.bid is not None:
            self._client.change_bid(view.id, decision.bid)
            self._bid = decision.bid
            self._raised_for_outbid = True
            if self._meter is not None:
                self._meter.reprice(now, attrs.evolve(self._meter.price, gpu_dph=decision.bid))
            self._emit("bid_raised", f"instance {view.id}: {decision.reason}")
        elif decision.action == "give_up":
            self._emit("outbid_gave_up", f"instance {view.id}: giving up: {decision.reason}")
            self.destroy(reason="outbid")
        else:
            wait_s = self.outbid_policy.wait_s
            self._emit(
                "outbid_waiting",
                f"instance {view.id}: waiting for machine {view.machine_id} to come back: "
                f"{decision.reason}; gives the instance up {wait_s:.0f} s after the outbid",
            )

    def _mark_gone(self, when: float, *, reason: str) -> None:
        self._stage = Stage.DESTROYED
        self._end_reason = reason
        cost = self._meter.close(when) if self._meter is not None else 0.0
        if self._engine is not None and self._ticket is not None:
            self._engine.ended(self._ticket, reason, when=when)
            logger.info("attempt %s ended (%s), cost $%.4f", self._ticket.attempt_id, reason, cost)
            self._get_ledger().end_run(
                self.run_id, "ended" if reason in ("exit", "destroy") else reason, at=when
            )

    def _keep(self) -> None:
        if self._view is None or self._stage is Stage.DESTROYED:
            return
        self._stage = Stage.KEPT
        self._end_reason = "kept"
        if self._ticket is not None:
            self._get_ledger().update_attempt(self._ticket.attempt_id, end_reason="kept")
            self._get_ledger().update_run(self.run_id, status="kept")
        live_instances.discard(self)
        message = (
            f"keeping instance {self._view.id} ({self.ssh_command or 'no ssh yet'}): it bills "
            f"{self.dph:.3f} $/h until destroyed (vastai destroy instance {self._view.id})"
        )
        self._emit("kept", message)
        warnings.warn(message, UserWarning, stacklevel=3)

    def _cleanup_after_failed_launch(self) -> None:
        try:
            if self._view is not None and self._stage is not Stage.DESTROYED:
                self.destroy(reason="launch_interrupted")
            elif self._pending_label is not None:
                self._sweep_label(self._pending_label)
        finally:
            if self._progress is not None:
                self._progress.close()
            if self._ledger is not None and self._stage is not Stage.NEW:
                run = self._ledger.get_run(self.run_id)
                if run is not None and run.ended_at is None:
                    self._ledger.end_run(self.run_id, "failed", at=self._clock.now())

    def _sweep_label(self, label: str) -> None:
        """A create may have rented although we never learnt its id: destroy by label."""
        try:
            found = self._client.list_instances(label=label)
        except APIError as exc:
            logger.error(
                "cannot list instances labelled %s (%s): one may exist and bill; "
                "vastkit.reconcile will destroy it once the API answers",
                label,
                exc,
            )
            return
        with self._signals.deferring():
            for item in found:
                if (item.label or "").strip() == label:
                    self._provisioner().destroy(item.id)


live_instances: weakref.WeakSet[Any] = weakref.WeakSet()
"""Launched instances not yet destroyed or kept (destroyed when the interpreter exits)."""


@atexit.register
def _destroy_live_instances_at_exit() -> None:
    for inst in list(live_instances):
        if inst.destroyed or inst.keep:
            continue
        logger.warning(
            "interpreter exiting with instance %s still live: destroying it", inst.run_id
        )
        try:
            inst.destroy(reason="interpreter_exit")
        except Exception:
            logger.exception("could not destroy instance of run %s at exit", inst.run_id)


def _event(
    rental: RentalBase, kind: str, message: str, state: InstanceState | None
) -> InstanceEvent:
    """The :class:`InstanceEvent` for what just happened to ``rental``."""
    view, candidate = rental._view, rental._candidate
    return InstanceEvent(
        kind=kind,
        message=message,
        time=rental._clock.now(),
        run_id=rental.run_id,
        attempt=rental._attempt_no or None,
        instance_id=view.id if view is not None else None,
        offer_id=candidate.offer.id if candidate is not None else None,
        machine_id=candidate.offer.machine_id if candidate is not None else None,
        state=state if state is not None else (view.state if view is not None else None),
    )


def _outbid_quote(
    policy: OutbidPolicy, bid: float, cap: float, meter: CostMeter | None, view: InstanceInfo
) -> OutbidQuote | None:
    """The prices a price-aware policy weighs for a rental: waiting or raising (an instance
    does not move; giving it up destroys it)."""
    if policy.action != "cheapest_expected":
        return None
    return OutbidQuote(
        current_bid=bid,
        storage_dph=meter.price.storage_dph if meter is not None else 0.0,
        min_bid=view.min_bid,
        cap=cap,
        alternative_dph=None,
    )

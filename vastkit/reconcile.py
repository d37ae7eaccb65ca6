"""Reconciliation: make the account's instances agree with the ledger, so nothing leaks.

An orchestrator can die at any moment: before a create, after a create but before the ledger
heard of it, while waiting, while the instance runs, while destroying. Every instance vastkit
rents carries the label ``vastkit/<ledger_id>/<run_id>/<attempt>``, and a create intent is written
to the ledger before the create is sent, so the next start can tell what is whose. Only instances
of this ledger (its identity in the label) are ever destroyed; another ledger's on the same
account are listed as ``foreign`` and left alone unless ``foreign=True``::

    with Client() as client, Ledger() as ledger:
        report = vastkit.reconcile(client, ledger)
        print(report.summary())

What happens to each instance that carries the ``vastkit/`` prefix:

========================================================  =========================================
ledger says                                               reaction
========================================================  =========================================
nothing (no run, no attempt, no intent for the label)     destroyed
the attempt ended or was destroyed, or its create failed  destroyed (an earlier destroy failed)
kept with ``keep=True``                                   left alone (reported as kept)
live, and its owner process still runs                    adopted: the ledger learns its id
live, owner on another host (cannot be told)              left alone (reported)
live, owner process is gone                               destroyed, final cost recorded
========================================================  =========================================

Intents never completed whose label matches no instance are closed once their owner is gone (or
after ``intent_grace`` when the owner cannot be told). Attempts the ledger thinks live whose
instance no longer exists are closed the same way. Instances without the prefix are never touched.

Listing is one paged call; a list that fails raises: it never reads as "no instances".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from vastkit._owner import owner_alive
from vastkit._provision import destroy_confirmed
from vastkit.api.client import Client
from vastkit.api.models import InstanceInfo
from vastkit.clock import Clock, SystemClock
from vastkit.errors import APIError, DestroyFailedError
from vastkit.labels import LABEL_PREFIX, label_ledger, parse_label
from vastkit.ledger import AttemptRecord, CreateIntent, Ledger, RunRecord

__all__ = ["ReconcileAction", "ReconcileReport", "reconcile"]

logger = logging.getLogger("vastkit.reconcile")


@attrs.frozen(kw_only=True)
class ReconcileAction:
    """What reconcile did (or, in a dry run, would do) about one instance or ledger row."""

    action: str
    """``destroyed``, ``would_destroy``, ``destroy_failed``, ``adopted``, ``kept``, ``left``,
    ``foreign`` (another ledger's instance, left alone) or ``closed`` (a ledger row closed with
    no instance behind it)."""
    reason: str
    """Why, for people."""
    instance_id: int | None = None
    """The instance, when there is one."""
    label: str | None = None
    """Its label."""
    run_id: str | None = None
    """The run, when the label or ledger names one."""
    attempt: int | None = None
    """The attempt number."""

    def __str__(self) -> str:
        what = f"instance {self.instance_id}" if self.instance_id is not None else "ledger row"
        label = f" ({self.label})" if self.label else ""
        return f"{self.action}: {what}{label}: {self.reason}"


@attrs.frozen(kw_only=True)
class ReconcileReport:
    """The outcome of :func:`reconcile`."""

    dry_run: bool
    """True when nothing was changed."""
    listed: int
    """Instances on the account (all pages)."""
    ours: int
    """Of those, instances with a ``vastkit/`` label."""
    actions: tuple[ReconcileAction, ...] = ()
    """Everything decided, in order."""

    def _of(self, *kinds: str) -> tuple[ReconcileAction, ...]:
        return tuple(a for a in self.actions if a.action in kinds)

    @property
    def destroyed(self) -> tuple[ReconcileAction, ...]:
        """Instances destroyed (or, in a dry run, that would be)."""
        return self._of("destroyed", "would_destroy")

    @property
    def adopted(self) -> tuple[ReconcileAction, ...]:
        """Live instances matched with a live ledger row (and kept ones)."""
        return self._of("adopted", "kept")

    @property
    def left(self) -> tuple[ReconcileAction, ...]:
        """Instances left alone because their owner could not be told dead."""
        return self._of("left")

    @property
    def foreign(self) -> tuple[ReconcileAction, ...]:
        """Instances of another ledger (a colleague's, CI's) on the same account, left alone."""
        return self._of("foreign")

    @property
    def closed(self) -> tuple[ReconcileAction, ...]:
        """Ledger rows closed with no instance behind them."""
        return self._of("closed")

    @property
    def failed(self) -> tuple[ReconcileAction, ...]:
        """Instances that could not be confirmed destroyed: they may still bill."""
        return self._of("destroy_failed")

    def summary(self) -> str:
        """One paragraph for people."""
        verb = "would destroy" if self.dry_run else "destroyed"
        head = (
            f"reconcile: {self.listed} instance(s) listed, {self.ours} with the "
            f"{LABEL_PREFIX} label; {verb} {len(self.destroyed)}, adopted {len(self.adopted)}, "
            f"left {len(self.left)}, foreign {len(self.foreign)}, "
            f"closed {len(self.closed)} ledger row(s)"
            + (f", FAILED to destroy {len(self.failed)}" if self.failed else "")
        )
        lines = [str(a) for a in self.actions if a.action not in ("adopted", "kept")]
        return "\n  ".join([head, *lines])


def reconcile(
    client: Client,
    ledger: Ledger,
    *,
    dry_run: bool = False,
    clock: Clock | None = None,
    intent_grace: float = 900.0,
    destroy_deadline: float = 900.0,
    foreign: bool = False,
    log_summary: bool = True,
) -> ReconcileReport:
    """Destroy what the ledger cannot account for, adopt what it can, close stale rows.

    Args:
        client: The API client.
        ledger: The ledger that vastkit processes of this user write.
        dry_run: Decide and report, but destroy and write nothing.
        clock: The clock (default: the client's).
        intent_grace: Seconds after which an open intent or live attempt whose owner cannot be
            told (another host, no owner recorded) counts as abandoned when no instance carries
            its label.
        destroy_deadline: Seconds to keep retrying each destroy.
        foreign: Also destroy instances of other ledgers on the account (their labels carry
            another ledger's identity, or none and this ledger has no row for them). By default
            they are listed as ``foreign`` and left alone: a colleague's ``reap`` never kills
            your training run.
        log_summary: Log the report's summary (WARNING when something was destroyed, closed
            or failed, else INFO). A caller that shows the summary itself (``vastkit reap``)
            passes False, so that it appears once.

    Returns:
        The report. Instances that could not be destroyed appear in ``failed`` (they also stay
        open in the ledger, so the next reconcile tries again).

    Raises:
        APIError: Listing the instances failed: reconcile never reads that as "no instances".
        LedgerError: The ledger could not be read or written.
    """
    clock = clock or getattr(client, "clock", None) or SystemClock()
    pass_ = _Pass(
        client,
        ledger,
        clock,
        dry_run=dry_run,
        intent_grace=intent_grace,
        destroy_deadline=destroy_deadline,
        foreign=foreign,
    )
    report = pass_.run()
    if not log_summary:
        return report
    if report.destroyed or report.closed or report.failed:
        logger.warning("%s", report.summary())
    else:
        logger.info("%s", report.summary())
    return report


class _Pass:
    """One reconcile pass: the instance list read once, the ledger rows read once per run."""

    def __init__(
        self,
        client: Client,
        ledger: Ledger,
        clock: Clock,
        *,
        dry_run: bool,
        intent_grace: float,
        destroy_deadline: float,
        foreign: bool = False,
    ) -> None:
        self.client = client
        self.foreign = foreign
        self.ledger = ledger
        self.clock = clock
        self.dry_run = dry_run
        self.intent_grace = intent_grace
        self.destroy_deadline = destroy_deadline
        self.actions: list[ReconcileAction] = []
        self.runs: dict[str, RunRecord | None] = {}
        self.attempts: dict[str, dict[int, AttemptRecord]] = {}
        self.intents: dict[str, dict[str, CreateIntent]] = {}
        self.now = clock.now()

    def run(self) -> ReconcileReport:
        instances = self.client.list_instances()
        self.now = self.clock.now()
        ours: list[tuple[InstanceInfo, str, int]] = []
        for inst in instances:
            parsed = parse_label(inst.label)
            if parsed is not None:
                ours.append((inst, *parsed))
        for inst, run_id, number in ours:
            self.judge_listed(inst, run_id, number)
        self.close_intents({(inst.label or "").strip() for inst, _, _ in ours})
        self.close_runs({inst.id for inst in instances})
        return ReconcileReport(
            dry_run=self.dry_run,
            listed=len(instances),
            ours=len(ours),
            actions=tuple(self.actions),
        )

    def run_of(self, run_id: str) -> RunRecord | None:
        if run_id not in self.runs:
            self.runs[run_id] = self.ledger.get_run(run_id)
            self.attempts[run_id] = {a.attempt: a for a in self.ledger.attempts(run_id)}
            self.intents[run_id] = {i.label: i for i in self.ledger.intents(run_id)}
        return self.runs[run_id]

    def judge_listed(self, inst: InstanceInfo, run_id: str, number: int) -> None:
        """Destroy, adopt, keep or leave one listed instance that carries our label."""
        label = (inst.label or "").strip()
        run = self.run_of(run_id)
        attempt = self.attempts.get(run_id, {}).get(number)
        intent = self.intents.get(run_id, {}).get(label)
        base: dict[str, Any] = {
            "instance_id": inst.id,
            "label": label,
            "run_id": run_id,
            "attempt": number,
        }
        owner = label_ledger(label)
        if _is_foreign(owner, self.ledger.ledger_id, run):
            where = f"ledger {owner}" if owner else "another ledger (no row for it here)"
            if not self.foreign:
                self.actions.append(
                    ReconcileAction(
                        action="foreign",
                        reason=f"it belongs to {where}; left alone (reap --foreign destroys it)",
                        **base,
                    )
                )
                return
            verdict, reason = "destroy", f"it belongs to {where}, and foreign ones were asked for"
        else:
            verdict, reason = _judge(run, attempt, intent, inst)
        if verdict == "destroy":
            self.actions.append(
                _destroy(
                    self.client,
                    self.ledger,
                    self.clock,
                    inst,
                    attempt=attempt,
                    intent=intent,
                    reason=reason,
                    base=base,
                    dry_run=self.dry_run,
                    deadline=self.destroy_deadline,
                )
            )
        elif verdict == "adopt":
            if not self.dry_run:
                _adopt(self.ledger, self.clock, inst, attempt, intent)
            self.actions.append(ReconcileAction(action="adopted", reason=reason, **base))
        else:
            action = "kept" if verdict == "kept" else "left"
            self.actions.append(ReconcileAction(action=action, reason=reason, **base))

    def close_intents(self, listed_labels: set[str]) -> None:
        """Close create intents that no listed instance carries the label of."""
        now = self.now
        for intent in self.ledger.pending_intents():
            if intent.label in listed_labels:
                continue
            run = self.run_of(intent.run_id)
            alive = owner_alive(run.metadata if run is not None else None)
            stale = now - intent.created_at >= self.intent_grace
            if not (alive is False or (alive is None and stale)):
                continue
            if not self.dry_run:
                self.ledger.complete_intent(intent.id, error="abandoned (reconciled)", at=now)
                attempt = self.attempts.get(intent.run_id, {}).get(intent.attempt)
                if attempt is not None and attempt.ended_at is None:
                    self.ledger.update_attempt(attempt.id, end_reason="abandoned", ended_at=now)
            self.actions.append(
                ReconcileAction(
                    action="closed",
                    reason="create intent never completed and no instance carries its label",
                    label=intent.label,
                    run_id=intent.run_id,
                    attempt=intent.attempt,
                )
            )

    def close_runs(self, listed_ids: set[int]) -> None:
        """Close attempts with no instance behind them, and runs whose owner is gone."""

        def close_vanished(run_attempts: Iterable[AttemptRecord], alive: bool | None) -> None:
            for attempt in run_attempts:
                _close_vanished(
                    self.ledger,
                    attempt,
                    alive=alive,
                    listed_ids=listed_ids,
                    now=self.now,
                    intent_grace=self.intent_grace,
                    actions=self.actions,
                    dry_run=self.dry_run,
                )

        for run_id in list(self.runs):
            run = self.runs[run_id]
            alive = owner_alive(run.metadata if run is not None else None)
            close_vanished(self.attempts.get(run_id, {}).values(), alive)
        for run in self.ledger.runs(status="running"):
            if run.run_id in self.runs:
                continue
            alive = owner_alive(run.metadata)
            if alive is True:
                continue
            close_vanished(self.ledger.attempts(run.run_id), alive)
            if alive is False and not self.dry_run:
                self.ledger.end_run(run.run_id, "orphaned", at=self.now)


def _is_foreign(owner: str | None, ours: str, run: RunRecord | None) -> bool:
    """Whether a labelled instance belongs to another ledger on the same account.

    Its label names another ledger, or (a label written before ledgers had an identity) names
    none and this ledger has no row for its run: whose it is cannot be told, so it is not ours.
    """
    if owner is not None:
        return owner != ours
    return run is None


def _judge(
    run: RunRecord | None,
    attempt: AttemptRecord | None,
    intent: CreateIntent | None,
    inst: InstanceInfo,
) -> tuple[str, str]:
    if run is None or (attempt is None and intent is None):
        return "destroy", "its label is vastkit's but the ledger has no row for it"
    if attempt is not None and attempt.destroyed_at is None and attempt.end_reason == "kept":
        return "kept", "kept on purpose (keep=True)"
    if run.ended_at is not None:
        return "destroy", f"its run ended ({run.status})"
    if attempt is not None and (attempt.destroyed_at is not None or attempt.ended_at is not None):
        return "destroy", (
            f"the ledger says attempt {attempt.attempt} ended ({attempt.end_reason or 'ended'})"
        )
    if attempt is not None and attempt.instance_id is not None and attempt.instance_id != inst.id:
        return "destroy", (
            f"a second instance for attempt {attempt.attempt} "
            f"(the ledger has instance {attempt.instance_id})"
        )
    if intent is not None and intent.status == "failed":
        return "destroy", f"its create was recorded as failed ({intent.error})"
    alive = owner_alive(run.metadata)
    if alive is True:
        return "adopt", "its run is live and its owner process still runs"
    if alive is None:
        owner = run.metadata.get("owner") if isinstance(run.metadata, Mapping) else None
        host = owner.get("host") if isinstance(owner, Mapping) else None
        return "left", (
            f"its run is live and owned by a process on {host}"
            if host
            else "its run is live and records no owner"
        )
    owner = run.metadata.get("owner", {})
    return "destroy", (f"its owner process {owner.get('pid')} on {owner.get('host')} is gone")


def _destroy(
    client: Client,
    ledger: Ledger,
    clock: Clock,
    inst: InstanceInfo,
    *,
    attempt: AttemptRecord | None,
    intent: CreateIntent | None,
    reason: str,
    base: Mapping[str, Any],
    dry_run: bool,
    deadline: float,
) -> ReconcileAction:
    if dry_run:
        return ReconcileAction(action="would_destroy", reason=reason, **base)
    try:
        gone_at = destroy_confirmed(client, inst.id, clock=clock, deadline=deadline)
    except (DestroyFailedError, APIError) as exc:
        logger.error("reconcile could not destroy instance %s: %s", inst.id, exc)
        return ReconcileAction(action="destroy_failed", reason=f"{reason}; {exc}", **base)
    if intent is not None and intent.status == "pending":
        ledger.complete_intent(intent.id, instance_id=inst.id, at=gone_at)
    if attempt is not None and attempt.destroyed_at is None:
        _close_attempt(ledger, attempt, "reconciled", gone_at, instance_id=inst.id)
    return ReconcileAction(action="destroyed", reason=reason, **base)


def _adopt(
    ledger: Ledger,
    clock: Clock,
    inst: InstanceInfo,
    attempt: AttemptRecord | None,
    intent: CreateIntent | None,
) -> None:
    now = clock.now()
    if intent is not None and intent.status == "pending":
        # The owner is alive and may be mid-create: leave its intent to it.
        return
    if attempt is not None and attempt.instance_id is None:
        ledger.update_attempt(attempt.id, instance_id=inst.id, created_at=now)


def _close_attempt(
    ledger: Ledger,
    attempt: AttemptRecord,
    reason: str,
    when: float,
    *,
    instance_id: int | None = None,
) -> None:
    samples = ledger.cost_samples(attempt.id)
    if samples and samples[-1].at <= when and samples[-1].state != "destroyed":
        ledger.add_cost_sample(attempt.id, state="destroyed", rate_dph=0.0, at=when)
    fields: dict[str, Any] = {"end_reason": reason, "ended_at": when, "destroyed_at": when}
    if instance_id is not None and attempt.instance_id is None:
        fields["instance_id"] = instance_id
    ledger.update_attempt(attempt.id, **fields)


def _close_vanished(
    ledger: Ledger,
    attempt: AttemptRecord,
    *,
    alive: bool | None,
    listed_ids: set[int],
    now: float,
    intent_grace: float,
    actions: list[ReconcileAction],
    dry_run: bool,
) -> None:
    """Close a live attempt whose instance is no longer on the account."""
    if attempt.destroyed_at is not None or attempt.end_reason == "kept":
        return
    if attempt.instance_id is None or attempt.instance_id in listed_ids:
        return
    started = attempt.created_at or attempt.intent_at or now
    if not (alive is False or (alive is None and now - started >= intent_grace)):
        return
    if not dry_run:
        _close_attempt(ledger, attempt, "vanished", now)
    actions.append(
        ReconcileAction(
            action="closed",
            reason="the ledger thought it live but the instance no longer exists",
            instance_id=attempt.instance_id,
            label=attempt.label,
            run_id=attempt.run_id,
            attempt=attempt.attempt,
        )
    )

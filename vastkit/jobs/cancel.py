"""Cancelling a run from outside its orchestrator: ``vastkit cancel RUN`` and :func:`cancel_run`.

A cancel is recorded in the ledger (the run's metadata) and in the run directory
(``cancel.json``): the owning orchestrator sees the first on its next poll and ends the job as
``cancelled`` (destroying its instance); the worker sees the second and stops the command. When
the owner is gone (its process ended, or it is a zombie), nobody would act, so the caller
destroys the run's instances itself, confirmed, and closes the run in the ledger. When the owner
runs on another host and cannot be told dead, ``force=True`` does the same.
"""

from __future__ import annotations

import enum
import logging

import attrs

from vastkit._owner import owner_alive
from vastkit._provision import destroy_confirmed
from vastkit.api.client import Client
from vastkit.clock import Clock, SystemClock
from vastkit.errors import JobError
from vastkit.labels import label_ledger, parse_label
from vastkit.ledger import Ledger
from vastkit.rundir import RunDir

__all__ = ["CANCEL_KEY", "CancelOutcome", "CancelResult", "cancel_requested", "cancel_run"]

logger = logging.getLogger("vastkit.jobs")

CANCEL_KEY = "cancel"
"""Where a cancel request lives in a run's ledger metadata."""


class CancelOutcome(enum.StrEnum):
    """What :func:`cancel_run` did."""

    ALREADY_ENDED = "already_ended"
    """The run had ended; nothing was changed."""
    REQUESTED = "requested"
    """The owner is alive: it stops the run at its next poll."""
    DESTROYED = "destroyed"
    """The owner is gone (or ``force``): the run's instances were destroyed here."""


@attrs.frozen(kw_only=True)
class CancelResult:
    """The outcome of :func:`cancel_run`."""

    run_id: str
    outcome: CancelOutcome
    status: str
    """The run's status afterwards."""
    destroyed: tuple[int, ...] = ()
    """Instances destroyed here."""
    message: str = ""
    """One line for people."""


def cancel_requested(ledger: Ledger, run_id: str) -> str | None:
    """Why a run was asked to stop (from its ledger metadata), or None."""
    run = ledger.get_run(run_id)
    if run is None:
        return None
    request = run.metadata.get(CANCEL_KEY)
    if not isinstance(request, dict):
        return None
    return str(request.get("reason") or "cancelled")


def cancel_run(
    run_id: str,
    *,
    ledger: Ledger,
    client: Client,
    clock: Clock | None = None,
    reason: str = "cancelled by the user",
    force: bool = False,
    storage_options: dict[str, object] | None = None,
) -> CancelResult:
    """Stop a run for good, from any process that shares its ledger.

    Args:
        run_id: The run.
        ledger: The ledger the run is recorded in.
        client: The API client (to destroy instances when nobody else will).
        clock: The clock (default: the client's, else real time).
        reason: Why, recorded in the ledger and in ``cancel.json``.
        force: Destroy now even when the owner may still run (on another host).
        storage_options: fsspec options for the run directory's store.

    Returns:
        What was done.

    Raises:
        JobError: The ledger has no such run.
        DestroyFailedError: An instance could not be confirmed destroyed.
    """
    clock = clock or getattr(client, "clock", None) or SystemClock()
    run = ledger.get_run(run_id)
    if run is None:
        raise JobError(f"no run {run_id!r} in the ledger at {ledger.path}")
    if run.ended_at is not None:
        return CancelResult(
            run_id=run_id,
            outcome=CancelOutcome.ALREADY_ENDED,
            status=run.status,
            message=f"run {run_id} already ended ({run.status}); nothing to cancel",
        )
    now = clock.now()
    metadata = {**run.metadata, CANCEL_KEY: {"at": now, "reason": reason}}
    ledger.update_run(run_id, metadata=metadata)
    run_url = run.metadata.get("run_url")
    if isinstance(run_url, str):
        try:
            RunDir(run_url, dict(storage_options or {}), clock=clock).request_cancel(reason)
        except (OSError, JobError) as exc:  # the ledger request still stands
            logger.warning("could not write cancel.json to %s: %s", run_url, exc)
    alive = owner_alive(run.metadata)
    if alive is True or (alive is None and not force):
        where = "its owner" if alive else "its owner (on another host, or unknown)"
        return CancelResult(
            run_id=run_id,
            outcome=CancelOutcome.REQUESTED,
            status=run.status,
            message=f"run {run_id}: cancel requested; {where} stops it and destroys its "
            "instance at its next poll",
        )
    destroyed = _destroy_instances(client, ledger, clock, run_id)
    ledger.end_run(run_id, "cancelled", at=clock.now())
    return CancelResult(
        run_id=run_id,
        outcome=CancelOutcome.DESTROYED,
        status="cancelled",
        destroyed=destroyed,
        message=f"run {run_id} cancelled; its owner is gone"
        + (" (forced)" if force and alive is None else "")
        + f", so {len(destroyed)} instance(s) were destroyed here",
    )


def _destroy_instances(
    client: Client, ledger: Ledger, clock: Clock, run_id: str
) -> tuple[int, ...]:
    """Destroy (confirmed) every instance of ``run_id`` in this ledger; close its attempts."""
    ours = ledger.ledger_id
    found = [
        inst
        for inst in client.list_instances()
        if (parsed := parse_label(inst.label)) is not None
        and parsed[0] == run_id
        and label_ledger(inst.label) in (ours, None)
    ]
    gone: list[int] = []
    for inst in found:
        at = destroy_confirmed(client, inst.id, clock=clock)
        gone.append(inst.id)
        for attempt in ledger.attempts(run_id):
            if attempt.instance_id == inst.id and attempt.destroyed_at is None:
                ledger.add_cost_sample(attempt.id, state="destroyed", rate_dph=0.0, at=at)
                ledger.update_attempt(
                    attempt.id, end_reason="cancelled", ended_at=at, destroyed_at=at
                )
    now = clock.now()
    for attempt in ledger.attempts(run_id):
        if attempt.ended_at is None:
            ledger.update_attempt(attempt.id, end_reason="cancelled", ended_at=now)
    return tuple(gone)

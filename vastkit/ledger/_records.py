"""What the ledger's rows read back as: small frozen records, built by the document converter."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, TypeVar

import attrs

from vastkit._documents import structure
from vastkit.errors import LedgerError

__all__ = [
    "ATTEMPT_PHASES",
    "QUEUE_TERMINAL",
    "AttemptRecord",
    "BlockedMachine",
    "CostSample",
    "CreateIntent",
    "QueueEntry",
    "RunRecord",
    "from_row",
]

T = TypeVar("T")

ATTEMPT_PHASES: Final[tuple[str, ...]] = (
    "intent_at",
    "created_at",
    "loading_at",
    "running_at",
    "ready_at",
    "ended_at",
    "destroyed_at",
)
"""The per-phase timestamp columns of an attempt, in order."""

QUEUE_TERMINAL: Final[frozenset[str]] = frozenset(
    {"succeeded", "failed", "budget_exceeded", "timed_out", "cancelled"}
)
"""Queue statuses that end a job (besides these there are ``queued`` and ``running``)."""


def from_row(row: Mapping[str, Any], cls: type[T], *, json_columns: tuple[str, ...] = ()) -> T:
    """The record ``cls`` of one row (columns in ``json_columns`` hold JSON text).

    Raises:
        LedgerError: The row does not fit ``cls``.
    """
    raw = dict(row)
    for column in json_columns:
        try:
            raw[column] = json.loads(raw[column] or "{}")
        except json.JSONDecodeError as exc:
            raise LedgerError(f"the {column} of a ledger row is not JSON: {exc}") from exc
    return structure(raw, cls, f"a ledger row of {cls.__name__}", error=LedgerError)


@attrs.frozen(kw_only=True)
class RunRecord:
    """One job run."""

    run_id: str
    """The run id."""
    name: str | None
    """The job's name."""
    project: str | None
    """Its project."""
    team: str | None
    """Its team."""
    profile: str | None
    """The profile name."""
    status: str
    """``pending``, ``running``, ``succeeded``, ``failed``, ``budget_exceeded``, ... (free text)."""
    created_at: float
    """When it was recorded."""
    ended_at: float | None
    """When it ended."""
    metadata: Mapping[str, Any]
    """Anything else (JSON)."""


@attrs.frozen(kw_only=True)
class AttemptRecord:
    """One instance tried for a run."""

    id: int
    """The ledger's attempt id."""
    run_id: str
    """The run."""
    attempt: int
    """The attempt number within the run (1, 2, ...)."""
    offer_id: int | None
    """The offer rented."""
    machine_id: int | None
    """Its machine."""
    instance_id: int | None
    """The instance id once created."""
    label: str | None
    """The instance label."""
    rental: str
    """``on-demand`` or ``interruptible``."""
    bid: float | None
    """The bid in $/h (interruptible)."""
    gpu_name: str | None
    """The GPU model."""
    num_gpus: int | None
    """GPUs rented."""
    disk_gb: float | None
    """Disk rented."""
    dph_base: float | None
    """GPU rate of the contract in $/h (the bid for interruptible)."""
    dph_total: float | None
    """GPU plus storage in $/h."""
    storage_cost: float | None
    """Storage price in $/GB/month."""
    storage_dph: float | None
    """Storage rate in $/h."""
    intent_at: float | None
    """Intent written."""
    created_at: float | None
    """Instance created."""
    loading_at: float | None
    """Container loading."""
    running_at: float | None
    """Container running."""
    ready_at: float | None
    """Worker ready (first heartbeat)."""
    ended_at: float | None
    """Attempt ended."""
    destroyed_at: float | None
    """Instance destroyed."""
    end_reason: str | None
    """Why it ended (``succeeded``, ``outbid``, ``host_lost``, ``phase_deadline``, ...)."""
    cost_usd: float = 0.0
    """What its cost samples add up to."""


@attrs.frozen(kw_only=True)
class CostSample:
    """One accrual step of an attempt."""

    attempt_id: int
    """The attempt."""
    at: float
    """When the sample was taken."""
    state: str | None
    """The instance state from this sample on."""
    rate_dph: float
    """The rate from this sample on, in $/h."""
    cost_usd: float
    """What accrued since the attempt's previous sample (plus any extra, e.g. bandwidth)."""


@attrs.frozen(kw_only=True)
class BlockedMachine:
    """A machine not to rent until ``expires_at``."""

    machine_id: int
    """The machine."""
    reason: str
    """Why it was blocked (the latest reason)."""
    blocked_at: float
    """When it was (last) blocked."""
    expires_at: float
    """When the block ends."""
    count: int
    """How many times it was blocked."""


@attrs.frozen(kw_only=True)
class CreateIntent:
    """A create request about to be (or that was) sent."""

    id: int
    """The intent id."""
    run_id: str
    """The run."""
    attempt: int
    """The attempt number."""
    offer_id: int
    """The offer."""
    label: str
    """The instance label sent with the create (how to find the instance if we die)."""
    status: str
    """``pending``, ``completed`` or ``failed``."""
    instance_id: int | None
    """The instance created, once known."""
    error: str | None
    """Why it failed."""
    created_at: float
    """When the intent was written."""
    completed_at: float | None
    """When it was completed or failed."""


@attrs.frozen(kw_only=True)
class QueueEntry:
    """One row of the job queue as stored (see :class:`vastkit.queue.QueuedJob` for the view
    with the job itself)."""

    seq: int
    """Submission order (ties of priority run in this order)."""
    job_id: str
    """The job id (also the run id of the job's run)."""
    name: str
    """The job's name."""
    project: str | None
    """The job's project (per-project concurrency caps count by it)."""
    team: str | None
    """The job's team."""
    priority: int
    """Higher runs first."""
    status: str
    """``queued``, ``running``, or one of :data:`QUEUE_TERMINAL`."""
    spec: Mapping[str, Any]
    """The serialised job (JSON)."""
    submitted_at: float
    """When it was submitted."""
    started_at: float | None
    """When it was first claimed."""
    ended_at: float | None
    """When it ended."""
    claims: int
    """How many times a driver claimed it (more than one after a restart or a lost lease)."""
    lease_token: str | None
    """The token of the current lease (None when nobody holds one)."""
    lease_owner: str | None
    """Who holds the lease (``host:pid``)."""
    lease_expires_at: float | None
    """When the lease ends unless renewed."""
    cancel_requested: bool
    """Whether :meth:`vastkit.JobQueue.cancel` asked its driver to stop it."""
    reason: str | None
    """Why it ended (or why it went back to the queue), in words."""
    result: Mapping[str, Any]
    """A summary of the job's result (JSON): cost, attempts, run directory..."""

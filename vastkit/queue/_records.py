"""What the queue says about a job: :class:`QueuedJob`, built from its ledger row."""

from __future__ import annotations

from typing import Literal

import attrs

from vastkit.errors import LedgerError
from vastkit.jobs import Job
from vastkit.ledger import QUEUE_TERMINAL, QueueEntry
from vastkit.queue._payload import job_from_dict

__all__ = ["STATUSES", "QueueStatus", "QueuedJob", "queued_job"]

QueueStatus = Literal[
    "queued", "running", "succeeded", "failed", "budget_exceeded", "timed_out", "cancelled"
]
"""Where a queued job stands: waiting, driven, or ended (the last five)."""

STATUSES: tuple[str, ...] = ("queued", "running", *sorted(QUEUE_TERMINAL))
"""Every :data:`QueueStatus`."""


@attrs.frozen(kw_only=True)
class QueuedJob:
    """A job in a :class:`~vastkit.JobQueue` and where it stands (what ``get``, ``list`` and
    ``wait`` return)."""

    job_id: str
    """The job id; also the run id of its run (labels ``vastkit/<ledger_id>/<job_id>/<n>``)."""
    job: Job
    """The job as submitted."""
    status: QueueStatus
    """``queued``, ``running``, ``succeeded``, ``failed``, ``budget_exceeded``,
    ``timed_out`` or ``cancelled``."""
    priority: int
    """Higher runs first."""
    project: str | None
    """The job's project."""
    submitted_at: float
    """When it was submitted (clock time)."""
    started_at: float | None
    """When a driver first claimed it."""
    ended_at: float | None
    """When it ended."""
    claims: int
    """How many times a driver claimed it: 1, or more when a driver died and another adopted
    the job."""
    owner: str | None
    """Who drives it now (``host:pid``), while running."""
    lease_expires_at: float | None
    """When the driver's lease ends unless renewed (running jobs)."""
    cancel_requested: bool
    """Whether :meth:`~vastkit.JobQueue.cancel` asked for it to stop."""
    reason: str | None
    """Why it ended, in words."""
    cost_usd: float = 0.0
    """What the job cost (every attempt), once ended."""
    attempts: int = 0
    """Instances rented or tried, once ended."""
    run_url: str | None = None
    """The run directory (``<store_url>/<job_id>``), once started."""
    exit_code: int | None = None
    """The command's exit code in the final attempt."""
    driver: str | None = None
    """The process that finished the job (``host:pid``)."""

    @property
    def done(self) -> bool:
        """Whether the job has ended."""
        return self.status in QUEUE_TERMINAL

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.status == "succeeded"


def queued_job(entry: QueueEntry) -> QueuedJob:
    """The :class:`QueuedJob` of a queue row.

    Raises:
        LedgerError: The stored job cannot be read back.
    """
    try:
        job = job_from_dict(entry.spec)
    except ValueError as exc:
        raise LedgerError(
            f"queued job {entry.job_id} cannot be read back ({exc}); was it written by a newer "
            "vastkit?"
        ) from exc
    result = entry.result
    exit_code = result.get("exit_code")
    return QueuedJob(
        job_id=entry.job_id,
        job=job,
        status=entry.status if entry.status in STATUSES else "failed",  # type: ignore[arg-type]
        priority=entry.priority,
        project=entry.project,
        submitted_at=entry.submitted_at,
        started_at=entry.started_at,
        ended_at=entry.ended_at,
        claims=entry.claims,
        owner=entry.lease_owner,
        lease_expires_at=entry.lease_expires_at,
        cancel_requested=entry.cancel_requested,
        reason=entry.reason,
        cost_usd=float(result.get("cost_usd") or 0.0),
        attempts=int(result.get("attempts") or 0),
        run_url=result.get("run_url"),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        driver=result.get("driver"),
    )

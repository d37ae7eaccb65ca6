"""Fencing of queue drivers: the lease epoch a driver holds, checked in its money writes.

A :class:`~vastkit.JobQueue` driver holds a job under a lease. Every claim and takeover bumps
the job's ``claims`` counter, the *lease epoch*, and gives it a fresh token. A :class:`Fence` is
what a driver holds (the job, its token and epoch); the writes that change money for that job
(the create intent and attempt row before a create, the instance after it, cost samples, the
attempt's end) check it in the same transaction, so a driver that stalled past its lease and
was taken over writes nothing: it gets :class:`LeaseLost` and stops acting for the job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from vastkit.ledger._db import Transaction

__all__ = ["HELD_QUERY", "Fence", "LeaseLost", "check_fence"]

HELD_QUERY = (
    "SELECT 1 AS held FROM queue_jobs WHERE job_id = ? AND lease_token = ? AND claims = ? "
    "AND status = 'running'"
)
"""Whether a fence holds (``?``: job id, token, epoch): one row if it does."""


@attrs.frozen
class Fence:
    """A queue driver's fencing token for one job."""

    job_id: str
    """The queue job (also its run id)."""
    token: str
    """The lease token the driver claimed with."""
    epoch: int
    """The lease epoch: the job's ``claims`` count when this driver claimed it."""


class LeaseLost(BaseException):
    """Another driver took the job over (a stale fence): unwind without touching the job.

    A ``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` on the way
    swallows it: the driver must stop acting for the job, not recover.
    """


def check_fence(tx: Transaction, fence: Fence | None) -> None:
    """Raise :class:`LeaseLost` inside ``tx`` unless ``fence`` (if any) still holds its job."""
    if fence is None:
        return
    if tx.one(HELD_QUERY, (fence.job_id, fence.token, fence.epoch)) is None:
        raise LeaseLost(f"job {fence.job_id}: lease epoch {fence.epoch} is no longer held")

"""Adopting a job whose driver died: it may have ended its run before the queue heard of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vastkit.ledger import QUEUE_TERMINAL, Ledger, QueueEntry

__all__ = ["finish_if_run_ended"]


def finish_if_run_ended(ledger: Ledger, entry: QueueEntry, *, owner: str, now: float) -> bool:
    """End the queue job ``entry`` (claimed again after its driver died) if its run had ended.

    The previous driver may have ended the job's run (and destroyed its instance) and died
    before it recorded the end in the queue. Then the queue job takes the run's status and
    nothing is driven again. A run put back in the queue by an interrupted ``run()`` (status
    ``cancelled`` without a cancel request) or one with an instance that may still live is left
    to the orchestrator, which adopts and closes it.

    Args:
        ledger: The queue's ledger.
        entry: The claimed row (its lease token is ours).
        owner: Who finishes it (``host:pid``).
        now: The time.

    Returns:
        Whether the job was ended here.
    """
    run = ledger.get_run(entry.job_id)
    if run is None or run.ended_at is None or run.status not in QUEUE_TERMINAL:
        return False
    if run.status == "cancelled" and not entry.cancel_requested:
        return False  # put back in the queue by an interrupted run(): drive it again
    attempts = ledger.attempts(entry.job_id)
    if any(a.destroyed_at is None and a.instance_id is not None for a in attempts):
        return False  # an instance may still live: let the orchestrator adopt and close it
    summary: dict[str, Any] = {
        "driver": owner,
        "cost_usd": sum(a.cost_usd for a in attempts),
        "attempts": len(attempts),
        "run_url": run.metadata.get("run_url") if isinstance(run.metadata, Mapping) else None,
    }
    ledger.finish_queued(
        entry.job_id,
        entry.lease_token,
        status=run.status,
        reason=f"its run had ended ({run.status}) before its previous driver stopped",
        result=summary,
        at=now,
    )
    return True

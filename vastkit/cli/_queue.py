"""The job queue: ``vastkit queue status`` (what runs, what waits, and what it cost so far)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._context import Context
from ._output import ExitCode, format_age
from ._parser import Commands

if TYPE_CHECKING:
    from vastkit.ledger import Ledger
    from vastkit.queue import QueuedJob

__all__ = ["register_queue"]

_WAITING = ("running", "queued")
"""The statuses ``queue status`` shows without ``--all``, in this order."""


def register_queue(commands: Commands) -> None:
    """Add ``vastkit queue status``."""
    actions = commands.group("queue", "the job queue in the ledger", dest="queue_command")
    p = actions.add(
        "status",
        "what the queue runs, what waits, and what it has cost so far",
        "The jobs of the ledger's job queue (see the Job queues guide): running ones first, "
        "then queued ones in the order they will start; --all adds the ended ones. Cost is "
        "what each job's run has accrued so far, running instances included. Needs no API key.",
        handler=_cmd_queue_status,
    )
    p.add_argument("--all", action="store_true", help="also the jobs that have ended")


def _spent(ledger: Ledger, job: QueuedJob, now: float) -> float:
    """What ``job`` has cost so far: its summary once ended, else its run's samples plus what
    its live instances accrued since the last one."""
    if job.done:
        return job.cost_usd
    accrued, _ = ledger.running(run_id=job.job_id, now=now)
    return ledger.spend(run_id=job.job_id) + accrued


def _cmd_queue_status(ctx: Context) -> int:
    from vastkit.cost_report import rounded_parts
    from vastkit.queue import JobQueue

    ledger = ctx.existing_ledger()
    now = time.time()
    jobs: list[QueuedJob] = []
    if ledger is not None:
        with JobQueue(ledger) as queue:
            jobs = queue.list()
    shown = [j for j in jobs if ctx.args.all or j.status in _WAITING]
    order = {status: i for i, status in enumerate(_WAITING)}
    shown.sort(
        key=lambda j: (
            order.get(j.status, len(order)),
            -j.priority if j.status == "queued" else 0,
            j.submitted_at,
        )
    )
    spent = [_spent(ledger, j, now) if ledger is not None else 0.0 for j in shown]
    parts, total = rounded_parts(spent)
    counts = {status: sum(1 for j in jobs if j.status == status) for status in _WAITING}
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "running": counts["running"],
                "queued": counts["queued"],
                "spent_usd": round(float(sum(spent)), 6),
                "jobs": [_record(j, cost) for j, cost in zip(shown, spent, strict=True)],
            }
        )
        return ExitCode.OK
    if shown:
        ctx.out.table(
            ["job", "name", "project", "status", "priority", "claims", "spent $", "owner", "age"],
            [
                [
                    j.job_id,
                    j.job.name or "-",
                    j.project or "-",
                    j.status,
                    str(j.priority),
                    str(j.claims),
                    f"{cost:.4f}",
                    j.owner or "-",
                    format_age(now - (j.started_at or j.submitted_at)),
                ]
                for j, cost in zip(shown, parts, strict=True)
            ],
            right=("priority", "claims", "spent $", "age"),
        )
    scope = "" if ctx.args.all else " (vastkit queue status --all adds the ended jobs)"
    ctx.out.line(
        f"{counts['running']} running, {counts['queued']} queued; spent ${total:.4f} so far{scope}"
    )
    return ExitCode.OK


def _record(job: QueuedJob, spent: float) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "name": job.job.name,
        "project": job.project,
        "status": job.status,
        "priority": job.priority,
        "claims": job.claims,
        "spent_usd": round(spent, 6),
        "owner": job.owner,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "reason": job.reason,
    }

"""Runs: ``vastkit runs`` (what ran and runs, with its spend and owner) and ``vastkit cancel``."""

from __future__ import annotations

import time
from typing import Any

from vastkit.errors import JobError

from ._context import Context
from ._output import ExitCode, NoSuchId, UsageError, format_age, format_money
from ._parser import Commands

__all__ = ["register_cancel", "register_runs"]


def register_runs(commands: Commands) -> None:
    """Add ``vastkit runs``."""
    p = commands.add(
        "runs",
        "list runs with their status, attempts, spend and owner",
        "The runs in the ledger (jobs and instances): by default the ones still running, with "
        "what each has cost so far, and the number of queued jobs; --all for every run. The "
        "owner is the process that drives the run (host:pid), 'gone' when it ended (or is a "
        "zombie). `vastkit status` is the same command.",
        handler=_cmd_runs,
        aliases=("status",),
    )
    p.add_argument("--all", action="store_true", help="every run, not only the running ones")
    p.add_argument("--project", metavar="NAME", help="only this project's runs")


def register_cancel(commands: Commands) -> None:
    """Add ``vastkit cancel``."""
    p = commands.add(
        "cancel",
        "stop a run for good and destroy its instance",
        "Record a cancel in the ledger and the run directory. A live owner stops the run and "
        "destroys its instance at its next poll; when the owner is gone, this command destroys "
        "the run's instances itself (also with --force, when the owner runs on another host).",
        handler=_cmd_cancel,
    )
    p.add_argument("run_id", metavar="RUN", help="the run id (see `vastkit runs`)")
    p.add_argument("--reason", default="cancelled by the user", help="recorded with the cancel")
    p.add_argument(
        "--force",
        action="store_true",
        help="destroy now even when the owner may still run on another host",
    )


def _owner(metadata: Any) -> tuple[str, bool | None]:
    from vastkit._owner import owner_alive

    owner = metadata.get("owner") if isinstance(metadata, dict) else None
    if not isinstance(owner, dict):
        return "-", None
    alive = owner_alive(metadata)
    where = f"{owner.get('host', '?')}:{owner.get('pid', '?')}"
    return where, alive


def _cmd_runs(ctx: Context) -> int:
    from vastkit.cost_report import rounded_parts

    ledger = ctx.ledger
    status = None if ctx.args.all else "running"
    now = time.time()
    rows: list[dict[str, Any]] = []
    for run in ledger.runs(project=ctx.args.project, status=status):
        attempts = ledger.attempts(run.run_id)
        where, alive = _owner(dict(run.metadata))
        accrued, _ = ledger.running(run_id=run.run_id, now=now)
        rows.append(
            {
                "run_id": run.run_id,
                "name": run.name,
                "project": run.project,
                "status": run.status,
                "attempts": len(attempts),
                "spent_usd": ledger.spend(run_id=run.run_id) + accrued,
                "owner": where,
                "owner_alive": alive,
                "started": run.created_at,
                "ended": run.ended_at,
            }
        )
    if ctx.out.json_mode:
        ctx.out.json(rows)
        return ExitCode.OK
    queued = ledger.queue_counts().get("queued", 0)
    waiting = f"; {queued} queued job(s) (vastkit queue status)" if queued else ""
    if not rows:
        ctx.out.line(
            ("no running runs (vastkit runs --all lists every run)" if status else "no runs")
            + waiting
        )
        return ExitCode.OK
    spent, total = rounded_parts([r["spent_usd"] for r in rows])
    columns = ("run", "name", "project", "status", "attempts", "spent $", "owner", "age")
    table = [
        (
            r["run_id"],
            r["name"] or "-",
            r["project"] or "-",
            r["status"],
            str(r["attempts"]),
            format_money(cost),
            r["owner"] + ("" if r["owner_alive"] is not False else " (gone)"),
            format_age(now - r["started"]),
        )
        for r, cost in zip(rows, spent, strict=True)
    ]
    ctx.out.table(columns, table, right=("attempts", "spent $", "age"))
    running = sum(1 for r in rows if r["status"] == "running")
    ctx.out.line(f"{running} running of {len(rows)} shown; spent ${total:.4f} so far{waiting}")
    return ExitCode.OK


def _cmd_cancel(ctx: Context) -> int:
    from vastkit.jobs.cancel import cancel_run

    if ctx.ledger.get_run(ctx.args.run_id) is None:
        raise NoSuchId(
            f"no run {ctx.args.run_id!r} in the ledger at {ctx.ledger_target()} "
            "(`vastkit runs --all` lists them)"
        )
    try:
        result = cancel_run(
            ctx.args.run_id,
            ledger=ctx.ledger,
            client=ctx.client,
            reason=ctx.args.reason,
            force=ctx.args.force,
        )
    except JobError as exc:
        raise UsageError(str(exc)) from None
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "run_id": result.run_id,
                "outcome": result.outcome.value,
                "status": result.status,
                "destroyed": list(result.destroyed),
            }
        )
    else:
        ctx.out.line(result.message)
    return ExitCode.OK

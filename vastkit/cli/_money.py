"""Money: ``vastkit cost-report`` (what was spent, from the ledger) and ``vastkit budgets``."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from vastkit.errors import VastkitError

from ._context import Context
from ._output import ExitCode, UsageError
from ._parser import Commands

__all__ = ["register_budgets", "register_cost_report"]


def register_cost_report(commands: Commands) -> None:
    """Add ``vastkit cost-report``."""
    p = commands.add(
        "cost-report",
        "what was spent, from the ledger",
        "Group the ledger's spend. Dates are UTC: YYYY-MM-DD (an --until day is included), "
        "ISO 8601 or Unix seconds.",
        handler=_cmd_cost_report,
    )
    p.add_argument(
        "--by",
        choices=("project", "team", "job", "gpu", "day"),
        default="project",
        help="grouping (project)",
    )
    p.add_argument("--since", metavar="DATE", help="start of the window")
    p.add_argument("--until", metavar="DATE", help="end of the window")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="write CSV on stdout")
    p.add_argument("--plot", metavar="FILE", help="also draw cumulative spend into a PNG")
    p.add_argument(
        "--compare-vast",
        action="store_true",
        help="also fetch Vast's charges for the window and show the difference",
    )


def register_budgets(commands: Commands) -> None:
    """Add ``vastkit budgets validate``."""
    actions = commands.group("budgets", "validate budgets", dest="budgets_command")
    q = actions.add(
        "validate",
        "check a budgets.yaml",
        "Check a budgets.yaml; a mistake is reported with its file, line and key (exit 2).",
        handler=_cmd_budgets_validate,
    )
    q.add_argument("file", metavar="FILE", help="a budgets.yaml")


def _parse_date(text: str, *, end: bool = False) -> float:
    """``YYYY-MM-DD`` (UTC; as an end, the whole day is included), ISO 8601, or Unix seconds.

    Args:
        text: The date as given.
        end: Whether it ends a window (a bare day then means the end of that day).

    Returns:
        Unix seconds.

    Raises:
        UsageError: ``text`` is none of these.
    """
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        day = None
    if day is not None and len(value) == 10:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        if end:
            start += dt.timedelta(days=1)
        return start.timestamp()
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"cannot read {text!r} as a date: use YYYY-MM-DD, an ISO 8601 time or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _cmd_cost_report(ctx: Context) -> int:
    from vastkit.cost_report import cost_report

    args = ctx.args
    since = _parse_date(args.since) if args.since else None
    until = _parse_date(args.until, end=True) if args.until else None
    if args.csv and ctx.out.json_mode:
        raise UsageError("give --csv or --json, not both")
    if since is not None and until is not None and until < since:
        raise UsageError("--until is before --since")
    charges = None
    if args.compare_vast:
        end = until if until is not None else time.time()
        start = since if since is not None else end - 30 * 86400
        charges = ctx.client.charges(start, end)
    report = cost_report(ctx.ledger, args.by, since=since, until=until, charges=charges)
    if args.plot:
        try:
            written = report.to_png(args.plot)
        except ImportError as exc:
            raise VastkitError(str(exc)) from exc
        ctx.out.note(f"vastkit: wrote the chart to {written}")
    if args.csv:
        ctx.out.write(report.to_csv())
    elif ctx.out.json_mode:
        ctx.out.line(report.to_json())
    elif ctx.out.terminal:
        ctx.out.console.print(report.to_table())
    else:
        ctx.out.write(report.to_text())
    return ExitCode.OK


def _cmd_budgets_validate(ctx: Context) -> int:
    from vastkit.budget import load_budgets

    budgets = load_budgets(Path(ctx.args.file))
    limits = [*budgets.teams.values(), *budgets.projects.values()]
    if budgets.job is not None:
        limits.append(budgets.job)
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "file": ctx.args.file,
                "valid": True,
                "budgets": [
                    {
                        "scope": b.scope,
                        "name": b.name,
                        "limit_usd": b.limit_usd,
                        "period": b.period,
                        "team": b.team,
                        "warn_at": list(b.warn_at),
                    }
                    for b in limits
                ],
            }
        )
    else:
        ctx.out.line(f"{ctx.args.file}: OK, {len(limits)} budget(s)")
        for b in limits:
            team = f" (team {b.team})" if b.team else ""
            ctx.out.line(f"  {b.label}{team}: ${b.limit_usd:g} {b.period}")
    return ExitCode.OK

"""The account's instances: ``vastkit ps``, ``stop``, ``destroy`` and ``reap``."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from vastkit.errors import DestroyFailedError, GoneError, NotFoundError

from ._context import Context
from ._output import ExitCode, NoSuchId, UsageError, format_age, format_money
from ._parser import Commands

__all__ = [
    "no_such_instance",
    "parse_instance_id",
    "register_destroy",
    "register_ps",
    "register_reap",
    "register_stop",
    "unknown_instance",
]


def no_such_instance(instance_id: int) -> NoSuchId:
    """The error for an instance id that the account does not have (exit 9): never rented
    here, or already destroyed. ``stop``, ``start`` and ``destroy`` share this one rule."""
    return NoSuchId(
        f"no instance {instance_id} on this account (unknown id, or already destroyed; "
        "`vastkit ps` lists the instances)"
    )


@contextlib.contextmanager
def unknown_instance(instance_id: int) -> Iterator[None]:
    """Turn the API's 404/410 for ``instance_id`` into :func:`no_such_instance`."""
    try:
        yield
    except (NotFoundError, GoneError):
        raise no_such_instance(instance_id) from None


def register_ps(commands: Commands) -> None:
    """Add ``vastkit ps``."""
    p = commands.add("ps", "list the account's instances (vastkit's and others)", handler=_cmd_ps)
    p.add_argument("--ours", action="store_true", help="only instances with a vastkit/ label")


def register_stop(commands: Commands) -> None:
    """Add ``vastkit stop``."""
    p = commands.add(
        "stop", "stop an instance (GPU billing stops; storage keeps billing)", handler=_cmd_stop
    )
    p.add_argument("id", metavar="ID", help="the instance id")


def register_destroy(commands: Commands) -> None:
    """Add ``vastkit destroy``."""
    p = commands.add(
        "destroy",
        "destroy an instance (all billing stops; irreversible; no prompt)",
        handler=_cmd_destroy,
    )
    p.add_argument("id", metavar="ID", help="the instance id")


def register_reap(commands: Commands) -> None:
    """Add ``vastkit reap``."""
    p = commands.add(
        "reap",
        "reconcile the account with the ledger and destroy orphaned vastkit instances",
        "Destroy instances labelled vastkit/ that this ledger cannot account for, adopt live "
        "ones, close stale ledger rows. Instances without the vastkit/ label are never touched, "
        "and those of another ledger on the same account (a colleague's, CI's) are listed as "
        "foreign and left alone unless --foreign is given.",
        handler=_cmd_reap,
    )
    p.add_argument("--dry-run", action="store_true", help="report, change nothing")
    p.add_argument(
        "--foreign",
        action="store_true",
        help="also destroy other ledgers' vastkit/ instances (asks first; --yes to skip)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before --foreign destroys")


def parse_instance_id(text: str) -> int:
    """An instance id from the command line (a positive whole number).

    Raises:
        UsageError: ``text`` is not one.
    """
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"instance id must be a whole number, got {text!r}") from None
    if value <= 0:
        raise UsageError(f"instance id must be positive, got {value}")
    return value


def _cmd_ps(ctx: Context) -> int:
    from vastkit.labels import parse_label

    instances = ctx.client.list_instances()
    now = time.time()
    rows: list[dict[str, Any]] = []
    for inst in instances:
        parsed = parse_label(inst.label)
        if ctx.args.ours and parsed is None:
            continue
        rows.append(
            {
                "id": inst.id,
                "label": inst.label,
                "ours": parsed is not None,
                "run_id": parsed[0] if parsed else None,
                "attempt": parsed[1] if parsed else None,
                "state": inst.state.value,
                "actual_status": inst.actual_status,
                "status_msg": inst.status_msg,
                "gpu": f"{inst.num_gpus or '?'}x {inst.gpu_name}" if inst.gpu_name else None,
                "dph_total": inst.dph_total,
                "is_bid": inst.is_bid,
                "age_s": None if inst.start_date is None else round(now - inst.start_date, 1),
                "machine_id": inst.machine_id,
                "location": inst.geolocation,
            }
        )
    if ctx.out.json_mode:
        ctx.out.json({"instances": rows})
        return ExitCode.OK
    if not rows:
        ctx.out.note("vastkit: no instances")
        return ExitCode.OK
    _instance_table(ctx, rows)
    return ExitCode.OK


def _instance_table(ctx: Context, rows: list[dict[str, Any]]) -> None:
    ctx.out.table(
        ["id", "label", "state", "gpu", "$/h", "age", "machine", "location"],
        [
            [
                str(r["id"]),
                (r["label"] or "-") + ("" if r["ours"] else " (not vastkit)"),
                r["state"] + (" (bid)" if r["is_bid"] else ""),
                r["gpu"] or "-",
                format_money(r["dph_total"]),
                format_age(r["age_s"]),
                str(r["machine_id"] or "-"),
                r["location"] or "-",
            ]
            for r in rows
        ],
        title=f"{len(rows)} instance(s)",
        right=("id", "$/h", "age", "machine"),
    )


def _cmd_stop(ctx: Context) -> int:
    instance_id = parse_instance_id(ctx.args.id)
    with unknown_instance(instance_id):
        ctx.client.stop_instance(instance_id)
    if ctx.out.json_mode:
        ctx.out.json({"id": instance_id, "stopped": True})
    else:
        ctx.out.line(f"stopped instance {instance_id} (storage keeps billing until destroyed)")
    return ExitCode.OK


def _cmd_destroy(ctx: Context) -> int:
    instance_id = parse_instance_id(ctx.args.id)
    with unknown_instance(instance_id):
        destroyed = ctx.client.destroy_instance(instance_id)
    if not destroyed:  # the API answered "no such instance": the one rule for unknown ids
        raise no_such_instance(instance_id)
    if ctx.out.json_mode:
        ctx.out.json({"id": instance_id, "destroyed": True})
    else:
        ctx.out.line(f"destroyed instance {instance_id}")
    return ExitCode.OK


def _cmd_reap(ctx: Context) -> int:
    from vastkit.reconcile import reconcile

    foreign = bool(ctx.args.foreign)
    if foreign and not ctx.args.dry_run and not _foreign_confirmed(ctx):
        foreign = False
    report = reconcile(
        ctx.client, ctx.ledger, dry_run=ctx.args.dry_run, foreign=foreign, log_summary=False
    )
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "dry_run": report.dry_run,
                "listed": report.listed,
                "ours": report.ours,
                "destroyed": len(report.destroyed),
                "adopted": len(report.adopted),
                "left": len(report.left),
                "closed": len(report.closed),
                "foreign": len(report.foreign),
                "failed": len(report.failed),
                "actions": list(report.actions),
            }
        )
    else:
        ctx.out.line(report.summary())
    if report.failed:
        ids = ", ".join(str(a.instance_id) for a in report.failed)
        raise DestroyFailedError(
            f"could not confirm the destruction of instance(s) {ids}: they may still bill; "
            "run `vastkit reap` again",
            instance_id=report.failed[0].instance_id or 0,
        )
    return ExitCode.OK


def _foreign_confirmed(ctx: Context) -> bool:
    """Ask before destroying other ledgers' instances (``--yes`` answers for the user).

    Raises:
        UsageError: Nobody can be asked (standard input is not a terminal) and ``--yes`` is
            missing.
    """
    from vastkit.reconcile import reconcile

    if ctx.args.yes:
        return True
    doomed = reconcile(ctx.client, ctx.ledger, dry_run=True, log_summary=False).foreign
    if not doomed:
        return True
    if not sys.stdin.isatty():
        raise UsageError(
            f"--foreign would destroy {len(doomed)} instance(s) of other ledgers on this account "
            "(a colleague's or CI's runs); add --yes to confirm"
        )
    ids = ", ".join(str(a.instance_id) for a in doomed)
    answer = input(f"destroy {len(doomed)} instance(s) of other ledgers ({ids})? [y/N] ")
    return answer.strip().lower() in ("y", "yes")

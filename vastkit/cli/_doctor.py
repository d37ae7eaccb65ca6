"""``vastkit doctor``: the health checks of :func:`vastkit.health_check`, printed."""

from __future__ import annotations

from ._context import Context
from ._output import ExitCode
from ._parser import Commands

__all__ = ["register_doctor"]


def register_doctor(commands: Commands) -> None:
    """Add ``vastkit doctor``."""
    p = commands.add(
        "doctor",
        "check that everything is ready: key, balance, store, profiles, budgets, ledger, clock",
        "Run the health checks of `vastkit.health_check()`: the API key is accepted (and the\n"
        "balance), the store is writable with the credentials a worker would receive, the\n"
        "profiles and budgets files parse, the ledger opens and reconciles (dry run), and the\n"
        "local clock agrees with the API's. With --live, also the SSH key and registry login\n"
        "rentals get, and one offer search per profile (would a job find one now?). Every\n"
        "check is read-only: nothing is created, changed or destroyed, so it is safe with a\n"
        "real account. Each failing item says how to fix it; exit 1 if any failed.",
        handler=_cmd_doctor,
    )
    p.add_argument(
        "--env",
        metavar="NAME",
        help="the config environment (default: $VASTKIT_ENV, else the config file's default)",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="also check the SSH key and registry login, and search offers for each profile "
        "(read-only)",
    )
    p.add_argument(
        "--no-worker-probe",
        action="store_true",
        help="skip probing the store from a separate process with only the worker's credentials",
    )


def _cmd_doctor(ctx: Context) -> int:
    from vastkit.health import health_check

    args = ctx.args
    explicit = any(ctx.opt(name) is not None for name in ("url", "api_key_file", "api_key_env"))
    report = health_check(
        args.env,
        client=ctx.client if explicit else None,
        worker_probe=not args.no_worker_probe,
        live=args.live,
    )
    if ctx.out.json_mode:
        ctx.out.line(report.to_json())
    elif ctx.out.terminal:
        report.render(ctx.out.console)
    else:  # piped: plain lines, as every command
        ctx.out.line(report.to_text())
    return ExitCode.OK if report.ok else ExitCode.ERROR

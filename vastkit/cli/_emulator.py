"""The local marketplace: ``vastkit emulator serve`` and ``vastkit demo`` (which runs on it)."""

from __future__ import annotations

import contextlib

from ._context import Context
from ._output import ExitCode
from ._parser import Commands

__all__ = ["register_demo", "register_emulator"]


def register_emulator(commands: Commands) -> None:
    """Add ``vastkit emulator serve``."""
    actions = commands.group("emulator", "the local Vast marketplace", dest="emulator_command")
    q = actions.add(
        "serve",
        "serve the emulator on loopback until Ctrl-C",
        "Serve the Vast emulator; point other commands at it with --url (or VAST_URL) and "
        "VAST_API_KEY set to the key it prints.",
        handler=_cmd_emulator_serve,
    )
    q.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    q.add_argument("--port", type=int, default=8765, help="port (8765; 0 for a free one)")
    q.add_argument("--seed", type=int, default=0, help="catalog and randomness seed (0)")
    q.add_argument("--offers", type=int, default=2000, help="catalog size (2000)")
    q.add_argument("--speed", type=float, default=None, help="run time N times faster")
    q.add_argument("--credit", type=float, default=100.0, help="starting credit in $ (100)")
    q.add_argument(
        "--runner",
        choices=("scripted", "process"),
        default="process",
        help="run onstart scripts as local processes (process) or not (scripted)",
    )
    q.add_argument("--no-rate-limits", action="store_true", help="turn rate limits off")


def register_demo(commands: Commands) -> None:
    """Add ``vastkit demo``."""
    p = commands.add(
        "demo",
        "run a fault-tolerant training job on the local emulator (no account needed)",
        "Start the emulator and a local S3 store, run a small PyTorch job on an interruptible "
        "GPU, get it outbid, and watch it resume from its checkpoint on another machine.",
        handler=_cmd_demo,
    )
    p.add_argument("--seed", type=int, default=0, help="the emulator's seed (0)")
    p.add_argument(
        "--no-s3", action="store_true", help="use a local folder instead of moto's S3 server"
    )


def _cmd_emulator_serve(ctx: Context) -> int:
    from vastkit.emulator.__main__ import main as emulator_main

    args = ctx.args
    forwarded = [
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--seed",
        str(args.seed),
        "--offers",
        str(args.offers),
        "--runner",
        args.runner,
        "--credit",
        str(args.credit),
    ]
    if args.speed is not None:
        forwarded += ["--speed", str(args.speed)]
    if args.no_rate_limits:
        forwarded.append("--no-rate-limits")
    with contextlib.redirect_stdout(ctx.out.stdout):
        return emulator_main(forwarded)


def _cmd_demo(ctx: Context) -> int:
    from vastkit.demo import run_demo

    outcome = run_demo(out=ctx.out.stdout, seed=ctx.args.seed, prefer_s3=not ctx.args.no_s3)
    return ExitCode.OK if outcome.ok else ExitCode.JOB_FAILED

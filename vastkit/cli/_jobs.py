"""Jobs: ``vastkit launch`` (run a job file, in the foreground or detached) and ``vastkit logs``
(a run's logs from its store, or an instance's from the API)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vastkit.errors import VastkitError

from ._context import Context
from ._instances import unknown_instance
from ._output import ExitCode, UsageError, jsonable
from ._parser import Commands

if TYPE_CHECKING:
    from vastkit.jobs import JobEvent
    from vastkit.ledger import RunRecord
    from vastkit.rundir import RunDir

__all__ = ["register_launch", "register_logs"]

_PROGRESS_EVERY_S: Final = 10.0
"""Least seconds between two ``progress`` events printed by ``vastkit launch``."""


def register_launch(commands: Commands) -> None:
    """Add ``vastkit launch``."""
    p = commands.add(
        "launch",
        "run a job from a YAML file and follow it to the end",
        "Run a job (see the Job guide for the YAML keys): rent, watch, recover from preemption, "
        "and print the result. The exit code is 0 only when the job succeeded.",
        handler=_cmd_launch,
    )
    p.add_argument("job_file", metavar="JOB.yaml", help="the job file")
    p.add_argument(
        "--detach",
        action="store_true",
        help="run the orchestrator in the background and return at once with the run id",
    )
    p.add_argument("--budgets", metavar="FILE", help="a budgets.yaml to enforce")
    p.add_argument("--profiles", metavar="FILE", help="a gpu_profiles.yaml to resolve the profile")
    p.add_argument(
        "--run-id",
        metavar="ID",
        help="the run id; a run the ledger already knows is resumed (its live instance adopted)",
    )


def register_logs(commands: Commands) -> None:
    """Add ``vastkit logs``."""
    p = commands.add(
        "logs",
        "print a run's logs from its store, or an instance's logs from the API",
        "TARGET is a run id (its run directory is found through the ledger, --store or --job) "
        "or an instance id.",
        handler=_cmd_logs,
    )
    p.add_argument("target", metavar="RUN_OR_INSTANCE", help="a run id or an instance id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("--attempt", type=int, metavar="N", help="only this attempt of the run")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    p.add_argument("--store", metavar="URL", help="the store the run directory is under")
    p.add_argument("--job", metavar="FILE", help="take the store and its options from a job file")
    p.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="poll interval with -f"
    )


# --------------------------------------------------------------------------------------------
# launch


def _cmd_launch(ctx: Context) -> int:
    from vastkit.jobs import Job, run_job

    args = ctx.args
    job = Job.from_yaml(Path(args.job_file))
    if args.detach:
        return _launch_detached(ctx, job.name)
    result = run_job(
        job,
        client=ctx.client,
        ledger=ctx.ledger,
        on_event=_event_printer(ctx),
        budgets=args.budgets,
        profiles=args.profiles,
        run_id=args.run_id,
        progress=False,
    )
    if ctx.out.json_mode:
        doc = jsonable(result)
        doc["total_cost_usd"] = result.total_cost_usd
        doc["log_url"] = result.log_url
        ctx.out.json(doc)
    else:
        ctx.out.line(result.summary())
    if result.ok:
        return ExitCode.OK
    if result.status == "budget_exceeded":
        return ExitCode.BUDGET
    return ExitCode.JOB_FAILED


def _event_printer(ctx: Context) -> Callable[[JobEvent], None]:
    """An ``on_event`` callback that narrates a job on stderr (progress at most every 10 s)."""
    last_progress = [-math.inf]

    def on_event(event: JobEvent) -> None:
        if event.kind == "progress":
            if event.time - last_progress[0] < _PROGRESS_EVERY_S:
                return
            last_progress[0] = event.time
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        if ctx.out.err_console.is_terminal:
            ctx.out.err_console.print(f"[dim]{stamp}[/dim] {event.message}", markup=True)
        else:
            ctx.out.note(f"{stamp} {event.kind}: {event.message}")

    return on_event


def _launch_detached(ctx: Context, name: str) -> int:
    from vastkit.labels import new_run_id

    run_id = ctx.args.run_id or new_run_id()
    folder = ctx.ledger_path().parent / "orchestrators"
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{run_id}.log"
    argv = [a for a in ctx.argv if a != "--detach"]
    if ctx.args.run_id is None:
        argv += ["--run-id", run_id]
    command = [sys.executable, "-m", "vastkit.cli", *argv]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    if ctx.out.json_mode:
        ctx.out.json({"run_id": run_id, "name": name, "pid": process.pid, "log": str(log_path)})
    else:
        ctx.out.line(f"launched job {name!r} as run {run_id} (orchestrator pid {process.pid})")
        ctx.out.line(f"  orchestrator log: {log_path}")
        ctx.out.line(f"  follow it with:   vastkit logs {run_id} -f")
    return ExitCode.OK


# --------------------------------------------------------------------------------------------
# logs


def _cmd_logs(ctx: Context) -> int:
    target: str = ctx.args.target
    ledger = ctx.existing_ledger()
    run = ledger.get_run(target) if ledger is not None else None
    if run is None and ctx.args.store is None and ctx.args.job is None and target.isdigit():
        return _instance_logs(ctx, int(target))
    rundir = _find_rundir(ctx, target, run)
    if ctx.args.follow:
        return _follow_run_logs(ctx, rundir)
    return _print_run_logs(ctx, rundir, target)


def _instance_logs(ctx: Context, instance_id: int) -> int:
    tail = ctx.args.tail
    with unknown_instance(instance_id):
        text = ctx.client.instance_logs(instance_id, tail=tail)
    ctx.out.write(text if text.endswith("\n") or not text else text + "\n")
    if not ctx.args.follow:
        return ExitCode.OK
    shown = text
    while True:
        time.sleep(ctx.args.interval)
        if ctx.client.get_instance(instance_id) is None:
            ctx.out.note(f"vastkit: instance {instance_id} is gone")
            return ExitCode.OK
        text = ctx.client.instance_logs(instance_id, tail=tail)
        new = text[len(shown) :] if text.startswith(shown) else text
        if new:
            ctx.out.write(new)
        shown = text


def _find_rundir(ctx: Context, run_id: str, run: RunRecord | None) -> RunDir:
    """The run directory of ``run_id``: from ``--job``, ``--store``, or the ledger's run row."""
    from vastkit.rundir import RunDir

    options: Mapping[str, Any] = {}
    url: str | None = None
    if ctx.args.job is not None:
        from vastkit.jobs import Job

        job = Job.from_yaml(ctx.args.job)
        options = job.storage_options
        url = f"{job.store_url.rstrip('/')}/{run_id}"
    if ctx.args.store is not None:
        url = f"{ctx.args.store.rstrip('/')}/{run_id}"
    if url is None and run is not None:
        meta_url = run.metadata.get("run_url") if isinstance(run.metadata, Mapping) else None
        url = str(meta_url) if meta_url else None
    if url is None:
        where = "" if run is None else " (the ledger has no run directory for it)"
        raise UsageError(
            f"{run_id!r} is neither a run in the ledger at {ctx.ledger.path} nor an instance "
            f"id{where}; pass --store URL or --job FILE to name its store"
        )
    return RunDir(url, options)


def _attempts(ctx: Context, rundir: RunDir) -> list[int]:
    attempts = rundir.attempts()
    if ctx.args.attempt is not None:
        attempts = [a for a in attempts if a == ctx.args.attempt] or [ctx.args.attempt]
    return attempts


def _print_run_logs(ctx: Context, rundir: RunDir, run_id: str) -> int:
    attempts = _attempts(ctx, rundir)
    if not attempts:
        raise VastkitError(f"run {run_id} has no output yet at {rundir.url}")
    for number in attempts:
        if len(attempts) > 1:
            ctx.out.write(f"=== attempt {number} ===\n")
        data = rundir.read_log(number).decode("utf-8", errors="replace")
        if ctx.args.tail is not None:
            data = "\n".join(data.splitlines()[-ctx.args.tail :]) + "\n"
        ctx.out.write(data)
    return ExitCode.OK


def _follow_run_logs(ctx: Context, rundir: RunDir) -> int:
    """Print the last attempt's log as it grows, then each later attempt's, until the result."""
    attempts = _attempts(ctx, rundir)
    number = attempts[-1] if attempts else 1
    while True:
        ctx.out.write(f"=== attempt {number} ===\n")
        for chunk in rundir.follow_log(number, poll_interval=ctx.args.interval):
            ctx.out.write(chunk.decode("utf-8", errors="replace"))
        if ctx.args.attempt is not None or rundir.read_result() is not None:
            return ExitCode.OK
        while number + 1 not in rundir.attempts():
            if rundir.read_result() is not None:
                return ExitCode.OK
            time.sleep(ctx.args.interval)
        number += 1

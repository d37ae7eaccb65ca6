"""Run every vastkit benchmark, print one table, and optionally write the results as JSON.

Usage::

    python benchmarks/run.py                      # full size (by hand; several minutes)
    python benchmarks/run.py --quick              # reduced size, for CI
    python benchmarks/run.py --json results.json  # also write every figure as JSON
    python benchmarks/run.py --only offers,api    # a subset

Benchmarks (see benchmarks/README.md for what each figure means):

1. ``checkpoint``: lost training-loop time per save, time until durable, CPU, restore and extra
   peak memory of ``CheckpointManager`` against the reference pattern, DCP and raw transfers
   (``benchmarks/checkpoint.py``, run as its own process, which runs every measurement in a
   fresh process of its own);
2. ``api``: Vast API requests per hour to watch 20 jobs (``api_economy.py``);
3. ``offers``: parsing and ranking 10,000 / 50,000 offers against ``json.loads``
   (``offer_selection.py``);
4. ``preemption``: money and time of a 6-hour job under preemption, as a discrete-event
   simulation (``preemption.py``, many seeds) and ``runjob``: the real ``run_job`` in virtual time
   against the emulator's preemptions with a simulated worker (``preemption_run_job.py``);
5. ``overhead``: ``run_job`` call to the first training step (``overhead.py``).

Every figure is measured in this run; a missed target is reported with how far it is missed and
does not change the exit status. The exit status is non-zero only when a benchmark failed to run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import api_economy  # noqa: E402
import checkpoint  # noqa: E402
import offer_selection  # noqa: E402
import overhead  # noqa: E402
import preemption  # noqa: E402
import preemption_run_job  # noqa: E402

NAMES = ("checkpoint", "overhead", "preemption", "runjob", "api", "offers")
Row = tuple[str, str, str]


def run_checkpoint(quick: bool) -> dict[str, Any]:
    """Run benchmarks/checkpoint.py in its own process and read its JSON."""
    with tempfile.TemporaryDirectory(prefix="vastkit-bench-") as tmp:
        out = Path(tmp) / "checkpoint.json"
        cmd = [sys.executable, str(HERE / "checkpoint.py"), "--json", str(out)]
        if quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"benchmarks/checkpoint.py exited {proc.returncode}:\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            )
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def checkpoint_rows(result: dict[str, Any]) -> list[Row]:
    """The checkpoint benchmark's figures (min/median) and its verdicts against issue 19."""
    return checkpoint.rows_of(result)


def print_section(title: str, rows: list[Row], seconds: float) -> None:
    print(f"\n== {title} ({seconds:.1f} s)")
    width = max((len(r[0]) for r in rows), default=10)
    vwidth = max((len(r[1]) for r in rows), default=10)
    for figure, value, note in rows:
        print(f"  {figure:<{width}}  {value:>{vwidth}}  {note}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="reduced size, for CI")
    parser.add_argument("--json", dest="json_path", help="write every figure here")
    parser.add_argument(
        "--only", help=f"comma-separated subset of: {', '.join(NAMES)}", default=None
    )
    args = parser.parse_args(argv)
    selected = NAMES if args.only is None else tuple(n.strip() for n in args.only.split(","))
    unknown = [n for n in selected if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(NAMES)}")
    logging.basicConfig(level=logging.ERROR)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    started = time.perf_counter()
    mode = "quick" if args.quick else "full"
    print(
        f"vastkit benchmarks ({mode}) on {platform.node()}: {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )

    def attempt(
        name: str,
        title: str,
        fn: Callable[[], dict[str, Any]],
        rows: Callable[[dict[str, Any]], list[Row]],
    ) -> None:
        if name not in selected:
            return
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception:
            errors[name] = traceback.format_exc()
            print(f"\n== {title}: ERROR\n{errors[name]}", file=sys.stderr)
            return
        result["seconds"] = time.perf_counter() - t0
        results[name] = result
        print_section(title, rows(result), result["seconds"])

    attempt("checkpoint", "1. checkpoints", lambda: run_checkpoint(args.quick), checkpoint_rows)
    attempt(
        "overhead",
        "5. orchestration overhead (run_job, emulator, zero provisioning delay)",
        lambda: overhead.run(quick=args.quick),
        overhead.rows,
    )

    def measured() -> tuple[dict[str, Any] | None, float | None]:
        """The S3 checkpoint figures and the worker start, when those benchmarks ran."""
        ckpt = results.get("checkpoint")
        row = None
        if ckpt is not None:
            row = next((r for r in ckpt["results"] if r["backend"].startswith("s3")), None)
        worker_start = None
        over = results.get("overhead")
        if over is not None:
            fast = over["runs"]["poll_1s"]
            worker_start = max(
                0.0,
                fast["first_step_s"] - min(s["created_s"] for s in fast["samples"]),
            )
        return row, worker_start

    def preemption_run() -> dict[str, Any]:
        row, worker_start = measured()
        return preemption.run(quick=args.quick, checkpoint=row, worker_start_s=worker_start)

    def runjob_run() -> dict[str, Any]:
        row, worker_start = measured()
        return preemption_run_job.run(
            quick=args.quick,
            checkpoint=row,
            worker_start_s=worker_start if worker_start is not None else 10.0,
        )

    attempt(
        "preemption",
        "4. money under preemption (6 h job, discrete-event simulation)",
        preemption_run,
        preemption.rows,
    )
    attempt(
        "runjob",
        "4b. money under preemption (6 h job, real run_job in virtual time, simulated worker)",
        runjob_run,
        preemption_run_job.rows,
    )
    attempt(
        "api",
        "2. API economy (20 jobs, emulator rate limits on, virtual time)",
        lambda: api_economy.run(quick=args.quick),
        api_economy.rows,
    )
    attempt(
        "offers",
        "3. offer selection (emulator catalog)",
        lambda: offer_selection.run(quick=args.quick),
        offer_selection.rows,
    )
    total = time.perf_counter() - started
    missed = [
        name
        for name, r in results.items()
        if r.get("target_met") is False
        or any(not s.get("target_met", True) for s in r.get("sizes", []))
        or any(not all(x["targets"].values()) for x in r.get("results", []))
    ]
    print(f"\ntotal {total:.1f} s; targets missed in: {', '.join(missed) or 'none'}")
    if errors:
        print(f"benchmarks that failed to run: {', '.join(errors)}", file=sys.stderr)
    if args.json_path:
        doc = {
            "mode": mode,
            "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {
                "node": platform.node(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "seconds": total,
            "results": results,
            "targets_missed": missed,
            "errors": errors,
        }
        Path(args.json_path).write_text(json.dumps(doc, indent=1, default=str))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())

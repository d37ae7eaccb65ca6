"""Benchmark 5, orchestration overhead: from the ``run_job`` call to the first training step.

A real :func:`vastkit.run_job` against the emulator served on loopback HTTP with zero
provisioning and loading delay (``Timings(provision_s=0, loading_s=0)``) and the process runner:
the instance's onstart really starts ``python -m vastkit.worker``, which reads ``job.json`` from a
``file://`` run directory, unpacks the code bundle and runs the command. The command writes the
wall-clock time of its first step to a file and exits. Measured in real time:

* ``first_step_s``: the ``run_job`` call to the command's first step (the overhead);
* the breakdown from the job's events: ``created``, ``running`` (seen by the orchestrator's poll)
  and ``worker_ready`` (the first heartbeat seen);
* ``run_job_s``: the whole call, until the result is seen and the instance destroyed.

It runs with the default poll interval (15 s, what a user gets) and with a 1 s poll, since the
poll interval is a large part of the overhead.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vastkit.api.client import Client
from vastkit.clock import SystemClock
from vastkit.emulator import ProcessRunner, Timings, serve
from vastkit.jobs import Job, JobEvent, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile

PROFILE = GpuProfile(
    name="bench-4090", gpu_name="RTX_4090", max_dph=0.40, max_duration_hours=1, disk_gb=16
)
STEP_SCRIPT = """\
import os, time
open(os.environ["BENCH_FIRST_STEP"], "w").write(repr(time.time()))
print("step 0", flush=True)
"""


def once(poll: float, seed: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vastkit-bench-overhead-") as tmp:
        root = Path(tmp)
        work = root / "code"
        work.mkdir()
        (work / "step.py").write_text(STEP_SCRIPT)
        marker = root / "first_step"
        runner = ProcessRunner(root / "emulator", grace_s=5.0)
        events: list[tuple[str, float]] = []

        def on_event(event: JobEvent) -> None:
            events.append((event.kind, time.time()))

        with (
            serve(
                seed=seed,
                offers=600,
                clock=SystemClock(),
                runner=runner,
                timings=Timings(provision_s=0.0, loading_s=0.0),
            ) as emu,
            Client(emu.api_key, base_url=emu.url) as client,
            Ledger(root / "ledger.db") as ledger,
        ):
            job = Job(
                name="overhead",
                command=[sys.executable, "step.py"],
                profile=PROFILE,
                store_url=f"file://{root / 'store'}",
                workdir=str(work),
                env={"BENCH_FIRST_STEP": str(marker)},
                timeouts=JobTimeouts(poll_interval=poll, heartbeat_interval=1.0),
            )
            t0 = time.time()
            result = run_job(job, client=client, ledger=ledger, on_event=on_event, progress=False)
            t1 = time.time()
            limited = sum(1 for _, _, status in emu.requests if status == 429)
        if not result.ok:
            raise RuntimeError(f"the overhead job did not succeed: {result.summary()}")
        first = float(marker.read_text())

        def at(kind: str) -> float | None:
            return next((t - t0 for k, t in events if k == kind), None)

        return {
            "first_step_s": first - t0,
            "created_s": at("created"),
            "running_seen_s": at("running"),
            "worker_ready_seen_s": at("worker_ready"),
            "run_job_s": t1 - t0,
            "attempts": len(result.attempts),
            "rate_limited": limited,
        }


def run(*, quick: bool) -> dict[str, Any]:
    """Measure with the default 15 s poll and with a 1 s poll (median of the repeats)."""
    repeats = 1 if quick else 3
    out: dict[str, Any] = {"runs": {}}
    for poll in (JobTimeouts().poll_interval, 1.0):
        samples = [once(poll) for _ in range(repeats)]
        out["runs"][f"poll_{poll:g}s"] = {
            "poll_interval_s": poll,
            "repeats": repeats,
            "samples": samples,
            **{
                key: statistics.median(s[key] for s in samples if s[key] is not None)
                for key in ("first_step_s", "running_seen_s", "run_job_s")
            },
            "rate_limited": sum(s["rate_limited"] for s in samples),
        }
    return out


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, note) rows for the runner's table."""
    out = []
    for r in result["runs"].values():
        p = f"poll {r['poll_interval_s']:g} s"
        out += [
            (
                f"run_job -> first step ({p})",
                f"{r['first_step_s']:.2f} s",
                f"instance running seen at {r['running_seen_s']:.2f} s",
            ),
            (
                f"run_job whole call ({p})",
                f"{r['run_job_s']:.2f} s",
                f"{r['rate_limited']} 429s in {r['repeats']} run(s)",
            ),
        ]
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))

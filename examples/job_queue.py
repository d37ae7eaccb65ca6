"""A job queue: a small hyperparameter sweep, three jobs at a time, that survives restarts.

Six jobs go into a :class:`vastkit.JobQueue` (stored in the ledger, so submitting and running
may happen in different processes); the most promising learning rate gets a higher priority,
one job is cancelled before it starts, and ``queue.run()`` drives the rest three at once, each
on its own rented instance. All of them share one instance list call per poll.

By default it runs on a local Vast emulator whose instances run the worker as a real local
process. Against the real Vast.ai, set:

    VAST_API_KEY=...                       your Vast.ai API key
    VASTKIT_STORE_URL=s3://bucket/runs     where run directories go

If the script is killed while jobs run, run it again with ``--resume``: the queue adopts the
jobs whose lease expired and their live instances, and finishes them without renting twice.

The script exits non-zero unless every job that was not cancelled succeeded and, on the
emulator, no instance is left running.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from vastkit.api.client import Client
from vastkit.jobs import Job, JobTimeouts
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile
from vastkit.queue import JobQueue, QueuedJob

PROFILE = GpuProfile(
    name="sweep-4090", gpu_name="RTX_4090", max_dph=0.40, max_duration_hours=1, disk_gb=16
)
RATES = ("0.1", "0.03", "0.01", "0.003", "0.001", "0.0003")
COMMAND = (
    "import os, time; time.sleep(1); "
    "print('trained with lr', os.environ['LR'], 'loss', round(float(os.environ['LR']) * 7, 4))"
)


def sweep(store_url: str, python: str) -> list[Job]:
    """One job per learning rate."""
    return [
        Job(
            name=f"sweep-lr-{lr}",
            command=(python, "-c", COMMAND),
            profile=PROFILE,
            store_url=store_url,
            env={"LR": lr},
            project="sweeps",
            max_cost_usd=0.5,
            timeouts=JobTimeouts(
                poll_interval=1.5,
                heartbeat_interval=1.0,
                log_flush_seconds=1.0,
                stop_grace=5,
                relaunch_delay=1.0,
            ),
        )
        for lr in RATES
    ]


def fill_and_run(queue: JobQueue, store_url: str, python: str, *, resume: bool) -> bool:
    if not resume:
        ids = []
        for job in sweep(store_url, python):
            priority = 10 if job.env["LR"] == "0.01" else 0  # the promising one first
            ids.append(queue.submit(job, priority=priority))
        print(f"queued {len(ids)} jobs")
        dropped = queue.cancel(ids[-1])  # changed our mind about the smallest rate
        print(f"cancelled {dropped.job.name}: {dropped.status}")
    finished = queue.run()
    print(f"this run drove {len(finished)} job(s) to their end")
    print(f"{'job':<20} {'status':<10} {'claims':>6} {'cost':>9}  reason")
    records = queue.list()
    for record in records:
        print(
            f"{record.job.name:<20} {record.status:<10} {record.claims:>6} "
            f"${record.cost_usd:>8.4f}  {record.reason}"
        )
    print(f"instance list calls made by the queue: {queue.list_calls}")
    return all(_as_planned(r) for r in records)


def _as_planned(record: QueuedJob) -> bool:
    """Cancelled before it rented anything, or succeeded on its first instance."""
    if record.status == "cancelled":
        return record.attempts == 0
    return record.ok and record.attempts == 1


def on_real_vast(resume: bool) -> int:
    store = os.environ["VASTKIT_STORE_URL"]
    with JobQueue(concurrency=3) as queue:
        ok = fill_and_run(queue, store, "python3", resume=resume)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def on_the_emulator() -> int:
    from vastkit.emulator import ProcessRunner, Timings, serve

    with (
        tempfile.TemporaryDirectory(prefix="vastkit-queue-example-") as tmp,
        serve(
            seed=0,
            offers=400,
            runner=ProcessRunner(Path(tmp) / "containers"),
            timings=Timings(provision_s=1, loading_s=1),
        ) as emu,
        Client(emu.api_key, base_url=emu.url) as client,
        JobQueue(Path(tmp) / "ledger.db", client=client, concurrency=3) as queue,
    ):
        store = (Path(tmp) / "store").as_uri()
        ok = fill_and_run(queue, store, sys.executable, resume=False)
        leaked = len(emu.instances)
        with Ledger(Path(tmp) / "ledger.db") as ledger:
            counted = sum(ledger.spend(run_id=r.job_id) for r in queue.list())
        billed = emu.user.total_spend
        print(f"emulator: {leaked} instance(s) left running")
        print(f"the account was billed ${billed:.6f}; the ledger counted ${counted:.6f}")
        agree = abs(counted - billed) <= 0.02 * billed
        ok = ok and leaked == 0 and agree
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    real = bool(os.environ.get("VAST_API_KEY") and os.environ.get("VASTKIT_STORE_URL"))
    sys.exit(on_real_vast("--resume" in sys.argv[1:]) if real else on_the_emulator())

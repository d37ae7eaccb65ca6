"""Fault-tolerant training: checkpoint every N steps, survive a preemption, resume.

The job runs vastkit's small PyTorch training script (``python -m vastkit._demo_train``), which
restores the latest committed checkpoint, saves one every 10 steps through
``vastkit.worker.context().checkpoints``, and saves at once when the worker tells it the machine
is going away. The job rents an interruptible (bid) instance.

By default it runs on a local Vast emulator, and this script plays the market: once the first
checkpoints are committed, a competitor outbids the instance. vastkit raises the bid up to the
profile's cap, gives the machine up, rents another one, and the training resumes there from its
last checkpoint. Against the real Vast.ai (preemptions then come from the market), set:

    VAST_API_KEY=...                       your Vast.ai API key
    VASTKIT_STORE_URL=s3://bucket/runs     where run directories and checkpoints go

The script exits non-zero unless the job succeeded (and, on the emulator, resumed after the
preemption).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from vastkit.api.client import Client
from vastkit.jobs import Job, JobEvent, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile
from vastkit.rundir import CheckpointSettings, RunDir

PROFILE = GpuProfile(
    name="bid-3090",
    gpu_name="RTX_3090",
    max_dph=0.20,
    max_duration_hours=1,
    disk_gb=16,
    rental="interruptible",
)


def make_job(store_url: str, options: dict[str, Any], python: str) -> Job:
    """The training job: 50 steps, a checkpoint every 10."""
    return Job(
        name="fault-tolerant-mlp",
        command=(python, "-m", "vastkit._demo_train"),
        profile=PROFILE,
        store_url=store_url,
        storage_options=options,
        env={"DEMO_TOTAL_STEPS": "50", "DEMO_STEP_SECONDS": "0.05"},
        checkpoint=CheckpointSettings(every_steps=10, keep_last=2),
        outbid=OutbidPolicy.raise_bid(then_wait_s=2.0),
        timeouts=JobTimeouts(
            poll_interval=1.0,
            heartbeat_interval=1.0,
            log_flush_seconds=1.0,
            host_lost_grace=10,
            stop_grace=15,
            relaunch_delay=1.0,
        ),
        max_cost_usd=1.0,
    )


def on_real_vast() -> int:
    store = os.environ["VASTKIT_STORE_URL"]
    options: dict[str, Any] = {}
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        options = {
            "key": os.environ["AWS_ACCESS_KEY_ID"],
            "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        }
    result = run_job(make_job(store, options, "python3"))
    print(result.summary())
    return 0 if result.ok else 1


def on_the_emulator() -> int:
    from vastkit.emulator import ProcessRunner, Timings, serve

    with (
        tempfile.TemporaryDirectory(prefix="vastkit-example-") as tmp,
        serve(
            seed=0,
            offers=400,
            runner=ProcessRunner(Path(tmp) / "containers"),
            timings=Timings(provision_s=1, loading_s=2),
        ) as emu,
        Client(emu.api_key, base_url=emu.url) as client,
        Ledger(Path(tmp) / "ledger.db") as ledger,
    ):
        store = (Path(tmp) / "store").as_uri()
        preempted: list[int] = []
        # on_event below prints every event. vastkit also logs the notable ones (an outbid, an
        # attempt's end) at WARNING, and with no logging configured Python prints those too,
        # so each would appear twice: keep vastkit's own records to errors here.
        logging.getLogger("vastkit").setLevel(logging.ERROR)

        def on_event(event: JobEvent) -> None:
            print(f"  {event.kind:>14}: {event.message}")
            # play the market: outbid the first instance once it committed step 10
            if (
                event.kind == "checkpoint"
                and not preempted
                and (event.step or 0) >= 10
                and event.instance_id is not None
            ):
                preempted.append(event.instance_id)
                print("  >>> a competitor outbids the instance at $5/h")
                emu.preempt(event.instance_id, price=5.0)

        job = make_job(store, {}, sys.executable)
        result = run_job(job, client=client, ledger=ledger, on_event=on_event, progress=False)
        print(result.summary())
        rundir = RunDir(result.run_url)
        resumed = [
            line
            for a in result.attempts[1:]
            for line in rundir.read_log(a.attempt).decode().splitlines()
            if "resumed from checkpoint" in line
        ]
        print("\n".join(resumed) or "no attempt resumed")
        leaked = len(emu.instances)
        print(f"emulator: {leaked} instance(s) left running")
        ok = result.ok and result.preemptions >= 1 and bool(resumed) and leaked == 0
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    real = bool(os.environ.get("VAST_API_KEY") and os.environ.get("VASTKIT_STORE_URL"))
    sys.exit(on_real_vast() if real else on_the_emulator())

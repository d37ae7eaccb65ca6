"""Multi-GPU training with DDP: one process per GPU under torchrun, preempted, resumed.

The job runs this file with ``--train`` under ``Job(launcher="torchrun")`` on the
``training-distributed`` profile (4x H100 SXM), rented interruptible: the worker starts one rank
per GPU with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set.
Each rank trains a small model with DistributedDataParallel (NCCL on GPUs, gloo on CPU); rank 0
saves the replicated state every 10 steps through ``vastkit.worker.context().checkpoints``, and
every rank restores the same latest checkpoint. When the machine is going away, every rank sees
``should_stop()``; the ranks agree on the step, rank 0 saves, and all exit.

By default it runs on a local Vast emulator with 2 CPU ranks (gloo) and plays the market: once
a checkpoint is committed, a competitor outbids the instance above the profile's cap, so vastkit
rents another machine and the ranks resume there, all at the same step. Against the real
Vast.ai, set:

    VAST_API_KEY=...                       your Vast.ai API key
    VASTKIT_STORE_URL=s3://bucket/runs     where run directories and checkpoints go

(the image must have PyTorch; the GPU path, NCCL and CUDA, has not been run by vastkit's tests).
The script exits non-zero unless the job succeeded and (on the emulator) every rank resumed on
another machine at the step after the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

from vastkit.api.client import Client
from vastkit.jobs import Job, JobEvent, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import builtin_profiles
from vastkit.rundir import CheckpointSettings, RunDir

TOTAL_STEPS = 40
"""Training steps of the whole job."""


# --------------------------------------------------------------------------------------------
# The training code: what each rank runs (``python distributed_training.py --train``)


def train() -> int:
    """One rank of the DDP job. Returns its exit code."""
    import torch
    import torch.distributed as dist

    from vastkit import worker

    ctx = worker.context()  # ctx.rank, ctx.local_rank, ctx.world_size, ctx.is_main
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{ctx.local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    total = int(os.environ.get("TOTAL_STEPS", str(TOTAL_STEPS)))
    pause = float(os.environ.get("STEP_SECONDS", "0"))

    torch.manual_seed(0)  # the same initial weights on every rank
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)
    ).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if cuda else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.02, momentum=0.9)

    # Every rank restores the same latest checkpoint (rank 0 wrote it), so all start together.
    info = ctx.checkpoints.restore(model=model, optimizer=opt, map_location=device)
    start = info.step + 1 if info is not None else 0
    starts = [0] * ctx.world_size
    dist.all_gather_object(starts, start)
    if ctx.is_main:
        print(f"attempt {ctx.attempt}: {ctx.world_size} ranks start at steps {starts}", flush=True)
    if len(set(starts)) != 1:
        print(f"rank {ctx.rank}: the ranks disagree on the step: {starts}", flush=True)
        return 3

    step = start
    for step in range(start, total):
        gen = torch.Generator().manual_seed(1000 * step + ctx.rank)  # this rank's shard
        x = torch.randn(64, 32, generator=gen).to(device)
        y = x.sum(dim=1, keepdim=True).sin()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        opt.zero_grad()
        loss.backward()  # DDP averages the gradients over the ranks
        opt.step()
        worker.log_metrics(step, loss=loss.item())  # kept once, from rank 0
        if ctx.is_main and ctx.checkpoints.save(step, {"model": model, "optimizer": opt}):
            ctx.checkpoints.wait()
            ctx.report(step, checkpoint_step=step)
            print(f"step {step}: checkpoint committed (loss {loss.item():.4f})", flush=True)
        # The ranks see should_stop() at slightly different moments: any_rank=True agrees on
        # it (one all-reduce), so every rank stops after the same step.
        if worker.should_stop(any_rank=True):
            if ctx.is_main:
                ctx.checkpoints.save_now(step, {"model": model, "optimizer": opt})
                ctx.report(step, checkpoint_step=step)
                print(f"step {step}: the machine is going away; saved, all ranks stop", flush=True)
            dist.barrier()  # no rank exits before rank 0 committed the checkpoint
            break
        time.sleep(pause)
    else:
        if ctx.is_main:
            print(f"trained {total} steps", flush=True)
    ctx.close()
    dist.destroy_process_group()
    return 0


# --------------------------------------------------------------------------------------------
# The job


def make_job(store_url: str, options: dict[str, Any], python: str, **fields: Any) -> Job:
    """The DDP job: this folder is bundled and ``python distributed_training.py --train`` runs
    under torchrun, one rank per GPU (``fields`` overrides, e.g. ``nproc_per_node``)."""
    # 4x H100 SXM at up to $8/h, rented interruptible, for at most 2 hours
    profile = attrs.evolve(
        builtin_profiles()["training-distributed"], rental="interruptible", max_duration_hours=2
    )
    values: dict[str, Any] = {
        "name": "ddp-mlp",
        "command": (python, "distributed_training.py", "--train"),
        "workdir": str(Path(__file__).resolve().parent),
        "launcher": "torchrun",
        "profile": profile,
        "store_url": store_url,
        "storage_options": options,
        "checkpoint": CheckpointSettings(every_steps=10, keep_last=2),
        "max_cost_usd": 20.0,
        # move to another machine at once when outbid: four idle H100s cost more per hour than
        # the next offer's higher price (a job's default, cheapest_expected(), counts only the
        # bill and may wait up to an hour for the machine to come back)
        "outbid": OutbidPolicy.give_up(),
    }
    values.update(fields)
    return Job(**values)


def on_real_vast() -> int:
    store = os.environ["VASTKIT_STORE_URL"]
    options: dict[str, Any] = {}
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        options = {
            "key": os.environ["AWS_ACCESS_KEY_ID"],
            "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        }
    result = run_job(make_job(store, options, "python3", image="pytorch/pytorch:latest"))
    print(result.summary())
    return 0 if result.ok else 1


def on_the_emulator() -> int:
    from vastkit.emulator import ProcessRunner, Timings, serve

    with (
        tempfile.TemporaryDirectory(prefix="vastkit-example-") as tmp,
        serve(
            seed=0,
            offers=400,
            runner=ProcessRunner(Path(tmp) / "containers", grace_s=30),
            timings=Timings(provision_s=1, loading_s=1),
        ) as emu,
        Client(emu.api_key, base_url=emu.url) as client,
        Ledger(Path(tmp) / "ledger.db") as ledger,
    ):
        store = (Path(tmp) / "store").as_uri()
        preempted: list[int] = []
        logging.getLogger("vastkit").setLevel(logging.ERROR)  # on_event prints the events

        began = time.monotonic()

        def on_event(event: JobEvent) -> None:
            print(f"  {time.monotonic() - began:5.1f} s {event.kind:>14}: {event.message}")
            # play the market: outbid the first instance once it committed step 10
            if (
                event.kind == "checkpoint"
                and not preempted
                and (event.step or 0) >= 10
                and event.instance_id is not None
            ):
                preempted.append(event.instance_id)
                print("  >>> a competitor outbids the instance at $50/h (above the $8/h cap)")
                emu.preempt(event.instance_id, price=50.0)

        # The emulator's machines have no GPU: run 2 CPU ranks (gloo) instead of one per GPU.
        job = make_job(
            store,
            {},
            sys.executable,
            nproc_per_node=2,
            env={"TOTAL_STEPS": str(TOTAL_STEPS), "STEP_SECONDS": "0.05"},
            timeouts=JobTimeouts(
                poll_interval=1.0,
                heartbeat_interval=1.0,
                log_flush_seconds=1.0,
                host_lost_grace=10,
                stop_grace=30,
                relaunch_delay=1.0,
            ),
        )
        result = run_job(job, client=client, ledger=ledger, on_event=on_event, progress=False)
        print(result.summary())
        ok = check(result, RunDir(result.run_url)) and bool(preempted)
        leaked = len(emu.instances)
        print(f"emulator: {leaked} instance(s) left running")
        ok = ok and leaked == 0
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def check(result: Any, rundir: RunDir) -> bool:
    """The invariant: after the preemption every rank resumed, on another machine, at the step
    after the last checkpoint of the attempt before."""
    ok = result.ok and result.preemptions >= 1 and len(result.attempts) >= 2
    machines = [a.machine_id for a in result.attempts]
    print(f"machines: {machines}")
    ok = ok and len(set(machines)) == len(machines)
    for before, after in zip(result.attempts, result.attempts[1:], strict=False):
        log = rundir.read_log(after.attempt).decode()
        starts = re.search(r"(\d+) ranks start at steps \[([\d, ]+)\]", log)
        steps = [int(s) for s in starts.group(2).split(",")] if starts else []
        ended = rundir.read_attempt_result(before.attempt)  # what the worker wrote last
        saved = ended.checkpoint_step if ended is not None else None
        want = (saved if saved is not None else -1) + 1
        print(f"attempt {after.attempt}: ranks start at {steps}; last checkpoint {want - 1}")
        ok = ok and len(steps) == 2 and set(steps) == {want}
    return ok


if __name__ == "__main__":
    if "--train" in sys.argv[1:]:
        sys.exit(train())
    real = bool(os.environ.get("VAST_API_KEY") and os.environ.get("VASTKIT_STORE_URL"))
    sys.exit(on_real_vast() if real else on_the_emulator())

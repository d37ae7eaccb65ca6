"""A tiny DDP job (gloo, CPU) for the distributed worker tests, started by torchrun.

Each step's batch is a function of (step, rank), so a run that resumes from a checkpoint
computes the same losses as one that never stopped. Rank 0 saves the replicated state every
``EVERY`` steps through ``ctx.checkpoints``; every rank restores the same latest one.

Environment: ``TOTAL`` steps (default 8), ``EVERY`` (default 2), ``STEP_SECONDS`` (a pause per
step, default 0), ``READY_FILE`` (created by rank 0 once step ``READY_STEP`` is done),
``MARKS`` (a folder: each rank writes ``stop-rank<r>`` when it sees should_stop() and
``ctx-rank<r>`` with its context's rank fields), ``DIE_RANK``/``DIE_AT``/``DIE_CODE`` (that rank
exits with that code at that step), ``DEAF_RANK`` (that rank ignores SIGTERM: only the stop file
tells it), ``SHARDED=1`` (every rank saves and loads the DDP model's and optimizer's DCP state
dicts with ``save_sharded``/``load_sharded`` instead: one step folder, committed by rank 0).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from vastkit import worker

TOTAL = int(os.environ.get("TOTAL", "8"))
EVERY = int(os.environ.get("EVERY", "2"))
PAUSE = float(os.environ.get("STEP_SECONDS", "0"))
READY = os.environ.get("READY_FILE")
READY_STEP = int(os.environ.get("READY_STEP", "2"))
MARKS = Path(os.environ["MARKS"]) if os.environ.get("MARKS") else None
DIE_RANK = int(os.environ.get("DIE_RANK", "-1"))
DIE_AT = int(os.environ.get("DIE_AT", "1"))
DIE_CODE = int(os.environ.get("DIE_CODE", "7"))
SHARDED = os.environ.get("SHARDED") == "1"


def make_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model and its optimizer, the same on every rank (fixed seed)."""
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model = layers.double()
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s batch at ``step``: the same in every run."""
    gen = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(16, 8, generator=gen, dtype=torch.float64)
    return x, x.sum(dim=1, keepdim=True).sin()


def reference_losses(world_size: int, total: int) -> list[float]:
    """What DDP computes, in one process without a stop: the mean loss over the ranks at each
    step (DDP averages the ranks' gradients)."""
    model, opt = make_model()
    losses = []
    for step in range(total):
        opt.zero_grad()
        mean = torch.zeros((), dtype=torch.float64)
        for rank in range(world_size):
            x, y = batch(step, rank)
            loss = torch.nn.functional.mse_loss(model(x), y)
            (loss / world_size).backward()
            mean += loss.detach()
        opt.step()
        losses.append(float(mean / world_size))
    return losses


def main() -> None:
    ctx = worker.context()
    if int(os.environ.get("DEAF_RANK", "-1")) == ctx.rank:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a rank that misses the signal
    if MARKS is not None:
        fields = {
            "rank": ctx.rank,
            "local_rank": ctx.local_rank,
            "world_size": ctx.world_size,
            "is_main": ctx.is_main,
        }
        (MARKS / f"ctx-rank{ctx.rank}").write_text(json.dumps(fields))
        (MARKS / f"pid-rank{ctx.rank}").write_text(str(os.getpid()))
    dist.init_process_group("gloo")
    torch.use_deterministic_algorithms(True)
    model, opt = make_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    ckpt = ctx.checkpoints
    if SHARDED:
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        def dcp_state() -> dict[str, object]:
            model_sd, optim_sd = get_state_dict(ddp, opt)  # also makes the optimizer's state
            return {"model": model_sd, "optim": optim_sd}

        loaded = dcp_state()
        info = ckpt.load_sharded(loaded)
        if info is not None:
            set_state_dict(
                ddp, opt, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"]
            )
    else:
        info = ckpt.restore(model=model, optimizer=opt)
    start = info.step + 1 if info is not None else 0
    # every rank must resume at the same step: gather them all and compare
    starts = [0] * ctx.world_size
    dist.all_gather_object(starts, start)
    print(f"rank {ctx.rank} resumed at step {start} (all ranks: {starts})", flush=True)
    if len(set(starts)) != 1:
        sys.exit(5)

    def state() -> dict[str, object]:
        return {"model": model, "optimizer": opt}

    for step in range(start, TOTAL):
        if step == DIE_AT and ctx.rank == DIE_RANK:
            print(f"rank {ctx.rank} about to fail at step {step}", flush=True)
            sys.exit(DIE_CODE)
        x, y = batch(step, ctx.rank)
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        mean /= ctx.world_size
        worker.log_metrics(step, loss=float(mean))
        worker.log_metrics(step, all_ranks=True, local_loss=float(loss.detach()))
        if ctx.is_main:
            print(f"step {step} loss {float(mean)!r}", flush=True)
        if SHARDED:
            if ckpt.save_sharded(step, dcp_state()):  # every rank; committed when it returns
                ctx.report(step, checkpoint_step=step)
        elif ctx.is_main and ckpt.save(step, state()):
            ckpt.wait()
            ctx.report(step, checkpoint_step=step)
        dist.barrier()
        if READY and ctx.is_main and step == READY_STEP:
            Path(READY).touch()
        # stop on every rank at the same step: any rank that saw the stop tells the others
        if worker.should_stop(any_rank=True):
            if MARKS is not None:  # by now the stop reached this rank too (signal or stop file)
                (MARKS / f"stop-rank{ctx.rank}").write_text(str(worker.should_stop()))
            if SHARDED:
                if ckpt.committed_step != step:
                    ckpt.save_sharded(step, dcp_state(), force=True)
                ctx.report(step, checkpoint_step=step)
                if ctx.is_main:
                    print(f"saved step {step} on SIGTERM", flush=True)
            elif ctx.is_main:
                ckpt.save_now(step, state())
                ctx.report(step, checkpoint_step=step)
                print(f"saved step {step} on SIGTERM", flush=True)
            dist.barrier()
            print(f"rank {ctx.rank} stopped at step {step}", flush=True)
            break
        time.sleep(PAUSE)
    else:
        print(f"rank {ctx.rank} finished", flush=True)
    ckpt.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

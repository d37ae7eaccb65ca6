"""The training script of ``vastkit demo`` and the fault-tolerant example.

A tiny PyTorch MLP learns ``y = sin(x0) + x1 * x2`` from synthetic data. It resumes from the
latest committed checkpoint of the run (model, optimizer and RNG state), checkpoints through the
worker context every ``checkpoint.every_steps`` steps (from ``job.json``), saves at once and exits
when the machine is going away (``should_stop()``), and stops after ``DEMO_TOTAL_STEPS`` steps.

Run it by hand (``python -m vastkit._demo_train``) and it trains against ``./vastkit-local-run``.

Environment:
    DEMO_TOTAL_STEPS: Steps to train in all (default 60).
    DEMO_STEP_SECONDS: Extra seconds per step, to make the run long enough to interrupt
        (default 0.1).
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    """Train, resuming from the latest checkpoint; the exit status of the command."""
    import torch

    from vastkit import worker

    total = int(os.environ.get("DEMO_TOTAL_STEPS", "60"))
    pause = float(os.environ.get("DEMO_STEP_SECONDS", "0.1"))
    ctx = worker.context()
    ckpt = ctx.checkpoints
    torch.manual_seed(1234)
    model = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    info = ckpt.restore(model=model, optimizer=optimizer)
    start = info.step + 1 if info is not None else 0
    if info is not None:
        print(
            f"[train] attempt {ctx.attempt}: resumed from checkpoint step {info.step}", flush=True
        )
        ctx.report(info.step, checkpoint_step=info.step)
    else:
        print(f"[train] attempt {ctx.attempt}: no checkpoint yet, starting at step 0", flush=True)
    loss_value = float("nan")
    for step in range(start, total):
        x = torch.randn(64, 3)
        y = torch.sin(x[:, :1]) + x[:, 1:2] * x[:, 2:3]
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        loss_value = float(loss.item())
        worker.log_metrics(step, loss=loss_value)
        state = {"model": model, "optimizer": optimizer}
        if ckpt.save(step, state, metrics={"loss": loss_value}):
            ckpt.wait()
            ctx.report(step, checkpoint_step=step)
            print(f"[train] step {step}: loss {loss_value:.4f}, checkpoint committed", flush=True)
        if worker.should_stop():
            ckpt.save_now(step, state, metrics={"loss": loss_value})
            ctx.report(step, checkpoint_step=step)
            print(f"[train] step {step}: asked to stop; checkpoint saved, exiting", flush=True)
            ctx.close()
            return 0
        time.sleep(pause)
    ckpt.save_now(total - 1, {"model": model, "optimizer": optimizer}, metrics={"loss": loss_value})
    ctx.report(total - 1, checkpoint_step=total - 1)
    ctx.close()
    print(f"[train] finished {total} steps; final loss {loss_value:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

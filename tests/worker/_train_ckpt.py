"""A small PyTorch job for the worker tests: resumes from the latest checkpoint, trains until
SIGTERM (then saves and exits), or, when it resumed, trains 5 more steps and finishes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from vastkit import worker

ctx = worker.context()
ckpt = ctx.checkpoints
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
info = ckpt.restore(model=model, optimizer=opt)
start = info.step + 1 if info is not None else 0
print(f"attempt {ctx.attempt} resumed_from={info.step if info else None}", flush=True)
ready = os.environ.get("READY_FILE")
step = start
while True:
    x = torch.randn(8, 4)
    loss = ((model(x) - 1.0) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    worker.log_metrics(step, loss=loss.item())
    state = {"model": model, "optimizer": opt}
    if ckpt.save(step, state):
        ckpt.wait()
        ctx.report(step, checkpoint_step=step)
    if ready and step == start + 3:
        Path(ready).touch()
    if worker.should_stop():
        ckpt.save_now(step, state)
        ctx.report(step, checkpoint_step=step)
        print(f"saved step {step} on SIGTERM", flush=True)
        ckpt.close()
        sys.exit(0)
    if info is not None and step >= start + 5:
        ckpt.save_now(step, state)
        ckpt.close()
        print(f"finished at step {step}", flush=True)
        sys.exit(0)
    step += 1
    time.sleep(0.01)

"""A tiny training script the worker tests run as the job's command.

Behaviour from the environment: ``MODE`` is ``ok`` (3 steps, exit 0), ``fail`` (exit 3),
``loop`` (train until should_stop(), then "save" and exit 0) or ``ignore`` (ignore SIGTERM and
never stop). ``READY_FILE`` is created once the loop runs.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from vastkit import worker

mode = os.environ.get("MODE", "ok")
ctx = worker.context()
print(f"attempt={ctx.attempt} run={ctx.run_url} cwd={Path.cwd()}", flush=True)
print(f"checkpoint_url={ctx.checkpoint_url}", flush=True)
print("to stderr", file=sys.stderr, flush=True)
if mode == "ok":
    for step in range(3):
        worker.log_metrics(step, loss=1.0 / (step + 1), lr=0.1)
        print(f"step {step}", flush=True)
    ctx.report(2, checkpoint_step=2)
    sys.exit(0)
if mode == "fail":
    print("about to fail", flush=True)
    sys.exit(3)
if mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
step = 0
ready = os.environ.get("READY_FILE")
while True:
    step += 1
    ctx.report(step)
    if step == 1 and ready:
        Path(ready).touch()
    if mode == "loop" and worker.should_stop():
        print(f"should_stop at step {step}: saving", flush=True)
        worker.log_metrics(step, loss=0.5)
        ctx.report(step, checkpoint_step=step)
        sys.exit(0)
    time.sleep(0.02)

"""Driver for the SIGKILL test: forks savers and kills them at random moments.

Run as ``python _killed_saver.py <url> <seed> <rounds>``. torch is imported once here; each round
forks a child that saves checkpoints in a loop (every tensor filled with the step number) until the
driver SIGKILLs it after a random delay. After each kill the driver prints ``killed <round>`` and
waits for a line on stdin (the test verifies the store meanwhile). It prints ``done`` at the end.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

import torch

from vastkit.checkpoint import CheckpointManager


def child(url: str, round_no: int) -> None:
    mgr = CheckpointManager(url, keep_last=2, async_save=round_no % 2 == 0)
    latest = mgr.latest()
    step = 0 if latest is None else latest.step
    state = {f"t{i}": torch.zeros(64 * 1024) for i in range(8)}  # 8 x 256 KiB
    while True:
        step += 1
        for t in state.values():
            t.fill_(float(step))
        mgr.save(step, {"w": state, "step": step}, metrics={"loss": 1.0 / step})


def main() -> None:
    url, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    for round_no in range(rounds):
        pid = os.fork()
        if pid == 0:
            try:
                child(url, round_no)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.1, 0.7))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print(f"killed {round_no}", flush=True)
        if not sys.stdin.readline():
            return
    print("done", flush=True)


if __name__ == "__main__":
    main()

"""Driver for the re-save kill test: forks savers that re-save the step they restored, and kills
them at random moments in that window.

Run as ``python _killed_resaver.py <url> <storage options JSON> <seed> <trials>``. torch (and
s3fs for ``s3://``) is imported once here; each trial forks a child that restores the latest
checkpoint with ``keep_last=1`` (asynchronous saves in even trials), tells the driver it has, then
re-saves that same step over and over, moving on to the next step every third save (so pruning
with ``keep_last=1`` runs too). The driver waits until the child has finished ``trial % 4`` saves
(so every fourth trial a new step is committed, however slow the machine), then SIGKILLs it after
a random delay and prints ``killed <trial> <marker> <saves>``: ``<marker>`` is what the child was
doing when it died (``R`` re-saving the restored step, ``N`` saving a new step, ``c`` between
saves, ``r`` just restored) and ``<saves>`` how many saves it had finished; or ``crashed <trial>
<status>`` when the child died on its own. It then waits for a line on stdin (the test checks the
store meanwhile) and prints ``done`` at the end.

Every tensor of a checkpoint is filled with its step, so a reader can tell a complete state.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

import torch

from vastkit.checkpoint import CheckpointManager

TENSORS = 8
TENSOR_NUMEL = 32 * 1024  # 8 x 128 KiB
KILL_WINDOW_S = 0.25


def state_for(step: int, version: int) -> dict[str, object]:
    """The state a child saves at ``step``: every tensor filled with the step."""
    tensors = {f"t{i}": torch.full((TENSOR_NUMEL,), float(step)) for i in range(TENSORS)}
    return {"w": tensors, "step": step, "version": version}


def child(url: str, options: dict[str, object], trial: int, marks: int) -> None:
    mgr = CheckpointManager(
        url,
        storage_options=options,
        keep_last=1,
        async_save=trial % 2 == 0,
        capture_rng=False,
    )
    info = mgr.restore(restore_rng=False)
    if info is None:
        os.write(marks, b"X")  # nothing to re-save: the test fails on this marker
        return
    step = info.step
    os.write(marks, b"r")
    saves = 0
    while True:
        new_step = saves % 3 == 2
        if new_step:
            step += 1
        os.write(marks, b"N" if new_step else b"R")
        mgr.save(step, state_for(step, saves), force=True)
        mgr.wait()
        saves += 1
        os.write(marks, b"c")


def run_trial(url: str, options: dict[str, object], trial: int, delay: float) -> str:
    """Fork a saver, kill it ``delay`` seconds after its ``trial % 4``-th save (or after it
    restored); the line to print."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            child(url, options, trial, write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    marks = b""
    while (chunk := os.read(read_end, 1)) and marks.count(b"c") < trial % 4:
        marks += chunk
    marks += chunk
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    while chunk := os.read(read_end, 4096):
        marks += chunk
    os.close(read_end)
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        return f"crashed {trial} {status}"
    return f"killed {trial} {marks[-1:].decode() or '-'} {marks.count(b'c')}"


def main() -> None:
    url, options, seed, trials = (
        sys.argv[1],
        json.loads(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    torch.set_num_threads(1)
    if url.startswith("s3://"):
        import s3fs  # noqa: F401  (imported once, before the forks)
    rng = random.Random(seed)
    for trial in range(trials):
        print(run_trial(url, options, trial, rng.uniform(0.0, KILL_WINDOW_S)), flush=True)
        if not sys.stdin.readline():
            return
    print("done", flush=True)


if __name__ == "__main__":
    main()

"""Workers that are SIGKILLed in the middle of a checkpoint save.

Usage: python _saving_worker.py, then one line per round on stdin: ``URL WHERE ASYNC``. torch is
imported once; each round forks a worker and answers one JSON line: what the worker printed and
the signal that ended it. The driver SIGKILLs the worker when it prints ``MID-SAVE``.

Like the worker's command on a new attempt, each worker resumes from the latest committed checkpoint
(``RESUMED <step>``), commits the next one (``COMMITTED <step>``), then starts the save after it
and stops dead at WHERE, printing ``MID-SAVE <step>`` for the test to SIGKILL it:

- ``payload``: half of the payload object is on disk (in the temporary file of the atomic write);
- ``before_manifest``: the payload is complete, the manifest not written;
- ``manifest``: half of the manifest is on disk.

ASYNC is ``1`` for a background save (the kill lands in the upload thread).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import torch

import vastkit._store as store_layer
from vastkit.checkpoint import PAYLOAD_NAME, CheckpointManager
from vastkit.checkpoint.naming import MANIFEST_NAME, step_dirname

STEP = 10


def state(step: int) -> dict[str, Any]:
    return {"w": torch.full((4096,), float(step)), "step": step}


def worker(url: str, where: str, is_async: bool, say: Callable[[str], None]) -> None:
    def stop_dead(step: int) -> None:
        say(f"MID-SAVE {step}")
        threading.Event().wait()  # until the driver's SIGKILL

    mgr = CheckpointManager(url, async_save=is_async, keep_last=2, capture_rng=False)
    latest = mgr.latest(verify="full")
    resumed = 0 if latest is None else latest.step
    if latest is not None:
        assert int(mgr.load(latest.step)["step"]) == resumed
    say(f"RESUMED {resumed}")
    committed = resumed + STEP
    mgr.save(committed, state(committed))
    mgr.wait()
    say(f"COMMITTED {committed}")
    doomed = committed + STEP
    folder = f"/{step_dirname(doomed)}/"
    original = store_layer.atomic_local_write

    def partial(path: str, data: bytes | memoryview) -> None:
        with store_layer.atomic_local_file(path) as fh:  # the real whole write, killed half way
            fh.write(bytes(data)[: max(1, len(data) // 2)])
            fh.flush()
            os.fsync(fh.fileno())
            stop_dead(doomed)

    def hooked(path: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        if folder not in path:
            return original(path, data, durable=durable)
        name = path.rsplit("/", 1)[-1]
        if where == "payload" and name == PAYLOAD_NAME:
            partial(path, data)
        if where == "before_manifest" and name == MANIFEST_NAME:
            stop_dead(doomed)
        if where == "manifest" and name == MANIFEST_NAME:
            partial(path, data)
        return original(path, data, durable=durable)

    store_layer.atomic_local_write = hooked
    mgr.save(doomed, state(doomed))
    if is_async:
        mgr.wait()
    say("SAVED (should have been killed)")


def one_round(url: str, where: str, is_async: bool) -> dict[str, Any]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        os.close(read_end)
        out = os.fdopen(write_end, "w", buffering=1)
        try:
            worker(url, where, is_async, lambda line: print(line, file=out, flush=True))
        except BaseException as exc:
            print(f"ERROR {type(exc).__name__}: {exc}", file=out, flush=True)
        finally:
            os._exit(1)
    os.close(write_end)
    lines: list[str] = []
    with os.fdopen(read_end) as pipe:
        for line in pipe:
            lines.append(line.strip())
            if line.startswith("MID-SAVE"):
                os.kill(pid, signal.SIGKILL)
                break
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return {"lines": lines, "sigkilled": killed}


def main() -> None:
    for command in sys.stdin:
        url, where, is_async = command.split()
        print(json.dumps(one_round(url, where, is_async == "1")), flush=True)


if __name__ == "__main__":
    main()

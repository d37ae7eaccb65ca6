"""``python -m vastkit.worker._torchrun``: torchrun as the worker starts it.

It is ``python -m torch.distributed.run`` (same arguments, same ``RANK``/``LOCAL_RANK``/
``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` for each rank) with one addition: when a rank
fails, it records how (the rank, its exit code or signal, its error file's message and the last
lines of its output) in ``rank_failure.json`` of the worker's status directory, and exits with
that rank's exit code, so the attempt's result names the rank that ended it. torchrun itself
would exit 1 and print the failure as text.

It also ends with the worker: a worker killed with SIGKILL (a host that stops its container
without a grace period) sends it SIGTERM through ``PR_SET_PDEATHSIG`` (Linux), and torchrun
then stops every rank, as it does on its own SIGTERM.

Only the worker runs this module (see :mod:`vastkit.worker._launch`); it needs PyTorch.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vastkit.worker._protocol import (
    ENV_STATUS_DIR,
    ENV_WORKER_PID,
    RANK_FAILURE_FILE,
    write_json_atomic,
)

__all__ = ["die_with_parent", "exit_status", "main", "rank_log_folder", "tail_lines"]

TAIL_LINES = 20
"""How many of a failed rank's last output lines its failure record keeps."""
_TAIL_BYTES = 16 * 1024


def tail_lines(paths: Sequence[Path], lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of the files (in order; missing files are skipped)."""
    out: list[str] = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - _TAIL_BYTES))
                data = fh.read()
        except OSError:
            continue
        text = data.decode("utf-8", errors="replace")
        out.extend(line for line in text.splitlines() if line.strip())
    return out[-lines:]


def exit_status(exitcode: int) -> int:
    """A rank's exit code as this process's exit status (a signal ``-N`` becomes ``128+N``)."""
    if exitcode < 0:
        return 128 + (-exitcode)
    if 0 < exitcode < 256:
        return exitcode
    return 1


def rank_log_folder(log_dir: str | None, local_rank: int) -> Path | None:
    """The newest folder holding a local rank's ``stdout.log``/``stderr.log`` under torchrun's
    ``--log-dir`` (``<log_dir>/<run id>/attempt_<k>/<local_rank>/``)."""
    if not log_dir:
        return None
    found = [p for p in Path(log_dir).glob(f"*/attempt_*/{local_rank}") if p.is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _failure_record(rank: int, failure: Any, log_dir: str | None) -> dict[str, Any]:
    folder = rank_log_folder(log_dir, int(failure.local_rank))
    tail = tail_lines([folder / "stdout.log", folder / "stderr.log"]) if folder else []
    message = getattr(failure, "message", "")
    if not isinstance(message, str):
        message = str(message)
    if message.startswith("To enable traceback"):
        message = ""  # torchrun's hint when the rank wrote no error file: not the rank's words
    signal_name = None
    if failure.exitcode < 0:
        try:
            signal_name = signal.Signals(-failure.exitcode).name
        except ValueError:
            signal_name = f"signal {-failure.exitcode}"
    return {
        "rank": int(rank),
        "local_rank": int(failure.local_rank),
        "exit_code": int(failure.exitcode),
        "signal": signal_name,
        "pid": int(failure.pid),
        "message": message[:2000],
        "log_tail": tail,
    }


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent (the worker) dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the worker died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """Run torchrun with ``argv``; return the exit status of the first failed rank (or 0)."""
    worker = os.environ.get(ENV_WORKER_PID, "")
    if worker.isdigit():
        die_with_parent(int(worker))
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(list(sys.argv[1:] if argv is None else argv))  # type: ignore[no-untyped-call]
    try:
        run(args)  # type: ignore[no-untyped-call]
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        record = _failure_record(rank, failure, args.log_dir)
        status_dir = os.environ.get(ENV_STATUS_DIR)
        if status_dir:
            write_json_atomic(Path(status_dir) / RANK_FAILURE_FILE, record)
        how = record["signal"] or f"exit code {record['exit_code']}"
        print(f"[vastkit torchrun] rank {rank} failed with {how}", file=sys.stderr, flush=True)
        return exit_status(failure.exitcode)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())

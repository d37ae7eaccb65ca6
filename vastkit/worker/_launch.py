"""How the worker starts the command under a launcher, and what it reads back when a rank fails.

``Job(launcher="torchrun")`` reaches the worker as ``VASTKIT_LAUNCHER=torchrun`` in the job
spec's env. The worker then runs::

    python -m vastkit.worker._torchrun --standalone --nproc-per-node N \\
        --log-dir <status>/launcher-logs --tee 3 --no-python <command...>

(torchrun with a failure record, see :mod:`vastkit.worker._torchrun`). ``N`` is, in order: the
spec's ``VASTKIT_NPROC_PER_NODE`` (``Job.nproc_per_node``), the container's ``GPU_COUNT`` (Vast
and the emulator set it from the offer's ``num_gpus``), the lines of ``nvidia-smi -L``, else 1.
A string command runs as ``/bin/sh -c <command>`` in each rank.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from vastkit.errors import JobError
from vastkit.worker._protocol import (
    ENV_GPU_COUNT,
    ENV_LAUNCHER,
    ENV_NPROC_PER_NODE,
    LAUNCHER_LOG_DIR,
    RANK_FAILURE_FILE,
)

__all__ = [
    "LAUNCHERS",
    "LaunchPlan",
    "RankFailure",
    "child_pids",
    "count_gpus",
    "plan_launch",
    "read_rank_failure",
    "signal_command",
]

LAUNCHERS: tuple[str, ...] = ("torchrun",)
"""The launchers the worker knows."""


@attrs.frozen(kw_only=True)
class LaunchPlan:
    """How the worker starts a command under a launcher."""

    launcher: str
    """The launcher (``torchrun``)."""
    argv: tuple[str, ...]
    """The full command line the worker runs."""
    nproc: int
    """How many processes (ranks) it starts."""
    nproc_from: str
    """Where ``nproc`` came from, for the worker's note."""

    def describe(self) -> str:
        """``launcher torchrun: 4 process(es) (GPU_COUNT=4)``, for the worker's log."""
        return f"launcher {self.launcher}: {self.nproc} process(es) ({self.nproc_from})"


@attrs.frozen(kw_only=True)
class RankFailure:
    """How the first rank that failed ended (``rank_failure.json``)."""

    rank: int
    """Its global rank."""
    local_rank: int
    """Its rank on this machine."""
    exit_code: int
    """Its exit code; ``-N`` for signal N."""
    signal: str | None
    """The signal's name when a signal ended it."""
    message: str
    """What its error file said (``torch.distributed.elastic``'s ``@record``), or empty."""
    log_tail: tuple[str, ...]
    """Its last output lines."""

    def describe(self) -> str:
        """``rank 1 (local rank 1) exited with exit code 3``, for the attempt's result."""
        how = f"signal {self.signal}" if self.signal else f"exit code {self.exit_code}"
        return f"rank {self.rank} (local rank {self.local_rank}) exited with {how}"

    def reason(self) -> str:
        """The attempt's reason: :meth:`describe` and the rank's last 5 lines."""
        tail = " | ".join(self.log_tail[-5:])
        return self.describe() + (f"; its last lines: {tail}" if tail else "")

    def notes(self) -> list[str]:
        """The worker's notes for the attempt's log: all the last lines, and the error file."""
        notes = []
        if self.log_tail:
            lines = "".join(f"\n  {line}" for line in self.log_tail)
            notes.append(f"{self.describe()}; its last lines:{lines}")
        if self.message:
            notes.append(f"rank {self.rank}'s error: {self.message}")
        return notes


def count_gpus(
    environ: Mapping[str, str],
    *,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> tuple[int, str] | None:
    """The rental's GPU count and where it was found, or ``None`` when nothing says.

    ``GPU_COUNT`` first (Vast sets it in every container, the emulator from the offer's
    ``num_gpus``), then the ``GPU <n>:`` lines of ``nvidia-smi -L``.
    """
    raw = environ.get(ENV_GPU_COUNT, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value >= 1:
            return value, f"{ENV_GPU_COUNT}={value}"
    if shutil.which("nvidia-smi", path=environ.get("PATH")) is not None:
        try:
            done = run(
                ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        gpus = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
        if done.returncode == 0 and gpus:
            return len(gpus), f"nvidia-smi -L lists {len(gpus)}"
    return None


def plan_launch(
    command: str | Sequence[str],
    spec_env: Mapping[str, str],
    environ: Mapping[str, str],
    status_dir: Path,
    *,
    python: str,
    gpus: Callable[[Mapping[str, str]], tuple[int, str] | None] = count_gpus,
    has_torch: Callable[[], bool] | None = None,
) -> LaunchPlan | None:
    """How to start ``command``: ``None`` to run it once, else the launcher's command line.

    Args:
        command: The job's command (argv, or a string for ``/bin/sh -c``).
        spec_env: The job spec's env (where ``VASTKIT_LAUNCHER`` is).
        environ: The worker's environment (``GPU_COUNT``, ``PATH``).
        status_dir: The worker's status directory (the ranks' log folders go under it).
        python: The interpreter that runs torchrun (the worker's own).
        gpus: Counts the rental's GPUs (see :func:`count_gpus`).
        has_torch: Whether ``python`` can import torch (default: look in this interpreter).

    Raises:
        JobError: An unknown launcher, a process count that is not a whole number of at
            least 1, or a launcher whose package is missing.
    """
    launcher = (spec_env.get(ENV_LAUNCHER) or environ.get(ENV_LAUNCHER) or "").strip()
    if not launcher:
        return None
    if launcher not in LAUNCHERS:
        known = ", ".join(repr(name) for name in LAUNCHERS)
        raise JobError(f"{ENV_LAUNCHER}={launcher!r} is not a launcher the worker knows ({known})")
    raw = (spec_env.get(ENV_NPROC_PER_NODE) or environ.get(ENV_NPROC_PER_NODE) or "").strip()
    if raw:
        try:
            nproc = int(raw)
        except ValueError:
            nproc = 0
        if nproc < 1:
            raise JobError(f"{ENV_NPROC_PER_NODE}={raw!r} is not a whole number of at least 1")
        source = f"{ENV_NPROC_PER_NODE}={nproc}"
    else:
        found = gpus(environ)
        nproc, source = found if found is not None else (1, "no GPU found")
    torch_found = has_torch() if has_torch is not None else _torch_importable()
    if not torch_found:
        raise JobError(
            f"launcher {launcher!r} needs PyTorch in {python}: use an image with torch, or "
            "install it before the worker starts"
        )
    argv = list(command) if not isinstance(command, str) else ["/bin/sh", "-c", command]
    full = (
        python,
        "-m",
        "vastkit.worker._torchrun",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "--log-dir",
        str(status_dir / LAUNCHER_LOG_DIR),
        "--tee",
        "3",
        "--no-python",
        *argv,
    )
    return LaunchPlan(launcher=launcher, argv=full, nproc=nproc, nproc_from=source)


def _torch_importable() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def read_rank_failure(status_dir: Path | None) -> RankFailure | None:
    """The failure record the launcher wrapper left, or ``None`` (none, or unreadable)."""
    if status_dir is None:
        return None
    try:
        data: Any = json.loads((status_dir / RANK_FAILURE_FILE).read_text())
        return RankFailure(
            rank=int(data["rank"]),
            local_rank=int(data["local_rank"]),
            exit_code=int(data["exit_code"]),
            signal=str(data["signal"]) if data.get("signal") else None,
            message=str(data.get("message") or ""),
            log_tail=tuple(str(line) for line in data.get("log_tail") or ()),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def signal_command(pid: int, sig: signal.Signals, *, ranks: bool) -> None:
    """Signal the command's process group (``pid`` leads it); with ``ranks``, every rank's.

    torchrun starts each rank in a session of its own, so a signal to the launcher's group
    misses them. A SIGTERM goes to the ranks only (each saves and exits, and the launcher then
    ends by itself; a signalled torchrun would SIGKILL its ranks after 30 s, whatever the job's
    grace period), or to the launcher while it has no ranks yet. A SIGKILL goes to all.
    """
    children = child_pids(pid) if ranks else []
    for child in children:
        _killpg(child, sig)
    if not children or sig is not signal.SIGTERM:
        _killpg(pid, sig)


def _killpg(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``'s process group, or ``pid`` alone when it leads no group."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc``; empty where there is none)."""
    children: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses; split after the last ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and fields[1].isdigit() and int(fields[1]) == pid:
            children.append(int(entry))
    return sorted(children)

"""Who owns a run: host, process id and process start time, and whether that process lives."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

__all__ = ["owner_alive", "owner_metadata", "pid_alive", "process_start"]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host.

    A zombie (exited, not yet reaped by its parent) does not: ``kill(pid, 0)`` succeeds on it,
    but it will never act again, so the runs it owned are orphans.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    return fields is None or fields[0] not in ("Z", "X")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), if readable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def process_start(pid: int) -> str | None:
    """The start time of a process (Linux ``/proc``), to tell a reused pid from the original."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def owner_metadata() -> dict[str, Any]:
    """Who owns a run: this host, process id and process start time.

    Stored under ``"owner"`` in the run's ledger metadata; :func:`vastkit.reconcile` destroys the
    instances of a run whose owner process is gone.
    """
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": process_start(pid)}


def owner_alive(metadata: Mapping[str, Any] | None) -> bool | None:
    """Whether the process that owns a run is still running.

    Returns:
        True or False for an owner on this host; None when it cannot be told (another host,
        or no owner recorded).
    """
    owner = (metadata or {}).get("owner")
    if not isinstance(owner, Mapping):
        return None
    if owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    if not pid_alive(pid):
        return False
    started = owner.get("started")
    if started is not None:
        current = process_start(pid)
        if current is not None and current != started:
            return False  # the pid was reused by another process
    return True

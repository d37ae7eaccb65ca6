"""Subprocesses that never outlive their test.

Every child starts in a new session (so in its own process group), and :meth:`ProcessGroups.close`
SIGKILLs each group whole, so a child's own children (a forked worker, an orchestrator's helper)
die with it too, also when the test failed or timed out. Use the ``processes`` fixture in a test,
or ``with ProcessGroups() as procs:`` in a fixture of a wider scope::

    def test_x(processes: ProcessGroups) -> None:
        done = processes.run([sys.executable, str(SCRIPT)], timeout=120)

A child finds the repository (``tests._support``, ``tests.jobs._restart_job``, ``vastkit``)
through ``PYTHONPATH`` (see :func:`child_env`), whatever directory its script lives in.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import signal
import subprocess
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root (the folder holding ``vastkit/`` and ``tests/``)."""

HANG_S = 120.0
"""How long a helper waits for a child before calling it hung. It guards against a hang and
decides nothing else: no test passes or fails on how fast a child is."""


def child_env(env: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child: ``env`` (default: this process's) plus ``extra``, with the
    repository root first on ``PYTHONPATH``."""
    out = dict(os.environ if env is None else env)
    out.update(extra)
    paths = [str(REPO_ROOT), *(p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p)]
    out["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return out


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc``'s process group (a child of :class:`ProcessGroups` leads its own), reap
    ``proc`` and close its pipes. Safe to call twice."""
    _kill(proc)
    _close_pipes(proc)


def _kill(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()  # the leader, should it have left its group
    proc.wait()


def _close_pipes(proc: subprocess.Popen[Any]) -> None:
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _drain(pipe: IO[Any] | None) -> tuple[threading.Thread | None, list[Any]]:
    """Read ``pipe`` to its end on a thread (like ``communicate``)."""
    got: list[Any] = []
    if pipe is None:
        return None, got
    thread = threading.Thread(target=lambda: got.append(pipe.read()), daemon=True)
    thread.start()
    return thread, got


def _feed(pipe: IO[Any], data: str | bytes) -> None:
    """Write ``data`` to ``pipe`` and close it (on a thread: a child that reads nothing must
    not block the caller)."""
    with contextlib.suppress(OSError, ValueError):
        pipe.write(data)
        pipe.close()


_OPEN: weakref.WeakSet[ProcessGroups] = weakref.WeakSet()
"""Every :class:`ProcessGroups` not closed yet."""


@atexit.register
def _close_forgotten() -> None:
    """A safety net: kill what a helper that was never closed left running."""
    for groups in list(_OPEN):
        groups.close()


class ProcessGroups:
    """Starts children in their own process groups and kills every group at :meth:`close`."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []
        """Every child started, in order."""
        _OPEN.add(self)

    def popen(self, args: Sequence[str | os.PathLike[str]], **kwargs: Any) -> subprocess.Popen[Any]:
        """:class:`subprocess.Popen` in a new session, with :func:`child_env` (``env=`` is the
        base to extend).

        Raises:
            TypeError: ``start_new_session``, ``process_group`` or ``preexec_fn`` was given: the
                group is this helper's to choose.
        """
        for name in ("start_new_session", "process_group", "preexec_fn"):
            if name in kwargs:
                raise TypeError(f"ProcessGroups.popen chooses {name} itself")
        kwargs["env"] = child_env(kwargs.get("env"))
        proc: subprocess.Popen[Any] = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.started.append(proc)
        return proc

    def run(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        timeout: float = HANG_S,
        input: str | bytes | None = None,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """Like :func:`subprocess.run` with ``capture_output=True``; the child's whole group is
        killed when the call returns (any grandchild left behind dies) or times out.

        Raises:
            subprocess.TimeoutExpired: The child ran past ``timeout`` (a hang guard).
        """
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        if input is not None:
            kwargs["stdin"] = subprocess.PIPE
        proc = self.popen(args, **kwargs)
        readers = [_drain(proc.stdout), _drain(proc.stderr)]
        if proc.stdin is not None and input is not None:
            threading.Thread(target=_feed, args=(proc.stdin, input), daemon=True).start()
        try:
            # Wait for the child itself, not for the end of its output: a grandchild that
            # inherited the pipes would hold them open forever.
            proc.wait(timeout=timeout)
        finally:
            _kill(proc)  # whatever it left behind dies, and the pipes reach their end
            for thread, _ in readers:
                if thread is not None:
                    thread.join(HANG_S)
            _close_pipes(proc)
        out, err = (got[0] if got else None for _, got in readers)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def close(self) -> None:
        """Kill every child's process group, newest first. Idempotent."""
        while self.started:
            kill_group(self.started.pop())
        _OPEN.discard(self)

    def __enter__(self) -> ProcessGroups:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Lines:
    """The lines a child writes to a text pipe, read on a thread so that waiting for the next
    one can have a limit (a hung child fails the test instead of hanging the suite)."""

    def __init__(self, pipe: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        """Every line read so far (for failure messages)."""
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[str]) -> None:
        try:
            for line in pipe:
                self._queue.put(line.rstrip("\n"))
        except (OSError, ValueError):  # the pipe was closed under us at teardown
            pass
        finally:
            self._queue.put(None)

    def next(self, timeout: float = HANG_S) -> str | None:
        """The next line, or ``None`` at the end of the output.

        Raises:
            TimeoutError: No line and no end within ``timeout`` seconds (a hang guard).
        """
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no output for {timeout} s after {self.seen[-5:]}") from None
        if line is None:
            self._queue.put(None)  # the end stays the end
        else:
            self.seen.append(line)
        return line


@pytest.fixture
def processes() -> Iterator[ProcessGroups]:
    """Start subprocesses with it: each one's whole process group is killed at teardown."""
    with ProcessGroups() as groups:
        yield groups


__all__ = ["HANG_S", "REPO_ROOT", "Lines", "ProcessGroups", "child_env", "kill_group", "processes"]

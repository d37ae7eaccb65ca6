"""The ``processes`` helper kills a child's whole process group: after a call, at teardown, and
when the test failed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._support.processes import REPO_ROOT, Lines, ProcessGroups, child_env

WAITER = "import threading; threading.Event().wait()"
SPAWNER = (
    "import subprocess, sys, threading\n"
    f"child = subprocess.Popen([sys.executable, '-c', {WAITER!r}])\n"
    "print(child.pid, flush=True)\n"
    "if sys.argv[1] == 'wait':\n"
    "    threading.Event().wait()\n"
)
"""Starts a grandchild that waits forever, prints its pid, then exits or waits too."""


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def wait_gone(*pids: int) -> bool:
    """Whether every pid exits within 30 s (a SIGKILLed process needs a moment to go)."""
    deadline = time.monotonic() + 30.0
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_run_kills_what_the_child_left_behind(processes: ProcessGroups) -> None:
    done = processes.run([sys.executable, "-c", SPAWNER, "exit"], text=True)
    assert done.returncode == 0, done.stderr
    assert wait_gone(int(done.stdout))


def test_close_kills_each_group_whole() -> None:
    with ProcessGroups() as groups:
        proc = groups.popen(
            [sys.executable, "-c", SPAWNER, "wait"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        grandchild = int(Lines(proc.stdout).next() or "0")
        assert not gone(grandchild)
    assert proc.returncode is not None
    assert wait_gone(proc.pid, grandchild)


def test_a_failed_test_leaves_no_process(pytester: pytest.Pytester) -> None:
    pids = pytester.path / "pids"
    pytester.makepyfile(
        test_fails=f"""
import pathlib, subprocess, sys

def test_fails(processes):
    proc = processes.popen([sys.executable, "-c", {SPAWNER!r}, "wait"], stdout=subprocess.PIPE,
                           text=True)
    grandchild = proc.stdout.readline().strip()
    pathlib.Path({str(pids)!r}).write_text(f"{{proc.pid}} {{grandchild}}")
    assert False, "the test fails with both processes alive"
"""
    )
    result = pytester.runpytest("-p", "tests._support.processes")
    result.assert_outcomes(failed=1)
    child, grandchild = (int(p) for p in pids.read_text().split())
    assert wait_gone(child, grandchild)


def test_a_child_finds_the_repository() -> None:
    env = child_env({"PYTHONPATH": "/elsewhere"}, EXTRA="1")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/elsewhere"]
    assert env["EXTRA"] == "1"
    with ProcessGroups() as groups:
        done = groups.run(
            # -S: no site-packages, so no editable install's path either: PYTHONPATH alone
            [sys.executable, "-S", "-c", "import tests._support.api_factories as m; print(m.BASE)"],
            cwd="/",
            text=True,
        )
    assert done.stdout.strip() == "https://vast.test", done.stderr


def test_popen_chooses_the_group_itself(processes: ProcessGroups) -> None:
    with pytest.raises(TypeError, match="start_new_session"):
        processes.popen([sys.executable, "-c", "pass"], start_new_session=False)


def test_run_feeds_input_and_returns_the_output(processes: ProcessGroups) -> None:
    done = processes.run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
        input="hello",
        text=True,
    )
    assert (done.returncode, done.stdout) == (0, "HELLO\n")


def test_run_past_its_limit_raises_and_kills(processes: ProcessGroups) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        processes.run([sys.executable, "-c", SPAWNER, "wait"], timeout=0.5)
    (child,) = processes.started
    assert child.returncode == -9

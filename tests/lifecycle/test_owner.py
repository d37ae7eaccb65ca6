"""Who owns a run: a zombie owner counts as dead (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys

from vastkit._owner import owner_alive, owner_metadata, pid_alive


def test_this_process_is_alive_and_owns_its_runs() -> None:
    assert pid_alive(os.getpid())
    assert owner_alive({"owner": owner_metadata()}) is True


def test_a_zombie_owner_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Wait until the child has exited without reaping it: it stays a zombie.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        os.kill(child.pid, 0)  # the pid still exists...
        assert not pid_alive(child.pid)  # ...but a zombie never acts again
        meta = {"owner": {**owner_metadata(), "pid": child.pid, "started": None}}
        assert owner_alive(meta) is False
    finally:
        child.wait()
    assert not pid_alive(child.pid)


def test_an_owner_on_another_host_cannot_be_told() -> None:
    assert owner_alive({"owner": {"host": "elsewhere", "pid": 1, "started": None}}) is None
    assert owner_alive(None) is None

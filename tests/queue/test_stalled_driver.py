"""A stalled driver (a laptop asleep) loses no job and leaks no instance: fencing by lease epoch.

Driver A stops itself (SIGSTOP) at one of ten points of its first job, from before the create
intent to after the attempt's end is recorded (see ``_stall_process.py``). Its lease lapses;
driver B takes the job over; then A is woken (SIGCONT), either as soon as B's claim is seen
(``claimed``: A races B's first steps) or once B acted on the job (``acted``: a new attempt, or
the job's end). Every time: every job
succeeds, nothing is left running, no job ever has two live instances at once (by the
emulator's view, sampled all along), and the ledger's books are closed.

The emulator and the fleet run in this process; the drivers are subprocesses on one ledger file.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from tests._support.processes import HANG_S, ProcessGroups
from tests._support.waiting import wait_until
from vastkit.emulator import Emulator
from vastkit.labels import parse_label
from vastkit.ledger import Ledger
from vastkit.queue import JobQueue

from ._stall_process import POINTS
from .conftest import HERE, Fleet, make_job
from .test_processes import creates

LEASE_TTL = 1.0
"""A short lease: A's lapses soon after it stops, and B takes the job over."""

JOBS = 2


class Lines:
    """The lines of a child's stdout, read on a thread."""

    def __init__(self, pipe: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.put(line.strip())
        self._lines.put("")

    def expect(self, prefix: str) -> str:
        """The first line (from here on) that starts with ``prefix``."""
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            line = self._lines.get(timeout=HANG_S)
            self.seen.append(line)
            if line.startswith(prefix):
                return line
            if line == "":
                break
        raise AssertionError(f"no line {prefix!r}; saw {self.seen}")


class LiveWatch:
    """Samples the emulator: the most live instances each run had at once."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.most: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            counts: dict[str, int] = {}
            for view in self.emu.instances:
                parsed = parse_label(view.label)
                if parsed is not None:
                    counts[parsed[0]] = counts.get(parsed[0], 0) + 1
            for run_id, count in counts.items():
                self.most[run_id] = max(self.most.get(run_id, 0), count)
            self._stop.wait(0.01)

    def __enter__(self) -> LiveWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def driver(
    processes: ProcessGroups,
    emu: Emulator,
    ledger_path: Path,
    log: Path,
    concurrency: int,
    *point: str,
) -> subprocess.Popen[str]:
    args = [emu.url, emu.api_key, str(ledger_path), str(concurrency), str(LEASE_TTL), *point]
    with log.open("w") as err:  # the child writes its log there; this process closes its copy
        return processes.popen(
            [sys.executable, str(HERE / "_stall_process.py"), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


WAKES = ("claimed", "acted")
"""When A is woken: as soon as B claimed the job, or once B acted on it."""


@pytest.mark.parametrize("case", [(p, w) for p in POINTS for w in WAKES], ids="-".join)
def test_a_stalled_driver_loses_no_job_and_leaks_no_instance(
    case: tuple[str, str],
    emu: Emulator,
    fleet: Fleet,
    tmp_path: Path,
    processes: ProcessGroups,
) -> None:
    fleet.work_s = 0.5
    point, wake = case
    with LiveWatch(emu) as watch:
        _stall_and_wake(point, wake, emu, fleet, tmp_path, processes)
    assert all(most <= 1 for most in watch.most.values()), watch.most  # no duplicate rental


def _stall_and_wake(  # noqa: PLR0917
    point: str, wake: str, emu: Emulator, fleet: Fleet, tmp_path: Path, processes: ProcessGroups
) -> None:
    store_url = fleet.store_url
    ledger_path = tmp_path / "ledger.db"
    with JobQueue(ledger_path) as jobs:
        ids = [jobs.submit(make_job(store_url, f"job-{n}")) for n in range(JOBS)]

    a = driver(processes, emu, ledger_path, tmp_path / "a.log", 1, point)
    a_lines = Lines(a.stdout)  # type: ignore[arg-type]
    owner_a = a_lines.expect("owner ").split(" ", 1)[1]
    a_lines.expect(f"paused {point}")
    with Ledger(ledger_path) as ledger:
        (stalled,) = [e for e in ledger.queue_entries("running") if e.lease_owner == owner_a]
        job = stalled.job_id
        attempts_then = len(ledger.attempts(job))

        def lapsed() -> bool:
            entry = ledger.queue_entry(job)
            assert entry is not None
            return entry.lease_owner != owner_a or (entry.lease_expires_at or 0) < time.time()

        wait_until(lapsed, "A's lease lapsed")
        b = driver(processes, emu, ledger_path, tmp_path / "b.log", JOBS)

        def taken_over_and_moved_on() -> bool:
            assert b.poll() is None, (tmp_path / "b.log").read_text()
            entry = ledger.queue_entry(job)
            assert entry is not None
            if entry.claims < 2:
                return False
            if wake == "claimed":
                return True
            return entry.status != "running" or len(ledger.attempts(job)) > attempts_then

        # B took the job over (and acted on it: a new attempt, or the job's end): now A wakes.
        wait_until(taken_over_and_moved_on, "B took the job over")
    os.kill(a.pid, signal.SIGCONT)

    for name, proc in (("a", a), ("b", b)):
        proc.wait(timeout=HANG_S)
        assert proc.returncode == 0, (tmp_path / f"{name}.log").read_text()[-4000:]

    with JobQueue(ledger_path) as jobs:
        records = jobs.list()
    assert [r.status for r in records] == ["succeeded"] * JOBS, [r.reason for r in records]
    assert sorted(r.job_id for r in records) == sorted(ids)
    assert emu.instances == []  # nothing left running
    assert creates(emu) == JOBS  # nothing rented twice
    with Ledger(ledger_path) as ledger:
        assert ledger.pending_intents() == []
        entry = ledger.queue_entry(job)
        assert entry is not None
        assert entry.claims >= 2
        for job_id in ids:
            for attempt in ledger.attempts(job_id):
                # every instance on the books is closed (none billing unseen)
                assert attempt.instance_id is None or attempt.destroyed_at is not None, attempt

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

B_LEASE_TTL = 60.0
"""The lease of B in the pincer tests, stopped while A acts: far longer than that takes."""


class Lines:
    """The lines of a child's stdout, read on a thread."""

    def __init__(self, pipe: IO[str], log: Path) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.log = log
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.put(line.strip())
        self._lines.put("")

    def expect(self, prefix: str) -> str:
        """The first line (from here on) that starts with ``prefix``."""
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            self.seen.append(line)
            if line.startswith(prefix):
                return line
            if line == "":
                break
        log = self.log.read_text()[-6000:] if self.log.exists() else ""
        raise AssertionError(f"no line {prefix!r}; saw {self.seen}; its log ends:\n{log}")


def stopped(proc: subprocess.Popen[str]) -> None:
    """Wait until ``proc`` is stopped (it prints ``paused`` just before it stops itself)."""

    def state() -> str:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0]

    wait_until(lambda: state() == "T", f"process {proc.pid} stopped")


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
    ledger_path: str,
    log: Path,
    concurrency: int,
    *point: str,
    ttl: float = LEASE_TTL,
) -> subprocess.Popen[str]:
    args = [emu.url, emu.api_key, ledger_path, str(concurrency), str(ttl), *point]
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
    point, wake = case
    stall_and_wake(point, wake, str(tmp_path / "ledger.db"), emu, fleet, tmp_path, processes)


def stall_and_wake(  # noqa: PLR0917
    point: str,
    wake: str,
    ledger_path: str,
    emu: Emulator,
    fleet: Fleet,
    tmp_path: Path,
    processes: ProcessGroups,
) -> None:
    """Stop A at ``point``, let B take over, wake A at ``wake``; check nothing was lost or
    leaked and no job had two live instances (``ledger_path``: a SQLite path or a URL)."""
    fleet.work_s = 0.5
    with LiveWatch(emu) as watch:
        _stall_and_wake(point, wake, ledger_path, emu, fleet, tmp_path, processes)
    assert all(most <= 1 for most in watch.most.values()), watch.most  # no duplicate rental


def _stall_and_wake(  # noqa: PLR0917
    point: str,
    wake: str,
    ledger_path: str,
    emu: Emulator,
    fleet: Fleet,
    tmp_path: Path,
    processes: ProcessGroups,
) -> None:
    store_url = fleet.store_url
    with JobQueue(ledger_path) as jobs:
        ids = [jobs.submit(make_job(store_url, f"job-{n}")) for n in range(JOBS)]

    a = driver(processes, emu, ledger_path, tmp_path / "a.log", 1, point)
    a_lines = Lines(a.stdout, tmp_path / "a.log")  # type: ignore[arg-type]
    owner_a = a_lines.expect("owner ").split(" ", 1)[1]
    a_lines.expect(f"paused {point}")
    stopped(a)
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


@pytest.mark.parametrize("point", ["before_intent", "after_intent", "sending"])
def test_a_stalled_driver_woken_while_the_new_one_is_about_to_rent_writes_nothing(
    point: str, emu: Emulator, fleet: Fleet, tmp_path: Path, processes: ProcessGroups
) -> None:
    """The race of the issue, made certain: B stops too, just before its first create intent;
    A wakes and does all it will do for the job; then B goes on. Without fencing, A writes the
    intent B is about to write (B's job fails: "a create intent with label ... already exists")
    or rents beside B's instance; with it, A writes and rents nothing.

    ``sending``: A stalled after its last look at its token, with the create request about to
    go: it rents after the takeover (no fence can stop a request already on its way), sees its
    token stale when it records the instance, destroys it (confirmed) and records it on its own
    attempt, all before B goes on."""
    pincer(point, str(tmp_path / "ledger.db"), emu, fleet, tmp_path, processes)


def pincer(  # noqa: PLR0917
    point: str,
    ledger_path: str,
    emu: Emulator,
    fleet: Fleet,
    tmp_path: Path,
    processes: ProcessGroups,
) -> None:
    """A stopped at ``point``, B stopped before its first intent; A woken and done, then B."""
    fleet.work_s = 0.5
    with LiveWatch(emu) as watch:
        with JobQueue(ledger_path) as jobs:
            job = jobs.submit(make_job(fleet.store_url, "job-0"))
        a = driver(processes, emu, ledger_path, tmp_path / "a.log", 1, point)
        a_lines = Lines(a.stdout, tmp_path / "a.log")  # type: ignore[arg-type]
        a_lines.expect(f"paused {point}")
        stopped(a)
        with Ledger(ledger_path) as ledger:

            def lapsed() -> bool:
                entry = ledger.queue_entry(job)
                assert entry is not None
                return (entry.lease_expires_at or 0) < time.time()

            wait_until(lapsed, "A's lease lapsed")
        # B's own lease is long: while B is stopped, A must not take the job back
        b = driver(
            processes, emu, ledger_path, tmp_path / "b.log", 1, "before_intent", ttl=B_LEASE_TTL
        )
        b_lines = Lines(b.stdout, tmp_path / "b.log")  # type: ignore[arg-type]
        b_lines.expect("paused before_intent")
        stopped(b)
        os.kill(a.pid, signal.SIGCONT)
        a_lines.expect(f"driver ended {job}")  # A did all it does for the job
        os.kill(b.pid, signal.SIGCONT)
        for name, proc in (("a", a), ("b", b)):
            proc.wait(timeout=HANG_S)
            assert proc.returncode == 0, (tmp_path / f"{name}.log").read_text()[-4000:]
    assert all(most <= 1 for most in watch.most.values()), watch.most  # no duplicate rental
    with JobQueue(ledger_path) as jobs:
        (record,) = jobs.list()
    assert record.status == "succeeded", record.reason
    assert record.claims == 2
    assert emu.instances == []
    assert creates(emu) == (2 if point == "sending" else 1)  # B's, and A's stale one
    with Ledger(ledger_path) as ledger:
        assert ledger.pending_intents() == []
        attempts = ledger.attempts(job)
        for attempt in attempts:
            assert attempt.instance_id is None or attempt.destroyed_at is not None, attempt
    if point == "sending":
        assert attempts[0].end_reason == "superseded", attempts
        assert attempts[0].cost_usd > 0  # the storage it billed while it lived

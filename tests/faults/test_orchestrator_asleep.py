"""A laptop asleep far past ``orchestrator_timeout`` no longer ends the run.

The orchestrator runs ``run_job`` as a subprocess against a loopback emulator in this process
whose containers run their onstart (``ProcessRunner``): a real worker process. Once the worker
runs, the test SIGSTOPs the orchestrator (the lid closes) and keeps it stopped until the worker's
own heartbeats show it has seen no sign of the orchestrator for three times
``orchestrator_timeout`` (2 s here, 900 s by default; the old rule destroyed the instance at 1x),
then SIGCONTs it. The job must succeed with one attempt: the worker ran on within the job's own
limits, and the returning orchestrator carried on with the same instance.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.fault_matrix import CellRecord, record_cell
from tests._support.processes import HANG_S, Lines, ProcessGroups
from tests.faults._sleeping_orchestrator import ORCHESTRATOR_TIMEOUT, make_job
from vastkit.api.client import Client
from vastkit.emulator import Emulator, ProcessRunner, Timings
from vastkit.jobs import JobEvent, run_job
from vastkit.ledger import Ledger
from vastkit.rundir import RunDir

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("_sleeping_orchestrator.py")


@pytest.fixture
def proc_emu(tmp_path: Path) -> Iterator[Emulator]:
    runner = ProcessRunner(tmp_path / "containers", grace_s=5.0)
    with Emulator(
        0,
        offers=300,
        rate_limits=False,
        runner=runner,
        timings=Timings(provision_s=0.3, loading_s=0.3),
    ) as emu:
        emu.serve()
        yield emu


def _start(
    processes: ProcessGroups, emu: Emulator, tmp_path: Path
) -> tuple[subprocess.Popen[str], Lines, RunDir, int]:
    """Start the orchestrator and wait until its worker runs."""
    store_url = f"file://{tmp_path}/store"
    release = tmp_path / "release"
    orch = processes.popen(
        [
            sys.executable,
            str(SCRIPT),
            emu.url,
            emu.api_key,
            str(tmp_path / "ledger.db"),
            store_url,
            str(release),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert orch.stdout is not None
    lines = Lines(orch.stdout)
    ready = lines.next()
    assert ready is not None, lines.seen
    assert ready.startswith("READY "), lines.seen
    _, run_id, attempt = ready.split()
    return orch, lines, RunDir(f"{store_url}/{run_id}"), int(attempt)


def _outlast_the_old_timeout(emu: Emulator, rundir: RunDir, attempt: int) -> None:
    """Wait (a hang guard, not a deadline) for the worker's own evidence: heartbeats written 3x
    the old timeout after the orchestrator went silent, its instance still there."""
    silent_since = time.time()
    began = time.monotonic()
    while True:
        beat = rundir.read_heartbeat(attempt)
        if beat is not None and beat.time - silent_since >= 3 * ORCHESTRATOR_TIMEOUT:
            break
        assert emu.instances, "the instance was destroyed while the orchestrator was away"
        assert time.monotonic() - began < HANG_S, "the worker stopped beating"
        time.sleep(0.2)
    assert len(emu.instances) == 1, "the instance was destroyed while the orchestrator was away"


def test_orchestrator_stopped_past_its_timeout_then_resumed_succeeds_with_one_attempt(
    proc_emu: Emulator, tmp_path: Path, processes: ProcessGroups, request: pytest.FixtureRequest
) -> None:
    orch, lines, rundir, attempt = _start(processes, proc_emu, tmp_path)
    orch.send_signal(signal.SIGSTOP)
    _outlast_the_old_timeout(proc_emu, rundir, attempt)
    orch.send_signal(signal.SIGCONT)
    (tmp_path / "release").touch()

    result = lines.next()
    while result is not None and not result.startswith("RESULT "):
        result = lines.next()
    assert orch.wait(timeout=HANG_S) == 0
    leaked = len(proc_emu.instances)
    record_cell(request.node, CellRecord(cell=request.node.name, leaked=leaked))
    assert result == "RESULT succeeded 1", lines.seen
    assert leaked == 0
    log = rundir.read_log(attempt).decode("utf-8", errors="replace")
    assert "running on within the job's limits until it is back" in log
    assert "BACKSTOP" not in log


def test_orchestrator_killed_then_restarted_past_its_timeout_adopts_the_attempt(
    proc_emu: Emulator, tmp_path: Path, processes: ProcessGroups, request: pytest.FixtureRequest
) -> None:
    orch, _, rundir, attempt = _start(processes, proc_emu, tmp_path)
    orch.send_signal(signal.SIGKILL)
    assert orch.wait(timeout=HANG_S) == -signal.SIGKILL
    _outlast_the_old_timeout(proc_emu, rundir, attempt)
    [instance] = proc_emu.instances
    (tmp_path / "release").touch()
    events: list[JobEvent] = []
    job = make_job(f"file://{tmp_path}/store", str(tmp_path / "release"))
    with (
        Client(proc_emu.api_key, base_url=proc_emu.url) as client,
        Ledger(tmp_path / "ledger.db") as ledger,
    ):
        result = run_job(
            job,
            client=client,
            ledger=ledger,
            run_id=rundir.url.rsplit("/", 1)[1],
            on_event=events.append,
            progress=False,
        )
    leaked = len(proc_emu.instances)
    record_cell(request.node, CellRecord(cell=request.node.name, leaked=leaked))
    assert result.status == "succeeded", result.summary()
    assert [a.attempt for a in result.attempts] == [attempt], result.summary()
    assert result.attempts[0].instance_id == instance.id
    assert not [e for e in events if e.kind == "created"], "it rented a second instance"
    assert leaked == 0

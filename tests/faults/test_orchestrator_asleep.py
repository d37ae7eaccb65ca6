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

from tests._support.fault_matrix import CellRecord, matrix_of
from tests._support.processes import HANG_S, Lines, ProcessGroups
from tests.faults._sleeping_orchestrator import ORCHESTRATOR_TIMEOUT
from vastkit.emulator import Emulator, ProcessRunner, Timings
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


def test_orchestrator_stopped_past_its_timeout_then_resumed_succeeds_with_one_attempt(
    proc_emu: Emulator, tmp_path: Path, processes: ProcessGroups, request: pytest.FixtureRequest
) -> None:
    store_url = f"file://{tmp_path}/store"
    release = tmp_path / "release"
    orch = processes.popen(
        [
            sys.executable,
            str(SCRIPT),
            proc_emu.url,
            proc_emu.api_key,
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
    rundir = RunDir(f"{store_url}/{run_id}")

    orch.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    # Wait (a hang guard, not a deadline) for the worker's own evidence: heartbeats written 3x
    # the old timeout after the orchestrator went silent, its instance still there.
    began = time.monotonic()
    while True:
        beat = rundir.read_heartbeat(int(attempt))
        if beat is not None and beat.time - stopped_at >= 3 * ORCHESTRATOR_TIMEOUT:
            break
        assert proc_emu.instances, "the instance was destroyed while the laptop slept"
        assert time.monotonic() - began < HANG_S, "the worker stopped beating"
        time.sleep(0.2)
    assert len(proc_emu.instances) == 1, "the instance was destroyed while the laptop slept"
    orch.send_signal(signal.SIGCONT)
    release.touch()

    result = lines.next()
    while result is not None and not result.startswith("RESULT "):
        result = lines.next()
    assert orch.wait(timeout=HANG_S) == 0
    leaked = len(proc_emu.instances)
    matrix_of(request.config).record(
        request.node.nodeid, CellRecord(cell=request.node.name, leaked=leaked)
    )
    assert result == "RESULT succeeded 1", lines.seen
    assert leaked == 0
    log = rundir.read_log(int(attempt)).decode("utf-8", errors="replace")
    assert "running on within the job's limits until it is back" in log
    assert "BACKSTOP" not in log

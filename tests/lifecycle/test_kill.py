"""The orchestrator dies; nothing leaks.

The emulator serves from this process (real time, fast phases); the orchestrator runs as a
subprocess against its URL. It is killed with SIGKILL at each phase, then ``reconcile`` runs
here: no instance may be left billing, every time. SIGTERM and Ctrl-C must destroy the instance
before the process exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.processes import HANG_S, Lines, ProcessGroups, kill_group
from vastkit.api.client import Client
from vastkit.emulator import Emulator, Timings, serve
from vastkit.ledger import Ledger
from vastkit.reconcile import reconcile

SCRIPT = Path(__file__).with_name("_orchestrator.py")

pytestmark = [pytest.mark.slow, pytest.mark.faults]


@pytest.fixture
def live_emu() -> Iterator[Emulator]:
    with serve(
        seed=3, offers=300, rate_limits=False, timings=Timings(provision_s=0.3, loading_s=0.3)
    ) as emu:
        yield emu


class Orchestrator:
    """The orchestrator subprocess, in its own process group (killed whole at teardown); its
    output is read on threads, so every wait has a hang guard."""

    def __init__(self, processes: ProcessGroups, emu: Emulator, ledger: Path, point: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "VAST_API_KEY"}
        self.proc = processes.popen(
            [sys.executable, str(SCRIPT), emu.url, emu.api_key, str(ledger), point],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._out = Lines(self.proc.stdout)
        self._err = Lines(self.proc.stderr)
        self.lines = self._out.seen

    def wait_for(self, prefix: str) -> str:
        """The first line that starts with ``prefix`` (fails if the output ends first)."""
        while True:
            try:
                line = self._out.next()
            except TimeoutError:
                line = None
            if line is None:
                kill_group(self.proc)
                pytest.fail(f"orchestrator never printed {prefix!r}: {self.lines}\n{self.errors()}")
            if line.startswith(prefix):
                return line.strip()

    def finish(self) -> tuple[int, str]:
        """Wait for the process to end (a hang guard, not a deadline): its exit code and
        stderr."""
        while self._out.next() is not None:
            pass
        code = self.proc.wait(timeout=HANG_S)
        return code, self.errors()

    def errors(self) -> str:
        """Everything it wrote to stderr (up to the end, or to a hang guard)."""
        try:
            while self._err.next() is not None:
                pass
        except TimeoutError:
            pass
        return "\n".join(self._err.seen)


def reconcile_after(emu: Emulator, ledger_path: Path):  # type: ignore[no-untyped-def]
    with (
        Client(emu.api_key, base_url=emu.url, min_intervals={}) as client,
        Ledger(ledger_path) as ledger,
    ):
        report = reconcile(client, ledger)
        pending = ledger.pending_intents()
        attempts = [a for run in ledger.runs() for a in ledger.attempts(run.run_id)]
    return report, pending, attempts


@pytest.mark.parametrize(
    ("point", "expect_destroyed"),
    [
        ("before_create", 0),
        ("after_create", 1),
        ("waiting", 1),
        ("running", 1),
        ("destroying_before", 1),
        ("destroying_after", 0),
    ],
)
def test_sigkill_at_every_phase_then_reconcile_leaves_nothing_billing(
    live_emu: Emulator,
    tmp_path: Path,
    processes: ProcessGroups,
    point: str,
    expect_destroyed: int,
) -> None:
    ledger_path = tmp_path / "ledger.db"
    orch = Orchestrator(processes, live_emu, ledger_path, point)
    orch.wait_for("PAUSED")
    orch.proc.send_signal(signal.SIGKILL)
    code, _ = orch.finish()
    assert code == -signal.SIGKILL
    billing_before = len(live_emu.instances)
    assert billing_before == expect_destroyed

    report, pending, attempts = reconcile_after(live_emu, ledger_path)

    assert live_emu.instances == [], report.summary()
    assert len(report.destroyed) == expect_destroyed, report.summary()
    assert not report.failed
    assert pending == []
    assert all(a.ended_at is not None for a in attempts), attempts
    # a second reconcile finds nothing left to do
    again, _, _ = reconcile_after(live_emu, ledger_path)
    assert again.destroyed == ()
    assert again.closed == ()


def test_sigterm_destroys_before_the_process_exits(
    live_emu: Emulator, tmp_path: Path, processes: ProcessGroups
) -> None:
    ledger_path = tmp_path / "ledger.db"
    orch = Orchestrator(processes, live_emu, ledger_path, "signal")
    orch.wait_for("PAUSED")
    assert len(live_emu.instances) == 1
    orch.proc.send_signal(signal.SIGTERM)
    code, err = orch.finish()
    assert code == 128 + signal.SIGTERM, err
    assert live_emu.instances == []
    with Ledger(ledger_path) as ledger:
        (run,) = ledger.runs()
        (attempt,) = ledger.attempts(run.run_id)
    assert attempt.end_reason == "sigterm"
    assert attempt.destroyed_at is not None
    assert "LEFT" not in orch.lines


def test_sigterm_while_waiting_destroys_the_starting_instance(
    live_emu: Emulator, tmp_path: Path, processes: ProcessGroups
) -> None:
    ledger_path = tmp_path / "ledger.db"
    orch = Orchestrator(processes, live_emu, ledger_path, "waiting")
    orch.wait_for("PAUSED")
    assert len(live_emu.instances) == 1
    orch.proc.send_signal(signal.SIGTERM)
    code, err = orch.finish()
    assert code == 128 + signal.SIGTERM, err
    assert live_emu.instances == []


def test_ctrl_c_destroys_before_the_process_exits(
    live_emu: Emulator, tmp_path: Path, processes: ProcessGroups
) -> None:
    ledger_path = tmp_path / "ledger.db"
    orch = Orchestrator(processes, live_emu, ledger_path, "signal")
    orch.wait_for("PAUSED")
    orch.proc.send_signal(signal.SIGINT)
    code, err = orch.finish()
    assert code != 0
    assert "KeyboardInterrupt" in err
    assert live_emu.instances == []
    with Ledger(ledger_path) as ledger:
        (run,) = ledger.runs()
        (attempt,) = ledger.attempts(run.run_id)
    assert attempt.end_reason == "interrupted"

"""The orchestrator-died row: SIGKILL at each phase of a job, then a restart that resumes it.

The orchestrator runs as a subprocess against a loopback emulator in this process and kills
itself with SIGKILL at a phase (``_dying_orchestrator.py``). Time is virtual and belongs to the
test: the emulator runs on a :class:`~tests._support.world.HookedClock`, and the orchestrator's
clock asks the test to advance it (``SLEEP s`` on its stdout, the new time on its stdin), so the
workers, played here by the fleet after every advance, and the emulator's state machine see the
same moments on an idle or a busy machine. Then ``run_job(job, run_id=...)`` in this process
restarts the run on the same clock: it must adopt the live instance (never renting a second one
while it lives), or rent anew when there was none, take the job to its end, and leave nothing
billing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._support.fault_matrix import CellRecord, record_cell
from tests._support.processes import Lines, ProcessGroups
from tests._support.world import HookedClock
from tests.faults.conftest import Fleet, Probe, SamplingTransport, torn_checkpoints
from tests.jobs._restart_job import make_job
from vastkit.api.client import Client
from vastkit.emulator import Emulator, Timings, serve
from vastkit.jobs import JobEvent, run_job
from vastkit.ledger import Ledger

pytestmark = pytest.mark.faults

HERE = Path(__file__).parent

KILL_POINTS = (
    "searching",
    "creating_before",
    "creating_after",
    "provisioning",
    "loading",
    "worker_starting",
    "running",
    "checkpointing",
    "finishing_before_destroy",
    "finishing_after_destroy",
)

KNOWN_BUGS: dict[str, str] = {}


@pytest.fixture
def clock() -> HookedClock:
    """The test's virtual time, shared by the emulator and both orchestrators."""
    return HookedClock()


@pytest.fixture
def live_emu(clock: HookedClock) -> Iterator[Emulator]:
    with serve(
        seed=0,
        offers=300,
        rate_limits=False,
        timings=Timings(provision_s=0.3, loading_s=0.8),
        clock=clock,
    ) as emulator:
        yield emulator


def run_until_killed(
    processes: ProcessGroups, clock: HookedClock, args: list[str]
) -> tuple[int, list[str], str]:
    """Run ``_dying_orchestrator.py`` in lockstep with ``clock`` until it dies.

    Returns:
        Its exit status, its protocol lines other than ``SLEEP`` (``RUN ...``, ``DIED ...``)
        and its stderr.
    """
    proc = processes.popen(
        [sys.executable, str(HERE / "_dying_orchestrator.py"), *args, repr(clock.now())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    errors = Lines(proc.stderr)  # drained on a thread: a full pipe must not stall the child
    lines = Lines(proc.stdout)
    said: list[str] = []
    while (line := lines.next()) is not None:
        word, _, rest = line.partition(" ")
        if word != "SLEEP":
            said.append(line)
            continue
        clock.sleep(float(rest))  # the fleet and the probe run in the clock's hook
        try:
            proc.stdin.write(f"{clock.now()!r}\n")
            proc.stdin.flush()
        except BrokenPipeError:  # it died meanwhile: the next read sees the end
            pass
    returncode = proc.wait()
    while errors.next() is not None:
        pass
    return returncode, said, "\n".join(errors.seen)


@pytest.mark.parametrize(
    "point",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[p]))
        if p in KNOWN_BUGS
        else p
        for p in KILL_POINTS
    ],
)
def test_sigkill_then_restart(  # noqa: PLR0917 - pytest passes fixtures by position
    live_emu: Emulator,
    clock: HookedClock,
    processes: ProcessGroups,
    tmp_path: Path,
    point: str,
    request: pytest.FixtureRequest,
) -> None:
    emu = live_emu
    store = (tmp_path / "store").as_uri()
    ledger_path = tmp_path / "ledger.db"
    probe = Probe(emu)
    fleet = Fleet(
        emu=emu, store_url=store, total_steps=40, steps_per_second=40.0, checkpoint_every=5
    )

    def hook(now: float) -> None:  # the workers, after every advance of the virtual time
        fleet(now)
        probe.sample()

    clock.hook = hook
    returncode, said, stderr = run_until_killed(
        processes, clock, [emu.url, emu.api_key, store, str(ledger_path), point]
    )
    assert returncode == -signal.SIGKILL, stderr[-2000:]
    run_id = said[0].split()[1]
    died = next(line.split()[1] for line in said if line.startswith("DIED"))
    assert died == point, said  # virtual time: every phase is seen, on any machine
    creates_before = sum(1 for m, n, _ in emu.requests if m == "PUT" and n == "create")
    left = [v.id for v in emu.instances]

    events: list[JobEvent] = []
    with (
        httpx.HTTPTransport() as loopback,
        httpx.Client(transport=SamplingTransport(loopback, probe)) as http,
        Client(
            emu.api_key, base_url=emu.url, min_intervals={}, clock=clock, http_client=http
        ) as client,
        Ledger(ledger_path, clock=clock) as ledger,
    ):
        result = run_job(
            make_job(store),
            client=client,
            ledger=ledger,
            clock=clock,
            run_id=run_id,
            on_event=events.append,
            progress=False,
        )
        pending = ledger.pending_intents()
        run = ledger.get_run(run_id)
        open_attempts = [a for a in ledger.attempts(run_id) if a.ended_at is None]
    fleet.close()
    probe.sample()
    creates = sum(1 for m, n, _ in emu.requests if m == "PUT" and n == "create")
    record = CellRecord(
        cell=request.node.name,
        leaked=len(emu.instances),
        torn=torn_checkpoints(f"{store}/{run_id}"),
        duplicates=probe.duplicates,
    )
    record_cell(request.node, record)

    assert result.status == "succeeded", result.summary()
    assert result.run_id == run_id
    assert run is not None
    assert run.status == "succeeded"
    assert pending == []
    assert open_attempts == []
    if left:  # the dead orchestrator left an instance: adopted, or destroyed before a new one
        if died == "creating_after":
            assert creates - creates_before <= 1
        else:
            assert creates == creates_before, "a second instance was rented"
            assert "adopted" in [e.kind for e in events]
            assert [a.instance_id for a in result.attempts][-1] == left[0]
    elif died.startswith("finishing"):
        assert creates == creates_before, "a finished run was run again"
    assert record.leaked == 0, emu.instances
    assert record.torn == 0
    assert record.duplicates == 0, probe.labels
    assert fleet.max_live == 1

"""The fault matrix: a world in virtual time where faults are injected at a chosen job phase.

A cell of the matrix runs one job (:func:`vastkit.run_job`) against the in-process emulator on
a :class:`~tests._support.world.HookedClock`, with the workers played by a :class:`Fleet` (the
jobs tests' :class:`~tests._support.world.FakeWorkers` that also commits real checkpoints to the
store). A fault is armed with :meth:`FaultWorld.at`: it fires the first time the job reaches a
phase, seen from the orchestrator's events (searching, creating, provisioning, loading, worker
starting, running) or from the worker's side (checkpointing: a checkpoint is being committed;
finishing: ``result.json`` was written and the orchestrator is about to destroy).

Every cell ends with :meth:`FaultWorld.settle`, which measures four invariants against the
emulator and the store and records them in a session-wide :class:`Matrix`:

- leaked instances: instances the emulator still has after the job ended;
- torn checkpoints: manifests whose payload fails its size or SHA-256 check, or a ``latest()``
  that names one;
- budget overruns: spend above the cap plus one poll interval at the running rate;
- duplicate rentals: two live instances of one run at any sampled moment (after every API
  request and every clock sleep), or two instances that carried the same label.

At the end of the session one line sums the matrix up, and a total that is not zero fails the
run (the plugin in :mod:`tests._support.fault_matrix`, whatever order the tests ran in).
"""

from __future__ import annotations

import contextlib
import json
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attrs
import fsspec
import httpx
import pytest

from tests._support.fault_matrix import CellRecord, record_cell
from tests._support.world import BID_PROFILE, FAST, ON_DEMAND, FakeWorkers, HookedClock
from vastkit._digest import hasher
from vastkit.api.client import Client
from vastkit.checkpoint import PAYLOAD_NAME, CheckpointManager
from vastkit.checkpoint.naming import CHECKPOINTS_DIR, step_dirname
from vastkit.emulator import Emulator, Timings
from vastkit.jobs import Job, JobEvent, JobResult, run_job
from vastkit.labels import parse_label
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.rundir import ResultStatus

PHASES = (
    "searching",
    "creating",
    "provisioning",
    "loading",
    "worker_starting",
    "running",
    "checkpointing",
    "finishing",
)
"""The phases of a job, in order."""

BID = attrs.evolve(BID_PROFILE, max_duration_hours=48)
"""An interruptible profile whose worst case ($0.20/h x 48 h) fits the cells' $25 job cap."""

DEMAND = ON_DEMAND
"""An on-demand profile ($0.40/h x 24 h)."""

JOB_CAP = 25.0
"""Every cell's job cap in dollars (the budget-overrun invariant is measured against it)."""


# --------------------------------------------------------------------------------------------
# Invariants


@dataclass
class Probe:
    """Samples the emulator for duplicate rentals (two live instances of one run, or one
    label on two instances)."""

    emu: Emulator
    samples: int = 0
    duplicate_moments: int = 0
    labels: dict[str, set[int]] = field(default_factory=dict)
    max_live: int = 0
    busy: bool = False

    def sample(self) -> None:
        """Look at the live instances now."""
        if self.busy:
            return
        self.busy = True
        try:
            views = self.emu.instances
        finally:
            self.busy = False
        self.samples += 1
        runs: Counter[str] = Counter()
        for view in views:
            parsed = parse_label(view.label)
            if parsed is None or view.label is None:
                continue
            runs[parsed[0]] += 1
            self.labels.setdefault(view.label, set()).add(view.id)
        live = max(runs.values(), default=0)
        self.max_live = max(self.max_live, live)
        if live > 1:
            self.duplicate_moments += 1

    @property
    def duplicates(self) -> int:
        """Moments with two live instances of a run, plus labels carried by two instances."""
        return self.duplicate_moments + sum(1 for ids in self.labels.values() if len(ids) > 1)


def torn_checkpoints(run_url: str, storage_options: dict[str, Any] | None = None) -> int:
    """Manifests under ``<run_url>/checkpoints/`` whose payload fails verification, plus one if
    ``latest(verify="full")`` names such a checkpoint (checked independently of the manager)."""
    fs, root = fsspec.core.url_to_fs(run_url, **(storage_options or {}))
    base = f"{root.rstrip('/')}/checkpoints"
    torn = 0
    bad_steps: set[int] = set()
    try:
        folders = [str(p) for p in fs.ls(base, detail=False)]
    except FileNotFoundError:
        return 0
    for folder in folders:
        manifest_path = f"{folder.rstrip('/')}/manifest.json"
        if not fs.exists(manifest_path):
            continue
        doc = json.loads(fs.cat_file(manifest_path))
        ok = True
        for entry in doc.get("files", []):
            path = f"{folder.rstrip('/')}/{entry['name']}"
            try:
                data = bytes(fs.cat_file(path))
            except FileNotFoundError:
                ok = False
                continue
            algorithm = "blake3" if "blake3" in entry else "sha256"
            digest = hasher(algorithm)
            digest.update(data)
            if len(data) != entry["size"] or digest.hexdigest() != entry[algorithm]:
                ok = False
        if not ok:
            torn += 1
            bad_steps.add(int(doc.get("step", -1)))
    manager = CheckpointManager(run_url, storage_options=storage_options, capture_rng=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            latest = manager.latest(verify="full")
    finally:
        manager.close()
    if latest is not None and latest.step in bad_steps:
        torn += 1
    return torn


# --------------------------------------------------------------------------------------------
# The workers and the world


@dataclass
class Fleet(FakeWorkers):
    """:class:`FakeWorkers` that also commits a real (small) checkpoint to the store whenever
    it commits one as a step, and tells the world when it checkpoints or finishes."""

    on_phase: Callable[[str], None] | None = None
    managers: dict[str, CheckpointManager] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    results: int = 0
    flip_exit_after_failure: bool = False

    def manager(self, run_id: str) -> CheckpointManager:
        """The run's checkpoint manager (synchronous saves, keep 3)."""
        if run_id not in self.managers:
            self.managers[run_id] = CheckpointManager(
                f"{self.store_url}/{run_id}", async_save=False, keep_last=3, capture_rng=False
            )
        return self.managers[run_id]

    def __call__(self, now: float) -> None:
        done_before = {i for i, s in self.seats.items() if s.done}
        super().__call__(now)
        for seat in list(self.seats.values()):
            if self.committed > self.written.get(seat.run_id, 0) and self.committed > 0:
                import torch

                step = self.committed
                self.manager(seat.run_id).save(
                    step, {"w": torch.full((8,), float(step)), "step": step}
                )
                self.written[seat.run_id] = step
                if self.on_phase is not None:
                    self.on_phase("checkpointing")
        finished = [i for i, s in self.seats.items() if s.done and i not in done_before]
        if finished:
            self.results += len(finished)
            if self.exit_code != 0 and self.flip_exit_after_failure:
                self.exit_code = 0
                for seat in self.seats.values():
                    seat.done = seat.done and seat.step >= self.total_steps
            if self.on_phase is not None:
                self.on_phase("finishing")

    def torn_save(self, run_id: str, step: int) -> None:
        """A save killed half way: a partial payload object and no manifest."""
        fs, root = fsspec.core.url_to_fs(f"{self.store_url}/{run_id}")
        folder = f"{root}/{CHECKPOINTS_DIR}/{step_dirname(step)}"
        fs.pipe_file(f"{folder}/{PAYLOAD_NAME}", b"\x80\x02partial")

    def close(self) -> None:
        """Close the checkpoint managers."""
        for mgr in self.managers.values():
            mgr.close()


class SamplingTransport(httpx.BaseTransport):
    """Wraps the emulator's in-process transport: samples the probe after every request and
    can rewrite answers (``garble``) to a wrong shape."""

    def __init__(self, inner: httpx.BaseTransport, probe: Probe) -> None:
        self.inner = inner
        self.probe = probe
        self.garble: Callable[[httpx.Request, httpx.Response], httpx.Response | None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer from the emulator, then sample."""
        try:
            response = self.inner.handle_request(request)
            if self.garble is not None:
                response.read()
                replaced = self.garble(request, response)
                if replaced is not None:
                    return replaced
            return response
        finally:
            self.probe.sample()


@dataclass
class Outcome:
    """How a cell's job ended: a result, or the exception ``run_job`` raised."""

    result: JobResult | None
    error: BaseException | None


@dataclass
class FaultWorld:
    """One cell's world (see the module docstring)."""

    emu: Emulator
    clock: HookedClock
    client: Client
    ledger: Ledger
    transport: SamplingTransport
    probe: Probe
    store_url: str
    request: pytest.FixtureRequest
    events: list[JobEvent] = field(default_factory=list)
    armed: list[tuple[str, int, Callable[[], object]]] = field(default_factory=list)
    armed_events: list[tuple[str, int, Callable[[], object]]] = field(default_factory=list)
    kinds_seen: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    fleet: Fleet | None = None
    run_ids: set[str] = field(default_factory=set)
    cap: float | None = JOB_CAP
    extra_rate_dph: float = 0.0
    spend_of: Callable[[], float] | None = None

    # -- phases and faults ----------------------------------------------------------------------

    def at(self, phase: str, action: Callable[[], object], *, nth: int = 1) -> None:
        """Run ``action`` the ``nth`` time the job reaches ``phase``."""
        assert phase in PHASES, phase
        self.armed.append((phase, nth, action))

    def reached(self, phase: str) -> None:
        """The job reached ``phase``: fire what was armed for it."""
        self.seen[phase] += 1
        for item in list(self.armed):
            name, nth, action = item
            if name == phase and self.seen[phase] == nth:
                self.armed.remove(item)
                action()

    def on(self, kind: str, action: Callable[[], object], *, nth: int = 1) -> None:
        """Run ``action`` at the ``nth`` job event of ``kind`` (``relaunching``, say)."""
        self.armed_events.append((kind, nth, action))

    def on_event(self, event: JobEvent) -> None:
        """The job's ``on_event``: records, then fires what the event or its phase armed."""
        self.events.append(event)
        self.run_ids.add(event.run_id)
        self.kinds_seen[event.kind] += 1
        for item in list(self.armed_events):
            kind, nth, action = item
            if kind == event.kind and self.kinds_seen[kind] == nth:
                self.armed_events.remove(item)
                action()
        phase = {
            "searching": "searching",
            "offer_chosen": "creating",
            "created": "provisioning",
            "running": "worker_starting",
            "worker_ready": "running",
        }.get(event.kind)
        if event.kind == "phase" and event.message.endswith(": loading"):
            phase = "loading"
        if phase is not None:
            self.reached(phase)

    def workers(self, **options: Any) -> Fleet:
        """Start the fleet (the workers' side), driven by every clock sleep."""
        fleet = Fleet(emu=self.emu, store_url=self.store_url, **options)
        fleet.on_phase = self.reached
        self.fleet = fleet

        def hook(now: float) -> None:
            fleet(now)
            self.probe.sample()

        self.clock.hook = hook
        return fleet

    def live(self) -> list[int]:
        """Ids of the live instances carrying a vastkit label."""
        return [v.id for v in self.emu.instances if parse_label(v.label) is not None]

    def current(self) -> int:
        """The one live instance of the job (the fault's target)."""
        (instance_id,) = self.live()
        return instance_id

    # -- running --------------------------------------------------------------------------------

    def job(self, **overrides: Any) -> Job:
        """A cell's job: interruptible, fast virtual-time deadlines, a $25 cap."""
        values: dict[str, Any] = {
            "name": "fault-cell",
            "command": "python train.py",
            "profile": BID,
            "store_url": self.store_url,
            "timeouts": FAST,
            "max_attempts": 60,
            "outbid": OutbidPolicy.raise_bid(then_wait_s=20.0),
            "max_cost_usd": JOB_CAP,
        }
        values.update(overrides)
        if values["max_cost_usd"] is None:
            self.cap = None
        else:
            self.cap = float(values["max_cost_usd"])
        return Job(**values)

    def run(self, job: Job, **kwargs: Any) -> Outcome:
        """``run_job`` in this world; an exception is returned, not raised."""
        if self.fleet is None:
            self.workers()
        kwargs.setdefault("progress", False)
        try:
            result = run_job(
                job,
                client=self.client,
                ledger=self.ledger,
                clock=self.clock,
                on_event=self.on_event,
                **kwargs,
            )
        except Exception as exc:
            return Outcome(None, exc)
        self.run_ids.add(result.run_id)
        return Outcome(result, None)

    def kinds(self) -> list[str]:
        """The kinds of the job's events so far."""
        return [e.kind for e in self.events]

    def creates(self) -> int:
        """Create requests the emulator answered (any status)."""
        return sum(1 for m, name, _ in self.emu.requests if m == "PUT" and name == "create")

    # -- invariants -----------------------------------------------------------------------------

    def settle(self, *, poll_rate_dph: float | None = None) -> CellRecord:
        """Measure the four invariants now, record them for the summary and return them.

        Args:
            poll_rate_dph: The running rate for the one-poll allowance over the cap (default:
                the profile's cap plus ``extra_rate_dph``).
        """
        self.probe.sample()
        leaked = len(self.emu.instances)
        torn = sum(torn_checkpoints(f"{self.store_url}/{r}") for r in sorted(self.run_ids))
        overruns = 0
        if self.cap is not None:
            spent = self.spend_of() if self.spend_of is not None else self.emu.user.total_spend
            rate = (poll_rate_dph if poll_rate_dph is not None else 0.45) + self.extra_rate_dph
            if spent > self.cap + rate * FAST.poll_interval / 3600.0 + 1e-9:
                overruns = 1
        record = CellRecord(
            cell=self.request.node.name,
            leaked=leaked,
            torn=torn,
            overruns=overruns,
            duplicates=self.probe.duplicates,
        )
        record_cell(self.request.node, record)
        return record

    def assert_invariants(self, **kwargs: Any) -> CellRecord:
        """:meth:`settle`, then assert every invariant is zero."""
        record = self.settle(**kwargs)
        assert record.leaked == 0, f"leaked instances: {self.emu.instances}"
        assert record.torn == 0, "a torn checkpoint is visible"
        assert record.overruns == 0, "the spend passed the cap by more than one poll"
        assert record.duplicates == 0, f"duplicate rentals: {self.probe.labels}"
        assert self.ledger.pending_intents() == [], "a create intent was left open"
        return record


def succeeded(outcome: Outcome) -> JobResult:
    """The result of a job that must have succeeded."""
    assert outcome.error is None, repr(outcome.error)
    assert outcome.result is not None
    assert outcome.result.status == "succeeded", outcome.result.summary()
    return outcome.result


def ended(outcome: Outcome, status: str) -> JobResult:
    """The result of a job that must have ended with ``status``."""
    assert outcome.error is None, repr(outcome.error)
    assert outcome.result is not None
    assert outcome.result.status == status, outcome.result.summary()
    return outcome.result


def reasons(result: JobResult) -> list[str | None]:
    """Each attempt's end reason."""
    return [a.end_reason for a in result.attempts]


@pytest.fixture
def store_url() -> Iterator[str]:
    """A fresh memory:// run store."""
    url = f"memory://faults-{uuid.uuid4().hex[:10]}"
    try:
        yield url
    finally:
        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)


@pytest.fixture
def world_factory(
    request: pytest.FixtureRequest, tmp_path: Path, store_url: str
) -> Iterator[Callable[..., FaultWorld]]:
    """Builds a cell's world: in-process emulator, ManualClock, memory store.

    Keyword arguments: ``rate_limits`` (the emulator's, default off) and ``pacing`` (the
    client's documented per-endpoint pacing, default off).
    """
    with contextlib.ExitStack() as stack:
        worlds: list[FaultWorld] = []

        def build(*, rate_limits: bool = False, pacing: bool = False) -> FaultWorld:
            clock = HookedClock()
            emu = stack.enter_context(
                Emulator(
                    seed=0,
                    clock=clock,
                    offers=400,
                    rate_limits=rate_limits,
                    timings=Timings(provision_s=10, loading_s=30),
                )
            )
            probe = Probe(emu)
            transport = SamplingTransport(emu.transport, probe)
            http = stack.enter_context(httpx.Client(transport=transport))
            client = stack.enter_context(
                Client(
                    emu.api_key,
                    base_url=emu.url,
                    clock=clock,
                    max_retries=2,
                    min_intervals=None if pacing else {},
                    http_client=http,
                )
            )
            ledger = stack.enter_context(Ledger(tmp_path / f"ledger-{len(worlds)}.db", clock=clock))
            world = FaultWorld(
                emu=emu,
                clock=clock,
                client=client,
                ledger=ledger,
                transport=transport,
                probe=probe,
                store_url=store_url,
                request=request,
            )
            worlds.append(world)
            return world

        try:
            yield build
        finally:
            for world in worlds:
                if world.fleet is not None:
                    world.fleet.close()


@pytest.fixture
def fault_world(world_factory: Callable[..., FaultWorld]) -> FaultWorld:
    """A cell's world with no rate limits and no client pacing."""
    return world_factory()


__all__ = [
    "BID",
    "DEMAND",
    "FAST",
    "JOB_CAP",
    "PHASES",
    "CellRecord",
    "FaultWorld",
    "Fleet",
    "Outcome",
    "Probe",
    "ResultStatus",
    "ended",
    "reasons",
    "succeeded",
    "torn_checkpoints",
]

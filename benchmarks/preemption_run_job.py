"""Benchmark 4b, money under preemption with the real ``run_job`` in virtual time.

The orchestrator is the real :func:`vastkit.run_job` (search, select, create, phase deadlines,
one list per poll, heartbeat reading, the default outbid policy, relaunch, destroy, ledger
costs) against the emulator with its scripted runner and random preemptions
(``preemption_mtbp_s``), all on one :class:`~vastkit.clock.ManualClock`. The scripted runner
runs no process, so a simulated worker stands in for ``python -m vastkit.worker``: whenever the
emulator has an instance of the run ``running``, the simulated worker starts (worker start +
checkpoint restore), trains at a fixed step time, saves checkpoints by the strategy (a checkpoint
counts once its upload has committed), writes ``heartbeat.json`` into the run directory every
10 s and ``result.json`` at the last step. When the emulator takes the GPUs away (its
``client:outbid`` event, at the exact virtual time), the worker dies and its progress since the
last committed checkpoint is lost. Costs are what the emulator billed the account.

Strategies: ``ideal`` (no preemption), ``vastkit`` (``every_steps="auto"``, plus a save when the
worker forwards SIGTERM if stall + upload fit in Vast's 10 s stop grace, as the demo training
script does with ``worker.should_stop()``), ``vastkit`` without that save (full mode), and
``reference`` (sync saves every 500 steps, nothing on SIGTERM), all with ``run_job``'s default
outbid policy (move at once to another offer, the bid never raised); and ``vastkit`` with
``OutbidPolicy.raise_bid(then_wait_s=120)`` (raise the bid up to the profile's cap, wait 120 s at
the cap, then move), the default before 2026-11-28. Restarting from
scratch is left to the discrete-event simulation (``preemption.py``): at MTBP 1 h it runs for
days of virtual time.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs

from vastkit.api.client import Client
from vastkit.checkpoint.naming import auto_interval_steps
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator
from vastkit.jobs import Job, run_job
from vastkit.labels import parse_label
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import get_profile
from vastkit.rundir import AttemptResult, Heartbeat, Phase, ResultStatus, RunDir

HEARTBEAT_S = 10.0
STOP_GRACE_S = 10.0
"""Seconds between SIGTERM and SIGKILL when Vast stops a container (docker stop's default)."""


class WorldClock(ManualClock):
    """A ManualClock whose sleeps advance in slices, running the simulated workers after each."""

    def __init__(self, quantum: float = 5.0) -> None:
        super().__init__()
        self.quantum = quantum
        self.hook: Any = None

    def sleep(self, seconds: float) -> None:
        while seconds > 1e-9:
            part = min(seconds, self.quantum)
            super().sleep(part)
            seconds -= part
            if self.hook is not None:
                self.hook()


@dataclass
class _Container:
    attempt: int
    up_since: float
    ready_at: float
    base: int


@dataclass
class Strategy:
    """How the simulated training checkpoints."""

    name: str
    every: int | None
    stall: float
    upload: float
    restore: float
    save_on_stop: bool = False
    """The training saves at once when the worker forwards SIGTERM (``worker.should_stop()``)."""


class SimWorkers:
    """Stands in for the worker on every running instance of the run."""

    def __init__(
        self,
        emu: Emulator,
        clock: WorldClock,
        store: str,
        *,
        total_steps: int,
        step_s: float,
        worker_start_s: float,
        strategy: Strategy,
    ) -> None:
        self.emu, self.clock, self.store = emu, clock, store
        self.total, self.step_s, self.start_s = total_steps, step_s, worker_start_s
        self.s = strategy
        self.durable = 0
        self.up: dict[int, _Container] = {}
        self.last_beat: dict[int, float] = {}
        self.rundirs: dict[str, RunDir] = {}
        self.done = False
        self.preempted_at: list[float] = []
        self.resumed_at: list[float] = []
        self._events_seen = 0
        self.run_of: dict[int, str] = {}
        self.bids: dict[int, list[float]] = {}
        """The GPU price of each instance, every time it changed (bid raises)."""

    def _progress(self, c: _Container, t: float) -> tuple[int, int]:
        """(current step, committed step) of container ``c`` at time ``t``."""
        if t < c.ready_at:
            return c.base, self.durable
        elapsed = t - c.ready_at
        s = self.s
        if s.every is None:
            return min(self.total, c.base + int(elapsed / self.step_s)), 0
        period = s.every * self.step_s + s.stall
        j = int(elapsed // period)
        rem = elapsed - j * period
        cur = c.base + j * s.every + min(int(rem / self.step_s), s.every)
        committed = c.base
        for k in range(j, max(j - 2, 0), -1):
            if c.ready_at + k * period + s.upload <= t:
                committed = c.base + k * s.every
                break
        return min(cur, self.total), min(committed, self.total)

    def _end_time(self, c: _Container) -> float:
        todo = self.total - c.base
        saves = 0 if self.s.every is None else (todo - 1) // self.s.every
        return c.ready_at + todo * self.step_s + saves * self.s.stall

    def _rundir(self, run_id: str) -> RunDir:
        if run_id not in self.rundirs:
            self.rundirs[run_id] = RunDir(f"{self.store}/{run_id}", clock=self.clock)
        return self.rundirs[run_id]

    def _stop(self, iid: int, at: float, run_id: str | None) -> None:
        """The container was stopped at ``at`` (SIGTERM, then SIGKILL after the grace)."""
        c = self.up.pop(iid)
        if self.done:
            return
        cur, committed = self._progress(c, at)
        if self.s.every is None:
            committed = 0
        elif (
            self.s.save_on_stop
            and at >= c.ready_at
            and self.s.stall + self.s.upload <= (STOP_GRACE_S)
        ):
            committed = cur  # saved on SIGTERM, committed within the grace period
        self.durable = committed
        self.preempted_at.append(at)
        if run_id is not None:
            self._rundir(run_id).write_attempt_result(
                AttemptResult(
                    attempt=c.attempt,
                    status=ResultStatus.PREEMPTED,
                    exit_code=-15,
                    ended_at=at,
                    step=cur,
                    checkpoint_step=committed or None,
                    reason="the machine was taken away (SIGTERM)",
                )
            )

    def __call__(self) -> None:
        self.emu.tick()
        now = self.clock.now()
        events = self.emu.events
        outbid = {iid: t for t, kind, iid in events[self._events_seen :] if kind == "client:outbid"}
        self._events_seen = len(events)
        live = {}
        for view in self.emu.instances:
            parsed = parse_label(view.label)
            if parsed is not None:
                live[view.id] = (view, parsed)
        for iid in list(self.up):
            view_parsed = live.get(iid)
            running = view_parsed is not None and (
                view_parsed[0].actual_status == "running" and view_parsed[0].cur_state == "running"
            )
            if not running:
                run_id = self.run_of.get(iid)
                self._stop(iid, outbid.get(iid, now), run_id)
        if self.done:
            return
        for iid, (view, (run_id, attempt)) in live.items():
            self.run_of[iid] = run_id
            self.bids.setdefault(iid, [])
            if not self.bids[iid] or self.bids[iid][-1] != view.price:
                self.bids[iid].append(view.price)
            if view.actual_status != "running" or view.cur_state != "running":
                continue
            c = self.up.get(iid)
            if c is None:
                started = float(self.emu.instance_json(iid).get("start_date") or now)
                restore = self.s.restore if self.durable > 0 else 0.0
                c = _Container(attempt, started, started + self.start_s + restore, self.durable)
                self.up[iid] = c
                if self.preempted_at:
                    self.resumed_at.append(c.ready_at)
            rundir = self._rundir(run_id)
            end = self._end_time(c)
            if now >= end:
                cur, committed = self.total, self._progress(c, end)[1]
                rundir.write_heartbeat(
                    Heartbeat(
                        attempt=attempt,
                        time=now,
                        phase=Phase.FINISHED,
                        step=cur,
                        checkpoint_step=committed,
                    )
                )
                rundir.write_attempt_result(
                    AttemptResult(
                        attempt=attempt,
                        status=ResultStatus.SUCCEEDED,
                        exit_code=0,
                        ended_at=end,
                        step=cur,
                        checkpoint_step=committed,
                    )
                )
                self.done = True
                self.finished_at = end
                return
            if now - self.last_beat.get(iid, -1e18) >= HEARTBEAT_S:
                cur, committed = self._progress(c, now)
                phase = Phase.RUNNING if now >= c.ready_at else Phase.STARTING
                rundir.write_heartbeat(
                    Heartbeat(
                        attempt=attempt,
                        time=now,
                        phase=phase,
                        step=cur,
                        checkpoint_step=committed or None,
                    )
                )
                self.last_beat[iid] = now


def drive(
    strategy: Strategy,
    *,
    mtbp_s: float | None,
    seed: int,
    total_steps: int,
    step_s: float,
    worker_start_s: float,
    outbid: OutbidPolicy | None = None,
) -> dict[str, Any]:
    """One real ``run_job`` of the simulated training; returns cost, wall and recoveries."""
    clock = WorldClock()
    profile = get_profile("inference-batch")
    profile = attrs.evolve(profile, max_duration_hours=max(profile.max_duration_hours, 48.0))
    wall0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vastkit-bench-preempt-") as tmp:
        emu = Emulator(
            seed=seed,
            clock=clock,
            offers=2000,
            runner="scripted",
            preemption_mtbp_s=mtbp_s,
            credit=1e6,
        )
        store = f"file://{Path(tmp) / 'store'}"
        workers = SimWorkers(
            emu,
            clock,
            store,
            total_steps=total_steps,
            step_s=step_s,
            worker_start_s=worker_start_s,
            strategy=strategy,
        )
        clock.hook = workers
        t0 = clock.now()
        kwargs: dict[str, Any] = {}
        if outbid is not None:
            kwargs["outbid"] = outbid
        job = Job(
            name=f"bench-{strategy.name}",
            command="python train.py",
            profile=profile,
            store_url=store,
            max_attempts=1000,
            **kwargs,
        )
        with (
            Client(emu.api_key, base_url=emu.url, http_client=emu.client(), clock=clock) as client,
            Ledger(Path(tmp) / "ledger.db", clock=clock) as ledger,
        ):
            kinds: list[str] = []
            result = run_job(
                job,
                client=client,
                ledger=ledger,
                clock=clock,
                progress=False,
                on_event=lambda event: kinds.append(event.kind),
            )
            stats = client.stats.snapshot()
        clock.hook = None
        spent = emu.user.total_spend
        wall = clock.now() - t0
        emu.close()
    recoveries = [r - p for p, r in zip(workers.preempted_at, workers.resumed_at, strict=False)]
    return {
        "status": result.status,
        "cost": spent,
        "ledger_cost": result.total_cost_usd,
        "wall_s": wall,
        "attempts": len(result.attempts),
        "preemptions": len(workers.preempted_at),
        "bid_raises": kinds.count("bid_raised"),
        "first_bid": next(iter(workers.bids.values()))[0] if workers.bids else None,
        "max_bid": max((max(b) for b in workers.bids.values() if b), default=None),
        "recoveries": recoveries,
        "rate_limited": sum(stats["rate_limited"].values()),
        "requests": sum(stats["requests"].values()),
        "real_s": time.perf_counter() - wall0,
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    *,
    quick: bool,
    checkpoint: dict[str, Any] | None = None,
    worker_start_s: float = 10.0,
    step_s: float = 1.0,
    job_hours: float = 6.0,
) -> dict[str, Any]:
    """Drive run_job for every strategy at MTBP 2 h (and 1 h, 6 h in full mode)."""
    ck = checkpoint or {}
    stall = ck.get("vastkit_stall_s", 0.02)
    upload = ck.get("vastkit_commit_s", 1.0)
    every = auto_interval_steps(
        step_seconds=step_s, stall_seconds=stall, upload_seconds=upload, mtbf_seconds=6 * 3600.0
    )
    restore = ck.get("vastkit_restore_s", 1.0)
    vk = Strategy("vastkit", every, stall, upload, restore, save_on_stop=True)
    vk_plain = Strategy("vastkit-no-stop-save", every, stall, upload, restore)
    ref = Strategy(
        "reference", 500, ck.get("reference_stall_s", 1.0), 0.0, ck.get("raw_restore_s", 1.0)
    )
    reps = 1 if quick else 5
    mtbps = (2.0,) if quick else (1.0, 2.0, 6.0)
    total = round(job_hours * 3600.0 / step_s)
    plans: list[tuple[str, Strategy, OutbidPolicy | None]] = [
        ("vastkit", vk, None),
        ("vastkit, raise bid", vk, OutbidPolicy.raise_bid(then_wait_s=120.0)),
        ("reference", ref, None),
    ]
    if not quick:
        plans.insert(2, ("vastkit, no save on SIGTERM", vk_plain, None))
    rows = []
    for mtbp_h in mtbps:
        ideal = [
            drive(
                vk,
                mtbp_s=None,
                seed=s,
                total_steps=total,
                step_s=step_s,
                worker_start_s=worker_start_s,
            )
            for s in range(reps)
        ]
        ideal_cost = statistics.mean(r["cost"] for r in ideal)
        ideal_wall = statistics.mean(r["wall_s"] for r in ideal)
        row: dict[str, Any] = {"mtbp_h": mtbp_h, "ideal": _summary(ideal, ideal_cost, ideal_wall)}
        for name, strategy, policy in plans:
            runs = [
                drive(
                    strategy,
                    mtbp_s=mtbp_h * 3600.0,
                    seed=s,
                    total_steps=total,
                    step_s=step_s,
                    worker_start_s=worker_start_s,
                    outbid=policy,
                )
                for s in range(reps)
            ]
            row[name] = _summary(runs, ideal_cost, ideal_wall)
        rows.append(row)
    at2 = next(r for r in rows if r["mtbp_h"] == 2.0)["vastkit"]["cost_vs_ideal"]
    return {
        "method": "real run_job in virtual time, emulator preemptions, simulated worker",
        "repetitions": reps,
        "intervals_steps": {"vastkit": vk.every, "reference": ref.every},
        "rows": rows,
        "vastkit_cost_vs_ideal_at_2h": at2,
        "target_met": at2 <= 1.15,
    }


def _summary(runs: list[dict[str, Any]], ideal_cost: float, ideal_wall: float) -> dict[str, Any]:
    rec = [x for r in runs for x in r["recoveries"]]
    cost = statistics.mean(r["cost"] for r in runs)
    wall = statistics.mean(r["wall_s"] for r in runs)
    return {
        "cost_usd": cost,
        "wall_h": wall / 3600.0,
        "cost_vs_ideal": cost / ideal_cost,
        "wall_vs_ideal": wall / ideal_wall,
        "preemptions_mean": statistics.mean(r["preemptions"] for r in runs),
        "attempts_mean": statistics.mean(r["attempts"] for r in runs),
        "statuses": sorted({r["status"] for r in runs}),
        "bid_raises_mean": statistics.mean(r["bid_raises"] for r in runs),
        "max_bid_vs_first": max(
            (r["max_bid"] or 0.0) / r["first_bid"] for r in runs if r["first_bid"]
        )
        if any(r["first_bid"] for r in runs)
        else None,
        "rate_limited": sum(r["rate_limited"] for r in runs),
        "ledger_vs_billed_max_dev": max(abs(r["ledger_cost"] / r["cost"] - 1.0) for r in runs),
        "recovery_p50_s": _pct(rec, 0.5),
        "recovery_p90_s": _pct(rec, 0.9),
        "real_s": sum(r["real_s"] for r in runs),
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, note) rows for the runner's table."""
    out = []
    for row in result["rows"]:
        h = f"MTBP {row['mtbp_h']:g} h"
        for name, r in row.items():
            if name == "mtbp_h":
                continue
            note = f"{r['preemptions_mean']:.1f} preemptions, {r['attempts_mean']:.1f} attempts"
            if r["bid_raises_mean"]:
                note += (
                    f", {r['bid_raises_mean']:.1f} bid raises (bid up to "
                    f"{r['max_bid_vs_first']:.2f}x)"
                )
            if r["preemptions_mean"]:
                note += f", recovery p50/p90 {r['recovery_p50_s']:.0f}/{r['recovery_p90_s']:.0f} s"
            if r["statuses"] != ["succeeded"]:
                note += f", statuses {r['statuses']}"
            if name == "vastkit" and row["mtbp_h"] == 2.0:
                ratio = r["cost_vs_ideal"]
                note += "; <= 1.15x: " + (
                    "met" if ratio <= 1.15 else f"MISSED by {ratio / 1.15:.2f}x"
                )
            out.append(
                (
                    f"run_job {h}: {name}",
                    f"${r['cost_usd']:.3f} {r['cost_vs_ideal']:.3f}x, "
                    f"{r['wall_h']:.2f} h {r['wall_vs_ideal']:.2f}x",
                    note,
                )
            )
    return out

"""Benchmark 4b, money under preemption with the real ``run_job`` in virtual time.

The orchestrator is the real :func:`vastkit.run_job` (search, select, create, phase deadlines,
one list per poll, heartbeat reading, the outbid policy (the default: the price-aware one),
relaunch, destroy, ledger costs) against the emulator with its scripted runner and random
preemptions (``preemption_mtbp_s``), all on one :class:`~vastkit.clock.ManualClock`. The
scripted runner runs no process, so a simulated worker stands in for ``python -m
vastkit.worker``: whenever the emulator has an instance of the run ``running``, the simulated
worker starts (worker start + checkpoint restore), trains at a fixed step time, saves
checkpoints by the strategy (a checkpoint counts once its upload has committed), writes
``heartbeat.json`` into the run directory every 10 s and ``result.json`` at the last step. When
the emulator takes the GPUs away (its ``client:outbid`` event, at the exact virtual time), the
worker dies and its progress since the last committed checkpoint is lost. Costs are what the
emulator billed the account.

Strategies: ``ideal`` (no preemption); ``vastkit`` (``every_steps="auto"``, plus a save when the
worker forwards SIGTERM if stall + upload fit in Vast's 10 s stop grace, as the demo training
script does with ``worker.should_stop()``) under each outbid policy: the price-aware
``OutbidPolicy.cheapest_expected()``, a job's default (``Job.outbid``: what a job that names no
policy gets, so the issue's target is checked on it), and the fixed ones (move at once,
``OutbidPolicy.give_up()``, the default before it; ``raise_bid(then_wait_s=120)``, raise up to
the profile's cap, wait 120 s at the cap, then move; ``wait(600)``); ``vastkit`` without the
SIGTERM save (full mode); and ``reference`` (sync saves every 500 steps, nothing on SIGTERM)
with the default policy.
Restarting from scratch is left to the discrete-event simulation (``preemption.py``): at MTBP
1 h it runs for days of virtual time.

Where the money goes: every 5 virtual seconds, what the emulator billed each instance since the
last tick is put in the bucket of what the instance was doing (training, worker start + restore,
image pull, create, waiting while outbid); the training paid for steps lost at a stop is counted
apart. Each bucket over the ideal's is one part of the cost over the ideal
(:func:`breakdown`).
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

BUCKETS = ("training", "setup", "image_pull", "create", "waiting")
"""What an instance was doing while billed: training (running, the worker ready), setup (running:
worker start and restore, GPU billed), image pull (loading), create (provisioning, storage only)
and waiting (outbid or stopped, storage only)."""

HEARTBEAT_S = 10.0
TARGET_AT_2H = 1.06
"""Issue 19: the default (price-aware) policy's cost at MTBP 2 h, over the ideal's."""
PRICE_AWARE = "cheapest expected"
"""The label of the price-aware policy, measured as a job gets it by default."""
FIXED: dict[str, OutbidPolicy] = {
    "move at once": OutbidPolicy.give_up(),
    "raise bid": OutbidPolicy.raise_bid(then_wait_s=120.0),
    "wait 600 s": OutbidPolicy.wait(600.0),
}
"""The fixed outbid policies the price-aware one is measured against."""
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
        self.buckets: dict[str, float] = dict.fromkeys(BUCKETS, 0.0)
        """What the emulator billed, by what the instance was doing (see :data:`BUCKETS`)."""
        self.lost_usd = 0.0
        """The part of ``training`` paid for steps that were lost (not committed at a stop)."""
        self._billed: dict[int, tuple[float, str]] = {}
        self._rate: dict[int, float] = {}
        self._last_tick = clock.now()

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
        self.lost_usd += max(cur - max(committed, c.base), 0) * self.step_s * self._rate.get(iid, 0)
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

    def _bill(self, now: float) -> None:
        """Put what each instance was billed since the last tick in the bucket of what it was
        doing at the last tick (ticks are 5 virtual seconds apart)."""
        dt = now - self._last_tick
        self._last_tick = now
        for view in self.emu.instances:
            if parse_label(view.label) is None:
                continue
            billed = view.gpu_cost + view.disk_cost + view.bandwidth_cost
            before, bucket = self._billed.get(view.id, (0.0, "create"))
            self.buckets[bucket] += billed - before
            if bucket == "training" and dt > 0:
                self._rate[view.id] = (billed - before) / dt
            c = self.up.get(view.id)
            if view.actual_status == "running" and view.cur_state == "running":
                bucket = "training" if c is not None and now >= c.ready_at else "setup"
            elif view.outbid or (view.cur_state == "stopped" and view.actual_status != "loading"):
                bucket = "waiting"
            elif view.actual_status == "loading":
                bucket = "image_pull"
            else:
                bucket = "create"
            self._billed[view.id] = (billed, bucket)

    def __call__(self) -> None:
        self.emu.tick()
        now = self.clock.now()
        self._bill(now)
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
        "buckets": dict(workers.buckets),
        "lost_usd": workers.lost_usd,
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
    default = attrs.fields(Job).outbid.default.factory()
    if default.action != "cheapest_expected":
        raise RuntimeError(f"Job.outbid's default is not the price-aware policy: {default}")
    plans: list[tuple[str, Strategy, OutbidPolicy | None]] = [
        (f"vastkit, {PRICE_AWARE} (default)", vk, None),  # None: the Job's own default
        *((f"vastkit, {name}", vk, policy) for name, policy in FIXED.items()),
    ]
    plans.append(("reference", ref, None))
    if not quick:
        plans.insert(len(FIXED) + 1, ("vastkit, no save on SIGTERM", vk_plain, None))
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
        row: dict[str, Any] = {"mtbp_h": mtbp_h, "ideal": _summary(ideal, ideal)}
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
            row[name] = _summary(runs, ideal)
        rows.append(row)
    verdicts = [_verdict(row) for row in rows]
    at2 = next(v for v in verdicts if v["mtbp_h"] == 2.0)
    return {
        "method": "real run_job in virtual time, emulator preemptions, simulated worker",
        "repetitions": reps,
        "intervals_steps": {"vastkit": vk.every, "reference": ref.every},
        "rows": rows,
        "verdicts": verdicts,
        "default_policy": repr(default),
        "price_aware_cost_vs_ideal_at_2h": at2["price_aware"],
        "target_met": at2["price_aware"] <= TARGET_AT_2H
        and all(v["never_worse"] for v in verdicts),
    }


def _verdict(row: dict[str, Any]) -> dict[str, Any]:
    """The price-aware policy against the target and against the best fixed policy."""
    fixed = {
        name: r["cost_vs_ideal"]
        for name, r in row.items()
        if any(name.startswith(f"vastkit, {f}") for f in FIXED)
    }
    best = min(fixed, key=lambda n: fixed[n])
    aware = next(r for n, r in row.items() if n.startswith(f"vastkit, {PRICE_AWARE}"))
    return {
        "mtbp_h": row["mtbp_h"],
        "price_aware": aware["cost_vs_ideal"],
        "best_fixed": best,
        "best_fixed_cost_vs_ideal": fixed[best],
        "never_worse": aware["cost_vs_ideal"] <= fixed[best] + 1e-9,
    }


def _summary(runs: list[dict[str, Any]], ideal: list[dict[str, Any]]) -> dict[str, Any]:
    rec = [x for r in runs for x in r["recoveries"]]
    ideal_cost = statistics.mean(r["cost"] for r in ideal)
    ideal_wall = statistics.mean(r["wall_s"] for r in ideal)
    cost = statistics.mean(r["cost"] for r in runs)
    wall = statistics.mean(r["wall_s"] for r in runs)
    per_seed = [r["cost"] / i["cost"] for r, i in zip(runs, ideal, strict=True)]
    return {
        "cost_usd": cost,
        "wall_h": wall / 3600.0,
        "cost_vs_ideal": cost / ideal_cost,
        "cost_vs_ideal_min": min(per_seed),
        "cost_vs_ideal_median": statistics.median(per_seed),
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
        "over_ideal_usd": breakdown(runs, ideal),
        "real_s": sum(r["real_s"] for r in runs),
    }


def breakdown(runs: list[dict[str, Any]], ideal: list[dict[str, Any]]) -> dict[str, float]:
    """Where the cost over the ideal went, mean $ per run: lost work (training paid for steps
    not committed at a stop), a pricier machine or bid (the rest of the training's extra),
    search/create/boot (storage while provisioning), image pulls (storage while loading),
    worker start + restore (GPU billed, nothing trains; where a dataset download would fall),
    waiting for the machine (storage while outbid or stopped), and what no bucket caught
    (billing after the last 5 s tick of a destroyed instance)."""

    def mean_bucket(group: list[dict[str, Any]], name: str) -> float:
        return statistics.mean(r["buckets"][name] for r in group)

    lost = statistics.mean(r["lost_usd"] for r in runs)
    extra = {b: mean_bucket(runs, b) - mean_bucket(ideal, b) for b in BUCKETS}
    parts = {
        "lost_work": lost,
        "pricier_machine": extra["training"] - lost,
        "search_create_boot": extra["create"],
        "image_pulls": extra["image_pull"],
        "worker_start_restore": extra["setup"],
        "waiting_for_machine": extra["waiting"],
    }
    total = statistics.mean(r["cost"] for r in runs) - statistics.mean(r["cost"] for r in ideal)
    parts["unattributed"] = total - sum(parts.values())
    parts["total"] = total
    return parts


def breakdown_line(parts: dict[str, float]) -> str:
    """One line: each part's $ and share of the cost over the ideal."""
    total = parts["total"]
    names = {
        "lost_work": "lost work",
        "pricier_machine": "pricier machine/bid",
        "search_create_boot": "search/create/boot",
        "image_pulls": "image pulls",
        "worker_start_restore": "worker start+restore",
        "waiting_for_machine": "waiting for the machine",
        "unattributed": "other",
    }
    shown = []
    for key, label in names.items():
        share = f" {parts[key] / total:.0%}" if abs(total) > 1e-9 else ""
        shown.append(f"{label} ${parts[key]:.4f}{share}")
    return f"over ideal ${total:.4f}: " + ", ".join(shown)


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, note) rows for the runner's table."""
    out = []
    for row, verdict in zip(result["rows"], result["verdicts"], strict=True):
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
            if name.startswith(f"vastkit, {PRICE_AWARE}"):
                ratio = r["cost_vs_ideal"]
                best = verdict["best_fixed_cost_vs_ideal"]
                note += f"; <= best fixed ({verdict['best_fixed']}, {best:.3f}x): " + (
                    "met" if verdict["never_worse"] else f"MISSED by {ratio / best:.3f}x"
                )
                if row["mtbp_h"] == 2.0:
                    note += f"; <= {TARGET_AT_2H}x: " + (
                        "met" if ratio <= TARGET_AT_2H else f"MISSED by {ratio / TARGET_AT_2H:.3f}x"
                    )
            out.append(
                (
                    f"run_job {h}: {name}",
                    f"${r['cost_usd']:.3f} {r['cost_vs_ideal']:.3f}x "
                    f"({r['cost_vs_ideal_min']:.3f}/{r['cost_vs_ideal_median']:.3f}), "
                    f"{r['wall_h']:.2f} h {r['wall_vs_ideal']:.2f}x",
                    note,
                )
            )
            if name != "ideal":
                out.append(("", "", "  " + breakdown_line(r["over_ideal_usd"])))
    worse = [f"{v['mtbp_h']:g} h" for v in result["verdicts"] if not v["never_worse"]]
    at2 = result["price_aware_cost_vs_ideal_at_2h"]
    out.append(
        (
            "run_job target (issue 19): the default outbid policy",
            f"{at2:.3f}x ideal at MTBP 2 h",
            ("met" if result["target_met"] else "MISSED")
            + f": <= {TARGET_AT_2H}x at 2 h, never worse than the best fixed policy at "
            + ", ".join(f"{v['mtbp_h']:g} h" for v in result["verdicts"])
            + (f" (worse at {', '.join(worse)})" if worse else ""),
        )
    )
    return out

"""The orchestrator: :class:`JobRunner` drives one job to its end; :func:`run_job` runs one."""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import IO, Any

import attrs

from vastkit._console import Progress, SignalGuard
from vastkit._owner import owner_metadata
from vastkit._provision import (
    DEFAULT_IMAGE,
    Provisioner,
)
from vastkit.api.client import Client
from vastkit.api.models import InstanceInfo, InstanceState
from vastkit.budget import BudgetAction, BudgetGuard, Budgets, load_budgets
from vastkit.clock import Clock, SystemClock
from vastkit.errors import (
    APIError,
    BudgetExceededError,
    DestroyFailedError,
)
from vastkit.jobs import ending as ending_steps
from vastkit.jobs import launch as launch_steps
from vastkit.jobs import watch as watch_steps
from vastkit.jobs.cancel import cancel_requested
from vastkit.jobs.polling import shared_instances
from vastkit.jobs.result import AttemptSummary, JobEvent, JobResult, summary_from_record
from vastkit.jobs.spec import Job, JobStatus
from vastkit.jobs.state import AttemptOver, JobEnded, LiveAttempt, resolve_profile
from vastkit.labels import label_ledger, make_label, new_run_id, parse_label
from vastkit.ledger import Fence, LeaseLost, Ledger
from vastkit.money import bid_cap, hourly_rate
from vastkit.profiles import GpuProfile
from vastkit.rundir import (
    AttemptResult,
    Heartbeat,
    OrchestratorBeat,
    RunDir,
)
from vastkit.selector import Candidate

logger = logging.getLogger("vastkit.jobs")

__all__ = ["JobRunner", "run_job"]


class JobRunner:
    """One job driven to its end: launch attempts, watch them, react, settle costs."""

    def __init__(
        self,
        job: Job,
        *,
        client: Client | None,
        ledger: Ledger | None,
        clock: Clock | None,
        on_event: Callable[[JobEvent], None] | None,
        budgets: Budgets | str | os.PathLike[str] | None,
        profiles: str | os.PathLike[str] | Mapping[str, GpuProfile] | None,
        run_id: str | None,
        progress: bool | None,
        progress_file: IO[str] | None,
        instance_source: Callable[[float], Sequence[InstanceInfo]] | None = None,
        cancel_check: Callable[[], str | None] | None = None,
        reconcile_first: bool = True,
        launch_lock: AbstractContextManager[Any] | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.job = job
        # JobQueue hooks: a shared instance list (one paged call per poll for many runners),
        # a cancel check run on every poll, and no reconcile (the queue's leases decide).
        self.instance_source = instance_source
        self.cancel_check = cancel_check
        self.reconcile_first = reconcile_first
        self.launch_lock = launch_lock
        self.detached = False
        """Set by JobQueue when another driver took the job over: unwind, touching nothing."""
        profile = resolve_profile(job.profile, profiles)
        if job.disk_gb is not None and job.disk_gb != profile.disk_gb:
            # The disk rented is the disk priced: filtering (free disk, max_dph with storage),
            # ranking, the preflight's worst case and the running rate all read the profile.
            profile = attrs.evolve(profile, disk_gb=job.disk_gb)
        self.profile = profile
        self.t = launch_steps.job_timeouts(job.timeouts)
        self._owns_client = client is None
        self.client = client if client is not None else Client()
        client_clock = getattr(self.client, "clock", None)
        self.clock: Clock = clock or (
            client_clock if isinstance(client_clock, Clock) else SystemClock()
        )
        self._owns_ledger = ledger is None
        self.ledger = ledger if ledger is not None else Ledger(clock=self.clock)
        self._on_event = on_event
        self.provisioner = Provisioner(
            self.client,
            self.ledger,
            self.clock,
            destroy_deadline=self.t.destroy,
            retry_interval=self.t.poll_interval,
        )
        self.fence = fence
        """A queue driver's fencing token (None outside a queue): every ledger write checks it."""
        self.provisioner.fence = fence
        self.adopting = run_id is not None and self.ledger.get_run(run_id) is not None
        self.run_id = run_id or new_run_id(self.clock)
        make_label(self.run_id, 1)  # validates the run id
        self.run_url = f"{job.store_url.rstrip('/')}/{self.run_id}"
        self.rundir = RunDir(self.run_url, job.storage_options, clock=self.clock)
        if isinstance(budgets, str | os.PathLike):
            budgets = load_budgets(budgets)
        self.guard = BudgetGuard(
            budgets or Budgets(),
            self.ledger,
            project=job.project,
            team=job.team,
            run_id=self.run_id,
            job_limit_usd=job.max_cost_usd,
            poll_interval_s=self.t.poll_interval,
            clock=self.clock,
        )
        self.max_duration = (
            self.t.max_duration
            if self.t.max_duration is not None
            else self.profile.max_duration_hours * 3600.0
        )
        self.disk_gb = float(self.profile.disk_gb)
        self.image = job.image or self.profile.image or DEFAULT_IMAGE
        self.progress = Progress(progress, file=progress_file)
        self.started_at = self.clock.now()
        self.attempt_no = 0
        self.summaries: dict[int, AttemptSummary] = {}
        self.live: LiveAttempt | None = None
        self.avoid: dict[int, float] = {}
        """Machines this job stays off (outbid there, offer gone) until the time given."""
        self.user_errors = 0
        self.beat_seq = 0
        self.final: AttemptResult | None = None
        self.last_step: int | None = None
        self._last_line = ""

    # -- plumbing ------------------------------------------------------------------------------

    def emit(
        self,
        kind: str,
        message: str,
        *,
        live: LiveAttempt | None = None,
        step: int | None = None,
        level: int = logging.INFO,
    ) -> None:
        event = JobEvent(
            kind=kind,
            message=message,
            time=self.clock.now(),
            run_id=self.run_id,
            attempt=live.number if live is not None else None,
            instance_id=live.instance_id if live is not None else None,
            machine_id=live.machine_id if live is not None else None,
            step=step,
        )
        logger.log(level, "%s: %s", self.run_id, message, extra={"vastkit_event": kind})
        self.progress.update(message)
        if self._on_event is not None:
            self._on_event(event)

    def beat(self) -> None:
        """Refresh ``orchestrator.json`` (the worker's backstop watches it)."""
        self.beat_seq += 1
        try:
            self.rundir.write_orchestrator(
                OrchestratorBeat(
                    time=self.clock.now(),
                    seq=self.beat_seq,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                )
            )
        except Exception as exc:  # a store hiccup must not kill the orchestrator
            logger.warning("could not refresh orchestrator.json: %s", exc)

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> JobResult:
        status: JobStatus = "failed"
        reason = ""
        signals = SignalGuard()  # SIGTERM unwinds like Ctrl-C, so the instance is destroyed
        signals.install()
        try:
            try:
                self.start()
                status, reason = self.loop()
            except JobEnded as end:
                status, reason = end.status, end.reason
            except BaseException as exc:
                if self.detached or isinstance(exc, LeaseLost):
                    self.detached = True
                    raise
                with signals.deferring():
                    self.cleanup(reason=f"orchestrator: {type(exc).__name__}")
                    interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
                    self.end_run("cancelled" if interrupted else "failed")
                self.progress.close()
                raise
            with signals.deferring():
                self.cleanup(reason=status)
        finally:
            signals.uninstall()
        self.end_run(status)
        result = self.result(status, reason)
        self.emit("finished", f"job {self.job.name!r} {status}: {reason}")
        self.progress.close(
            f"job {self.job.name!r} {status} after {len(result.attempts)} attempt(s); "
            f"cost ${result.total_cost_usd:.4f}"
        )
        return result

    def start(self) -> None:
        job = self.job
        metadata = {"kind": "job", "owner": owner_metadata(), "run_url": self.run_url}
        if self.adopting:
            self.ledger.update_run(
                self.run_id, status="running", ended_at=None, metadata=metadata, fence=self.fence
            )
            prior = self.ledger.attempts(self.run_id)
            self.attempt_no = max((a.attempt for a in prior), default=0)
            for a in prior:
                self.summaries[a.attempt] = summary_from_record(a)
            first = self.ledger.get_run(self.run_id)
            if first is not None:
                self.started_at = first.created_at
        else:
            # A store the worker cannot write to would fail only after money was spent: probe
            # it first, with the options exactly as the worker receives them.
            from vastkit.health import check_store_writable

            check_store_writable(job.store_url, job.storage_options, run_id=self.run_id)
            try:
                self.guard.preflight(self._remaining_profile())
            except BudgetExceededError:
                raise
            self.ledger.record_run(
                self.run_id,
                name=job.name,
                project=job.project,
                team=self.guard.team,
                profile=self.profile.name,
                status="running",
                metadata=metadata,
                at=self.started_at,
                fence=self.fence,
            )
        self.emit(
            "started",
            f"job {job.name!r}: run {self.run_id} on profile {self.profile.name!r}, "
            f"run directory {self.run_url}",
        )
        if not self.adopting or self.rundir.read_job() is None:
            self.write_run_directory()
        self.beat()
        from vastkit.reconcile import reconcile

        if self.reconcile_first:
            try:
                report = reconcile(self.client, self.ledger, clock=self.clock)
            except APIError as exc:
                logger.warning("reconcile before the job failed: %s", exc)
            else:
                for action in report.destroyed:
                    logger.warning("reconcile: %s", action)
        if self.adopting:
            self.adopt()

    def loop(self) -> tuple[JobStatus, str]:
        ended = self.ended_while_away() if self.live is None else None
        if ended is not None:
            return ended
        while True:
            try:
                if self.live is None:
                    self.launch()
                live = self.live
                assert live is not None
                try:
                    if live.running_at is None or live.state is not InstanceState.RUNNING:
                        self.wait_running(live)
                    self.watch(live)
                except AttemptOver as over:
                    outcome = self.finish_attempt(live, over)
                    if outcome is not None:
                        return outcome
            except JobEnded as end:
                if self.live is not None:
                    self.stop_attempt(self.live, end.status)
                raise

    # -- limits --------------------------------------------------------------------------------

    def _remaining_profile(self) -> GpuProfile:
        left = self.max_duration - (self.clock.now() - self.started_at)
        hours = max(left, 60.0) / 3600.0
        return attrs.evolve(self.profile, max_duration_hours=hours)

    def check_limits(self, live: LiveAttempt | None) -> None:
        why = self.cancel_check() if self.cancel_check is not None else None
        if why is None:
            why = cancel_requested(self.ledger, self.run_id)  # `vastkit cancel`, any process
        if why is not None:
            raise JobEnded("cancelled", why)
        now = self.clock.now()
        if now - self.started_at >= self.max_duration:
            raise JobEnded(
                "timed_out",
                f"the job ran for {now - self.started_at:.0f} s, its limit is "
                f"{self.max_duration:.0f} s",
            )
        rate = 0.0
        unrecorded = 0.0
        if live is not None:
            live.accrue(now)
            rate = hourly_rate(live.price, live.state)
            unrecorded = hourly_rate(live.price, live.state) * max(now - live.recorded_at, 0.0)
            unrecorded /= 3600.0
        decision = self.guard.check(rate, unrecorded_usd=unrecorded)
        if decision.action is BudgetAction.STOP:
            self.emit("budget_stop", decision.message, live=live, level=logging.WARNING)
            raise JobEnded("budget_exceeded", decision.message)
        if decision.action is BudgetAction.WARN:
            self.emit("budget_warning", decision.message, live=live, level=logging.WARNING)

    # -- instances -----------------------------------------------------------------------------

    def list_ours(self, fresh_after: float = -math.inf) -> list[tuple[InstanceInfo, int]]:
        """One paged list call: every instance labelled for this run, with its attempt number.

        The list may be another runner's (the queue's ``instance_source``, or the process's
        shared list for this account), taken after ``fresh_after`` (so an instance created
        since is never read as vanished); without ``fresh_after``, a new one.
        """
        found = []
        if self.instance_source is not None:
            listed = self.instance_source(fresh_after)
        else:  # separate run_job calls in one process share one list per poll interval
            shared = shared_instances(self.client, self.clock, self.t.poll_interval)
            fresh = self.clock.now() if fresh_after == -math.inf else fresh_after
            listed = shared(fresh, client=self.client)
        ours = self.ledger.ledger_id
        for inst in listed:
            parsed = parse_label(inst.label)
            if parsed is None or parsed[0] != self.run_id:
                continue
            if label_ledger(inst.label) not in (ours, None):
                continue  # the same run id in another ledger: not ours
            found.append((inst, parsed[1]))
        return found

    def poll(self, live: LiveAttempt) -> InstanceInfo | None:
        """The current view of ``live``'s instance; strays of this run are destroyed."""
        view: InstanceInfo | None = None
        for inst, number in self.list_ours(live.created_at):
            if inst.id == live.instance_id:
                view = inst
            elif number != live.number:
                logger.warning(
                    "instance %s (attempt %s) of this run is not the live attempt: destroying it",
                    inst.id,
                    number,
                )
                self.provisioner.destroy(inst.id)
        return view

    def observe(self, live: LiveAttempt, view: InstanceInfo) -> None:
        return watch_steps.observe(self, live, view)

    def sample(
        self,
        live: LiveAttempt,
        *,
        destroyed_at: float | None = None,
        extra_usd: float = 0.0,
        at: float | None = None,
    ) -> None:
        """Settle the attempt's cost in the ledger up to now and record its rate from now on.

        ``extra_usd`` is a one-off amount accrued since the last sample (billed traffic); ``at``
        dates the sample earlier than now (a change the instance's own clock dates).
        """
        when = destroyed_at if destroyed_at is not None else at
        now = max(when if when is not None else self.clock.now(), live.recorded_at)
        gone = destroyed_at is not None
        self.ledger.add_cost_sample(
            live.ledger_id,
            state="destroyed" if gone else live.state.value,
            rate_dph=0.0 if gone else hourly_rate(live.price, live.state),
            at=now,
            extra_usd=extra_usd,
            fence=self.fence,
        )
        live.recorded_at = now

    def stay_off(self, machine_id: int | None) -> None:
        """Do not rent ``machine_id`` again in this job for ``machine_block`` seconds."""
        if machine_id is not None:
            self.avoid[machine_id] = self.clock.now() + self.t.machine_block

    def bid_cap(self, storage_dph: float) -> float:
        """The highest bid this job's profile and outbid policy allow, given the storage rate."""
        return bid_cap(self.profile, storage_dph=storage_dph, policy=self.job.outbid)

    def spent(self, live: LiveAttempt | None) -> float:
        total = sum(
            s.cost_usd for n, s in self.summaries.items() if live is None or n != live.number
        )
        return total + (live.cost if live is not None else 0.0)

    # -- ending attempts -----------------------------------------------------------------------

    def cleanup(self, reason: str) -> None:
        live = self.live
        if live is None or live.closed:
            return
        try:
            self.destroy(live, reason)
        except DestroyFailedError:
            logger.exception("could not destroy instance %s", live.instance_id)
            raise

    def end_run(self, status: str) -> None:
        try:
            self.ledger.end_run(self.run_id, status, at=self.clock.now(), fence=self.fence)
        except ValueError:
            pass

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
        if self._owns_ledger:
            self.ledger.close()

    # -- steps that live in their own modules ---------------------------------------------

    def write_run_directory(self) -> None:
        return launch_steps.write_run_directory(self)

    def adopt(self) -> None:
        return launch_steps.adopt(self)

    def ended_while_away(self) -> tuple[JobStatus, str] | None:
        return launch_steps.ended_while_away(self)

    def launch(self) -> None:
        return launch_steps.launch(self)

    def try_offer(self, candidate: Candidate) -> bool:
        return launch_steps.try_offer(self, candidate)

    def wait_running(self, live: LiveAttempt) -> None:
        return watch_steps.wait_running(self, live)

    def watch(self, live: LiveAttempt) -> None:
        return watch_steps.watch(self, live)

    def read_worker(self, live: LiveAttempt, now: float) -> None:
        return watch_steps.read_worker(self, live, now)

    def on_heartbeat(self, live: LiveAttempt, beat: Heartbeat, now: float) -> None:
        return watch_steps.on_heartbeat(self, live, beat, now)

    def react(self, live: LiveAttempt, view: InstanceInfo, now: float) -> None:
        return watch_steps.react(self, live, view, now)

    def on_outbid(self, live: LiveAttempt, view: InstanceInfo, now: float) -> None:
        return watch_steps.on_outbid(self, live, view, now)

    def status_line(self, live: LiveAttempt) -> None:
        return watch_steps.status_line(self, live)

    def wait_for_save(self, live: LiveAttempt) -> None:
        return ending_steps.wait_for_save(self, live)

    def stop_attempt(self, live: LiveAttempt, status: str) -> None:
        return ending_steps.stop_attempt(self, live, status)

    def destroy(
        self, live: LiveAttempt, reason: str, *, blame: bool = False, detail: str = ""
    ) -> None:
        return ending_steps.destroy(self, live, reason, blame=blame, detail=detail)

    def end_from_result(self, final: AttemptResult) -> tuple[JobStatus, str] | None:
        return ending_steps.end_from_result(self, final)

    def finish_attempt(self, live: LiveAttempt, over: AttemptOver) -> tuple[JobStatus, str] | None:
        return ending_steps.finish_attempt(self, live, over)

    def result(self, status: JobStatus, reason: str) -> JobResult:
        return ending_steps.result(self, status, reason)


def run_job(
    job: Job,
    *,
    client: Client | None = None,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    on_event: Callable[[JobEvent], None] | None = None,
    budgets: Budgets | str | os.PathLike[str] | None = None,
    profiles: str | os.PathLike[str] | Mapping[str, GpuProfile] | None = None,
    run_id: str | None = None,
    progress: bool | None = None,
    progress_file: IO[str] | None = None,
) -> JobResult:
    """Run ``job`` to its end on rented GPUs, relaunching and resuming after failures.

    Args:
        job: What to run.
        client: The API client (default: one configured from the environment, closed at the
            end).
        ledger: Where runs, attempts, intents, blocked machines and costs are recorded
            (default: the ledger at its default path).
        clock: The clock every wait goes through (default: the client's, else real time).
        on_event: Called with a :class:`JobEvent` for everything that happens.
        budgets: A :class:`~vastkit.budget.Budgets` or the path of a ``budgets.yaml``; checked
            before every launch and on every poll.
        profiles: A ``gpu_profiles.yaml`` path or a mapping of profiles, to resolve
            ``job.profile`` by name (default: the built-in profiles).
        run_id: Resume a run after the orchestrator died: the run's live instance is adopted
            (never a second one rented) and watched to the end. Default: a new run.
        progress: Show a live status line: True, False, or None for automatic (a live line in
            a terminal or notebook, plain lines otherwise).
        progress_file: Where plain progress lines go (default: standard error).

    Returns:
        The :class:`JobResult`; its ``status`` says how the job ended.

    Raises:
        ConfigError: The profile or the budgets file is wrong, or no API key is configured.
        BudgetExceededError: The budget cannot cover the profile's worst case: nothing was
            rented.
        NoOfferError: No offer qualifies for the profile at the first launch.
        DestroyFailedError: An instance could not be confirmed destroyed (it may still bill).
        APIError: The API refused the key, or failed in a way retries could not fix.
    """
    if not isinstance(job, Job):
        raise TypeError(f"run_job takes a vastkit.Job, not {type(job).__name__}")
    runner = JobRunner(
        job,
        client=client,
        ledger=ledger,
        clock=clock,
        on_event=on_event,
        budgets=budgets,
        profiles=profiles,
        run_id=run_id,
        progress=progress,
        progress_file=progress_file,
    )
    try:
        return runner.run()
    finally:
        runner.close()

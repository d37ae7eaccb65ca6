"""Steps of a job that end attempts: saving, destroying, and the job's result."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vastkit._provision import (
    MACHINE_FAILURES,
)
from vastkit.api.models import InstanceState
from vastkit.artifacts import (
    OutputFile,
    read_outputs,
)
from vastkit.checkpoint import CheckpointInfo, CheckpointManager
from vastkit.errors import (
    APIError,
    JobError,
)
from vastkit.jobs.result import AttemptSummary, CostBreakdown, JobResult
from vastkit.jobs.spec import JobStatus
from vastkit.jobs.state import AttemptOver, LiveAttempt
from vastkit.jobs.watch import redate_stop
from vastkit.money import storage_usd
from vastkit.rundir import (
    AttemptResult,
    ResultStatus,
)

if TYPE_CHECKING:
    from vastkit.jobs.orchestrator import JobRunner


logger = logging.getLogger("vastkit.jobs")


def wait_for_save(runner: JobRunner, live: LiveAttempt) -> None:
    """Give the worker up to ``stop_grace`` to save and write its attempt result."""
    deadline = runner.clock.now() + runner.t.stop_grace
    step = min(runner.t.poll_interval, 2.0)
    while runner.clock.now() < deadline:
        try:
            if runner.rundir.read_attempt_result(live.number) is not None:
                return
        except (JobError, OSError):
            return
        runner.beat()
        runner.clock.sleep(step)


def stop_attempt(runner: JobRunner, live: LiveAttempt, status: str) -> None:
    """Budget or duration: stop the container so the worker saves, then destroy."""
    if live.closed:
        return
    if live.state is InstanceState.RUNNING and live.ready_at is not None:
        runner.emit(
            "stopping",
            f"stopping instance {live.instance_id} so the command can save a checkpoint",
            live=live,
        )
        try:
            runner.client.stop_instance(live.instance_id)
        except APIError as exc:
            logger.warning("stopping instance %s failed: %s", live.instance_id, exc)
        else:
            live.move_to(InstanceState.STOPPED, runner.clock.now())
            runner.sample(live)
            runner.wait_for_save(live)
    runner.destroy(live, status)


def destroy(
    runner: JobRunner, live: LiveAttempt, reason: str, *, blame: bool = False, detail: str = ""
) -> None:
    if live.closed:
        return
    gone_at = runner.provisioner.retire(
        live.ledger_id,
        live.instance_id,
        reason,
        detail=detail,
        block_machine=live.machine_id if blame else None,
        block_for=runner.t.machine_block,
    )
    live.close(gone_at)
    live.recorded_at = max(gone_at, live.recorded_at)
    record = runner.ledger.get_attempt(live.ledger_id)
    cost = record.cost_usd if record is not None else live.cost
    runner.summaries[live.number] = AttemptSummary(
        attempt=live.number,
        instance_id=live.instance_id,
        offer_id=live.offer_id,
        machine_id=live.machine_id,
        gpu_name=live.gpu_name,
        rental="interruptible" if live.bid is not None else "on-demand",
        bid=live.bid,
        dph_total=live.price.dph_total,
        created_at=live.created_at,
        loading_at=record.loading_at if record is not None else None,
        running_at=live.running_at,
        ready_at=live.ready_at,
        ended_at=gone_at,
        end_reason=reason,
        cost_usd=cost,
        last_step=_last_step(runner, live),
        checkpoint_step=live.checkpoint_step,
    )
    if runner.live is live:
        runner.live = None
    runner.emit(
        "destroyed",
        f"attempt {live.number}: instance {live.instance_id} destroyed ({reason}); "
        f"it cost ${cost:.4f}" + (", machine blocked" if blame else ""),
        live=live,
    )


def end_from_result(runner: JobRunner, final: AttemptResult) -> tuple[JobStatus, str] | None:
    """The job's end for the worker's ``result.json``; None to restart a failed command."""
    status = final.status
    if status is ResultStatus.SUCCEEDED:
        return "succeeded", final.reason or "the command exited 0"
    if status is ResultStatus.CANCELLED:
        return "cancelled", final.reason or "cancelled"
    if status is ResultStatus.TIMED_OUT:
        return "timed_out", final.reason or "the job's deadline passed"
    if status is ResultStatus.BUDGET_EXCEEDED:  # the worker's own cap, while we were away
        return "budget_exceeded", final.reason or "the attempt's cost cap was reached"
    runner.user_errors += 1
    if runner.user_errors > runner.job.restarts_on_error:
        return "failed", final.reason or "the command failed"
    runner.emit(
        "relaunching",
        f"the command failed ({final.reason}); restart {runner.user_errors} of "
        f"{runner.job.restarts_on_error} allowed",
    )
    runner.final = None
    return None


def last_look(runner: JobRunner, live: LiveAttempt) -> None:
    """Poll once more before destroying a finished attempt's instance.

    The worker writes its result and exits; Vast stops billing the GPU when the container
    exits, which is often before the poll that read the result. One more look dates that stop
    (see ``JobRunner.observe``), so the ledger counts what the bill charges. Best effort.
    """
    if live.closed or live.state is not InstanceState.RUNNING:
        return
    try:
        view = runner.poll(live)
    except APIError as exc:
        logger.info("last look at instance %s failed: %s", live.instance_id, exc)
        return
    if view is not None:
        runner.observe(live, view)


def finish_attempt(
    runner: JobRunner, live: LiveAttempt, over: AttemptOver
) -> tuple[JobStatus, str] | None:
    """Close an attempt; return the job's end, or None to relaunch."""
    if over.reason != "result":
        # A short command may finish (and its container exit) between two polls: the
        # result in the store wins over what the instance's state suggested.
        try:
            final = runner.rundir.read_result()
        except (JobError, OSError):
            final = None
        if final is not None and final.attempt == live.number:
            runner.final = final
            over = AttemptOver("result", final.reason or final.status.value)
    if over.reason == "result":
        final = runner.final
        assert final is not None
        last_look(runner, live)
        runner.destroy(live, final.status.value)
        return runner.end_from_result(final)

    if over.reason in ("outbid", "preempted"):
        runner.wait_for_save(live)
    if live.stop_window is not None:  # the worker's stop signal time, written after the poll
        try:
            beat = runner.rundir.read_heartbeat(live.number)
        except (JobError, OSError):
            beat = None
        redate_stop(runner, live, beat)
    runner.emit(
        "attempt_ended",
        f"attempt {live.number} on machine {live.machine_id} ended: {over.reason}"
        + (f" ({over.detail})" if over.detail else ""),
        live=live,
        level=logging.WARNING,
    )
    # A relaunch never returns to a machine that just failed the job or was stopped under it:
    # every attempt that ends without a result blocks its machine in the ledger, for every driver.
    blame = over.blame and over.reason in MACHINE_FAILURES
    detail = over.detail if blame else f"ended under the job ({over.detail or over.reason})"
    runner.destroy(live, over.reason, blame=True, detail=detail)
    runner.emit(
        "relaunching",
        "relaunching on another machine; the worker resumes from the latest checkpoint"
        + (f" (step {live.checkpoint_step})" if live.checkpoint_step is not None else ""),
    )
    return None


def result(runner: JobRunner, status: JobStatus, reason: str) -> JobResult:
    attempts = tuple(runner.summaries[n] for n in sorted(runner.summaries))
    records = runner.ledger.attempts(runner.run_id)
    by_attempt = {a.attempt: a.cost_usd for a in records}
    now = runner.clock.now()
    storage = sum(
        storage_usd(rec.storage_dph, rec.created_at, rec.destroyed_at or rec.ended_at or now)
        for rec in records
    )
    total = sum(by_attempt.values())
    storage = min(storage, total)
    checkpoints: tuple[CheckpointInfo, ...] = ()
    try:
        manager = CheckpointManager(
            runner.rundir.checkpoint_url(),
            storage_options=runner.job.storage_options,
            clock=runner.clock,
        )
        checkpoints = tuple(manager.list())
        manager.close()
    except Exception as exc:  # listing checkpoints is informative only
        logger.warning("could not list checkpoints: %s", exc)
    final = runner.final
    return JobResult(
        run_id=runner.run_id,
        name=runner.job.name,
        status=status,
        reason=reason,
        attempts=attempts,
        cost=CostBreakdown(gpu_usd=total - storage, storage_usd=storage, by_attempt=by_attempt),
        checkpoints=checkpoints,
        run_url=runner.run_url,
        exit_code=final.exit_code if final is not None else None,
        metrics=dict(final.metrics) if final is not None else {},
        step=final.step if final is not None and final.step is not None else runner.last_step,
        started_at=runner.started_at,
        ended_at=runner.clock.now(),
        outputs=outputs(runner),
        storage_options=dict(runner.job.storage_options),
    )


def outputs(runner: JobRunner) -> tuple[OutputFile, ...]:
    if not runner.job.outputs:
        return ()
    try:
        return read_outputs(runner.run_url, runner.job.storage_options)
    except Exception as exc:  # listing outputs is informative only
        logger.warning("could not read the outputs listing: %s", exc)
        return ()


def _last_step(runner: JobRunner, live: LiveAttempt) -> int | None:
    """The furthest step the attempt is known to have reached: its last polled heartbeat, its
    result (written after that poll) or a checkpoint it committed, whichever is highest."""
    final = (
        runner.final if runner.final is not None and runner.final.attempt == live.number else None
    )
    steps = [
        s
        for s in (live.last_step, final.step if final else None, live.checkpoint_step)
        if s is not None
    ]
    return max(steps) if steps else None

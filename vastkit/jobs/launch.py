"""Steps of a job that start attempts: the run directory, adoption after a restart, renting."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from typing import TYPE_CHECKING

import attrs

from vastkit._bootstrap import build_onstart
from vastkit._provision import (
    CreateFailure,
    CreateFailureKind,
)
from vastkit._settings import poll_interval_setting
from vastkit._shipping import worker_requirement
from vastkit.access import AccessPlan
from vastkit.api.models import CreateInstanceRequest, InstanceInfo
from vastkit.artifacts import (
    resolve_inputs,
)
from vastkit.errors import (
    APIError,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    JobError,
    NoOfferError,
    PermissionDeniedError,
)
from vastkit.jobs.result import failed_create_summary
from vastkit.jobs.spec import JobStatus, JobTimeouts, poll_interval_is_default
from vastkit.jobs.state import JobEnded, LiveAttempt
from vastkit.labels import make_label
from vastkit.money import ContractPrice, CostMeter, hourly_rate
from vastkit.rundir import (
    AttemptLimits,
    AttemptSettings,
    JobSpec,
    make_bundle,
)
from vastkit.selector import Candidate

if TYPE_CHECKING:
    from vastkit.jobs.orchestrator import JobRunner


logger = logging.getLogger("vastkit.jobs")


def job_timeouts(timeouts: JobTimeouts) -> JobTimeouts:
    """The timeouts a job runs with: its own, with the configured poll interval
    (``$VASTKIT_POLL_INTERVAL``, else the config file's ``poll_interval_s``) when the job
    leaves ``poll_interval`` at its default.

    Raises:
        ConfigError: The configured interval is not a positive number, or too long for the
            job's other timeouts (``orchestrator_timeout`` must exceed two polls).
    """
    if not poll_interval_is_default(timeouts):
        return timeouts  # the job chose its own
    configured = poll_interval_setting()
    if configured is None:
        return timeouts
    seconds, source = configured
    try:
        return attrs.evolve(timeouts, poll_interval=seconds)
    except ValueError as exc:
        raise ConfigError(
            f"poll interval {seconds:g} s (from {source}) does not fit this job's timeouts: {exc}",
            key="poll_interval_s",
        ) from None


def prepare_access(runner: JobRunner) -> None:
    """Resolve the job's SSH key and registry login once, before anything is rented.

    A key file that is named but wrong fails the job here (a ``ConfigError``), before any API
    call; no key at all is said once, as a ``no_ssh_key`` event, and the job goes on.
    """
    engine = runner.provisioner
    if engine.access.resolved is not None:
        return
    if runner.job.ssh_key is not None:
        engine.access = AccessPlan(ssh_key=runner.job.ssh_key)
    access = engine.access.resolve()
    if access.public_key is None:
        runner.emit("no_ssh_key", access.missing, level=logging.WARNING)


def write_run_directory(runner: JobRunner) -> None:
    job = runner.job
    prepare_access(runner)
    # Ship this vastkit first: a store that cannot sign its download URL fails the job here,
    # before anything is uploaded or rented. Each attempt signs a fresh URL (try_offer).
    worker_requirement(runner.rundir, explicit=job.worker_requirement)
    has_bundle = False
    if job.workdir is not None:
        data = make_bundle(job.workdir)
        runner.rundir.write_bundle(data)
        has_bundle = True
        logger.info("uploaded the code bundle (%d bytes)", len(data))
    inputs: dict[str, str] = {}
    if job.inputs:
        inputs, uploads = resolve_inputs(
            job.inputs,
            store_url=job.store_url,
            storage_options=job.storage_options,
            cache_url=job.dataset_cache_url,
            progress=None if runner.progress.enabled else False,
            clock=runner.clock,
        )
        for name, up in uploads.items():
            done = "uploaded" if up.uploaded else "found in the dataset cache (not uploaded)"
            runner.emit(
                "input_uploaded" if up.uploaded else "input_reused",
                f"input {name!r}: {up.files} file(s), {up.total_bytes} bytes, {done}: {up.url}",
            )
    deadline = time.time() + runner.max_duration + 2 * runner.t.poll_interval
    spec = JobSpec(
        run_id=runner.run_id,
        command=job.command,
        env={**job.env, **job.launcher_env()},
        checkpoint=job.checkpoint,
        attempt=AttemptSettings(
            heartbeat_interval=runner.t.heartbeat_interval,
            grace_period=runner.t.worker_grace,
            deadline=deadline,
            orchestrator_timeout=runner.t.orchestrator_timeout,
            api_base_url=runner.client.base_url,
            log_flush_seconds=runner.t.log_flush_seconds,
        ),
        has_code_bundle=has_bundle,
        inputs=inputs,
        outputs=tuple(job.outputs),
        name=job.name,
        created_at=time.time(),
    )
    runner.rundir.write_job(spec)


def adopt(runner: JobRunner) -> None:
    """After an orchestrator restart: adopt the run's live instance, destroy the others."""
    ours = [(inst, number) for inst, number in runner.list_ours()]
    records = {a.attempt: a for a in runner.ledger.attempts(runner.run_id)}
    ours.sort(key=lambda pair: pair[1])
    keep: tuple[InstanceInfo, int] | None = None
    for inst, number in reversed(ours):
        rec = records.get(number)
        if rec is not None and rec.ended_at is None and keep is None:
            keep = (inst, number)
    for inst, number in ours:
        if keep is not None and inst.id == keep[0].id:
            continue
        logger.warning("destroying instance %s of attempt %s (not adoptable)", inst.id, number)
        runner.provisioner.destroy(inst.id)
        rec = records.get(number)
        if rec is not None and rec.ended_at is None:
            now = runner.clock.now()
            runner.ledger.add_cost_sample(
                rec.id, state="destroyed", rate_dph=0.0, at=now, fence=runner.fence
            )
            runner.ledger.update_attempt(
                rec.id, end_reason="orphaned", ended_at=now, destroyed_at=now, fence=runner.fence
            )
    for number, rec in records.items():
        if rec.ended_at is None and (keep is None or number != keep[1]):
            now = runner.clock.now()
            if rec.instance_id is not None:  # its instance is no longer listed: close the books
                runner.ledger.settle_attempt(rec.id, reason="vanished", at=now, fence=runner.fence)
            else:
                runner.ledger.update_attempt(
                    rec.id, end_reason="vanished", ended_at=now, fence=runner.fence
                )
    # The previous orchestrator may have died between its create and the ledger write: its
    # intents are closed here, with the instance the list found for their label (if any).
    by_label = {inst.label: inst.id for inst, _ in ours if inst.label}
    for intent in runner.ledger.pending_intents():
        if intent.run_id != runner.run_id:
            continue
        found = by_label.get(intent.label)
        runner.ledger.complete_intent(
            intent.id,
            instance_id=found,
            error=None if found is not None else "no instance found after a restart",
            at=runner.clock.now(),
            fence=runner.fence,
        )
    if keep is None:
        return
    inst, number = keep
    rec = records[number]
    if rec.instance_id is None:
        runner.ledger.update_attempt(rec.id, instance_id=inst.id, fence=runner.fence)
    price = ContractPrice(
        gpu_dph=(rec.bid if rec.bid is not None else rec.dph_base) or 0.0,
        storage_dph=rec.storage_dph or 0.0,
    )
    now = runner.clock.now()
    live = LiveAttempt(
        number=number,
        instance_id=inst.id,
        offer_id=rec.offer_id,
        machine_id=rec.machine_id,
        gpu_name=rec.gpu_name,
        bid=rec.bid,
        bid_cap=runner.bid_cap(rec.storage_dph or 0.0) if rec.bid is not None else None,
        meter=CostMeter(price, start=now),
        ledger_id=rec.id,
        created_at=rec.created_at or now,
        state=inst.state,
        recorded_at=now,
        running_at=rec.running_at,
        ready_at=rec.ready_at,
        beat_changed=now,
    )
    runner.ledger.add_cost_sample(
        rec.id, state=inst.state.value, rate_dph=hourly_rate(price, inst.state), at=now
    )
    runner.live = live
    runner.emit(
        "adopted",
        f"adopted instance {inst.id} (attempt {number}) left by the previous orchestrator",
        live=live,
    )


def ended_while_away(runner: JobRunner) -> tuple[JobStatus, str] | None:
    """After a restart with no instance to adopt: the end the run's result already says.

    The previous orchestrator may have died after destroying the finished attempt's instance
    but before recording the end; ``result.json`` then still tells how the job ended.
    """
    if not runner.adopting or runner.attempt_no == 0:
        return None
    try:
        final = runner.rundir.read_result()
    except (JobError, OSError):
        return None
    if final is None or final.attempt != runner.attempt_no:
        return None
    runner.final = final
    return runner.end_from_result(final)


def launch(runner: JobRunner) -> None:
    """Rent the next attempt: search, rank, create; the first one that is created wins."""
    prepare_access(runner)  # an adopted run skipped write_run_directory
    looked_since = runner.clock.now()
    first = not runner.summaries
    while True:
        runner.check_limits(None)
        try:
            runner.guard.preflight(runner._remaining_profile())
        except BudgetExceededError as exc:
            raise JobEnded("budget_exceeded", str(exc)) from None
        runner.beat()
        runner.emit("searching", f"searching offers for profile {runner.profile.name!r}")
        # Under JobQueue, drivers of one process search and rent one at a time, so two of
        # them never race for the same offer.
        with runner.launch_lock if runner.launch_lock is not None else contextlib.nullcontext():
            blocked = runner.provisioner.blocked_machines(runner.avoid)
            try:
                candidates = runner.provisioner.candidates(runner.profile, blocked=blocked)
            except NoOfferError as exc:
                if first and not blocked:
                    raise
                if runner.clock.now() - looked_since >= runner.t.no_offer_wait:
                    raise JobEnded("failed", f"no offer to relaunch on: {exc}") from None
                runner.emit("searching", f"no offer qualifies yet ({exc}); waiting")
                runner.clock.sleep(runner.t.relaunch_delay)
                continue
            except (AuthenticationError, PermissionDeniedError):
                raise
            except APIError as exc:
                logger.warning("offer search failed: %s; retrying", exc)
                runner.clock.sleep(runner.t.relaunch_delay)
                continue
            for candidate in candidates[: runner.job.max_offers]:
                if runner.try_offer(candidate):
                    return
        runner.emit("relaunching", "every offer tried failed to start; searching again")
        runner.clock.sleep(runner.t.relaunch_delay)


def try_offer(runner: JobRunner, candidate: Candidate) -> bool:
    """One create on ``candidate``; True when an instance exists (runner.live is set)."""
    if runner.attempt_no >= runner.job.max_attempts:
        raise JobEnded("failed", f"gave up after {runner.attempt_no} attempts (max_attempts)")
    offer = candidate.offer
    runner.attempt_no += 1
    number = runner.attempt_no
    label = make_label(runner.run_id, number, ledger_id=runner.ledger.ledger_id)
    bid = candidate.bid
    price = ContractPrice.from_offer(offer, disk_gb=runner.disk_gb, bid=bid)
    env: dict[str, str] = {}
    left, _ = runner.guard.remaining()
    if math.isfinite(left):  # the worker keeps the attempt within the cap while we are away
        limits = AttemptLimits(
            rate_dph=price.dph_total, billed_since=runner.clock.now(), max_cost_usd=max(left, 0.0)
        )
        env.update(limits.environ())
    if runner.job.storage_options:
        env["VASTKIT_STORAGE_OPTIONS"] = json.dumps(
            dict(runner.job.storage_options), separators=(",", ":")
        )
    onstart = build_onstart(
        run_url=runner.run_url,
        attempt=number,
        requirement=worker_requirement(runner.rundir, explicit=runner.job.worker_requirement),
    )
    request = CreateInstanceRequest(
        image=runner.image,
        disk_gb=runner.disk_gb,
        env=env,
        onstart=onstart,
        label=label,
        price=bid,
    )
    engine = runner.provisioner
    ticket = engine.begin(
        runner.run_id,
        number,
        offer=offer,
        label=label,
        bid=bid,
        price=price,
        disk_gb=runner.disk_gb,
    )
    runner.emit(
        "offer_chosen",
        f"attempt {number}: renting offer {offer.id} on machine {offer.machine_id} "
        f"({offer.gpu_name}, {price.dph_total:.3f} $/h"
        f"{f', bid {bid:.3f}' if bid is not None else ''})",
    )
    created = engine.create(offer, request)
    if isinstance(created, CreateFailure):
        engine.failed(ticket, created)
        if created.error is not None:
            raise created.error  # the create route itself is missing: no offer can help
        if created.kind in (CreateFailureKind.OFFER_GONE, CreateFailureKind.REJECTED):
            runner.stay_off(offer.machine_id)
        runner.summaries[number] = failed_create_summary(
            number,
            offer=offer,
            bid=bid,
            price=price,
            instance_id=created.contract,
            now=runner.clock.now(),
            reason=created.kind.value,
        )
        runner.emit("offer_failed", f"attempt {number}: {created.kind.value}: {created.detail}")
        return False
    now = engine.created(ticket, created, price)
    runner.live = LiveAttempt(
        number=number,
        instance_id=created,
        offer_id=offer.id,
        machine_id=offer.machine_id,
        gpu_name=offer.gpu_name,
        bid=bid,
        bid_cap=runner.bid_cap(price.storage_dph) if bid is not None else None,
        meter=CostMeter(price, start=now),
        ledger_id=ticket.attempt_id,
        created_at=now,
        recorded_at=now,
        beat_changed=now,
    )
    runner.emit("created", f"attempt {number}: instance {created} created", live=runner.live)
    return True

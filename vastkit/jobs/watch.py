"""Steps of a job that watch an attempt: its phases, its heartbeat, and the reactions."""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING

import attrs

from vastkit.api.models import InstanceInfo, InstanceState
from vastkit.errors import (
    APIError,
    AuthenticationError,
    JobError,
    NoOfferError,
    PermissionDeniedError,
)
from vastkit.jobs import reactions
from vastkit.jobs.reactions import Act, Timers
from vastkit.jobs.state import AttemptOver, LiveAttempt
from vastkit.money import ContractPrice, StopDate, date_stop, hourly_rate
from vastkit.outbid import BidHistory, OutbidQuote
from vastkit.rundir import (
    Heartbeat,
    Phase,
    ResultStatus,
)

if TYPE_CHECKING:
    from vastkit.jobs.orchestrator import JobRunner


logger = logging.getLogger("vastkit.jobs")

DEFAULT_RECOVERY_S = 120.0
"""Seconds from an outbid to training again, assumed before an attempt has shown its own."""

REMIND_EVERY_S = 600.0
"""While a job waits out an outbid, how often it says again that it waits (an event)."""


@attrs.define
class BidWatch:
    """What one job keeps between outbids: its bid history and the price of a move."""

    history: BidHistory = attrs.field(factory=BidHistory)
    run_from: tuple[int, float] | None = None
    """(attempt, time) the attempt's instance last ran again after an outbid."""
    alternative: tuple[int, float, float | None] | None = None
    """(attempt, outbid since, $/h of the best other offer) for the outbid going on."""
    told: tuple[tuple[int, float, bool], float] | None = None
    """((attempt, outbid since, raised), when) the job last said it waits out an outbid."""


_BIDS: weakref.WeakKeyDictionary[JobRunner, BidWatch] = weakref.WeakKeyDictionary()
"""Each job's :class:`BidWatch` (kept here so the runner's constructor stays as it is)."""


def bid_watch(runner: JobRunner) -> BidWatch:
    """The job's bid history and move price (made on first use)."""
    found = _BIDS.get(runner)
    if found is None:
        found = _BIDS[runner] = BidWatch()
    return found


def wait_running(runner: JobRunner, live: LiveAttempt) -> None:
    """Wait through provisioning and loading with a deadline per phase."""
    seen_phase: list[str] = [""]

    def on_state(view: InstanceInfo, phase: str, in_phase: float) -> None:
        runner.observe(live, view)
        now = runner.clock.now()
        if phase != seen_phase[0]:
            seen_phase[0] = phase
            if phase == "loading":
                runner.ledger.mark_phase(live.ledger_id, "loading", at=now, fence=runner.fence)
            runner.emit("phase", f"instance {live.instance_id}: {phase}", live=live)
        runner.check_limits(live)
        runner.beat()

    outcome = runner.provisioner.wait_running(
        lambda: runner.poll(live),
        runner.t.instance_timeouts(),
        on_state=on_state,
        expect_bid_stop=live.bid is not None,
    )
    if not outcome.ok:
        if outcome.reason == "outbid":
            runner.stay_off(live.machine_id)
        raise AttemptOver(outcome.reason, outcome.detail, blame=outcome.blame_machine)
    now = runner.clock.now()
    if outcome.instance is not None:
        runner.observe(live, outcome.instance)
    live.running_at = now
    live.beat_changed = now
    runner.ledger.mark_phase(live.ledger_id, "running", at=now, fence=runner.fence)
    runner.emit(
        "running",
        f"instance {live.instance_id} is running; waiting for the worker",
        live=live,
    )


def watch(runner: JobRunner, live: LiveAttempt) -> None:
    """Watch a running attempt until it ends (raises :class:`AttemptOver`)."""
    while True:
        runner.beat()
        try:
            view = runner.poll(live)
        except (AuthenticationError, PermissionDeniedError):
            raise
        except APIError as exc:
            logger.warning("listing instances failed (%s); looking again later", exc)
            view = live.view
            if view is None:
                runner.check_limits(live)
                runner.clock.sleep(runner.t.poll_interval)
                continue
        now = runner.clock.now()
        if view is not None:
            runner.observe(live, view)
        # a result committed before the cap or the deadline ends the job as it says
        runner.read_worker(live, now)
        runner.check_limits(live)
        if view is None:
            raise AttemptOver("vanished", "the instance no longer exists")
        runner.react(live, view, now)
        runner.status_line(live)
        runner.clock.sleep(runner.t.poll_interval)


def read_worker(runner: JobRunner, live: LiveAttempt, now: float) -> None:
    """Read the job's result and the attempt's heartbeat from the store."""
    try:
        result = runner.rundir.read_result()
    except (JobError, OSError) as exc:
        logger.warning("could not read result.json: %s", exc)
        result = None
    if result is not None and result.attempt == live.number:
        runner.final = result
        raise AttemptOver("result", result.reason or result.status.value)
    try:
        beat = runner.rundir.read_heartbeat(live.number)
    except (JobError, OSError) as exc:
        logger.warning("could not read the heartbeat: %s", exc)
        return
    if beat is None:
        return
    key = (beat.time, beat.step, beat.phase, beat.checkpoint_step, beat.message)
    if key != live.beat_key:
        live.beat_key = key
        live.beat_changed = now
        runner.on_heartbeat(live, beat, now)


def on_heartbeat(runner: JobRunner, live: LiveAttempt, beat: Heartbeat, now: float) -> None:
    redate_stop(runner, live, beat)
    if live.ready_at is None:
        live.ready_at = now
        runner.ledger.mark_phase(live.ledger_id, "ready", at=now, fence=runner.fence)
        runner.emit(
            "worker_ready",
            f"attempt {live.number}: the worker runs the command on machine {live.machine_id}",
            live=live,
            step=beat.step,
        )
    if beat.step is not None and beat.step != live.last_step:
        if live.last_step is None and live.resumed_from is None:
            live.resumed_from = beat.step
        live.last_step = beat.step
        runner.last_step = beat.step
        runner.emit(
            "progress",
            f"attempt {live.number}: step {beat.step}",
            live=live,
            step=beat.step,
            level=logging.DEBUG,
        )
    if beat.checkpoint_step is not None and beat.checkpoint_step != live.checkpoint_step:
        live.checkpoint_step = beat.checkpoint_step
        runner.emit(
            "checkpoint",
            f"attempt {live.number}: checkpoint committed at step {beat.checkpoint_step}",
            live=live,
            step=beat.checkpoint_step,
        )


def react(runner: JobRunner, live: LiveAttempt, view: InstanceInfo, now: float) -> None:
    """Carry out the reaction table's answer (:func:`vastkit.jobs.reactions.react`)."""
    before = Timers(**{f.name: getattr(live, f.name) for f in attrs.fields(Timers)})
    reaction = reactions.react(
        view.state,
        before,
        now,
        runner.t,
        attempt=live.number,
        instance_id=live.instance_id,
        status_msg=view.status_msg,
    )
    for field in attrs.fields(Timers):
        setattr(live, field.name, getattr(reaction.timers, field.name))
    if before.outbid_since is not None and live.outbid_since is None:  # runs again
        bids = bid_watch(runner)
        bids.history = bids.history.outbid_ended(
            now - before.outbid_since, by_itself=not before.raised_for_outbid
        )
        bids.run_from = (live.number, now)
    for notice in reaction.notices:
        runner.emit(
            notice.kind,
            notice.message,
            live=live,
            level=logging.WARNING if notice.warning else logging.INFO,
        )
    if reaction.act is Act.END:
        raise AttemptOver(reaction.reason, reaction.detail, blame=reaction.blame)
    if reaction.act is Act.OUTBID:
        runner.on_outbid(live, view, now)
    elif reaction.act is Act.EXITED:
        exited(runner, live, now)


def exited(runner: JobRunner, live: LiveAttempt, now: float) -> None:
    """The container exited: end the attempt as the worker's attempt result says."""
    runner.read_worker(live, now)
    try:
        attempt_result = runner.rundir.read_attempt_result(live.number)
    except (JobError, OSError):
        attempt_result = None
    if attempt_result is not None and attempt_result.status in (
        ResultStatus.PREEMPTED,
        ResultStatus.ABANDONED,
    ):
        raise AttemptOver("preempted", attempt_result.reason or "")
    if attempt_result is not None and attempt_result.status is ResultStatus.FAILED:
        runner.final = attempt_result
        raise AttemptOver("result", attempt_result.reason or "the worker failed")
    raise AttemptOver("worker_crashed", "the container exited without a result", blame=True)


def on_outbid(runner: JobRunner, live: LiveAttempt, view: InstanceInfo, now: float) -> None:
    live.beat_changed = now
    bids = bid_watch(runner)
    if live.outbid_since is None:
        live.outbid_since = now
        ran_from = live.running_at if live.running_at is not None else now
        if bids.run_from is not None and bids.run_from[0] == live.number:
            ran_from = bids.run_from[1]
        bids.history = bids.history.ran(now - ran_from).outbid_seen()
        runner.emit(
            "outbid",
            f"instance {live.instance_id} on machine {live.machine_id} was outbid "
            f"(our bid {live.bid or 0:.4f} $/h)",
            live=live,
            level=logging.WARNING,
        )
    assert live.bid is not None
    assert live.bid_cap is not None
    decision = runner.job.outbid.decide(
        outbid_for=now - live.outbid_since,
        current_bid=live.bid,
        min_bid=view.min_bid,
        cap=live.bid_cap,
        raised_at_current=live.raised_for_outbid,
        quote=outbid_quote(runner, live, view, live.outbid_since)
        if runner.job.outbid.action == "cheapest_expected"
        else None,
        history=bids.history,
    )
    if decision.action == "raise" and decision.bid is not None:
        try:
            runner.client.change_bid(live.instance_id, decision.bid)
        except (AuthenticationError, PermissionDeniedError):
            raise
        except APIError as exc:
            logger.warning("raising the bid failed: %s", exc)
            return
        live.meter.reprice(runner.clock.now(), attrs.evolve(live.price, gpu_dph=decision.bid))
        live.bid = decision.bid
        live.raised_for_outbid = True
        runner.ledger.update_attempt(live.ledger_id, bid=decision.bid, fence=runner.fence)
        runner.sample(live)
        runner.emit("bid_raised", f"instance {live.instance_id}: {decision.reason}", live=live)
    elif decision.action == "give_up":
        bids.history = bids.history.outbid_ended(now - live.outbid_since, by_itself=False)
        if live.machine_id is not None:
            runner.stay_off(live.machine_id)
        raise AttemptOver("outbid", decision.reason)
    else:
        tell_waiting(runner, live, decision.reason, now)


def tell_waiting(runner: JobRunner, live: LiveAttempt, reason: str, now: float) -> None:
    """Say that the job waits out an outbid, why, and when it will move: at once (a WARNING
    event), after a raise, and again every :data:`REMIND_EVERY_S` while it waits; the status
    line shows the move's time in between."""
    assert live.outbid_since is not None
    bids = bid_watch(runner)
    key = (live.number, live.outbid_since, live.raised_for_outbid)
    first = bids.told is None or bids.told[0] != key
    if not first and bids.told is not None and now - bids.told[1] < REMIND_EVERY_S:
        return
    bids.told = (key, now)
    plan = f"will move to another offer {move_plan(runner, live)} unless it runs again"
    if first:
        message = (
            f"instance {live.instance_id} is outbid; waiting for machine {live.machine_id} "
            f"to come back: {reason}; {plan}"
        )
    else:
        message = (
            f"instance {live.instance_id} still outbid after {now - live.outbid_since:.0f} s; "
            f"waiting for machine {live.machine_id}; {plan}"
        )
    runner.emit(
        "outbid_waiting",
        message,
        live=live,
        level=logging.WARNING if first else logging.INFO,
    )


def move_plan(runner: JobRunner, live: LiveAttempt) -> str:
    """When the outbid policy gives the machine up if it is not back: ``"at 17:42:10 UTC
    (3600 s after the outbid)"``."""
    assert live.outbid_since is not None
    wait_s = runner.job.outbid.wait_s
    at = time.strftime("%H:%M:%S UTC", time.gmtime(live.outbid_since + wait_s))
    return f"at {at} ({wait_s:.0f} s after the outbid)"


def outbid_quote(
    runner: JobRunner, live: LiveAttempt, view: InstanceInfo, since: float
) -> OutbidQuote:
    """The prices of waiting, raising and moving for ``live``'s outbid (one offer search per
    outbid prices the move)."""
    assert live.bid is not None
    assert live.bid_cap is not None
    bids = bid_watch(runner)
    if bids.alternative is None or bids.alternative[:2] != (live.number, since):
        searched, alternative = best_other_offer(runner, live)
        if searched:
            bids.alternative = (live.number, since, alternative)
    else:
        alternative = bids.alternative[2]
    recovery = DEFAULT_RECOVERY_S
    if live.ready_at is not None:
        recovery = max(live.ready_at - live.created_at, 0.0)
    return OutbidQuote(
        current_bid=live.bid,
        storage_dph=live.price.storage_dph,
        min_bid=view.min_bid,
        cap=live.bid_cap,
        alternative_dph=alternative,
        recovery_s=recovery,
        restart_s=recovery,
    )


def best_other_offer(runner: JobRunner, live: LiveAttempt) -> tuple[bool, float | None]:
    """Whether the search answered, and the whole $/h of the offer a move would rent (None:
    none qualifies, or the search failed and the next poll tries again)."""
    avoid = dict(runner.avoid)
    if live.machine_id is not None:
        avoid[live.machine_id] = float("inf")
    try:
        blocked = runner.provisioner.blocked_machines(avoid)
        candidates = runner.provisioner.candidates(runner.profile, blocked=blocked)
    except NoOfferError:
        return True, None
    except (AuthenticationError, PermissionDeniedError):
        raise
    except APIError as exc:
        logger.warning("pricing a move failed: %s", exc)
        return False, None
    if not candidates:
        return True, None
    best = candidates[0]
    price = ContractPrice.from_offer(best.offer, disk_gb=runner.disk_gb, bid=best.bid)
    return True, price.dph_total


def status_line(runner: JobRunner, live: LiveAttempt) -> None:
    step = f", step {live.last_step}" if live.last_step is not None else ""
    ckpt = f", checkpoint {live.checkpoint_step}" if live.checkpoint_step is not None else ""
    spent = runner.spent(live)
    line = (
        f"{runner.job.name}: attempt {live.number} {live.state.value} on machine "
        f"{live.machine_id}{step}{ckpt}; ${spent:.4f} so far"
    )
    if live.outbid_since is not None:
        line += f"; outbid: waiting for the machine, moving {move_plan(runner, live)}"
    if line != runner._last_line:
        runner._last_line = line
        runner.progress.update(line)


def observe(runner: JobRunner, live: LiveAttempt, view: InstanceInfo) -> None:
    """Take in a poll's view of the instance: its state, and the ledger's sample up to now."""
    live.view = view
    now = runner.clock.now()
    started = _running_since(live, view, now)
    if started is not None:
        # Vast bills the GPU from the moment the container runs, not from the poll that saw
        # it: the container's uptime dates the change.
        live.move_to(InstanceState.RUNNING, started)
        runner.sample(live, at=started)
        live.stop_window = None
    stopped = _stopped_since(runner, live, view, now)
    if stopped is not None:
        # The container stopped between two polls; Vast stopped billing its GPU then, so the
        # worker's own record dates the change rather than the poll that saw it. A date that
        # is only a bound may still be moved back when the worker's stop signal time arrives.
        lower = live.recorded_at
        if stopped.at < now:
            live.move_to(view.state, stopped.at)
            runner.sample(live, at=stopped.at)
        live.stop_window = None if stopped.exact else (lower, stopped.at, view.state)
    # Every poll settles the spend in the ledger and records the rate from now on, so every
    # budget guard on this ledger (other jobs, other drivers) sees this instance's spend.
    live.move_to(view.state, now)
    runner.sample(live, extra_usd=live.traffic(view))


def _stopped_since(
    runner: JobRunner, live: LiveAttempt, view: InstanceInfo, now: float
) -> StopDate | None:
    """When a container last seen running stopped (None: it did not stop).

    Read on the poll that first sees the change (:func:`vastkit.money.date_stop`): the worker's
    stop signal time (in its heartbeat from the SIGTERM on) dates an outbid or a stop; its
    ``result.json`` (its last act before it exits) or its first "stopping" heartbeat bound it;
    without any the poll dates it: counting a little more, never less.
    """
    if live.state is not InstanceState.RUNNING or view.state is InstanceState.RUNNING:
        return None
    signal_at = ended_at = stopping_at = None
    try:
        ended = runner.rundir.read_attempt_result(live.number)
        beat = runner.rundir.read_heartbeat(live.number)
    except (JobError, OSError):
        ended = beat = None
    if ended is not None:
        ended_at = ended.ended_at
    if beat is not None:
        signal_at = beat.stop_signal_at
        stopping_at = beat.time if beat.phase is Phase.STOPPING else None
    seen_running = min(live.recorded_at, now)  # a wall clock may step back
    return date_stop(seen_running, now, signal_at=signal_at, bounds=(ended_at, stopping_at))


def redate_stop(runner: JobRunner, live: LiveAttempt, beat: Heartbeat | None) -> None:
    """A stop dated by a bound, now dated by the worker's stop signal: move it in the ledger."""
    window = live.stop_window
    if window is None or beat is None or beat.stop_signal_at is None:
        return
    lower, upper, state = window
    live.stop_window = None
    stop = date_stop(lower, upper, signal_at=beat.stop_signal_at)
    if stop.exact:
        runner.ledger.backdate_change(
            live.ledger_id,
            state=state.value,
            rate_dph=hourly_rate(live.price, state),
            at=stop.at,
            fence=runner.fence,
        )


def _running_since(live: LiveAttempt, view: InstanceInfo, now: float) -> float | None:
    """When a container seen running for the first time since it last ran actually started.

    From the instance's ``uptime_mins`` (minutes since the container last started), never
    before the attempt's last sample; None when nothing changed or the uptime is unknown.
    """
    if view.state is not InstanceState.RUNNING or live.state is InstanceState.RUNNING:
        return None
    if view.uptime_mins is None or not view.uptime_mins >= 0:
        return None
    started = max(now - view.uptime_mins * 60.0, live.recorded_at)
    return started if started < now else None

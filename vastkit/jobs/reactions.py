"""The reaction table of a watched attempt: what ``run_job`` does about each state it sees.

:func:`react` is a pure function of what was observed (the instance's state, the attempt's
timers, the time and the job's deadlines) to a :class:`Reaction`: keep watching, end the attempt
(with its reason and whether the machine is to blame), apply the outbid policy, or read the
worker's result of an exited container. The orchestrator's watch loop carries it out; tests drive
the table directly with generated observations.

=====================  ==============================================  ==========================
state seen             condition                                       reaction
=====================  ==============================================  ==========================
running                no heartbeat ``worker_ready`` s after running    end: worker_never_started
running                heartbeat unchanged for ``heartbeat_stale`` s    end: heartbeat_stale
outbid                 (a bid instance, stopped triple)                 outbid policy
offline / unknown      for ``host_lost_grace`` s                        end: host_lost
exited                 always                                           read the attempt's result
loading (again)        for ``loading`` s                                end: loading_deadline
failed                 always                                           end: failed
stopped / other        for ``host_lost_grace`` s                        end: stopped
=====================  ==============================================  ==========================
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from vastkit.api.models import InstanceState
from vastkit.jobs.spec import JobTimeouts

__all__ = ["Act", "Notice", "Reaction", "Timers", "react"]

_LOST = (InstanceState.OFFLINE, InstanceState.UNKNOWN)


class Act(enum.StrEnum):
    """What the watch loop does next."""

    WATCH = "watch"
    """Nothing to do: look again after the poll interval."""
    END = "end"
    """End the attempt (destroy, maybe block the machine, relaunch)."""
    OUTBID = "outbid"
    """Apply the job's outbid policy."""
    EXITED = "exited"
    """The container exited: the worker's attempt result says why."""


@attrs.frozen(kw_only=True)
class Notice:
    """An event the reaction asks to report."""

    kind: str
    message: str
    warning: bool = False


@attrs.frozen(kw_only=True)
class Timers:
    """The times of an attempt the table reads and moves."""

    running_at: float | None = None
    """When the container was first seen running."""
    ready_at: float | None = None
    """When the worker's first heartbeat arrived."""
    beat_changed: float = 0.0
    """When the heartbeat last changed (or a state excused its silence)."""
    outbid_since: float | None = None
    """Since when the instance has been outbid."""
    raised_for_outbid: bool = False
    """Whether the current bid was already a raise for this outbid."""
    lost_since: float | None = None
    """Since when the host has been offline or unknown."""
    loading_since: float | None = None
    """Since when the container has been loading again."""
    stopped_since: float | None = None
    """Since when the instance has been stopped (or provisioning again)."""


@attrs.frozen(kw_only=True)
class Reaction:
    """What to do, and the timers from now on."""

    act: Act
    timers: Timers
    reason: str = ""
    """Why the attempt ends (``act`` END)."""
    detail: str = ""
    """The explanation."""
    blame: bool = False
    """Whether the machine is to blame (it may be blocked)."""
    notices: tuple[Notice, ...] = ()
    """Events to report."""


def react(
    state: InstanceState,
    timers: Timers,
    now: float,
    t: JobTimeouts,
    *,
    attempt: int,
    instance_id: int,
    status_msg: str | None = None,
) -> Reaction:
    """The reaction to seeing a watched attempt's instance in ``state`` at ``now``.

    Args:
        state: The instance's state.
        timers: The attempt's timers before this observation.
        now: The time of the observation.
        t: The job's deadlines.
        attempt: The attempt number (for messages).
        instance_id: The instance (for messages).
        status_msg: Vast's status message.
    """
    notices: list[Notice] = []
    timers = _reset(state, timers, now, instance_id, notices)

    def keep(**changes: Any) -> Reaction:
        return Reaction(
            act=Act.WATCH, timers=attrs.evolve(timers, **changes), notices=tuple(notices)
        )

    def end(reason: str, detail: str, *, blame: bool = True, **changes: Any) -> Reaction:
        return Reaction(
            act=Act.END,
            timers=attrs.evolve(timers, **changes),
            reason=reason,
            detail=detail,
            blame=blame,
            notices=tuple(notices),
        )

    if state is InstanceState.RUNNING:
        if timers.ready_at is None:
            if (
                now - (timers.running_at if timers.running_at is not None else now)
                >= t.worker_ready
            ):
                return end(
                    "worker_never_started",
                    f"no heartbeat {t.worker_ready:.0f} s after the container ran",
                )
        elif now - timers.beat_changed >= t.heartbeat_stale:
            silent = now - timers.beat_changed
            notices.append(
                Notice(
                    kind="heartbeat_stale",
                    message=f"attempt {attempt}: no heartbeat for {silent:.0f} s",
                    warning=True,
                )
            )
            return end(
                "heartbeat_stale", f"the worker's heartbeat did not change for {silent:.0f} s"
            )
        return keep()
    if state is InstanceState.OUTBID:
        return Reaction(
            act=Act.OUTBID, timers=attrs.evolve(timers, beat_changed=now), notices=tuple(notices)
        )
    if state in _LOST:
        lost_since = timers.lost_since
        if lost_since is None:
            lost_since = now
            notices.append(
                Notice(
                    kind="host_lost",
                    message=f"instance {instance_id}: host is {state.value}; "
                    f"grace {t.host_lost_grace:.0f} s",
                    warning=True,
                )
            )
        if now - lost_since >= t.host_lost_grace:
            return end(
                "host_lost",
                f"the host was {state.value} for {now - lost_since:.0f} s",
                lost_since=lost_since,
            )
        # no heartbeat is expected from a frozen host
        return keep(lost_since=lost_since, beat_changed=now)
    if state is InstanceState.EXITED:
        return Reaction(act=Act.EXITED, timers=timers, notices=tuple(notices))
    if state is InstanceState.LOADING:
        if timers.loading_since is None:
            return keep(loading_since=now, beat_changed=now)
        if now - timers.loading_since >= t.loading:
            return end("loading_deadline", "stuck restarting")
        return keep(beat_changed=now)
    if state is InstanceState.FAILED:
        return end("failed", status_msg or "the container failed")
    # stopped (by someone else, or scheduling) or provisioning again
    if timers.stopped_since is None:
        return keep(stopped_since=now, beat_changed=now)
    if now - timers.stopped_since >= t.host_lost_grace:
        return end("stopped", f"the instance stayed {state.value}", blame=False)
    return keep(beat_changed=now)


def _reset(
    state: InstanceState, timers: Timers, now: float, instance_id: int, notices: list[Notice]
) -> Timers:
    """Clear the timers of conditions that ``state`` shows are over."""
    if state is not InstanceState.OUTBID and timers.outbid_since is not None:
        timers = attrs.evolve(timers, outbid_since=None, raised_for_outbid=False, beat_changed=now)
        notices.append(
            Notice(kind="outbid_recovered", message=f"instance {instance_id} runs again")
        )
    changes: dict[str, Any] = {}
    if state not in _LOST:
        changes["lost_since"] = None
    if state is not InstanceState.LOADING:
        changes["loading_since"] = None
    if state is not InstanceState.STOPPED:
        changes["stopped_since"] = None
    return attrs.evolve(timers, **changes)

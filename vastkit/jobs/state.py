"""The orchestrator's working state: the live attempt and its control-flow signals."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import attrs

from vastkit._yaml import did_you_mean
from vastkit.api.models import InstanceInfo, InstanceState
from vastkit.errors import (
    ConfigError,
)
from vastkit.jobs.spec import JobStatus
from vastkit.money import ContractPrice, CostMeter
from vastkit.profiles import GpuProfile, get_profile

logger = logging.getLogger("vastkit.jobs")

__all__ = ["AttemptOver", "JobEnded", "LiveAttempt", "resolve_profile"]


class JobEnded(Exception):
    """Ends the job with a status (internal control flow)."""

    def __init__(self, status: JobStatus, reason: str) -> None:
        super().__init__(reason)
        self.status: JobStatus = status
        self.reason = reason


@attrs.define
class LiveAttempt:
    """One attempt the orchestrator watches: its instance, its meter and its timers."""

    number: int
    instance_id: int
    offer_id: int | None
    machine_id: int | None
    gpu_name: str | None
    bid: float | None
    bid_cap: float | None
    meter: CostMeter
    ledger_id: int
    created_at: float
    state: InstanceState = InstanceState.PROVISIONING
    recorded_at: float = 0.0
    running_at: float | None = None
    ready_at: float | None = None
    beat_key: tuple[Any, ...] | None = None
    beat_changed: float = 0.0
    last_step: int | None = None
    checkpoint_step: int | None = None
    outbid_since: float | None = None
    raised_for_outbid: bool = False
    lost_since: float | None = None
    loading_since: float | None = None
    stopped_since: float | None = None
    resumed_from: int | None = None
    closed: bool = False
    view: InstanceInfo | None = None
    stop_window: tuple[float, float, InstanceState] | None = None
    """``(last seen running, date used, state)`` of a stop dated only by a bound (the poll that
    saw it, a write of the worker's after it): the worker's stop signal time, when it arrives,
    moves the change back (``watch.redate_stop``)."""
    billed_kb: tuple[float, float] = (0.0, 0.0)
    """Vast's cumulative billed traffic counters (sent, received) at the last look."""

    @property
    def price(self) -> ContractPrice:
        """The contract's prices (the bid raised, if it was)."""
        return self.meter.price

    def accrue(self, now: float) -> None:
        """Account the cost up to ``now`` in the current state."""
        self.meter.observe(now, self.state)

    def traffic(self, view: InstanceInfo) -> float:
        """Account the traffic Vast billed since the last look; returns its cost in dollars."""
        up = view.inet_up_billed_kb
        down = view.inet_down_billed_kb
        if up is None and down is None:
            return 0.0
        new = (up or 0.0, down or 0.0)
        old = self.billed_kb
        self.billed_kb = (max(new[0], old[0]), max(new[1], old[1]))
        return self.meter.add_traffic(
            up_gb=max(new[0] - old[0], 0.0) / 1e6, down_gb=max(new[1] - old[1], 0.0) / 1e6
        )

    def move_to(self, state: InstanceState, now: float) -> None:
        """Account up to ``now``, then bill as ``state`` from now on."""
        self.meter.observe(now, self.state)
        self.state = state
        self.meter.observe(now, state)

    def close(self, now: float) -> None:
        """The instance is gone at ``now``: stop accruing."""
        self.meter.observe(now, self.state)
        self.meter.close(now)
        self.closed = True

    @property
    def cost(self) -> float:
        """Dollars accrued so far."""
        return self.meter.total


class AttemptOver(Exception):
    """The watched attempt ended (internal control flow)."""

    def __init__(self, reason: str, detail: str = "", *, blame: bool = False) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail
        self.blame = blame


def resolve_profile(
    profile: str | GpuProfile,
    profiles: str | os.PathLike[str] | Mapping[str, GpuProfile] | None,
) -> GpuProfile:
    if isinstance(profile, GpuProfile):
        return profile
    if profiles is None:
        return get_profile(profile)
    if isinstance(profiles, Mapping):
        if profile in profiles:
            found = profiles[profile]
            if isinstance(found, GpuProfile):
                return found
        raise ConfigError(
            f"unknown profile '{profile}'; known profiles: {', '.join(profiles)}"
            f"{did_you_mean(profile, profiles)}"
        )
    return get_profile(profile, profiles)

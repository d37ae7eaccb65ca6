"""Money: what a rental costs, counted one way everywhere.

Vast bills per second: the GPU rate while the container runs (``dph_base`` on demand, the bid for
an interruptible rental), the storage rate (``disk_GB x storage_cost / 720`` per hour) from create
to destroy in every state but ``offline``, and bandwidth per GB. Prices come from the rented
contract, fixed when it was created, not from a catalog.

This module is the one place that does that arithmetic: :class:`ContractPrice` (a contract's
prices), :func:`hourly_rate` (the rate in a state), :class:`CostMeter` (the one cost meter, used
by :class:`vastkit.Instance`, ``run_job``, the queue and the budget guard), :func:`accrued_cost`
(the same with bandwidth, for a finished attempt), :func:`date_stop` (when a container that stopped
between two polls stopped billing its GPU), :func:`worst_case_usd` (what a run can cost at most, for
budget preflights) and :func:`bid_cap` (the highest bid a profile allows). Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs

from vastkit.api.models import HOURS_PER_STORAGE_MONTH, InstanceInfo, InstanceState, Offer
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile

__all__ = [
    "ASSUMED_STORAGE_COST_PER_GB_MONTH",
    "ContractPrice",
    "CostMeter",
    "StopDate",
    "accrued_cost",
    "bid_cap",
    "date_stop",
    "hourly_rate",
    "storage_usd",
    "traffic_usd",
    "worst_case_usd",
]

ASSUMED_STORAGE_COST_PER_GB_MONTH = 0.30
"""Storage price assumed by a preflight check that has no offer yet ($/GB/month); a high end of
what Vast hosts charge, so the worst case stays a worst case."""

GB = 1e9


@attrs.frozen(kw_only=True)
class ContractPrice:
    """The prices of one rented contract, fixed when it was created.

    Attributes:
        gpu_dph: GPU rate for the whole instance in $/h: ``dph_base`` on-demand, or the bid.
        storage_dph: Storage rate for the instance's disk in $/h.
        inet_up_cost_per_gb: Upload price in $/GB.
        inet_down_cost_per_gb: Download price in $/GB.
    """

    gpu_dph: float
    storage_dph: float = 0.0
    inet_up_cost_per_gb: float = 0.0
    inet_down_cost_per_gb: float = 0.0

    def __attrs_post_init__(self) -> None:
        for name in ("gpu_dph", "storage_dph", "inet_up_cost_per_gb", "inet_down_cost_per_gb"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number (got {value})")

    @property
    def dph_total(self) -> float:
        """GPU plus storage in $/h: the rate while running."""
        return self.gpu_dph + self.storage_dph

    @classmethod
    def from_offer(cls, offer: Offer, *, disk_gb: float, bid: float | None = None) -> ContractPrice:
        """Price a rental of ``offer`` with ``disk_gb`` of disk.

        Args:
            offer: The offer rented.
            disk_gb: The disk asked for, in GB.
            bid: The bid in $/h for an interruptible rental; None for on-demand.

        Returns:
            The contract's prices.
        """
        return cls(
            gpu_dph=offer.dph_base if bid is None else bid,
            storage_dph=offer.storage_dph(disk_gb),
            inet_up_cost_per_gb=offer.inet_up_cost_per_gb,
            inet_down_cost_per_gb=offer.inet_down_cost_per_gb,
        )

    @classmethod
    def from_instance(cls, instance: InstanceInfo) -> ContractPrice:
        """Price a rented instance from its own fields (``dph_base`` is the bid when ``is_bid``).

        Args:
            instance: The instance as the API shows it.

        Returns:
            The contract's prices; unknown fields count as 0.
        """
        storage = 0.0
        if instance.disk_space_gb and instance.storage_cost_per_gb_month:
            storage = (
                instance.disk_space_gb
                * instance.storage_cost_per_gb_month
                / HOURS_PER_STORAGE_MONTH
            )
        elif instance.dph_total is not None and instance.dph_base is not None:
            storage = max(instance.dph_total - instance.dph_base, 0.0)
        return cls(
            gpu_dph=instance.dph_base or 0.0,
            storage_dph=storage,
            inet_up_cost_per_gb=instance.inet_up_cost_per_gb or 0.0,
            inet_down_cost_per_gb=instance.inet_down_cost_per_gb or 0.0,
        )


_GPU_BILLED = frozenset({InstanceState.RUNNING, InstanceState.UNKNOWN})


def hourly_rate(price: ContractPrice, state: InstanceState | str | None) -> float:
    """The rate in $/h an instance in ``state`` accrues.

    Running (also ``frozen``) pays GPU and storage; ``offline`` pays nothing; every other
    existing state (provisioning, loading, stopped, outbid, exited, failed) pays storage only.
    ``unknown`` (no recent heartbeat from the host) counts as running, so budget checks stay
    on the safe side. ``None`` (destroyed, or not created yet) pays nothing.

    Args:
        price: The contract's prices.
        state: The instance's state (an :class:`InstanceState` or its value).

    Returns:
        Dollars per hour.
    """
    if state is None or state == "destroyed":
        return 0.0
    state = InstanceState(state)
    if state == InstanceState.OFFLINE:
        return 0.0
    if state in _GPU_BILLED:
        return price.gpu_dph + price.storage_dph
    return price.storage_dph


def accrued_cost(
    price: ContractPrice,
    segments: Iterable[tuple[InstanceState | str, float]],
    *,
    bytes_up: float = 0.0,
    bytes_down: float = 0.0,
) -> float:
    """Cost of an instance that spent ``segments`` of time in various states, plus bandwidth.

    Args:
        price: The contract's prices.
        segments: ``(state, seconds)`` pairs.
        bytes_up: Bytes sent (1 GB = 10^9 bytes).
        bytes_down: Bytes received.

    Returns:
        Dollars.

    Raises:
        ValueError: A negative duration or byte count.
    """
    total = 0.0
    for state, seconds in segments:
        if seconds < 0:
            raise ValueError(f"a segment cannot last a negative time ({seconds} s)")
        total += hourly_rate(price, state) * seconds / 3600.0
    if bytes_up < 0 or bytes_down < 0:
        raise ValueError("byte counts cannot be negative")
    total += bytes_up / GB * price.inet_up_cost_per_gb
    total += bytes_down / GB * price.inet_down_cost_per_gb
    return total


@attrs.frozen(kw_only=True)
class StopDate:
    """When a container stopped billing its GPU, as :func:`date_stop` dates it.

    Attributes:
        at: The time (the driver's clock, Unix seconds).
        exact: Dated by the container's own record of its stop signal; False when only a bound
            dated it (a later record may still date it earlier).
    """

    at: float
    exact: bool


def date_stop(
    seen_running: float,
    seen_stopped: float,
    *,
    signal_at: float | None = None,
    bounds: Iterable[float | None] = (),
) -> StopDate:
    """When a container last seen running at ``seen_running``, and seen stopped at
    ``seen_stopped``, stopped billing its GPU.

    Vast bills the GPU up to the stop itself (an outbid, a stop, the end of the contract), and no
    field of the instance dates that stop: the polls only bracket it. The worker inside the
    container dates it: the time its stop signal (SIGTERM) arrived, read in the signal handler,
    is the stop; what it wrote after the stop (a "stopping" heartbeat, its result) bounds it from
    above. Without either the poll that saw the change dates it: counting a little more than
    the bill, never less. Only times strictly inside the polls' window count, so a worker's
    skewed clock cannot move spend outside what the polls prove.

    Args:
        seen_running: The last time the instance was seen (or dated) running.
        seen_stopped: The first poll that saw it stopped.
        signal_at: When the worker received its stop signal, if it says.
        bounds: Times the worker wrote after the stop (None: not known).

    Returns:
        The stop's date and whether it is exact.

    Raises:
        ValueError: ``seen_stopped`` before ``seen_running``.
    """
    if seen_stopped < seen_running:
        raise ValueError(
            f"seen stopped at {seen_stopped} before last seen running at {seen_running}"
        )

    def inside(t: float | None) -> bool:
        return t is not None and math.isfinite(t) and seen_running < t < seen_stopped

    if inside(signal_at):
        assert signal_at is not None
        return StopDate(at=signal_at, exact=True)
    known = [t for t in bounds if t is not None and inside(t)]
    return StopDate(at=min(known, default=seen_stopped), exact=False)


def worst_case_usd(
    profile: GpuProfile,
    *,
    storage_dph: float | None = None,
    overhead_hours: float = 1.0,
) -> float:
    """The most one full-length run of ``profile`` can cost.

    ``max_dph x max_duration_hours`` (``max_dph`` already includes storage while running), plus
    storage for ``overhead_hours`` outside the running time (provisioning, image pull, stopping).

    Args:
        profile: The profile.
        storage_dph: The storage rate of the chosen offer; None assumes
            :data:`ASSUMED_STORAGE_COST_PER_GB_MONTH` for the profile's ``disk_gb``.
        overhead_hours: Hours of storage-only billing to allow for.

    Returns:
        Dollars.
    """
    if storage_dph is None:
        storage_dph = profile.disk_gb * ASSUMED_STORAGE_COST_PER_GB_MONTH / HOURS_PER_STORAGE_MONTH
    return profile.max_dph * profile.max_duration_hours + storage_dph * overhead_hours


def traffic_usd(price: ContractPrice, *, up_gb: float, down_gb: float) -> float:
    """What ``up_gb`` sent and ``down_gb`` received cost under ``price`` (1 GB = 10^9 bytes).

    Raises:
        ValueError: A negative amount of traffic.
    """
    if up_gb < 0 or down_gb < 0:
        raise ValueError("traffic cannot be negative")
    return up_gb * price.inet_up_cost_per_gb + down_gb * price.inet_down_cost_per_gb


def storage_usd(storage_dph: float | None, created_at: float | None, ended_at: float) -> float:
    """The storage an instance billed from ``created_at`` to ``ended_at`` (0 if never created).

    Storage bills in every state but ``offline``; this is the upper bound a finished attempt's
    GPU/storage split uses (its total comes from the ledger's samples).
    """
    if not storage_dph or created_at is None:
        return 0.0
    return storage_dph * max(ended_at - created_at, 0.0) / 3600.0


def bid_cap(profile: GpuProfile, *, storage_dph: float, policy: OutbidPolicy) -> float:
    """The highest bid in $/h an interruptible rental of ``profile`` may send.

    The profile's ``max_dph`` caps the whole instance (storage included), so the GPU bid may use
    what storage leaves; the profile's ``max_bid`` and the outbid policy's own cap apply on top.
    Floored to the 6-decimal grid bids are sent on, so a bid at the cap compares equal to it.

    Args:
        profile: The profile rented for.
        storage_dph: The contract's storage rate in $/h.
        policy: The outbid policy (its ``max_bid``, if any).

    Returns:
        Dollars per hour.
    """
    cap = profile.max_dph - storage_dph
    if profile.max_bid is not None:
        cap = min(cap, profile.max_bid)
    return math.floor(policy.cap(cap) * 1e6) / 1e6


class CostMeter:
    """Accrues the cost of one instance from its contract prices and its observed states.

    Rates follow :func:`hourly_rate`: GPU and storage while running, storage only
    in every other existing state, nothing offline. Between two observations the earlier state
    is assumed (a step function), so the error is at most one poll interval of the rate.

    Args:
        price: The rented contract's prices.
        start: When the instance was created (clock time).
    """

    def __init__(self, price: ContractPrice, *, start: float) -> None:
        self.price = price
        self._last_time = start
        self._last_state: InstanceState = InstanceState.PROVISIONING
        self._cost = 0.0
        self._closed = False

    def observe(self, now: float, state: InstanceState) -> float:
        """Account up to ``now`` at the previous state's rate, then switch to ``state``.

        Returns:
            The cost so far in dollars.
        """
        if not self._closed:
            if now > self._last_time:
                rate = hourly_rate(self.price, self._last_state)
                self._cost += rate * (now - self._last_time) / 3600.0
                self._last_time = now
            self._last_state = state
        return self._cost

    def reprice(self, now: float, price: ContractPrice) -> None:
        """Switch to new prices from ``now`` on (a raised bid)."""
        self.observe(now, self._last_state)
        self.price = price

    def cost_at(self, now: float) -> float:
        """The cost in dollars if the instance stayed in its last state until ``now``."""
        if self._closed or now <= self._last_time:
            return self._cost
        rate = hourly_rate(self.price, self._last_state)
        return self._cost + rate * (now - self._last_time) / 3600.0

    def add_traffic(self, *, up_gb: float, down_gb: float) -> float:
        """Add the cost of traffic billed since the last call; returns that cost in dollars."""
        usd = traffic_usd(self.price, up_gb=up_gb, down_gb=down_gb)
        self._cost += usd
        return usd

    def rate(self) -> float:
        """What the instance accrues now, in $/h."""
        return 0.0 if self._closed else hourly_rate(self.price, self._last_state)

    def close(self, now: float) -> float:
        """Stop accruing at ``now`` (destroyed). Returns the final cost in dollars."""
        self.observe(now, self._last_state)
        self._closed = True
        return self._cost

    @property
    def total(self) -> float:
        """The cost accounted so far, in dollars."""
        return self._cost

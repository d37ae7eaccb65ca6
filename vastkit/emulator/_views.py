"""Snapshots of the emulator's state for inspection in tests: instances and the account."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vastkit.emulator._model import Instance
from vastkit.emulator._render import reported_states

__all__ = ["InstanceView", "UserView", "instance_view"]


@dataclass(frozen=True)
class InstanceView:
    """A snapshot of one emulated instance, for inspection in tests."""

    id: int
    """The instance id."""
    machine_id: int
    """The machine it rents."""
    offer_id: int
    """The machine's current offer id."""
    label: str | None
    """The label."""
    actual_status: str | None
    """What the API reports as ``actual_status``."""
    intended_status: str
    """``running`` or ``stopped``."""
    cur_state: str
    """``running`` (holds the GPUs) or ``stopped``."""
    next_state: str
    """Same as ``cur_state`` in the emulator."""
    status_msg: str | None
    """Vast's human detail."""
    is_bid: bool
    """Interruptible rental."""
    price: float
    """The contract's GPU rate in $/h: the on-demand ``dph_base``, or the bid."""
    disk_gb: float
    """Allocated disk."""
    gpu_cost: float
    """GPU charges so far, $."""
    disk_cost: float
    """Storage charges so far, $."""
    bandwidth_cost: float
    """Upload plus download charges so far, $."""
    outbid: bool
    """A bid instance that lost its GPUs (the stopped triple)."""
    env: Mapping[str, str]
    """The request's env (variables and Docker options)."""
    api_key: str = field(repr=False)
    """The per-instance key (``CONTAINER_API_KEY``)."""
    ssh_keys: tuple[str, ...] = ()
    """The public keys attached to the instance, in the order they were attached."""

    @property
    def total_cost(self) -> float:
        """Everything it cost so far, $."""
        return self.gpu_cost + self.disk_cost + self.bandwidth_cost


@dataclass(frozen=True)
class UserView:
    """The emulated account's money."""

    credit: float
    """Remaining credit in $."""
    total_spend: float
    """Everything spent so far in $."""


def instance_view(inst: Instance) -> InstanceView:
    """A snapshot of ``inst`` as the API would report it."""
    states = reported_states(inst)
    return InstanceView(
        id=inst.id,
        machine_id=inst.machine.id,
        offer_id=inst.machine.ask_id,
        label=inst.label,
        actual_status=states.actual_status,
        intended_status=states.intended_status,
        cur_state=states.cur_state,
        next_state=states.cur_state,
        status_msg=inst.status_msg,
        is_bid=inst.is_bid,
        price=inst.price,
        disk_gb=inst.disk,
        gpu_cost=inst.gpu_cost,
        disk_cost=inst.disk_cost,
        bandwidth_cost=inst.bwu_cost + inst.bwd_cost,
        outbid=inst.outbid,
        env=dict(inst.env),
        api_key=inst.api_key,
        ssh_keys=tuple(k.public_key for k in inst.ssh_keys),
    )

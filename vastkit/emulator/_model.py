"""The emulator's records: phase timings, rented instances (contracts) and competing renters.

Plain data; the rules that change them live in :mod:`~vastkit.emulator._state` (actions and
time), :mod:`~vastkit.emulator._scheduling` (who holds the GPUs),
:mod:`~vastkit.emulator._containers` (phases of the container) and
:mod:`~vastkit.emulator._billing` (money).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vastkit.emulator._market import Machine

__all__ = ["INF", "Competitor", "Instance", "SshKey", "Timings"]

INF = math.inf
"""The price of an on-demand claim: it beats every bid."""


@dataclass(frozen=True)
class Timings:
    """How long the phases of an instance take, in seconds of the emulator's clock."""

    provision_s: float = 10.0
    """From create to ``loading`` (``actual_status`` null meanwhile)."""
    loading_s: float = 30.0
    """From ``loading`` (image pull, container start) to ``running``; also after a start."""
    reboot_s: float = 10.0
    """How long ``rebooting`` lasts."""
    recycle_s: float = 30.0
    """How long ``recycling`` lasts before ``loading``."""
    log_ready_s: float = 1.0
    """How long a request_logs ``result_url`` answers 404 before the log is there."""

    def __post_init__(self) -> None:
        for name in ("provision_s", "loading_s", "reboot_s", "recycle_s", "log_ready_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass
class Competitor:
    """Another renter on a machine: on-demand (``price`` None) or a bid."""

    id: int
    machine_id: int
    price: float | None
    start: float
    until: float

    def active(self, now: float) -> bool:
        """Whether it wants the machine at ``now``."""
        return self.start <= now < self.until


@dataclass(frozen=True)
class SshKey:
    """A public SSH key: one of the account's, or one attached to an instance."""

    id: int
    """The key id (``/ssh/{id}/``, ``/instances/{id}/ssh/{key_id}/``)."""
    public_key: str
    """The OpenSSH public key line."""
    created_at: float
    """When it was added (Unix seconds)."""


@dataclass
class Instance:
    """One rented instance (a contract) as the emulator keeps it."""

    id: int
    machine: Machine
    api_key: str
    label: str | None
    image: str
    env: dict[str, str]
    onstart: str | None
    runtype: str
    args: list[str]
    disk: float
    is_bid: bool
    price: float
    """The contract's GPU rate in $/h: the on-demand ``dph_base`` at creation, or the bid."""
    storage_cost: float
    inet_up_cost: float
    inet_down_cost: float
    created_at: float
    end_date: float
    template_hash_id: str | None = None
    jupyter_token: str = ""
    wants_run: bool = True
    holds: bool = False
    outbid: bool = False
    actual: str | None = None
    status_msg: str | None = None
    phase_until: float | None = None
    fault: str | None = None
    ran_before: bool = False
    start_date: float | None = None
    kill_at: float | None = None
    preempt_at: float | None = None
    expired: bool = False
    exit_code: int | None = None
    ssh_idx: int = 0
    ssh_port: int = 0
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    ssh_keys: list[SshKey] = field(default_factory=list)
    """Public keys attached to the instance (the account's keys at creation, then attached)."""
    gpu_cost: float = 0.0
    disk_cost: float = 0.0
    bwu_cost: float = 0.0
    bwd_cost: float = 0.0
    up_gb: float = 0.0
    down_gb: float = 0.0
    gpu_hours: float = 0.0
    disk_hours: float = 0.0
    traffic: list[tuple[float, float, float]] = field(default_factory=list)
    """Billed traffic: ``(time, upload $, download $)``."""
    segments: list[list[float]] = field(default_factory=list)
    """Billing history: ``[start, end, gpu $/h, disk $/h]`` spans."""
    destroyed_at: float | None = None

    @property
    def total_cost(self) -> float:
        """Everything this instance has cost so far, in $."""
        return self.gpu_cost + self.disk_cost + self.bwu_cost + self.bwd_cost

"""The account's money: per-second billing of GPUs and storage, traffic, and running out."""

from __future__ import annotations

from collections.abc import Iterable

from vastkit.emulator._market import HOURS_PER_STORAGE_MONTH
from vastkit.emulator._model import Instance

__all__ = ["Account"]

_EPS = 1e-9


class Account:
    """The user's credit and spend, and how instances draw on them.

    An instance pays its GPU rate while its container is ``running`` (or ``frozen``) on GPUs it
    holds, and its storage rate in every state except while its host is ``offline``.

    Args:
        credit: The starting credit in $.
    """

    def __init__(self, credit: float) -> None:
        self.credit = float(credit)
        """Remaining credit in $ (may go below zero)."""
        self.total_spend = 0.0
        """Everything spent so far in $."""

    @staticmethod
    def rates(inst: Instance) -> tuple[float, float]:
        """``(GPU $/h, storage $/h)`` that ``inst`` pays now."""
        host = inst.machine.host_status
        if host == "offline":
            return 0.0, 0.0
        gpu = inst.price if inst.actual in ("running", "frozen") and inst.holds else 0.0
        disk = inst.disk * inst.storage_cost / HOURS_PER_STORAGE_MONTH
        return gpu, disk

    def burn_rate(self, instances: Iterable[Instance]) -> float:
        """What all ``instances`` cost together now, in $/h."""
        return sum(sum(self.rates(i)) for i in instances)

    def accrue(self, instances: Iterable[Instance], start: float, end: float) -> None:
        """Bill ``instances`` at their current rates for ``[start, end]``."""
        if end <= start:
            return
        hours = (end - start) / 3600.0
        spent = 0.0
        for inst in instances:
            gpu, disk = self.rates(inst)
            if gpu == 0.0 and disk == 0.0:
                continue
            inst.gpu_cost += gpu * hours
            inst.disk_cost += disk * hours
            if gpu:
                inst.gpu_hours += hours
            if disk:
                inst.disk_hours += hours
            spent += (gpu + disk) * hours
            seg = inst.segments[-1] if inst.segments else None
            if seg is not None and seg[1] == start and seg[2] == gpu and seg[3] == disk:
                seg[1] = end
            else:
                inst.segments.append([start, end, gpu, disk])
        self.credit -= spent
        self.total_spend += spent

    def runs_out_at(self, instances: list[Instance], now: float) -> float | None:
        """When the credit reaches zero at the current rates (None: instances are all stopped
        or cost nothing)."""
        if not any(i.wants_run for i in instances):
            return None
        rate = self.burn_rate(instances)
        if rate > 0:
            return now + max(self.credit, 0.0) / rate * 3600.0
        return None

    def is_broke(self, instances: list[Instance]) -> bool:
        """The credit is gone, or lasts less than a few seconds at the current rates."""
        rate = self.burn_rate(instances)
        return self.credit <= _EPS or (rate > 0 and self.credit / rate * 3600.0 < 1e-3)

    def charge_traffic(self, inst: Instance, up_gb: float, down_gb: float, now: float) -> None:
        """Bill ``up_gb``/``down_gb`` of traffic to ``inst`` at ``now``."""
        up = up_gb * inst.inet_up_cost
        down = down_gb * inst.inet_down_cost
        inst.up_gb += up_gb
        inst.down_gb += down_gb
        inst.bwu_cost += up
        inst.bwd_cost += down
        inst.traffic.append((now, up, down))
        self.credit -= up + down
        self.total_spend += up + down

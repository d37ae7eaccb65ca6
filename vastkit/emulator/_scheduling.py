"""Who holds each machine's GPUs: the user's instances and scripted competitors claim them,
the highest priority claim wins, and the losers stop (a lost bid is *outbid*).

Priority: any on-demand claim beats every bid; between bids the higher price wins; on a tie
the current holder keeps the machine, then the oldest claim wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from vastkit.emulator._containers import Containers
from vastkit.emulator._market import Catalog, Machine
from vastkit.emulator._model import INF, Competitor, Instance

__all__ = ["Claim", "CompetitorClaim", "Scheduler"]


@dataclass(frozen=True)
class CompetitorClaim:
    """A scripted competitor's claim on a machine."""

    competitor_id: int


Claim = int | CompetitorClaim
"""An instance id (the user's claim), or a competitor's claim."""


class Scheduler:
    """Gives machines to claims and keeps the outbid bookkeeping.

    Args:
        instances: The live instances (shared with the state).
        catalog: The machines.
        containers: Starts and stops containers as instances gain and lose their GPUs.
        events: Where ``client:outbid`` events are appended (shared with the state).
        auto_resume: Outbid instances come back by themselves when priority returns.
        reissue_offer_ids: A machine that comes back on the market gets a new offer id.
    """

    def __init__(
        self,
        instances: dict[int, Instance],
        catalog: Catalog,
        containers: Containers,
        events: list[tuple[float, str, int]],
        *,
        auto_resume: bool,
        reissue_offer_ids: bool,
    ) -> None:
        self.instances = instances
        self.catalog = catalog
        self.containers = containers
        self.events = events
        self.auto_resume = auto_resume
        self.reissue_offer_ids = reissue_offer_ids
        self.competitors: dict[int, Competitor] = {}
        self.holder: dict[int, Claim] = {}
        """Machine id -> the claim that holds its GPUs."""
        self.next_competitor_id = 1

    # ------------------------------------------------------------------ questions

    def machine_instances(self, machine: Machine) -> list[Instance]:
        """The live instances on ``machine``."""
        return [i for i in self.instances.values() if i.machine is machine]

    def holder_price(self, machine: Machine) -> float | None:
        """The holder's GPU bid on ``machine`` (INF for on-demand), None when free."""
        holder = self.holder.get(machine.id)
        if holder is None:
            return None
        if isinstance(holder, CompetitorClaim):
            comp = self.competitors[holder.competitor_id]
            return INF if comp.price is None else comp.price
        inst = self.instances[holder]
        return inst.price if inst.is_bid else INF

    def min_bid(self, machine: Machine) -> float:
        """The machine's minimum bid: the host floor or the running bid, whichever is higher."""
        held = self.holder_price(machine)
        if held is None or held == INF:
            return machine.price_min_bid
        return round(max(machine.price_min_bid, held), 4)

    def rentable(self, machine: Machine) -> bool:
        """Whether an on-demand rental could take the machine now (no on-demand holder)."""
        if machine.host_status != "online":
            return False
        return self.holder_price(machine) != INF

    def rented_by_user(self, machine: Machine) -> bool:
        """Whether the user holds GPUs on this machine."""
        holder = self.holder.get(machine.id)
        return isinstance(holder, int)

    def rank(self, claim: Claim) -> tuple[int, float, int, float]:
        """A claim's priority (higher wins): on-demand, price, holds it now, age."""
        if isinstance(claim, CompetitorClaim):
            comp = self.competitors[claim.competitor_id]
            held = 1 if self.holder.get(comp.machine_id) == claim else 0
            if comp.price is None:
                return (1, 0.0, held, -comp.start)
            return (0, comp.price, held, -comp.start)
        inst = self.instances[claim]
        held = 1 if self.holder.get(inst.machine.id) == claim else 0
        if not inst.is_bid:
            return (1, 0.0, held, -inst.created_at)
        return (0, inst.price, held, -inst.created_at)

    def winning_bid(self, inst: Instance, now: float) -> float:
        """A bid that beats every other bid on ``inst``'s machine and the host floor."""
        machine = inst.machine
        competing = [
            self.rank(c)[1]
            for c in self._all_claims(machine, now)
            if c != inst.id and self.rank(c)[0] == 0
        ]
        return round(max([machine.price_min_bid, *competing]) + 0.001, 4)

    def _all_claims(self, machine: Machine, now: float) -> list[Claim]:
        claims: list[Claim] = [i.id for i in self.machine_instances(machine)]
        claims += [
            CompetitorClaim(c.id)
            for c in self.competitors.values()
            if c.machine_id == machine.id and c.active(now)
        ]
        return claims

    # ------------------------------------------------------------------ scheduling

    def reschedule_all(self, now: float) -> None:
        """Reschedule every machine that has instances or competitors."""
        machines = {i.machine.id for i in self.instances.values()}
        machines |= {c.machine_id for c in self.competitors.values()}
        for machine_id in sorted(machines):
            self.reschedule(self.catalog.by_machine_id[machine_id], now)

    def reschedule(self, machine: Machine, now: float) -> None:
        """Give ``machine``'s GPUs to the highest priority claim; stop the losers."""
        if machine.host_status == "offline":
            return
        claims = self._live_claims(machine, now)
        winner = max(claims, key=self.rank) if claims else None
        previous = self.holder.get(machine.id)
        if winner is None:
            self.holder.pop(machine.id, None)
        else:
            self.holder[machine.id] = winner
        for inst in self.machine_instances(machine):
            if inst.id == winner:
                inst.outbid = False
                if not inst.holds:
                    self.containers.acquire(inst, now)
            else:
                self._lose(inst, now)
        freed = previous is not None and winner is None
        if freed and self.reissue_offer_ids:
            self.catalog.reissue(machine)

    def _live_claims(self, machine: Machine, now: float) -> list[Claim]:
        """Claims that want the GPUs now: running-wanted instances (bids at or above the
        host floor) and active competitors."""
        claims: list[Claim] = []
        for inst in self.machine_instances(machine):
            if not inst.wants_run or inst.expired:
                continue
            if inst.is_bid and inst.price < machine.price_min_bid:
                continue
            claims.append(inst.id)
        for comp in self.competitors.values():
            if comp.machine_id == machine.id and comp.active(now):
                claims.append(CompetitorClaim(comp.id))
        return claims

    def _lose(self, inst: Instance, now: float) -> None:
        """``inst`` did not win its machine: stop it; a wanted bid is outbid."""
        if inst.holds:
            self.containers.release(inst, now)
        lost = inst.wants_run and inst.is_bid and not inst.expired
        if lost and not inst.outbid:
            inst.outbid = True
            self.events.append((now, "client:outbid", inst.id))
            if not self.auto_resume:
                inst.wants_run = False

    # ------------------------------------------------------------------ competitors

    def add_competitor(
        self,
        machine_id: int,
        *,
        price: float | None,
        start: float,
        duration: float | None,
        now: float,
    ) -> Competitor:
        """Another renter wants ``machine_id`` from ``start`` for ``duration`` seconds."""
        comp = Competitor(
            id=self.next_competitor_id,
            machine_id=machine_id,
            price=price,
            start=start,
            until=INF if duration is None else start + duration,
        )
        self.next_competitor_id += 1
        self.competitors[comp.id] = comp
        if comp.active(now):
            self.reschedule(self.catalog.by_machine_id[machine_id], now)
        return comp

    def remove_competitor(self, competitor_id: int, now: float) -> None:
        """The competitor leaves its machine."""
        comp = self.competitors.pop(competitor_id, None)
        if comp is not None:
            self.reschedule(self.catalog.by_machine_id[comp.machine_id], now)

    def competitors_due(self, now: float, eps: float) -> None:
        """Competitors whose stay ended leave; those whose start came claim their machine."""
        for comp in list(self.competitors.values()):
            if comp.until <= now + eps:
                del self.competitors[comp.id]
                self.reschedule(self.catalog.by_machine_id[comp.machine_id], now)
            elif comp.start <= now + eps:
                self.reschedule(self.catalog.by_machine_id[comp.machine_id], now)

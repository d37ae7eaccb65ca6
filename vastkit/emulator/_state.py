"""The emulator's market state: machines, instances, bids, billing, time.

Everything here is plain Python driven by the emulator's clock: :meth:`State.advance_to` moves the
world to a given time, applying phase changes, preemptions and billing in time order, so the
same seed and the same calls give the same history. All methods are called with the state's lock
held (the HTTP layer takes it).

:class:`State` holds the records and carries out the API's actions; it hands the rules to its
parts: :attr:`State.scheduler` (who holds the GPUs, competitors), :attr:`State.containers`
(container phases and the runner) and :attr:`State.account` (money).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from typing import Any

from vastkit.emulator._billing import Account
from vastkit.emulator._containers import Containers
from vastkit.emulator._http import ApiError, error
from vastkit.emulator._market import Catalog, Machine, generate_catalog
from vastkit.emulator._model import INF, Competitor, Instance, SshKey, Timings
from vastkit.emulator._runners import Runner
from vastkit.emulator._scheduling import Scheduler
from vastkit.emulator._templates import apply_template

__all__ = ["State"]

logger = logging.getLogger("vastkit.emulator")

_EPS = 1e-9
"""Events due within this many seconds of now are due now."""


def _no_such_ask(ask_id: int) -> ApiError:
    return error(
        404,
        "invalid_args",
        f"error 404/3603: no_such_ask Instance type by id {ask_id} is not available.",
        ask_id=ask_id,
    )


class State:
    """The marketplace: catalog, instances, competitors, the user's money, the time.

    Args:
        seed: Seeds the catalog and every random choice (faults, preemptions, keys).
        offers: Catalog size (machines, one offer each), 1 to 50,000.
        now: The clock time at creation.
        runner: What runs inside instances.
        timings: Phase delays.
        credit: The user's starting credit in $.
        auto_resume: Outbid instances come back by themselves when priority returns.
        preemption_mtbp_s: Mean time between random preemptions of a running bid instance
            (seconds of the emulator's clock); None: no random preemptions.
        preemption_hold_s: Mean time a random competitor keeps the machine.
        reissue_offer_ids: A machine that comes back on the market gets a new offer id.
        grace_s: SIGTERM-to-SIGKILL delay when the runner does not define one.
    """

    def __init__(
        self,
        *,
        seed: int,
        offers: int,
        now: float,
        runner: Runner,
        timings: Timings,
        credit: float,
        auto_resume: bool,
        preemption_mtbp_s: float | None,
        preemption_hold_s: float,
        reissue_offer_ids: bool,
        grace_s: float | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.now = now
        self.runner = runner
        self.timings = timings
        self.preemption_hold_s = preemption_hold_s
        self.rng_keys = random.Random(f"vastkit-emulator-keys:{seed}")
        self.rng_preempt = random.Random(f"vastkit-emulator-preempt:{seed}")
        self.rng_faults = random.Random(f"vastkit-emulator-faults:{seed}")
        self.catalog = Catalog(generate_catalog(seed, offers, now), self.rng_keys)
        self.machines = self.catalog.machines
        self.instances: dict[int, Instance] = {}
        self.destroyed: dict[int, Instance] = {}
        self.events: list[tuple[float, str, int]] = []
        """(time, kind, id) of notable changes, e.g. ``client:outbid`` (for assertions)."""
        runner_grace = getattr(runner, "grace_s", None)
        self.account = Account(credit)
        self.ssh_keys: dict[int, SshKey] = {}
        """The account's SSH keys by id (``/api/v0/ssh/``); copied onto each new instance."""
        self.next_key_id = 40_000 + self.rng_keys.randint(0, 9_999)
        self.containers = Containers(
            runner,
            timings,
            grace_s=float(grace_s if grace_s is not None else (runner_grace or 0.0)),
            preemption_mtbp_s=preemption_mtbp_s,
            rng_preempt=self.rng_preempt,
            url=lambda: None,
        )
        self.scheduler = Scheduler(
            self.instances,
            self.catalog,
            self.containers,
            self.events,
            auto_resume=auto_resume,
            reissue_offer_ids=reissue_offer_ids,
        )
        self.next_instance_id = 30_000_000 + self.rng_keys.randint(0, 999_999)
        self.instance_faults: list[str] = []
        """Faults the next created instances get, in order (``stuck_loading``, ``oci_error``)."""
        self.stuck_loading_probability = 0.0
        self.oci_error_probability = 0.0

    # ------------------------------------------------------------------ lookups

    def new_key(self) -> str:
        """A fresh 64-hex-digit key, reproducible from the seed."""
        return hashlib.sha256(str(self.rng_keys.random()).encode()).hexdigest()

    def instance(self, instance_id: int) -> Instance:
        """The live instance ``instance_id``.

        Raises:
            ApiError: 404 ``no_such_instance``.
        """
        inst = self.instances.get(instance_id)
        if inst is None:
            raise error(404, "no_such_instance", f"error 404/3600: no_such_instance {instance_id}")
        return inst

    def new_ssh_key(self, public_key: str) -> SshKey:
        """A key record with a fresh id (not yet stored anywhere)."""
        key = SshKey(id=self.next_key_id, public_key=public_key, created_at=self.now)
        self.next_key_id += 1
        return key

    # ------------------------------------------------------------------ time

    def advance_to(self, now: float) -> None:
        """Move the world to ``now``: bill, and apply every change due, in time order."""
        if now <= self.now:
            self.containers.poll(self.instances.values())
            return
        for _ in range(1_000_000):
            due = self._next_event_time()
            if due is None or due > now:
                self.account.accrue(self.instances.values(), self.now, now)
                self.now = now
                break
            due = max(due, self.now)
            self.account.accrue(self.instances.values(), self.now, due)
            self.now = due
            self._apply_due()
        else:  # pragma: no cover - a bug guard: never spin forever on one instant
            logger.error("emulator: too many events before %s; skipping ahead", now)
            self.account.accrue(self.instances.values(), self.now, now)
            self.now = now
        self.containers.poll(self.instances.values())

    def _next_event_time(self) -> float | None:
        times: list[float] = []
        for inst in self.instances.values():
            for t in (inst.phase_until, inst.kill_at, inst.preempt_at):
                if t is not None:
                    times.append(t)
            if not inst.expired:
                times.append(inst.end_date)
        for comp in self.scheduler.competitors.values():
            if comp.start > self.now:
                times.append(comp.start)
            if comp.until != INF:
                times.append(comp.until)
        broke_at = self.account.runs_out_at(list(self.instances.values()), self.now)
        if broke_at is not None:
            times.append(broke_at)
        return min(times) if times else None

    def _apply_due(self) -> None:
        """Apply everything due at ``self.now``, in a fixed order."""
        self._stop_if_broke()
        self.scheduler.competitors_due(self.now, _EPS)
        for inst in list(self.instances.values()):
            self._instance_due(inst)

    def _stop_if_broke(self) -> None:
        """Out of credit: every instance that wants to run is stopped."""
        instances = list(self.instances.values())
        if self.account.is_broke(instances) and any(i.wants_run for i in instances):
            for inst in instances:
                if inst.wants_run:
                    inst.wants_run = False
                    self.events.append((self.now, "client:balance_stopped", inst.id))
            self.scheduler.reschedule_all(self.now)

    def _instance_due(self, inst: Instance) -> None:
        """An instance's due changes: SIGKILL, contract end, random preemption, next phase."""
        now = self.now
        if inst.kill_at is not None and inst.kill_at <= now + _EPS:
            inst.kill_at = None
            self.runner.kill(inst.id)
        if not inst.expired and inst.end_date <= now + _EPS:
            inst.expired = True
            inst.wants_run = False
            self.events.append((now, "client:contract_expired", inst.id))
            self.scheduler.reschedule(inst.machine, now)
        if inst.preempt_at is not None and inst.preempt_at <= now + _EPS:
            inst.preempt_at = None
            if inst.holds and inst.is_bid:
                hold = self.rng_preempt.expovariate(1.0 / self.preemption_hold_s)
                price = round(inst.price * self.rng_preempt.uniform(1.1, 1.6), 4)
                self.add_competitor(inst.machine.id, price=price, duration=hold)
        if inst.phase_until is not None and inst.phase_until <= now + _EPS:
            inst.phase_until = None
            self.containers.phase_done(inst, now)

    # ------------------------------------------------------------------ create

    def create(self, ask_id: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Create an instance from offer ``ask_id``; the HTTP status and body to answer.

        Raises:
            ApiError: Invalid arguments, unknown or rented offer, unschedulable with
                ``cancel_unavail``.
        """
        machine = self.catalog.by_ask_id.get(ask_id)
        if machine is None or machine.host_status != "online":
            raise _no_such_ask(ask_id)
        body = apply_template(body, ask_id)
        raw_price: Any = body.get("price")
        is_bid = raw_price is not None
        price = float(raw_price) if is_bid else 0.0
        self._check_schedulable(machine, ask_id, body, price if is_bid else None)
        inst = self._new_instance(machine, body, price if is_bid else None)
        self.instances[inst.id] = inst
        self.scheduler.reschedule(machine, self.now)
        if not inst.holds and inst.actual is None:
            inst.actual = "stopped" if inst.is_bid or not inst.wants_run else None
            inst.status_msg = "scheduling: waiting for GPUs" if inst.wants_run else None
        return 200, self._create_answer(inst)

    def _check_schedulable(
        self, machine: Machine, ask_id: int, body: dict[str, Any], bid: float | None
    ) -> None:
        """Refuse an on-demand create on GPUs held on demand, and (with ``cancel_unavail``,
        the default for on-demand) a create that could not start now."""
        cancel_unavail = body.get("cancel_unavail")
        if cancel_unavail is None:
            cancel_unavail = bid is None and body.get("target_state", "running") == "running"
        held = self.scheduler.holder_price(machine)
        if bid is None:
            if held == INF:
                raise _no_such_ask(ask_id)
            schedulable = True
        else:
            schedulable = bid >= machine.price_min_bid and (held is None or bid > held)
        if not schedulable and cancel_unavail:
            raise error(
                410,
                "no_such_ask",
                f"error 410/3907: no_such_ask Instance type {ask_id} is no longer available.",
            )

    def _new_instance(self, machine: Machine, body: dict[str, Any], bid: float | None) -> Instance:
        """The contract for a create ``body`` on ``machine`` (not yet scheduled)."""
        env = body.get("env") or {}
        inst = Instance(
            id=self.next_instance_id,
            machine=machine,
            api_key=self.new_key(),
            label=body.get("label"),
            image=str(body.get("image") or f"template/{body.get('template_hash_id')}"),
            env={str(k): str(v) for k, v in env.items()},
            onstart=body.get("onstart"),
            runtype=str(body.get("runtype") or ("args" if body.get("args") else "ssh")),
            args=[str(a) for a in body.get("args") or []],
            disk=float(body["disk"]) if body.get("disk") is not None else 8.0,
            is_bid=bid is not None,
            price=bid if bid is not None else machine.dph_base,
            storage_cost=machine.storage_cost,
            inet_up_cost=machine.inet_up_cost,
            inet_down_cost=machine.inet_down_cost,
            created_at=self.now,
            end_date=machine.end_date,
            template_hash_id=body.get("template_hash_id"),
            jupyter_token=self.new_key(),
        )
        self.next_instance_id += 1 + self.rng_keys.randint(0, 20)
        inst.ssh_idx = 1 + inst.id % 9
        inst.ssh_port = 10_000 + inst.id % 50_000
        inst.fault = self._draw_instance_fault()
        inst.ssh_keys = list(self.ssh_keys.values())
        if body.get("target_state") == "stopped":
            inst.wants_run = False
        return inst

    def _draw_instance_fault(self) -> str | None:
        """A programmed fault for the next instance, else one drawn with the probabilities."""
        if self.instance_faults:
            return self.instance_faults.pop(0)
        if self.rng_faults.random() < self.stuck_loading_probability:
            return "stuck_loading"
        if self.rng_faults.random() < self.oci_error_probability:
            return "oci_error"
        return None

    def _create_answer(self, inst: Instance) -> dict[str, Any]:
        """The create answer: a losing bid is created stopped and says so."""
        if inst.is_bid and not inst.holds and inst.wants_run:
            return {
                "success": False,
                "error": "insufficient_bid",
                "msg": (
                    f"Your bid of ${inst.price:.4f}/hr is below the current winning price "
                    f"${self.scheduler.min_bid(inst.machine):.4f}/hr; instance {inst.id} was "
                    f"created stopped and will start when its bid wins."
                ),
                "new_contract": inst.id,
                "instance_api_key": inst.api_key,
            }
        return {"success": True, "new_contract": inst.id, "instance_api_key": inst.api_key}

    # ------------------------------------------------------------------ other actions

    def set_state(self, inst: Instance, state: str) -> None:
        """Start (``running``) or stop (``stopped``) an instance."""
        if state == "running":
            if inst.expired:
                raise error(400, "invalid_args", f"Instance {inst.id}: its contract has ended.")
            inst.wants_run = True
            if inst.actual == "exited":
                inst.actual = "stopped"
            self.scheduler.reschedule(inst.machine, self.now)
            if not inst.holds and not inst.is_bid:
                inst.status_msg = "scheduling: waiting for GPUs"
        elif state == "stopped":
            inst.wants_run = False
            inst.outbid = False
            self.scheduler.reschedule(inst.machine, self.now)
        else:
            raise error(400, "invalid_args", f"state must be running or stopped, not {state!r}")

    def destroy(self, inst: Instance) -> None:
        """Destroy an instance: release the GPUs, stop billing, delete its files."""
        del self.instances[inst.id]
        inst.destroyed_at = self.now
        if inst.holds:
            inst.holds = False
            self.runner.terminate(inst.id)
        self.runner.destroy(inst.id)
        self.destroyed[inst.id] = inst
        # A machine that comes back on the market gets a new offer id (see reschedule).
        self.scheduler.reschedule(inst.machine, self.now)

    def change_bid(self, inst: Instance, price: float | None) -> None:
        """Change the bid of an interruptible instance (None: a winning price)."""
        if not inst.is_bid:
            raise error(400, "invalid_args", f"Instance {inst.id} is not an interruptible rental.")
        if price is None:
            price = self.scheduler.winning_bid(inst, self.now)
        inst.price = float(price)
        if inst.outbid:
            inst.wants_run = True
        self.scheduler.reschedule(inst.machine, self.now)

    def reboot(self, inst: Instance, recycle: bool = False) -> None:
        """Restart the container, keeping the GPUs (``rebooting`` or ``recycling``)."""
        self.containers.reboot(inst, self.now, recycle)

    def add_competitor(
        self,
        machine_id: int,
        *,
        price: float | None,
        start: float | None = None,
        duration: float | None = None,
    ) -> Competitor:
        """Another renter wants ``machine_id`` from ``start`` for ``duration`` seconds."""
        if machine_id not in self.catalog.by_machine_id:
            raise KeyError(f"no machine {machine_id}")
        begin = self.now if start is None else start
        return self.scheduler.add_competitor(
            machine_id, price=price, start=begin, duration=duration, now=self.now
        )

    def remove_competitor(self, competitor_id: int) -> None:
        """The competitor leaves its machine."""
        self.scheduler.remove_competitor(competitor_id, self.now)

    def set_host_status(self, machine: Machine, status: str) -> None:
        """Set a machine's host ``online``, ``offline`` or ``unknown``."""
        if status not in ("online", "offline", "unknown"):
            raise ValueError(f"host status must be online, offline or unknown, not {status!r}")
        before = machine.host_status
        machine.host_status = status
        for inst in self.scheduler.machine_instances(machine):
            if status == "offline" and before != "offline":
                self.runner.pause(inst.id)
            elif before == "offline" and status != "offline":
                self.runner.resume(inst.id)
        if status != "offline":
            self.scheduler.reschedule(machine, self.now)

    def add_traffic(self, inst: Instance, up_gb: float, down_gb: float) -> None:
        """Bill ``up_gb``/``down_gb`` of traffic to ``inst`` now."""
        self.account.charge_traffic(inst, up_gb, down_gb, self.now)

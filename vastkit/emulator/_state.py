"""The emulator's market state: machines, instances, bids, billing, time.

Everything here is plain Python driven by the emulator's clock: :meth:`State.advance_to` moves the
world to a given time, applying phase changes, preemptions and billing in time order, so the
same seed and the same calls give the same history. All methods are called with the state's lock
held (the HTTP layer takes it).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vastkit.emulator._http import error
from vastkit.emulator._market import HOURS_PER_STORAGE_MONTH, Machine, generate_catalog
from vastkit.emulator._runners import ContainerSpec, Runner

__all__ = ["Competitor", "Instance", "State", "Timings"]

logger = logging.getLogger("vastkit.emulator")

INF = math.inf


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
        self.credit = float(credit)
        self.total_spend = 0.0
        self.auto_resume = auto_resume
        self.preemption_mtbp_s = preemption_mtbp_s
        self.preemption_hold_s = preemption_hold_s
        self.reissue_offer_ids = reissue_offer_ids
        runner_grace = getattr(runner, "grace_s", None)
        self.grace_s = float(grace_s if grace_s is not None else (runner_grace or 0.0))
        self.machines = generate_catalog(seed, offers, now)
        self.by_machine_id = {m.id: m for m in self.machines}
        self.by_ask_id = {m.ask_id: m for m in self.machines}
        self.instances: dict[int, Instance] = {}
        self.destroyed: dict[int, Instance] = {}
        self.competitors: dict[int, Competitor] = {}
        self.holder: dict[int, int | str] = {}
        """Machine id -> holding instance id, or ``"c<competitor id>"``."""
        self.rng_keys = random.Random(f"vastkit-emulator-keys:{seed}")
        self.rng_preempt = random.Random(f"vastkit-emulator-preempt:{seed}")
        self.rng_faults = random.Random(f"vastkit-emulator-faults:{seed}")
        self.next_instance_id = 30_000_000 + self.rng_keys.randint(0, 999_999)
        self.next_ask_id = 30_000_000
        self.next_competitor_id = 1
        self.instance_faults: list[str] = []
        self.stuck_loading_probability = 0.0
        self.oci_error_probability = 0.0
        self.events: list[tuple[float, str, int]] = []
        """(time, kind, id) of notable changes, e.g. ``client:outbid`` (for assertions)."""
        self.on_url: Callable[[], str | None] = lambda: None

    # ------------------------------------------------------------------ helpers

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

    def machine_instances(self, machine: Machine) -> list[Instance]:
        """The live instances on ``machine``."""
        return [i for i in self.instances.values() if i.machine is machine]

    def _holder_price(self, machine: Machine) -> float | None:
        """The holder's GPU bid on ``machine`` (INF for on-demand), None when free."""
        holder = self.holder.get(machine.id)
        if holder is None:
            return None
        if isinstance(holder, str):
            comp = self.competitors[int(holder[1:])]
            return INF if comp.price is None else comp.price
        inst = self.instances[holder]
        return inst.price if inst.is_bid else INF

    def min_bid(self, machine: Machine) -> float:
        """The machine's minimum bid: the host floor or the running bid, whichever is higher."""
        held = self._holder_price(machine)
        if held is None or held == INF:
            return machine.price_min_bid
        return round(max(machine.price_min_bid, held), 4)

    def rentable(self, machine: Machine) -> bool:
        """Whether an on-demand rental could take the machine now (no on-demand holder)."""
        if machine.host_status != "online":
            return False
        return self._holder_price(machine) != INF

    def rented_by_user(self, machine: Machine) -> bool:
        """Whether the user holds GPUs on this machine."""
        holder = self.holder.get(machine.id)
        return isinstance(holder, int)

    # ------------------------------------------------------------------ time

    def advance_to(self, now: float) -> None:
        """Move the world to ``now``: bill, and apply every change due, in time order."""
        if now <= self.now:
            self._poll_processes()
            return
        for _ in range(1_000_000):
            due = self._next_event_time()
            if due is None or due > now:
                self._accrue(self.now, now)
                self.now = now
                break
            due = max(due, self.now)
            self._accrue(self.now, due)
            self.now = due
            self._apply_due()
        else:  # pragma: no cover - a bug guard: never spin forever on one instant
            logger.error("emulator: too many events before %s; skipping ahead", now)
            self._accrue(self.now, now)
            self.now = now
        self._poll_processes()

    def _rates(self, inst: Instance) -> tuple[float, float]:
        host = inst.machine.host_status
        if host == "offline":
            return 0.0, 0.0
        gpu = inst.price if inst.actual in ("running", "frozen") and inst.holds else 0.0
        disk = inst.disk * inst.storage_cost / HOURS_PER_STORAGE_MONTH
        return gpu, disk

    def _burn_rate(self) -> float:
        return sum(sum(self._rates(i)) for i in self.instances.values())

    def _next_event_time(self) -> float | None:
        times: list[float] = []
        for inst in self.instances.values():
            for t in (inst.phase_until, inst.kill_at, inst.preempt_at):
                if t is not None:
                    times.append(t)
            if not inst.expired:
                times.append(inst.end_date)
        for comp in self.competitors.values():
            if comp.start > self.now:
                times.append(comp.start)
            if comp.until != INF:
                times.append(comp.until)
        if any(i.wants_run for i in self.instances.values()):
            rate = self._burn_rate()
            if rate > 0:
                times.append(self.now + max(self.credit, 0.0) / rate * 3600.0)
        return min(times) if times else None

    def _accrue(self, start: float, end: float) -> None:
        if end <= start:
            return
        hours = (end - start) / 3600.0
        spent = 0.0
        for inst in self.instances.values():
            gpu, disk = self._rates(inst)
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

    def _apply_due(self) -> None:
        now = self.now
        eps = 1e-9
        rate = self._burn_rate()
        broke = self.credit <= eps or (rate > 0 and self.credit / rate * 3600.0 < 1e-3)
        if broke and any(i.wants_run for i in self.instances.values()):
            for inst in self.instances.values():
                if inst.wants_run:
                    inst.wants_run = False
                    self.events.append((now, "client:balance_stopped", inst.id))
            self.reschedule_all()
        for comp in list(self.competitors.values()):
            if comp.until <= now + eps:
                del self.competitors[comp.id]
                self.reschedule(self.by_machine_id[comp.machine_id])
            elif comp.start <= now + eps:
                self.reschedule(self.by_machine_id[comp.machine_id])
        for inst in list(self.instances.values()):
            if inst.kill_at is not None and inst.kill_at <= now + eps:
                inst.kill_at = None
                self.runner.kill(inst.id)
            if not inst.expired and inst.end_date <= now + eps:
                inst.expired = True
                inst.wants_run = False
                self.events.append((now, "client:contract_expired", inst.id))
                self.reschedule(inst.machine)
            if inst.preempt_at is not None and inst.preempt_at <= now + eps:
                inst.preempt_at = None
                if inst.holds and inst.is_bid:
                    hold = self.rng_preempt.expovariate(1.0 / self.preemption_hold_s)
                    price = round(inst.price * self.rng_preempt.uniform(1.1, 1.6), 4)
                    self.add_competitor(inst.machine.id, price=price, duration=hold)
            if inst.phase_until is not None and inst.phase_until <= now + eps:
                inst.phase_until = None
                self._phase_done(inst)

    def _phase_done(self, inst: Instance) -> None:
        if not inst.holds:
            return
        if inst.actual is None:
            if inst.fault == "oci_error":
                inst.actual = "created"
                inst.status_msg = (
                    f"Error response from daemon: failed to create task for container: "
                    f"failed to create shim task: OCI runtime create failed: runc create "
                    f"failed: unable to start container process: error during container "
                    f"init: error running hook #0: exit status 1, stdout: , stderr: "
                    f"nvidia-container-cli: initialization error: nvml error: driver/library "
                    f"version mismatch: unknown (C.{inst.id})"
                )
                return
            self._to_loading(inst)
        elif inst.actual in ("loading", "rebooting"):
            self._to_running(inst)
        elif inst.actual == "recycling":
            self._to_loading(inst)

    def _to_loading(self, inst: Instance) -> None:
        inst.actual = "loading"
        inst.status_msg = f"Pulling image {inst.image}: Downloading layers"
        if inst.fault == "stuck_loading":
            inst.phase_until = None
        else:
            inst.phase_until = self.now + self.timings.loading_s

    def _to_running(self, inst: Instance) -> None:
        inst.actual = "running"
        inst.ran_before = True
        inst.start_date = self.now
        inst.exit_code = None
        kind = "ssh" if "args" not in inst.runtype else "args"
        inst.status_msg = f"success, running {inst.image}/{kind}"
        m = inst.machine
        inst.ports = {}
        internal: list[str] = []
        if "direc" in inst.runtype:
            internal.append("22/tcp")
            if "jupyter" in inst.runtype:
                internal.append("8080/tcp")
        for key in inst.env:
            if key.startswith("-p "):
                spec = key[3:].strip()
                inner = spec.split(":")[-1]
                proto = "udp" if inner.endswith("/udp") else "tcp"
                number = inner.split("/")[0]
                name = f"{number}/{proto}"
                if name not in internal:
                    internal.append(name)
        base = m.direct_port_start if m.direct_port_start > 0 else 40_000
        for offset, name in enumerate(internal):
            inst.ports[name] = [{"HostIp": "0.0.0.0", "HostPort": str(base + offset)}]
        self.runner.start(self._container_spec(inst))
        if inst.is_bid and self.preemption_mtbp_s:
            inst.preempt_at = self.now + self.rng_preempt.expovariate(1.0 / self.preemption_mtbp_s)

    def container_env(self, inst: Instance) -> dict[str, str]:
        """The environment a Vast container of ``inst`` gets."""
        env = {
            "CONTAINER_ID": str(inst.id),
            "VAST_CONTAINERLABEL": f"C.{inst.id}",
            "CONTAINER_API_KEY": inst.api_key,
            "PUBLIC_IPADDR": self.runner.public_ipaddr or inst.machine.public_ipaddr,
            "GPU_COUNT": str(inst.machine.num_gpus),
            "JUPYTER_TOKEN": inst.jupyter_token,
            "DATA_DIRECTORY": "/workspace/",
        }
        url = self.on_url()
        if url:
            env["VAST_URL"] = url
        for name, bindings in inst.ports.items():
            number, proto = name.split("/")
            env[f"VAST_{proto.upper()}_PORT_{number}"] = bindings[0]["HostPort"]
        for key, value in inst.env.items():
            if not key.startswith("-"):
                env[key] = str(value)
        return env

    def _container_spec(self, inst: Instance) -> ContainerSpec:
        return ContainerSpec(
            instance_id=inst.id,
            onstart=inst.onstart,
            env=self.container_env(inst),
            runtype=inst.runtype,
            args=tuple(inst.args),
        )

    def _poll_processes(self) -> None:
        for inst in self.instances.values():
            if inst.actual == "running" and inst.holds:
                code = self.runner.exit_code(inst.id)
                if code is not None and inst.exit_code is None:
                    inst.exit_code = code
                    if "args" in inst.runtype.split():
                        inst.actual = "exited"
                        inst.status_msg = f"container exited with code {code}"
                        inst.ports = {}

    # ------------------------------------------------------------------ scheduling

    def _rank(self, claim: int | str) -> tuple[int, float, int, float]:
        if isinstance(claim, str):
            comp = self.competitors[int(claim[1:])]
            held = 1 if self.holder.get(comp.machine_id) == claim else 0
            if comp.price is None:
                return (1, 0.0, held, -comp.start)
            return (0, comp.price, held, -comp.start)
        inst = self.instances[claim]
        held = 1 if self.holder.get(inst.machine.id) == claim else 0
        if not inst.is_bid:
            return (1, 0.0, held, -inst.created_at)
        return (0, inst.price, held, -inst.created_at)

    def reschedule_all(self) -> None:
        """Reschedule every machine that has instances or competitors."""
        machines = {i.machine.id for i in self.instances.values()}
        machines |= {c.machine_id for c in self.competitors.values()}
        for machine_id in sorted(machines):
            self.reschedule(self.by_machine_id[machine_id])

    def reschedule(self, machine: Machine) -> None:
        """Give ``machine``'s GPUs to the highest priority claim; stop the losers."""
        if machine.host_status == "offline":
            return
        claims: list[int | str] = []
        for inst in self.machine_instances(machine):
            if not inst.wants_run or inst.expired:
                continue
            if inst.is_bid and inst.price < machine.price_min_bid:
                continue
            claims.append(inst.id)
        for comp in self.competitors.values():
            if comp.machine_id == machine.id and comp.active(self.now):
                claims.append(f"c{comp.id}")
        winner = max(claims, key=self._rank) if claims else None
        previous = self.holder.get(machine.id)
        if winner is None:
            self.holder.pop(machine.id, None)
        else:
            self.holder[machine.id] = winner
        for inst in self.machine_instances(machine):
            if inst.id == winner:
                inst.outbid = False
                if not inst.holds:
                    self._acquire(inst)
            else:
                if inst.holds:
                    self._release(inst)
                lost = inst.wants_run and inst.is_bid and not inst.expired
                if lost and not inst.outbid:
                    inst.outbid = True
                    self.events.append((self.now, "client:outbid", inst.id))
                    if not self.auto_resume:
                        inst.wants_run = False
        if (
            previous is not None
            and previous != winner
            and winner is None
            and (self.reissue_offer_ids)
        ):
            self._reissue(machine)

    def _reissue(self, machine: Machine) -> None:
        self.by_ask_id.pop(machine.ask_id, None)
        self.next_ask_id += 1 + self.rng_keys.randint(0, 50)
        machine.ask_id = self.next_ask_id
        self.by_ask_id[machine.ask_id] = machine

    def _acquire(self, inst: Instance) -> None:
        inst.holds = True
        inst.outbid = False
        if inst.ran_before:
            self._to_loading(inst)
            if inst.fault == "stuck_loading":
                inst.fault = None
                inst.phase_until = self.now + self.timings.loading_s
        else:
            inst.actual = None
            inst.status_msg = None
            inst.phase_until = self.now + self.timings.provision_s

    def _release(self, inst: Instance) -> None:
        was_running = inst.actual in ("running", "rebooting", "frozen", "exited")
        inst.holds = False
        inst.phase_until = None
        inst.preempt_at = None
        inst.ports = {}
        if inst.actual == "created" and inst.fault == "oci_error":
            return
        inst.actual = "stopped" if (inst.ran_before or inst.actual is not None) else inst.actual
        inst.status_msg = "stopped"
        if was_running:
            self.runner.terminate(inst.id)
            inst.kill_at = self.now + self.grace_s

    # ------------------------------------------------------------------ actions

    def create(self, ask_id: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Create an instance from offer ``ask_id``; the HTTP status and body to answer.

        Raises:
            ApiError: Invalid arguments, unknown or rented offer, unschedulable with
                ``cancel_unavail``.
        """
        machine = self.by_ask_id.get(ask_id)
        if machine is None or machine.host_status != "online":
            raise error(
                404,
                "invalid_args",
                f"error 404/3603: no_such_ask Instance type by id {ask_id} is not available.",
                ask_id=ask_id,
            )
        raw_price: Any = body.get("price")
        is_bid = raw_price is not None
        price = float(raw_price) if is_bid else 0.0
        cancel_unavail = body.get("cancel_unavail")
        if cancel_unavail is None:
            cancel_unavail = not is_bid and body.get("target_state", "running") == "running"
        held = self._holder_price(machine)
        if not is_bid:
            if held == INF:
                raise error(
                    404,
                    "invalid_args",
                    f"error 404/3603: no_such_ask Instance type by id {ask_id} is not available.",
                    ask_id=ask_id,
                )
            schedulable = True
        else:
            bid = price
            floor = machine.price_min_bid
            schedulable = bid >= floor and (held is None or bid > held)
        if not schedulable and cancel_unavail:
            raise error(
                410,
                "no_such_ask",
                f"error 410/3907: no_such_ask Instance type {ask_id} is no longer available.",
            )
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
            is_bid=is_bid,
            price=price if is_bid else machine.dph_base,
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
        if self.instance_faults:
            inst.fault = self.instance_faults.pop(0)
        elif self.rng_faults.random() < self.stuck_loading_probability:
            inst.fault = "stuck_loading"
        elif self.rng_faults.random() < self.oci_error_probability:
            inst.fault = "oci_error"
        if body.get("target_state") == "stopped":
            inst.wants_run = False
        self.instances[inst.id] = inst
        self.reschedule(machine)
        if not inst.holds and inst.actual is None:
            inst.actual = "stopped" if inst.is_bid or not inst.wants_run else None
            inst.status_msg = "scheduling: waiting for GPUs" if inst.wants_run else None
        answer: dict[str, Any] = {
            "success": True,
            "new_contract": inst.id,
            "instance_api_key": inst.api_key,
        }
        if inst.is_bid and not inst.holds and inst.wants_run:
            answer = {
                "success": False,
                "error": "insufficient_bid",
                "msg": (
                    f"Your bid of ${inst.price:.4f}/hr is below the current winning price "
                    f"${self.min_bid(machine):.4f}/hr; instance {inst.id} was created stopped "
                    f"and will start when its bid wins."
                ),
                "new_contract": inst.id,
                "instance_api_key": inst.api_key,
            }
        return 200, answer

    def set_state(self, inst: Instance, state: str) -> None:
        """Start (``running``) or stop (``stopped``) an instance."""
        if state == "running":
            if inst.expired:
                raise error(400, "invalid_args", f"Instance {inst.id}: its contract has ended.")
            inst.wants_run = True
            if inst.actual == "exited":
                inst.actual = "stopped"
            self.reschedule(inst.machine)
            if not inst.holds and not inst.is_bid:
                inst.status_msg = "scheduling: waiting for GPUs"
        elif state == "stopped":
            inst.wants_run = False
            inst.outbid = False
            self.reschedule(inst.machine)
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
        self.reschedule(inst.machine)

    def change_bid(self, inst: Instance, price: float | None) -> None:
        """Change the bid of an interruptible instance (None: a winning price)."""
        if not inst.is_bid:
            raise error(400, "invalid_args", f"Instance {inst.id} is not an interruptible rental.")
        machine = inst.machine
        if price is None:
            competing = [
                self._rank(c)[1]
                for c in self._claims(machine)
                if c != inst.id and self._rank(c)[0] == 0
            ]
            price = round(max([machine.price_min_bid, *competing]) + 0.001, 4)
        inst.price = float(price)
        if inst.outbid:
            inst.wants_run = True
        self.reschedule(machine)

    def _claims(self, machine: Machine) -> list[int | str]:
        claims: list[int | str] = [i.id for i in self.machine_instances(machine)]
        claims += [
            f"c{c.id}"
            for c in self.competitors.values()
            if c.machine_id == machine.id and c.active(self.now)
        ]
        return claims

    def reboot(self, inst: Instance, recycle: bool = False) -> None:
        """Restart the container, keeping the GPUs (``rebooting`` or ``recycling``)."""
        if not inst.holds or inst.actual not in ("running", "exited", "loading", "created"):
            raise error(400, "invalid_args", f"Instance {inst.id} is not running.")
        self.runner.terminate(inst.id)
        self.runner.kill(inst.id)
        inst.ports = {}
        if recycle:
            inst.actual = "recycling"
            inst.status_msg = f"Recycling: pulling {inst.image}"
            inst.phase_until = self.now + self.timings.recycle_s
        else:
            inst.actual = "rebooting"
            inst.status_msg = "rebooting"
            inst.phase_until = self.now + self.timings.reboot_s

    def add_competitor(
        self,
        machine_id: int,
        *,
        price: float | None,
        start: float | None = None,
        duration: float | None = None,
    ) -> Competitor:
        """Another renter wants ``machine_id`` from ``start`` for ``duration`` seconds."""
        if machine_id not in self.by_machine_id:
            raise KeyError(f"no machine {machine_id}")
        begin = self.now if start is None else start
        comp = Competitor(
            id=self.next_competitor_id,
            machine_id=machine_id,
            price=price,
            start=begin,
            until=INF if duration is None else begin + duration,
        )
        self.next_competitor_id += 1
        self.competitors[comp.id] = comp
        if comp.active(self.now):
            self.reschedule(self.by_machine_id[machine_id])
        return comp

    def remove_competitor(self, competitor_id: int) -> None:
        """The competitor leaves its machine."""
        comp = self.competitors.pop(competitor_id, None)
        if comp is not None:
            self.reschedule(self.by_machine_id[comp.machine_id])

    def set_host_status(self, machine: Machine, status: str) -> None:
        """Set a machine's host ``online``, ``offline`` or ``unknown``."""
        if status not in ("online", "offline", "unknown"):
            raise ValueError(f"host status must be online, offline or unknown, not {status!r}")
        before = machine.host_status
        machine.host_status = status
        for inst in self.machine_instances(machine):
            if status == "offline" and before != "offline":
                self.runner.pause(inst.id)
            elif before == "offline" and status != "offline":
                self.runner.resume(inst.id)
        if status != "offline":
            self.reschedule(machine)

    def add_traffic(self, inst: Instance, up_gb: float, down_gb: float) -> None:
        """Bill ``up_gb``/``down_gb`` of traffic to ``inst`` now."""
        up = up_gb * inst.inet_up_cost
        down = down_gb * inst.inet_down_cost
        inst.up_gb += up_gb
        inst.down_gb += down_gb
        inst.bwu_cost += up
        inst.bwd_cost += down
        inst.traffic.append((self.now, up, down))
        self.credit -= up + down
        self.total_spend += up + down

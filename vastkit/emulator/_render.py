"""The JSON shapes of instance, user and charge answers (reference sections 4.4, 6 and 7).

Pure functions of the state at the moment of the answer; the offer object lives in
:mod:`vastkit.emulator._offer_columns` with the columns that offer queries read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vastkit.emulator._market import HOURS_PER_STORAGE_MONTH, Machine
from vastkit.emulator._model import Instance
from vastkit.emulator._state import State

__all__ = [
    "charges",
    "human_duration",
    "render_instance",
    "reported_states",
    "rounded",
    "user_object",
]

LOGO = "/static/logos/vastai_small2.png"


def rounded(value: float, digits: int = 6) -> float:
    """``value`` rounded the way the API rounds money and rates."""
    return round(value, digits)


def human_duration(seconds: float) -> str:
    """Vast's ``time_remaining`` text, such as ``1 Mon 3 D 4 Hr``."""
    if seconds <= 0:
        return "0 Hr"
    days, rest = divmod(int(seconds), 86_400)
    months, days = divmod(days, 30)
    hours = rest // 3600
    parts = []
    if months:
        parts.append(f"{months} Mon")
    if days:
        parts.append(f"{days} D")
    parts.append(f"{hours} Hr")
    return " ".join(parts)


@dataclass(frozen=True)
class ReportedStates:
    """The status fields an instance shows (``next_state`` always equals ``cur_state``)."""

    actual_status: str | None
    """The container's state, or the host's when the host is not online."""
    intended_status: str
    cur_state: str


def reported_states(inst: Instance) -> ReportedStates:
    """What the API reports as ``actual_status``, ``intended_status`` and ``cur_state``."""
    host = inst.machine.host_status
    return ReportedStates(
        actual_status=inst.actual if host == "online" else host,
        intended_status="stopped" if (inst.outbid or not inst.wants_run) else "running",
        cur_state="running" if inst.holds else "stopped",
    )


def _serving(inst: Instance) -> bool:
    """The container runs on its GPUs on a host that is not offline."""
    return inst.actual == "running" and inst.holds and inst.machine.host_status != "offline"


def _storage_dph(inst: Instance) -> float:
    return inst.disk * inst.storage_cost / HOURS_PER_STORAGE_MONTH


def render_instance(state: State, inst: Instance) -> dict[str, Any]:
    """An instance object (reference section 4.4)."""
    running = _serving(inst)
    return {
        **_contract_fields(inst),
        **_container_fields(state, inst, running),
        **_place_fields(state, inst.machine),
        **_time_fields(state.now, inst, running),
        **_hardware_fields(inst, running),
        **_price_fields(state, inst, running),
        **_machine_tail(inst.machine),
    }


def _contract_fields(inst: Instance) -> dict[str, Any]:
    m = inst.machine
    states = reported_states(inst)
    return {
        "id": inst.id,
        "machine_id": m.id,
        "host_id": m.host_id,
        "bundle_id": m.ask_id,
        "actual_status": states.actual_status,
        "intended_status": states.intended_status,
        "cur_state": states.cur_state,
        "next_state": states.cur_state,
        "status_msg": inst.status_msg,
        "label": inst.label,
        "template_id": None,
        "template_hash_id": inst.template_hash_id,
        "template_name": None,
    }


def _container_fields(state: State, inst: Instance, running: bool) -> dict[str, Any]:
    m = inst.machine
    has_direct = bool(inst.ports)
    return {
        "image_uuid": inst.image,
        "image_args": list(inst.args),
        "image_runtype": inst.runtype,
        "extra_env": [[k, v] for k, v in inst.env.items()],
        "onstart": inst.onstart,
        "jupyter_token": inst.jupyter_token,
        "public_ipaddr": state.runner.public_ipaddr or m.public_ipaddr,
        "local_ipaddrs": "172.17.0.2 ",
        "ssh_host": f"ssh{inst.ssh_idx}.vast.ai" if running else None,
        "ssh_port": inst.ssh_port if running else None,
        "ssh_idx": str(inst.ssh_idx),
        "machine_dir_ssh_port": (m.direct_port_start if m.direct_port_start > 0 else None),
        "direct_port_count": m.direct_port_count,
        "direct_port_start": m.direct_port_start if has_direct else -1,
        "direct_port_end": (m.direct_port_start + len(inst.ports) if has_direct else -1),
        "ports": dict(inst.ports) if running else None,
    }


def _place_fields(state: State, m: Machine) -> dict[str, Any]:
    return {
        "static_ip": m.static_ip,
        "geolocation": m.geolocation,
        "country_code": m.country_code,
        "verification": m.verification,
        "rentable": state.scheduler.rentable(m),
        "hosting_type": m.hosting_type,
        "external": False,
    }


def _time_fields(now: float, inst: Instance, running: bool) -> dict[str, Any]:
    uptime = (now - inst.start_date) / 60 if running and inst.start_date else None
    return {
        "start_date": inst.start_date if inst.start_date is not None else inst.created_at,
        "end_date": inst.end_date,
        "duration": rounded(now - inst.created_at, 3),
        "uptime_mins": rounded(uptime, 3) if uptime is not None else None,
        "client_run_time": rounded(inst.gpu_hours, 6),
        "host_run_time": rounded(inst.disk_hours, 6),
        "time_remaining": human_duration(inst.end_date - now),
        "time_remaining_isbid": human_duration(inst.end_date - now) if inst.is_bid else "",
    }


def _hardware_fields(inst: Instance, running: bool) -> dict[str, Any]:
    m = inst.machine
    return {
        "cpu_arch": m.cpu_arch,
        "cpu_name": m.cpu_name,
        "cpu_cores": m.cpu_cores,
        "cpu_cores_effective": float(m.cpu_cores),
        "cpu_ram": m.cpu_ram,
        "cpu_util": 12.5 if running else 0.0,
        "mem_limit": float(m.cpu_ram) / 1024 if running else None,
        "mem_usage": 1.2 if running else None,
        "vmem_usage": 0.0 if running else None,
        "gpu_name": m.gpu_name,
        "gpu_arch": "nvidia",
        "num_gpus": m.num_gpus,
        "gpu_ram": m.gpu_model.ram_mb,
        "gpu_totalram": m.gpu_model.ram_mb * m.num_gpus,
        "gpu_frac": 1.0,
        "gpu_lanes": 16,
        "gpu_mem_bw": m.gpu_mem_bw,
        "bw_nvlink": m.bw_nvlink,
        "gpu_util": 0.0 if running else None,
        "gpu_temp": 0.0 if running else None,
        "cuda_max_good": m.cuda_max_good,
        "driver_version": m.driver_version,
        "compute_cap": m.compute_cap,
        "disk_name": m.disk_name,
        "disk_space": inst.disk,
        "disk_bw": m.disk_bw,
        "disk_util": 0.0,
        "disk_usage": -1,
        "inet_up": m.inet_up,
        "inet_down": m.inet_down,
    }


def _pricing(inst: Instance, running: bool) -> tuple[dict[str, float], dict[str, float]]:
    """The contract's prices (``search``) and what it costs right now (``instance``)."""
    storage_dph = _storage_dph(inst)
    pricing = {
        "gpuCostPerHour": rounded(inst.price),
        "diskHour": rounded(storage_dph),
        "totalHour": rounded(inst.price + storage_dph),
        "discountTotalHour": 0.0,
        "discountedTotalPerHour": rounded(inst.price + storage_dph),
    }
    current = dict(pricing)
    if not running:
        offline = inst.machine.host_status == "offline"
        current["gpuCostPerHour"] = 0.0
        current["totalHour"] = rounded(storage_dph if not offline else 0.0)
        current["discountedTotalPerHour"] = current["totalHour"]
    return pricing, current


def _price_fields(state: State, inst: Instance, running: bool) -> dict[str, Any]:
    m = inst.machine
    storage_dph = _storage_dph(inst)
    total = inst.price + storage_dph
    pricing, current = _pricing(inst, running)
    return {
        "inet_up_cost": inst.inet_up_cost,
        "inet_down_cost": inst.inet_down_cost,
        "internet_up_cost_per_tb": rounded(inst.inet_up_cost * 1000, 4),
        "internet_down_cost_per_tb": rounded(inst.inet_down_cost * 1000, 4),
        "inet_up_billed": rounded(inst.up_gb * 1_000_000, 3),
        "inet_down_billed": rounded(inst.down_gb * 1_000_000, 3),
        "is_bid": inst.is_bid,
        "min_bid": state.scheduler.min_bid(m),
        "dph_base": rounded(inst.price),
        "dph_total": rounded(total),
        "storage_cost": inst.storage_cost,
        "storage_total_cost": rounded(storage_dph),
        "vram_costperhour": rounded(inst.price / (m.gpu_model.ram_mb * m.num_gpus / 1024)),
        "search": pricing,
        "instance": current,
        "credit_balance": None,
        "credit_discount": None,
        "credit_discount_max": 0.4,
        "dlperf": m.dlperf,
        "dlperf_per_dphtotal": rounded(m.dlperf / total),
        "flops_per_dphtotal": rounded(m.total_flops / total),
        "total_flops": m.total_flops,
        "score": rounded(m.dlperf / total * m.reliability),
    }


def _machine_tail(m: Machine) -> dict[str, Any]:
    return {
        "reliability2": m.reliability,
        "os_version": m.os_version,
        "mobo_name": m.mobo_name,
        "pci_gen": m.pci_gen,
        "pcie_bw": m.pcie_bw,
        "logo": LOGO,
        "webpage": None,
        "volume_info": [],
    }


def user_object(state: State) -> dict[str, Any]:
    """The ``users/current`` object."""
    return {
        "id": 100_000 + state.seed % 900_000,
        "key_id": 1,
        "sid": None,
        "email": "emulator@example.com",
        "username": "emulator",
        "fullname": "Vast Emulator",
        "credit": rounded(state.account.credit),
        "balance": rounded(min(state.account.credit, 0.0)),
        "balance_threshold": 0.0,
        "balance_threshold_enabled": False,
        "autobill_threshold": None,
        "billaddress_city": None,
        "billaddress_country": None,
        "billaddress_line1": None,
        "billaddress_line2": None,
        "billaddress_zip": None,
        "billed_expected": 0.0,
        "billed_verified": 0.0,
        "billing_creditonly": 0,
        "can_pay": True,
        "email_verified": True,
        "got_signup_credit": True,
        "has_billing": True,
        "has_payout": False,
        "last4": None,
        "paid_expected": 0.0,
        "paid_verified": 0.0,
        "password_resettable": None,
        "paypal_email": None,
        "ssh_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmulatorEmulatorEmulatorEmulator emu",
        "user": "emulator",
        "host_agreement_accepted": False,
        "total_spend": rounded(state.account.total_spend),
    }


@dataclass
class _Billed:
    """What one instance was billed inside a time window."""

    gpu: float = 0.0
    disk: float = 0.0
    gpu_hours: float = 0.0
    disk_hours: float = 0.0
    first: float | None = None
    last: float | None = None
    up: float = 0.0
    down: float = 0.0


def _billed(inst: Instance, start: float, end: float) -> _Billed:
    billed = _Billed()
    for s0, s1, gpu_rate, disk_rate in inst.segments:
        lo, hi = max(s0, start), min(s1, end)
        if hi <= lo:
            continue
        hours = (hi - lo) / 3600
        billed.gpu += gpu_rate * hours
        billed.disk += disk_rate * hours
        billed.gpu_hours += hours if gpu_rate else 0.0
        billed.disk_hours += hours if disk_rate else 0.0
        billed.first = lo if billed.first is None else min(billed.first, lo)
        billed.last = hi if billed.last is None else max(billed.last, hi)
    billed.up = sum(u for t, u, _ in inst.traffic if start <= t <= end)
    billed.down = sum(d for t, _, d in inst.traffic if start <= t <= end)
    return billed


def charges(state: State, start: float, end: float) -> list[dict[str, Any]]:
    """Per-instance charges between ``start`` and ``end`` (Unix seconds)."""
    out = []
    every = list(state.instances.values()) + list(state.destroyed.values())
    for inst in sorted(every, key=lambda i: i.id):
        billed = _billed(inst, start, end)
        if billed.first is None and not (billed.up or billed.down):
            continue
        out.append(_charge(inst, billed, start, end))
    return out


def _charge(inst: Instance, billed: _Billed, start: float, end: float) -> dict[str, Any]:
    first = billed.first if billed.first is not None else start
    last = billed.last if billed.last is not None else end
    items = [
        _item("gpu", billed.gpu, billed.gpu_hours, inst.price),
        _item("disk", billed.disk, billed.disk_hours, _storage_dph(inst)),
        {
            "type": "bwu",
            "description": f"{inst.up_gb:.3f} GB upload",
            "amount": round(billed.up, 6),
        },
        {
            "type": "bwd",
            "description": f"{inst.down_gb:.3f} GB download",
            "amount": round(billed.down, 6),
        },
    ]
    days = max(1, math.ceil((last - first) / 86_400))
    return {
        "start": first,
        "end": last,
        "type": "instance",
        "source": f"instance-{inst.id}",
        "description": f"Instance {inst.id} Charges - {days} days",
        "amount": round(billed.gpu + billed.disk + billed.up + billed.down, 3),
        "metadata": {
            "template_id": None,
            "label": inst.label,
            "endpoint_id": None,
            "workergroup_id": None,
        },
        "items": items,
    }


def _item(kind: str, amount: float, hours: float, rate: float) -> dict[str, Any]:
    return {
        "type": kind,
        "description": f"{hours:.3f} hours at ${rate:.3f}/hour",
        "quantity": round(hours, 6),
        "rate": round(rate, 6),
        "amount": round(amount, 6),
    }

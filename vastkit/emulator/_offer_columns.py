"""Offers as the API shows them: the columns an offer query reads, the offer object a search
answers (reference section 2.5), and the search itself."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from vastkit.emulator._http import error
from vastkit.emulator._market import Machine
from vastkit.emulator._query import QueryError, parse_search, run_search
from vastkit.emulator._render import LOGO, human_duration, rounded
from vastkit.emulator._state import State

__all__ = ["OFFER_COLUMNS", "OfferReader", "render_offer", "search_offers"]

OFFER_COLUMNS = frozenset(
    {
        "id",
        "ask_contract_id",
        "machine_id",
        "host_id",
        "num_gpus",
        "gpu_name",
        "gpu_ram",
        "gpu_total_ram",
        "gpu_frac",
        "gpu_arch",
        "compute_cap",
        "cuda_max_good",
        "driver_vers",
        "driver_version",
        "cpu_name",
        "cpu_arch",
        "cpu_cores",
        "cpu_cores_effective",
        "cpu_ghz",
        "cpu_ram",
        "has_avx",
        "disk_space",
        "disk_bw",
        "disk_name",
        "inet_up",
        "inet_down",
        "inet_up_cost",
        "inet_down_cost",
        "direct_port_count",
        "pci_gen",
        "pcie_bw",
        "mobo_name",
        "os_version",
        "dph_base",
        "dph_total",
        "storage_cost",
        "min_bid",
        "is_bid",
        "dlperf",
        "dlperf_per_dphtotal",
        "flops_per_dphtotal",
        "total_flops",
        "score",
        "reliability",
        "expected_reliability",
        "rentable",
        "rented",
        "verification",
        "vericode",
        "verified",
        "external",
        "hosting_type",
        "datacenter",
        "geolocation",
        "geolocode",
        "static_ip",
        "start_date",
        "end_date",
        "duration",
        "vms_enabled",
        "gpu_mem_bw",
        "gpu_max_power",
        "gpu_max_temp",
        "gpu_display_active",
        "bw_nvlink",
        "gpu_lanes",
        "cluster_id",
        "resource_type",
        "bundle_id",
        "public_ipaddr",
        "storage_total_cost",
        "hostname",
        "vram_costperhour",
    }
)
"""The columns of an offer row (queries may also filter on ``host_status``)."""


class OfferReader:
    """Reads one column of a machine's offer, priced for a rental kind and a disk size.

    Columns that are not plain machine attributes are computed by the entries of
    :data:`_COMPUTED`; every other column is the machine attribute of that name.

    Args:
        state: The market (for bids, rentability and the time).
        kind: ``on-demand``, ``reserved`` or ``bid``.
        storage: The disk size in GB the prices include.
    """

    def __init__(self, state: State, kind: str, storage: float) -> None:
        self.state = state
        self.kind = kind
        self.storage = storage
        self.now = state.now

    def __call__(self, m: Machine, column: str) -> Any:
        compute = _COMPUTED.get(column)
        return compute(self, m) if compute is not None else getattr(m, column, None)

    def gpu_rate(self, m: Machine) -> float:
        """The GPU price in $/h: the minimum bid for bids, else ``dph_base``."""
        return self.state.scheduler.min_bid(m) if self.kind == "bid" else m.dph_base

    def total_rate(self, m: Machine) -> float:
        """GPU plus storage in $/h (``dph_total``)."""
        return self.gpu_rate(m) + m.storage_dph(self.storage)

    def per_dollar(self, m: Machine, column: str) -> float:
        """``dlperf_per_dphtotal``, ``flops_per_dphtotal`` or ``score``."""
        total = self.total_rate(m)
        value = m.dlperf if column != "flops_per_dphtotal" else m.total_flops
        ratio = value / total if total else 0.0
        return ratio * m.reliability if column == "score" else ratio

    def vram_rate(self, m: Machine) -> float:
        """The GPU price per GB of GPU memory."""
        total_gb = m.gpu_model.ram_mb * m.num_gpus / 1024
        return self.gpu_rate(m) / total_gb if total_gb else 0.0


_VERICODES = {"verified": 1, "unverified": 0, "deverified": -1}

_COMPUTED: dict[str, Callable[[OfferReader, Machine], Any]] = {
    "id": lambda r, m: m.ask_id,
    "ask_contract_id": lambda r, m: m.ask_id,
    "bundle_id": lambda r, m: m.ask_id,
    "machine_id": lambda r, m: m.id,
    "gpu_name": lambda r, m: m.gpu_name,
    "gpu_ram": lambda r, m: m.gpu_model.ram_mb,
    "gpu_total_ram": lambda r, m: m.gpu_model.ram_mb * m.num_gpus,
    "gpu_frac": lambda r, m: 1.0,
    "gpu_arch": lambda r, m: "nvidia",
    "driver_vers": lambda r, m: int("".join(p.zfill(3) for p in m.driver_version.split("."))),
    "cpu_cores_effective": lambda r, m: float(m.cpu_cores),
    "dph_base": OfferReader.gpu_rate,
    "storage_total_cost": lambda r, m: m.storage_dph(r.storage),
    "dph_total": OfferReader.total_rate,
    "min_bid": lambda r, m: r.state.scheduler.min_bid(m),
    "is_bid": lambda r, m: r.kind == "bid",
    "total_flops": lambda r, m: m.total_flops,
    "dlperf_per_dphtotal": lambda r, m: r.per_dollar(m, "dlperf_per_dphtotal"),
    "flops_per_dphtotal": lambda r, m: r.per_dollar(m, "flops_per_dphtotal"),
    "score": lambda r, m: r.per_dollar(m, "score"),
    "reliability": lambda r, m: m.reliability,
    "expected_reliability": lambda r, m: m.reliability,
    "rentable": lambda r, m: r.state.scheduler.rentable(m),
    "rented": lambda r, m: r.state.scheduler.rented_by_user(m),
    "vericode": lambda r, m: _VERICODES[m.verification],
    "verified": lambda r, m: m.verification == "verified",
    "external": lambda r, m: False,
    "datacenter": lambda r, m: m.hosting_type == 1,
    "geolocode": lambda r, m: int(hashlib.md5(m.geolocation.encode()).hexdigest()[:8], 16),
    "duration": lambda r, m: m.end_date - r.now,
    "gpu_max_power": lambda r, m: float(m.gpu_model.max_power),
    "gpu_max_temp": lambda r, m: 83.0,
    "gpu_display_active": lambda r, m: False,
    "gpu_lanes": lambda r, m: 16,
    "cluster_id": lambda r, m: None,
    "resource_type": lambda r, m: "gpu",
    "hostname": lambda r, m: None,
    "vram_costperhour": OfferReader.vram_rate,
}
"""Offer columns that are computed rather than read off the machine."""


def render_offer(state: State, m: Machine, kind: str, storage: float) -> dict[str, Any]:
    """An offer object (reference section 2.5)."""
    get = OfferReader(state, kind, storage)
    row: dict[str, Any] = {}
    for column in sorted(OFFER_COLUMNS):
        value = get(m, column)
        row[column] = rounded(value) if isinstance(value, float) else value
    duration = row["duration"]
    row["reliability2"] = row["reliability"]
    row["reliability_mult"] = rounded(0.5 + m.reliability / 2, 4)
    row["compute_cap"] = m.compute_cap
    row["gpu_ids"] = list(range(m.num_gpus))
    row["inet_up_billed"] = None
    row["internet_up_cost_per_tb"] = rounded(m.inet_up_cost * 1000, 4)
    row["internet_down_cost_per_tb"] = rounded(m.inet_down_cost * 1000, 4)
    row["time_remaining"] = human_duration(duration)
    row["time_remaining_isbid"] = human_duration(duration) if kind == "bid" else ""
    row["is_vm_deverified"] = False
    row["credit_discount_max"] = 0.4
    row.update(_discounts(get, m, kind))
    row.update(_FIXED)
    return row


_FIXED: dict[str, Any] = {
    "platform_fee": 0.0,
    "bundled_results": None,
    "logo": LOGO,
    "webpage": None,
    "rn": None,
    "avail_vol_ask_id": None,
    "avail_vol_dph": None,
    "avail_vol_size": None,
    "nw_disk_min_bw": None,
    "nw_disk_max_bw": None,
    "nw_disk_avg_bw": None,
}
"""Offer fields the emulator always answers the same way (last in the object)."""


def _discounts(get: OfferReader, m: Machine, kind: str) -> dict[str, Any]:
    """The discount columns and the ``search``/``instance`` pricing objects (in that order)."""
    discount = 0.2 if kind == "reserved" else 0.0
    total = get.total_rate(m)
    discounted_total = rounded(total * (1 - discount) if discount else total)
    pricing = {
        "gpuCostPerHour": rounded(get.gpu_rate(m)),
        "diskHour": rounded(m.storage_dph(get.storage)),
        "totalHour": rounded(total),
        "discountTotalHour": rounded(total * discount),
        "discountedTotalPerHour": discounted_total,
    }
    return {
        "discount_rate": discount,
        "discounted_hourly": rounded(get.gpu_rate(m) * (1 - discount)),
        "discounted_dph_total": discounted_total,
        "dph_total_adj": rounded(total),
        "search": pricing,
        "instance": dict(pricing),
    }


def search_offers(state: State, query: Any, default_limit: int) -> list[dict[str, Any]]:
    """Run an offer query and render the offers (no auth, limits or faults).

    Raises:
        ApiError: 400 ``invalid_args`` for a query the language does not accept.
    """
    try:
        spec = parse_search(query)
    except (QueryError, TypeError) as exc:
        raise error(400, "invalid_args", f"error 400: Invalid args: {exc}") from None
    storage = spec.allocated_storage if spec.allocated_storage is not None else 8.0
    if spec.allocated_storage is not None:
        spec.filters.append(("disk_space", "gte", spec.allocated_storage))
    if not spec.mentions("rentable"):
        spec.filters.append(("rentable", "eq", True))
    # An on-demand/reserved renter cannot take GPUs held on demand (``rentable`` above); every
    # renter needs the host online.
    spec.filters.append(("host_status", "eq", "online"))
    get = OfferReader(state, spec.type, storage)
    columns = OFFER_COLUMNS | {"host_status"}
    try:
        found = run_search(spec, state.machines, get, columns, default_limit)
    except QueryError as exc:
        raise error(400, "invalid_args", f"error 400: Invalid args: {exc}") from None
    return [render_offer(state, m, spec.type, storage) for m in found]

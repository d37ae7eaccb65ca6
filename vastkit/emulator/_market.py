"""The emulator's seeded catalog of machines (one offer per machine).

Every machine is generated from the seed alone, so two emulators with the same seed and size
list the same market. Prices, GPU mixes, reliabilities and locations follow section 14 of the
API reference (a public scrape of Vast's RTX 5090 offers and public price write-ups).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["GPU_MODELS", "Catalog", "GpuModel", "Machine", "generate_catalog"]

HOURS_PER_STORAGE_MONTH = 720.0


@dataclass(frozen=True)
class GpuModel:
    """A GPU model of the catalog with realistic specs and a price band per GPU."""

    name: str
    """Canonical Vast name, with spaces (``"RTX 4090"``)."""
    ram_mb: int
    """Per-GPU memory in MB."""
    compute_cap: int
    """CUDA compute capability x 100."""
    tflops: float
    """FP32-ish TFLOPS per GPU."""
    dlperf: float
    """DL-perf score per GPU."""
    price_low: float
    """Lowest on-demand $/h per GPU."""
    price_high: float
    """Highest on-demand $/h per GPU."""
    weight: float
    """Relative frequency in the catalog."""
    mem_bw: float
    """Memory bandwidth in GB/s."""
    max_power: float
    """Board power in W."""
    datacenter_card: bool
    """Mostly in 4- and 8-GPU datacenter machines."""
    min_driver: int = 0
    """Index into the driver table below which this GPU cannot run."""


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("RTX 3060", 12288, 860, 12.7, 8.0, 0.05, 0.12, 5, 360, 170, False),
    GpuModel("RTX 3080", 10240, 860, 29.8, 15.0, 0.08, 0.20, 5, 760, 320, False),
    GpuModel("RTX 3090", 24576, 860, 35.6, 20.0, 0.15, 0.35, 14, 936, 350, False),
    GpuModel("RTX 4080", 16376, 890, 48.7, 28.0, 0.15, 0.35, 5, 717, 320, False),
    GpuModel("RTX 4090", 24564, 890, 82.6, 45.0, 0.25, 0.60, 20, 1008, 450, False),
    GpuModel("RTX 5090", 32607, 1200, 104.8, 60.0, 0.28, 1.30, 12, 1792, 575, False, 4),
    GpuModel("RTX A6000", 49140, 860, 38.7, 25.0, 0.40, 0.70, 6, 768, 300, False),
    GpuModel("RTX 6000Ada", 49140, 890, 91.1, 50.0, 0.60, 1.00, 3, 960, 300, False),
    GpuModel("L40S", 46068, 890, 91.6, 50.0, 0.60, 1.00, 5, 864, 350, True),
    GpuModel("Tesla V100", 16384, 700, 15.7, 12.0, 0.10, 0.30, 3, 900, 300, True),
    GpuModel("A100 PCIE", 40960, 800, 19.5, 30.0, 0.50, 1.20, 4, 1555, 250, True),
    GpuModel("A100 SXM4", 81920, 800, 19.5, 35.0, 0.70, 1.50, 6, 2039, 400, True),
    GpuModel("H100 PCIE", 81559, 900, 51.2, 70.0, 1.50, 2.40, 4, 2039, 350, True, 1),
    GpuModel("H100 SXM", 81559, 900, 67.0, 90.0, 1.60, 2.80, 8, 3350, 700, True, 1),
    GpuModel("H100 NVL", 95830, 900, 60.0, 85.0, 1.60, 2.60, 3, 3900, 400, True, 1),
    GpuModel("H200", 143771, 900, 67.0, 100.0, 2.50, 3.80, 2, 4800, 700, True, 2),
)
"""The GPU models the catalog draws from, with realistic 2025-2026 Vast price bands."""

# (driver_version, cuda_max_good)
_DRIVERS: tuple[tuple[str, float], ...] = (
    ("535.183.01", 12.2),
    ("550.127.05", 12.4),
    ("560.35.03", 12.6),
    ("565.57.01", 12.7),
    ("570.133.07", 12.8),
    ("575.57.08", 12.9),
    ("580.65.06", 13.0),
)

_LOCATIONS: tuple[tuple[str, float], ...] = (
    ("California, US", 10),
    ("Texas, US", 7),
    ("Washington, US", 4),
    ("Virginia, US", 4),
    ("New York, US", 3),
    ("Oregon, US", 3),
    ("Illinois, US", 2),
    ("Florida, US", 2),
    ("Quebec, CA", 4),
    ("Ontario, CA", 2),
    ("Germany, DE", 4),
    ("Netherlands, NL", 3),
    ("France, FR", 2),
    ("United Kingdom, GB", 3),
    ("Sweden, SE", 3),
    ("Norway, NO", 2),
    ("Finland, FI", 2),
    ("Poland, PL", 2),
    ("Czechia, CZ", 2),
    ("Romania, RO", 1),
    ("Spain, ES", 1),
    ("Iceland, IS", 1),
    ("Estonia, EE", 1),
    ("Bulgaria, BG", 1),
    ("Ukraine, UA", 1),
    ("Japan, JP", 3),
    ("South Korea, KR", 2),
    ("Taiwan, TW", 2),
    ("Hong Kong, HK", 2),
    ("Singapore, SG", 2),
    ("India, IN", 1),
    ("Vietnam, VN", 2),
    ("Australia, AU", 2),
    ("Brazil, BR", 1),
    ("Chile, CL", 1),
    ("South Africa, ZA", 1),
)

_CPUS: tuple[str, ...] = (
    "AMD EPYC 7763 64-Core Processor",
    "AMD EPYC 9654 96-Core Processor",
    "AMD Ryzen 9 7950X 16-Core Processor",
    "AMD Ryzen Threadripper PRO 5975WX 32-Cores",
    "Intel Xeon Platinum 8480+",
    "Intel Core i9-13900K",
    "Intel Xeon Gold 6348",
    "AMD EPYC 7B13 64-Core Processor",
)

_MOBOS: tuple[str, ...] = (
    "ROMED8-2T",
    "H12SSL-i",
    "PRO WS WRX80E-SAGE SE WIFI",
    "X13DEG-OAD",
    "ROG STRIX Z790-E",
    "TRX40 AORUS MASTER",
    "MZ73-LM0-000",
)

_DISKS: tuple[str, ...] = (
    "Samsung SSD 990 PRO 2TB",
    "SAMSUNG MZQL27T6HBLA",
    "WD_BLACK SN850X 4000GB",
    "INTEL SSDPE2KX040T8",
    "Micron_7450_MTFDKCC7T6TFR",
)


class Machine:
    """One physical machine of the catalog, offered whole (one offer per machine).

    Static hardware and price fields come from the seed; the dynamic fields (``ask_id``, who
    holds the GPUs, the host's status) are changed by the emulator's state.
    """

    __slots__ = (
        "ask_id",
        "bw_nvlink",
        "compute_cap",
        "cpu_arch",
        "cpu_cores",
        "cpu_ghz",
        "cpu_name",
        "cpu_ram",
        "cuda_max_good",
        "direct_port_count",
        "direct_port_start",
        "disk_bw",
        "disk_name",
        "disk_space",
        "dlperf",
        "dph_base",
        "driver_version",
        "end_date",
        "geolocation",
        "gpu_mem_bw",
        "gpu_model",
        "has_avx",
        "host_id",
        "host_status",
        "hosting_type",
        "id",
        "inet_down",
        "inet_down_cost",
        "inet_up",
        "inet_up_cost",
        "mobo_name",
        "num_gpus",
        "os_version",
        "pci_gen",
        "pcie_bw",
        "price_min_bid",
        "public_ipaddr",
        "reliability",
        "start_date",
        "static_ip",
        "storage_cost",
        "verification",
        "vms_enabled",
    )

    id: int
    ask_id: int
    host_id: int
    gpu_model: GpuModel
    num_gpus: int
    dph_base: float
    price_min_bid: float
    storage_cost: float
    inet_up_cost: float
    inet_down_cost: float
    inet_up: float
    inet_down: float
    reliability: float
    verification: str
    hosting_type: int
    geolocation: str
    public_ipaddr: str
    static_ip: bool
    driver_version: str
    cuda_max_good: float
    compute_cap: int
    cpu_name: str
    cpu_arch: str
    cpu_cores: int
    cpu_ghz: float
    cpu_ram: int
    disk_space: float
    disk_bw: float
    disk_name: str
    mobo_name: str
    pci_gen: float
    pcie_bw: float
    gpu_mem_bw: float
    bw_nvlink: float
    direct_port_count: int
    direct_port_start: int
    dlperf: float
    has_avx: int
    os_version: str
    vms_enabled: bool
    start_date: float
    end_date: float
    host_status: str

    @property
    def gpu_name(self) -> str:
        """The GPU model name."""
        return self.gpu_model.name

    @property
    def total_flops(self) -> float:
        """Total TFLOPS of the machine."""
        return round(self.gpu_model.tflops * self.num_gpus, 1)

    @property
    def country_code(self) -> str:
        """The two-letter country code at the end of ``geolocation``."""
        return self.geolocation.rsplit(",", 1)[-1].strip()

    def storage_dph(self, disk_gb: float) -> float:
        """Storage price in $/h for ``disk_gb`` GB."""
        return disk_gb * self.storage_cost / HOURS_PER_STORAGE_MONTH


_MODEL_WEIGHTS = [g.weight for g in GPU_MODELS]


def _weighted(rng: random.Random, items: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([name for name, _ in items], weights=[w for _, w in items])[0]


def generate_catalog(seed: int, count: int, now: float) -> list[Machine]:
    """Generate ``count`` machines deterministically from ``seed``.

    Args:
        seed: The seed; the same seed and count give the same catalog.
        count: How many machines (offers), 1 to 50,000.
        now: The clock time the catalog is built at (start and end dates are relative to it).

    Returns:
        The machines, ordered by machine id.

    Raises:
        ValueError: ``count`` is out of range.
    """
    if not 1 <= count <= 50_000:
        raise ValueError(f"offers must be between 1 and 50000, not {count}")
    rng = random.Random(f"vastkit-emulator-catalog:{seed}")
    machine_ids = rng.sample(range(10_000, 99_999), count)
    machine_ids.sort()
    ask_ids = rng.sample(range(20_000_000, 29_999_999), count)
    hosts: list[int] = []
    return [_machine(rng, machine_ids[i], ask_ids[i], hosts, now) for i in range(count)]


def _machine(
    rng: random.Random, machine_id: int, ask_id: int, hosts: list[int], now: float
) -> Machine:
    """One machine; every draw comes from ``rng`` in a fixed order (the catalog depends on it)."""
    m = Machine()
    m.id = machine_id
    m.ask_id = ask_id
    # About 2 machines per host, as in the scrape (268 machines, 121 hosts).
    if hosts and rng.random() < 0.55:
        m.host_id = rng.choice(hosts[-20:])
    else:
        m.host_id = rng.randint(1_000, 399_999)
        hosts.append(m.host_id)
    model = rng.choices(GPU_MODELS, weights=_MODEL_WEIGHTS)[0]
    m.gpu_model = model
    if model.datacenter_card:
        m.num_gpus = rng.choices((1, 2, 4, 8), weights=(30, 20, 20, 30))[0]
    else:
        m.num_gpus = rng.choices((1, 2, 4, 6, 8, 9), weights=(420, 205, 105, 3, 56, 2))[0]
    _set_prices(m, rng, model)
    _set_network_and_trust(m, rng, model)
    _set_hardware(m, rng, model)
    _set_dates(m, rng, now)
    m.host_status = "online"
    return m


def _set_prices(m: Machine, rng: random.Random, model: GpuModel) -> None:
    """GPU price, bid floor, storage and traffic prices."""
    # Per-GPU price: log-uniform in the band, with a small tail above it.
    low, high = math.log(model.price_low), math.log(model.price_high)
    per_gpu = math.exp(rng.uniform(low, high))
    if rng.random() < 0.03:
        per_gpu *= rng.uniform(1.2, 2.0)
    m.dph_base = round(per_gpu * m.num_gpus, 4)
    # Host floor for bids: around 60% of on-demand, sometimes above it (section 14).
    ratio = min(max(rng.lognormvariate(math.log(0.6), 0.35), 0.05), 1.4)
    m.price_min_bid = round(max(0.001, m.dph_base * ratio), 4)
    m.storage_cost = round(rng.choice((0.1, 0.15, 0.2, 0.25, 0.3)) * rng.uniform(0.5, 1.2), 6)
    m.inet_up_cost = round(rng.uniform(0.0, 0.02), 4)
    m.inet_down_cost = round(rng.uniform(0.0, 0.02), 4)


def _set_network_and_trust(m: Machine, rng: random.Random, model: GpuModel) -> None:
    """Bandwidth, hosting type, reliability, verification, location and address."""
    m.inet_up = round(rng.lognormvariate(math.log(400), 0.8), 1)
    m.inet_down = round(rng.lognormvariate(math.log(700), 0.8), 1)
    m.hosting_type = 1 if rng.random() < (0.6 if model.datacenter_card else 0.15) else 0
    rel = 1.0 - rng.lognormvariate(math.log(0.02), 0.9)
    m.reliability = round(min(max(rel, 0.55), 0.9995), 4)
    verifications = ("verified", "unverified", "deverified")
    m.verification = rng.choices(verifications, weights=(80, 16, 4))[0]
    m.geolocation = _weighted(rng, _LOCATIONS)
    m.public_ipaddr = (
        f"{rng.choice((38, 64, 70, 89, 108, 142, 185, 195, 203))}."
        f"{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
    )
    m.static_ip = rng.random() < 0.4


def _set_hardware(m: Machine, rng: random.Random, model: GpuModel) -> None:
    """Driver, CPU, memory, disk, PCIe, ports and performance."""
    driver_index = rng.randint(max(model.min_driver, 0), len(_DRIVERS) - 1)
    m.driver_version, m.cuda_max_good = _DRIVERS[driver_index]
    m.compute_cap = model.compute_cap
    m.cpu_name = rng.choice(_CPUS)
    m.cpu_arch = "amd64"
    m.cpu_cores = rng.choice((16, 24, 32, 48, 64, 96, 128, 192, 256))
    m.cpu_ghz = round(rng.uniform(2.0, 5.2), 2)
    ram_gb = rng.choice((32, 64, 128, 256, 512, 1024, 2048))
    m.cpu_ram = int(ram_gb * 1024 * rng.uniform(0.95, 1.0))
    m.disk_space = round(rng.lognormvariate(math.log(300 * m.num_gpus**0.5), 0.7) + 20, 1)
    m.disk_bw = round(rng.uniform(500, 7000), 1)
    m.disk_name = rng.choice(_DISKS)
    m.mobo_name = rng.choice(_MOBOS)
    m.pci_gen = float(rng.choice((3, 4, 4, 5)))
    m.pcie_bw = round({3.0: 12.5, 4.0: 25.0, 5.0: 53.5}[m.pci_gen] * rng.uniform(0.8, 1.0), 1)
    m.gpu_mem_bw = round(model.mem_bw * rng.uniform(0.9, 1.0), 1)
    m.bw_nvlink = round(rng.choice((0.0, 0.0, 100.0, 600.0)) if m.num_gpus > 1 else 0.0, 1)
    m.direct_port_count = rng.choice((0, 10, 20, 50, 100, 200, 1000))
    m.direct_port_start = rng.randint(10, 60) * 1000 if m.direct_port_count else -1
    m.dlperf = round(model.dlperf * m.num_gpus * rng.uniform(0.85, 1.05), 2)
    m.has_avx = 1
    m.os_version = rng.choice(("20.04", "22.04", "22.04", "24.04"))
    m.vms_enabled = rng.random() < 0.2


def _set_dates(m: Machine, rng: random.Random, now: float) -> None:
    """When the machine was listed and when its offer ends."""
    m.start_date = round(now - rng.uniform(3_600, 90 * 86_400), 1)
    # Contract end dates: mostly weeks to months ahead, some within a day.
    if rng.random() < 0.05:
        m.end_date = round(now + rng.uniform(2 * 3_600, 36 * 3_600), 1)
    else:
        m.end_date = round(now + rng.uniform(3 * 86_400, 180 * 86_400), 1)


class Catalog:
    """The machines on the market, found by machine id and by current offer id.

    Args:
        machines: The generated machines.
        rng: Draws the gaps between reissued offer ids (shared with the state's other ids, so
            the same seed and calls give the same ids).
    """

    def __init__(self, machines: list[Machine], rng: random.Random) -> None:
        self.machines = machines
        self.by_machine_id = {m.id: m for m in machines}
        self.by_ask_id = {m.ask_id: m for m in machines}
        self.next_ask_id = 30_000_000
        self._rng = rng

    def reissue(self, machine: Machine) -> None:
        """Give ``machine`` a new offer id (it came back on the market)."""
        self.by_ask_id.pop(machine.ask_id, None)
        self.next_ask_id += 1 + self._rng.randint(0, 50)
        machine.ask_id = self.next_ask_id
        self.by_ask_id[machine.ask_id] = machine

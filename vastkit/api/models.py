"""Typed values of the Vast.ai REST API.

Every class is an immutable ``attrs`` class with keyword-only, snake_case fields. Where Vast's
field name is cryptic or hides a unit, ours says it (``gpu_ram_mb`` for ``gpu_ram``,
``storage_cost_per_gb_month`` for ``storage_cost``); the mapping lives only in the converter
(:mod:`vastkit.api._converter`). Unknown fields in responses are ignored, since Vast adds fields
often. Units: RAM in MB, disk in GB, money in US dollars, times in Unix seconds.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

import attrs

__all__ = [
    "Charge",
    "ChargeItem",
    "CreateInstanceRequest",
    "CreatedInstance",
    "InstanceInfo",
    "InstanceState",
    "Offer",
    "PortBinding",
    "SshKey",
    "User",
]


def _env_repr(env: Mapping[str, str]) -> str:
    """An environment in a repr: the names, never the values (they carry store credentials)."""
    return "{" + ", ".join(f"{name!r}: '***'" for name in env) + "}"


def _hidden_repr(value: str | None) -> str:
    """A text that may carry secrets (an onstart script exports the environment) in a repr."""
    return "None" if value is None else f"'<{len(value)} characters>'"


HOURS_PER_STORAGE_MONTH = 720.0
"""Vast prices storage per GB per 30-day month: ``$/h = GB x storage_cost / 720``."""


@attrs.frozen(kw_only=True)
class Offer:
    """One rentable offer (an "ask") from ``POST /api/v0/bundles/``."""

    id: int
    """The offer id, passed to ``create_instance``. Not stable: a machine that comes back gets
    a new one. The stable identity is ``(machine_id, num_gpus)``."""
    machine_id: int
    """The physical machine."""
    host_id: int | None = None
    """The host (the machine's owner)."""
    num_gpus: int
    """GPUs in this offer."""
    gpu_name: str
    """Canonical GPU name with spaces, e.g. ``"RTX 4090"``, ``"H100 SXM"``."""
    gpu_ram_mb: float = 0.0
    """Per-GPU memory in MB (``gpu_ram``)."""
    gpu_total_ram_mb: float | None = None
    """Total GPU memory in MB (``gpu_total_ram``)."""
    gpu_arch: str | None = None
    """``nvidia`` or ``amd``."""
    compute_cap: int | None = None
    """CUDA compute capability x 100 (860 = 8.6)."""
    cuda_max_good: float | None = None
    """Highest CUDA version the host driver supports (12.4)."""
    driver_version: str | None = None
    """Driver version string (``"535.86.05"``)."""
    cpu_name: str | None = None
    """CPU model."""
    cpu_cores_effective: float | None = None
    """vCPUs this offer gets."""
    cpu_ram_mb: float | None = None
    """Machine RAM in MB (``cpu_ram``)."""
    disk_space_gb: float = 0.0
    """Disk available to rent, in GB (``disk_space``)."""
    disk_bw_mb_s: float | None = None
    """Disk bandwidth in MB/s (``disk_bw``)."""
    inet_up_mbps: float | None = None
    """Measured upload bandwidth in Mb/s (``inet_up``)."""
    inet_down_mbps: float | None = None
    """Measured download bandwidth in Mb/s (``inet_down``)."""
    inet_up_cost_per_gb: float = 0.0
    """Upload price in $/GB (``inet_up_cost``)."""
    inet_down_cost_per_gb: float = 0.0
    """Download price in $/GB (``inet_down_cost``)."""
    direct_port_count: int | None = None
    """Ports open on the host's router (needed for direct SSH and ports)."""
    pcie_bw: float | None = None
    """PCIe bandwidth in GB/s."""
    dph_base: float
    """On-demand GPU price of the whole offer in $/h, storage excluded."""
    dph_total: float
    """``dph_base`` plus storage for the search's ``allocated_storage``, in $/h. For a ``bid``
    search, the price shown is the minimum bid."""
    storage_cost_per_gb_month: float = 0.0
    """Storage price in $/GB/month (``storage_cost``)."""
    min_bid: float | None = None
    """Current minimum bid in $/h for an interruptible rental of the whole offer."""
    is_bid: bool | None = None
    """Whether this row was priced as a bid."""
    dlperf: float | None = None
    """Vast's deep-learning performance score."""
    dlperf_per_dphtotal: float | None = None
    """``dlperf`` per $/h."""
    total_flops: float | None = None
    """Total TFLOPS."""
    flops_per_dphtotal: float | None = None
    """TFLOPS per $/h."""
    score: float | None = None
    """Vast's default sort key."""
    reliability: float = 0.0
    """Machine reliability, 0 to 1 (``reliability2`` when sent, else ``reliability``)."""
    rentable: bool = True
    """Rentable now."""
    rented: bool = False
    """The caller already rents GPUs on this machine."""
    verification: str | None = None
    """``verified``, ``unverified`` or ``deverified``."""
    hosting_type: int | None = None
    """1 for a datacenter host."""
    geolocation: str | None = None
    """Location text such as ``"California, US"``."""
    public_ipaddr: str | None = None
    """The machine's public IP address."""
    static_ip: bool | None = None
    """Whether the IP is static."""
    start_date: float | None = None
    """When the offer started (Unix seconds)."""
    end_date: float | None = None
    """When the host's contract for this offer ends (Unix seconds): no rental outlives it."""
    duration: float | None = None
    """Seconds left until ``end_date`` when the search ran."""

    @property
    def verified(self) -> bool:
        """Whether Vast verified the machine."""
        return self.verification == "verified"

    @property
    def datacenter(self) -> bool:
        """Whether the host is a datacenter (``hosting_type == 1``)."""
        return self.hosting_type == 1

    @property
    def country_code(self) -> str | None:
        """The two-letter country code at the end of ``geolocation`` (``"US"``), if any."""
        return _country_code(self.geolocation)

    def storage_dph(self, disk_gb: float) -> float:
        """Storage price in $/h for ``disk_gb`` GB on this offer."""
        return disk_gb * self.storage_cost_per_gb_month / HOURS_PER_STORAGE_MONTH


@attrs.frozen(kw_only=True)
class PortBinding:
    """Where a container port is reachable from outside."""

    host_ip: str
    """The host address (``"0.0.0.0"`` means the instance's public IP)."""
    host_port: int
    """The external port."""


class InstanceState(enum.StrEnum):
    """What an instance is doing, derived from Vast's several status fields.

    Vast reports an instance with ``actual_status``, ``intended_status``, ``cur_state``,
    ``next_state`` and ``status_msg``; this folds them into one value a caller can act on.
    """

    PROVISIONING = "provisioning"
    """Accepted, the container does not exist yet (``actual_status`` null or ``created``)."""
    LOADING = "loading"
    """The image is being pulled or the container is starting (also rebooting, recycling)."""
    RUNNING = "running"
    """The container runs; the GPU bills (also ``frozen``)."""
    STOPPED = "stopped"
    """Stopped by its owner, or waiting for its GPUs ("scheduling"); storage still bills."""
    OUTBID = "outbid"
    """An interruptible instance that lost its GPUs to a higher priority rental:
    ``cur_state``, ``intended_status`` and ``next_state`` all ``stopped``."""
    EXITED = "exited"
    """The container's main process ended; it will not reach running by itself."""
    FAILED = "failed"
    """``created`` with an error ``status_msg`` (an OCI runtime or image pull error)."""
    OFFLINE = "offline"
    """The host is disconnected."""
    UNKNOWN = "unknown"
    """The host sent no recent heartbeat."""


_ERROR_MARKERS = ("error", "failed", "oci runtime", "cannot", "denied", "not found", "manifest")


def _looks_like_error(status_msg: str | None) -> bool:
    if not status_msg:
        return False
    lowered = status_msg.lower()
    if lowered.startswith("success"):
        return False
    return any(marker in lowered for marker in _ERROR_MARKERS)


def _country_code(geolocation: str | None) -> str | None:
    if not geolocation:
        return None
    tail = geolocation.rsplit(",", 1)[-1].strip()
    return tail if re.fullmatch(r"[A-Z]{2}", tail) else None


@attrs.frozen(kw_only=True)
class InstanceInfo:
    """A rented instance (a "contract"), from the instance endpoints."""

    id: int
    """The instance id (the create response's ``new_contract``)."""
    machine_id: int | None = None
    """The physical machine."""
    host_id: int | None = None
    """The host."""
    actual_status: str | None = None
    """Vast's container state: null, created, loading, running, stopped, frozen, exited,
    rebooting, recycling, unknown, offline."""
    intended_status: str | None = None
    """The owner's target: running, stopped or frozen."""
    cur_state: str | None = None
    """The contract's hardware allocation: running, stopped or unloaded."""
    next_state: str | None = None
    """The contract's next scheduled state."""
    status_msg: str | None = None
    """Vast's human detail; carries the error when the container failed to start."""
    label: str | None = None
    """The instance label (vastkit uses ``vastkit/<ledger_id>/<run_id>/<attempt>``)."""
    image: str | None = None
    """The Docker image (``image_uuid``)."""
    image_runtype: str | None = None
    """The launch mode, e.g. ``"ssh ssh_direc ssh_proxy"``."""
    env: Mapping[str, str] = attrs.field(factory=dict, repr=_env_repr)
    """Environment and Docker options (``extra_env``, a list of pairs on the wire). A repr shows
    the names only: the values carry secrets (``VASTKIT_STORAGE_OPTIONS``)."""
    onstart: str | None = attrs.field(default=None, repr=_hidden_repr)
    """The onstart script (a repr shows its length only: it may export secrets)."""
    public_ipaddr: str | None = None
    """The machine's public IP address (whitespace stripped)."""
    ssh_host: str | None = None
    """The SSH proxy host."""
    ssh_port: int | None = None
    """The SSH proxy port."""
    ports: Mapping[str, tuple[PortBinding, ...]] = attrs.field(factory=dict)
    """Mapped ports while running: ``{"22/tcp": (PortBinding(...),)}``; empty otherwise."""
    geolocation: str | None = None
    """Location text."""
    num_gpus: int | None = None
    """GPUs rented."""
    gpu_name: str | None = None
    """GPU model."""
    gpu_ram_mb: float | None = None
    """Per-GPU memory in MB."""
    disk_space_gb: float | None = None
    """Disk allocated to the instance in GB (``disk_space``)."""
    is_bid: bool = False
    """Interruptible rental."""
    min_bid: float | None = None
    """Current minimum bid for the machine in $/h."""
    dph_base: float | None = None
    """GPU price in $/h: the on-demand rate, or the instance's bid when ``is_bid``."""
    dph_total: float | None = None
    """``dph_base`` plus storage for the instance's disk, in $/h."""
    storage_cost_per_gb_month: float | None = None
    """Storage price in $/GB/month (``storage_cost``)."""
    inet_up_cost_per_gb: float | None = None
    """Upload price in $/GB."""
    inet_down_cost_per_gb: float | None = None
    """Download price in $/GB."""
    inet_up_billed_kb: float | None = None
    """Traffic sent so far that Vast bills, in kB (``inet_up_billed``, cumulative)."""
    inet_down_billed_kb: float | None = None
    """Traffic received so far that Vast bills, in kB (``inet_down_billed``, cumulative)."""
    reliability: float | None = None
    """Machine reliability, 0 to 1."""
    start_date: float | None = None
    """When the instance started (Unix seconds)."""
    end_date: float | None = None
    """When the contract ends (Unix seconds)."""
    uptime_mins: float | None = None
    """Minutes since the container last started."""

    @property
    def state(self) -> InstanceState:
        """The derived state a caller can act on (see :class:`InstanceState`)."""
        status = (self.actual_status or "").strip().lower()
        if status == "offline":
            return InstanceState.OFFLINE
        if status == "unknown":
            return InstanceState.UNKNOWN
        if status == "exited":
            return InstanceState.EXITED
        if status in ("", "created"):
            if _looks_like_error(self.status_msg):
                return InstanceState.FAILED
            if self.is_bid and self._stopped_triple():
                return InstanceState.OUTBID
            if self.cur_state == "stopped" or self.intended_status == "stopped":
                return InstanceState.STOPPED
            return InstanceState.PROVISIONING
        if status in ("loading", "rebooting", "recycling"):
            return InstanceState.LOADING
        if status in ("running", "frozen"):
            return InstanceState.RUNNING
        if status == "stopped":
            if self.is_bid and self._stopped_triple():
                return InstanceState.OUTBID
            return InstanceState.STOPPED
        return InstanceState.UNKNOWN

    def _stopped_triple(self) -> bool:
        return self.cur_state == self.intended_status == self.next_state == "stopped"

    @property
    def ssh_command(self) -> str | None:
        """``ssh`` command line to reach the instance, direct when port 22 is mapped, else through
        Vast's proxy; None when neither is known yet."""
        direct = self.ports.get("22/tcp")
        if direct and self.public_ipaddr:
            return f"ssh -p {direct[0].host_port} root@{self.public_ipaddr}"
        if self.ssh_host and self.ssh_port:
            port = self.ssh_port + 1 if "jupyter" in (self.image_runtype or "") else self.ssh_port
            return f"ssh -p {port} root@{self.ssh_host}"
        return None

    @property
    def country_code(self) -> str | None:
        """The two-letter country code at the end of ``geolocation``, if any."""
        return _country_code(self.geolocation)


@attrs.frozen(kw_only=True)
class CreateInstanceRequest:
    """What to rent: the body of ``PUT /api/v0/asks/{offer_id}/``.

    The rental type is explicit: ``price`` set means interruptible (a bid in $/h for the whole
    offer), ``price=None`` means on-demand. Searching with ``type="bid"`` does not make a rental
    interruptible; only this field does.
    """

    image: str
    """Docker image, at most 1,024 characters."""
    disk_gb: float = 10.0
    """Local disk in GB, at least 8; cannot change later."""
    env: Mapping[str, str] = attrs.field(factory=dict, repr=_env_repr)
    """Environment variables and Docker options (``{"-p 8080:8080": "1"}``). A repr shows the
    names only."""
    onstart: str | None = attrs.field(default=None, repr=_hidden_repr)
    """Onstart script. With ``args``, at most 4,096 characters in all. A repr shows its length
    only."""
    label: str | None = None
    """Instance label, at most 256 characters."""
    price: float | None = None
    """Bid in $/h (0.001 to 128) for an interruptible rental; None for on-demand."""
    runtype: str | None = "ssh_direc ssh_proxy"
    """How Vast launches the container (``ssh``, ``ssh_direc ssh_proxy``, ``args``, ...)."""
    args: tuple[str, ...] | None = None
    """Entrypoint arguments (for ``runtype="args"``)."""
    image_login: str | None = attrs.field(default=None, repr=_hidden_repr)
    """Registry credentials, ``"-u user -p token registry"``. A repr shows its length only."""
    cancel_unavail: bool = False
    """Fail with 410 instead of creating a stopped instance when the offer cannot start now."""
    template_hash_id: str | None = None
    """A template to start from."""

    def __attrs_post_init__(self) -> None:
        if not self.image and not self.template_hash_id:
            raise ValueError("CreateInstanceRequest needs an image or a template_hash_id")
        if len(self.image) > 1024:
            raise ValueError(f"image name is {len(self.image)} characters; Vast allows 1024")
        if self.disk_gb < 8:
            raise ValueError(f"disk_gb must be at least 8 (got {self.disk_gb})")
        if self.price is not None and not 0.001 <= self.price <= 128:
            raise ValueError(f"price must be between 0.001 and 128 $/h (got {self.price})")
        if self.label is not None and len(self.label) > 256:
            raise ValueError(f"label is {len(self.label)} characters; Vast allows 256")
        script = (self.onstart or "") + "".join(self.args or ())
        if len(script) > 4096:
            raise ValueError(
                f"onstart and args are {len(script)} characters together; Vast allows 4096"
            )

    @property
    def interruptible(self) -> bool:
        """True when this request rents an interruptible (bid) instance."""
        return self.price is not None


@attrs.frozen(kw_only=True)
class CreatedInstance:
    """The answer to a successful create."""

    id: int
    """The new instance id (``new_contract``)."""
    instance_api_key: str | None = attrs.field(default=None, repr=False)
    """A key that can only start, stop or destroy this instance (``CONTAINER_API_KEY`` inside).
    Never shown in a repr."""


@attrs.frozen(kw_only=True)
class User:
    """The account behind the API key (``GET /api/v0/users/current``)."""

    id: int
    """The user id."""
    email: str | None = None
    """The account email."""
    username: str | None = None
    """The user name."""
    credit: float = 0.0
    """Prepaid balance in dollars."""
    balance: float | None = None
    """Vast's ``balance`` field (billing balance)."""
    total_spend: float | None = None
    """Cumulative spend in dollars, when Vast reports it."""
    ssh_key: str | None = None
    """The account SSH public key."""


@attrs.frozen(kw_only=True)
class ChargeItem:
    """One line of a charge: ``gpu``, ``disk``, ``bwu`` (upload) or ``bwd`` (download)."""

    type: str
    """``gpu``, ``disk``, ``bwu`` or ``bwd``."""
    amount: float
    """Dollars."""
    description: str | None = None
    """Vast's text, e.g. ``"96.000 hours at $0.389/hour"``."""


@attrs.frozen(kw_only=True)
class Charge:
    """Charges for one source (an instance) over a period (``GET /api/v0/charges/``)."""

    source: str
    """What was charged, e.g. ``"instance-12345678"``."""
    amount: float
    """Dollars."""
    start: float | None = None
    """Period start (Unix seconds)."""
    end: float | None = None
    """Period end (Unix seconds)."""
    type: str | None = None
    """``instance``, ``volume`` or ``serverless``."""
    description: str | None = None
    """Vast's text."""
    items: tuple[ChargeItem, ...] = ()
    """The breakdown by kind."""

    @property
    def instance_id(self) -> int | None:
        """The instance id in ``source`` (``"instance-123"`` gives 123), if it names one."""
        match = re.fullmatch(r"instance-(\d+)", self.source)
        return int(match.group(1)) if match else None


@attrs.frozen(kw_only=True)
class SshKey:
    """A public SSH key on the account (``/api/v0/ssh/``) or attached to an instance."""

    id: int
    """The key id (for delete, update and detach)."""
    public_key: str = attrs.field(repr=False)
    """The OpenSSH public key line (``public_key``, or ``key`` on some answers)."""
    created_at: float | None = None
    """When it was added (Unix seconds)."""

    @property
    def fingerprint_text(self) -> str:
        """The key's type and comment, e.g. ``"ssh-ed25519 me@laptop"`` (no key material)."""
        parts = self.public_key.split()
        return " ".join([parts[0], *parts[2:]]) if parts else ""

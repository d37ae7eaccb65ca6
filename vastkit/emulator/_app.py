"""The emulator's HTTP application: routing, authentication, rate limits, faults, JSON.

:meth:`App.handle` turns one :class:`Request` into one :class:`Response`; the loopback server
(:mod:`vastkit.emulator._server`) and the in-process httpx transport both call it, so they
behave the same.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from vastkit.emulator._market import HOURS_PER_STORAGE_MONTH, Machine
from vastkit.emulator._query import QueryError, compare, parse_search, run_search
from vastkit.emulator._state import ApiError, Instance, State, error

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "FaultRule",
    "Request",
    "Response",
]

logger = logging.getLogger("vastkit.emulator")

DEFAULT_RATE_LIMITS: Mapping[str, float] = {
    "list": 1.0,
    "show": 2.0,
    "manage": 1.0,
    "manage_bulk": 1.0,
    "destroy": 3.0,
    "destroy_bulk": 3.0,
    "create": 4.5,
    "create_bulk": 4.5,
    "bid_price": 5.5,
    "command": 1.5,
    "reboot": 1.0,
    "recycle": 1.0,
    "charges": 1.0,
}
"""Minimum seconds between two requests to an endpoint per identity (reference section 9.2).
Offer search is limited separately to 10 requests per 60 s."""

SEARCH_WINDOW = (10, 60.0)

# Which documented 429 body each endpoint answers with (reference sections 3.5, 5, 9.2).
_RATE_LIMIT_SHAPES: Mapping[str, str] = {
    "create": "detail",
    "create_bulk": "detail",
    "destroy": "error",
    "destroy_bulk": "error",
    "bid_price": "error",
    "show": "text",
    "command": "text",
}

FAULT_KINDS = frozenset({"status", "drop", "slow", "malformed", "rate_limit", "search_quota"})

_STORED_COLUMNS = frozenset(
    {
        "id",
        "label",
        "actual_status",
        "intended_status",
        "cur_state",
        "next_state",
        "status_msg",
        "gpu_name",
        "verification",
        "machine_id",
        "host_id",
        "image_uuid",
        "image_runtype",
        "is_bid",
        "start_date",
        "end_date",
        "disk_space",
        "template_id",
        "template_hash_id",
        "bundle_id",
        "geolocation",
        "hosting_type",
        "public_ipaddr",
    }
)
"""Instance columns that ``select_filters``/``order_by`` accept (stored contract columns)."""

_OFFER_COLUMNS = frozenset(
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


@dataclass(frozen=True)
class Request:
    """One HTTP request as the application sees it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    base_url: str
    """``scheme://host[:port]`` the client used (for ``result_url``)."""
    client_ip: str = "127.0.0.1"


@dataclass
class Response:
    """One HTTP answer, or an instruction to misbehave (``drop``, ``delay_s``)."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False
    """Close the connection without answering."""
    delay_s: float = 0.0
    """Answer only after this many seconds of real time."""


@dataclass
class FaultRule:
    """A programmed fault (see :meth:`vastkit.emulator.Emulator.inject`)."""

    kind: str
    """``status``, ``drop``, ``slow``, ``malformed``, ``rate_limit`` or ``search_quota``."""
    endpoint: str = "*"
    """The endpoint name it applies to, or ``"*"``."""
    count: int | None = 1
    """How many requests it hits (None: no limit)."""
    probability: float | None = None
    """The chance each matching request is hit (drawn from the seed); None: always."""
    status: int = 503
    """The status code of a ``status`` fault."""
    delay_s: float = 2.0
    """The real-time delay of a ``slow`` answer."""
    processed: bool = False
    """Handle the request first, then fail its answer."""
    shape: str = "detail"
    """The 429 body of a ``rate_limit`` fault: ``detail``, ``error`` or ``text``."""
    fired: int = 0
    """How many requests it has hit so far."""

    def exhausted(self) -> bool:
        """Whether the rule has fired its ``count`` times."""
        return self.count is not None and self.fired >= self.count


def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, separators=(", ", ": ")).encode()
    return Response(status, body, [("Content-Type", "application/json"), *(headers or [])])


def _text(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(status, text.encode(), [("Content-Type", content_type)])


def _r(value: float, digits: int = 6) -> float:
    return round(value, digits)


_Handler = Callable[["App", Request, "_Auth", "re.Match[str]"], Response]


@dataclass(frozen=True)
class _Auth:
    kind: str
    """``account``, ``instance`` or ``none``."""
    instance_id: int | None = None


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/api/v0/bundles"), "search"),
    ("GET", re.compile(r"/api/v0/bundles"), "search"),
    ("PUT", re.compile(r"/api/v0/search/asks"), "search"),
    ("POST", re.compile(r"/api/v0/asks/bulk"), "create_bulk"),
    ("PUT", re.compile(r"/api/v0/asks/(\d+)"), "create"),
    ("GET", re.compile(r"/api/v1/instances"), "list"),
    ("GET", re.compile(r"/api/v0/instances"), "list_v0"),
    ("PUT", re.compile(r"/api/v0/instances"), "manage_bulk"),
    ("DELETE", re.compile(r"/api/v0/instances"), "destroy_bulk"),
    ("GET", re.compile(r"/api/v0/instances/(\d+)"), "show"),
    ("PUT", re.compile(r"/api/v0/instances/(\d+)"), "manage"),
    ("DELETE", re.compile(r"/api/v0/instances/(\d+)"), "destroy"),
    ("PUT", re.compile(r"/api/v0/instances/bid_price/(\d+)"), "bid_price"),
    ("PUT", re.compile(r"/api/v0/instances/reboot/(\d+)"), "reboot"),
    ("PUT", re.compile(r"/api/v0/instances/recycle/(\d+)"), "recycle"),
    ("PUT", re.compile(r"/api/v0/instances/request_logs/(\d+)"), "request_logs"),
    ("PUT", re.compile(r"/api/v0/instances/command/(\d+)"), "command"),
    ("GET", re.compile(r"/api/v0/users/current"), "user"),
    ("GET", re.compile(r"/api/v0/charges"), "charges"),
    ("GET", re.compile(r"/api/v0/gpu_names/unique"), "gpu_names"),
    ("GET", re.compile(r"/emulator/results/([0-9a-f]+)\.log"), "result"),
]

_PUBLIC = frozenset({"gpu_names", "result"})
_INSTANCE_KEY_ROUTES = frozenset({"show", "manage", "destroy"})


class App:
    """The HTTP application over a :class:`State`.

    Args:
        state: The market state.
        clock_now: Reads the emulator's clock.
        api_key: The account's API key.
        rate_limits: Endpoint name -> minimum interval in seconds (empty: no limits).
        search_limited: Whether offer search has its 10-per-minute limit.
        rate_limit_body: Force one 429 body shape (``detail``, ``error``, ``text``) everywhere.
        retry_after: Send ``Retry-After`` with 429 answers (the live API does not).
        search_quota: Searches allowed per UTC day (None: unlimited).
        default_search_limit: Offers returned when a search has no ``limit``.
    """

    def __init__(
        self,
        state: State,
        clock_now: Callable[[], float],
        *,
        api_key: str,
        rate_limits: Mapping[str, float],
        search_limited: bool,
        rate_limit_body: str | None,
        retry_after: bool,
        search_quota: int | None,
        default_search_limit: int,
    ) -> None:
        self.state = state
        self.clock_now = clock_now
        self.api_key = api_key
        self.rate_limits = dict(rate_limits)
        self.search_limited = search_limited
        self.rate_limit_body = rate_limit_body
        self.retry_after = retry_after
        self.search_quota = search_quota
        self.default_search_limit = default_search_limit
        self.faults: list[FaultRule] = []
        self._last_call: dict[tuple[str, str], float] = {}
        self._search_calls: dict[str, list[float]] = {}
        self._quota: dict[str, tuple[int, int]] = {}
        self._results: dict[str, tuple[float, str]] = {}
        self._result_counter = 0
        self.requests: list[tuple[str, str, int]] = []
        """(method, endpoint name, status) of every request answered (for assertions)."""

    # ------------------------------------------------------------------ entry point

    def handle(self, request: Request) -> Response:
        """Answer one request (thread-safe)."""
        with self.state.lock:
            now = self.clock_now()
            self.state.advance_to(now)
            response = self._handle(request, now)
            self.requests.append((request.method, self._route(request)[0] or "?", response.status))
            return response

    def _route(self, request: Request) -> tuple[str | None, re.Match[str] | None, bool]:
        path = request.path.rstrip("/") or "/"
        path_known = False
        for method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            path_known = True
            if method == request.method:
                return name, match, True
        return None, None, path_known

    def _handle(self, request: Request, now: float) -> Response:
        name, match, path_known = self._route(request)
        if name is None or match is None:
            if path_known:
                return _json(
                    405,
                    {
                        "success": False,
                        "error": "method_not_allowed",
                        "msg": f"{request.method} is not allowed here",
                    },
                )
            return _json(
                404,
                {
                    "success": False,
                    "error": "not_found",
                    "msg": f"No such endpoint: {request.path}",
                },
            )
        rule = self._pick_fault(name)
        if rule is not None and not rule.processed:
            early = self._fault_response(rule, name, now)
            if early is not None:
                return early
        if name not in _PUBLIC:
            limited = self._rate_limit(name, request, now)
            if limited is not None:
                return limited
        try:
            auth = self._authenticate(name, request, match)
            if name == "search":
                quota = self._check_quota(request, now)
                if quota is not None:
                    return quota
            handler: _Handler = getattr(App, f"_do_{name}")
            response = handler(self, request, auth, match)
        except ApiError as exc:
            response = _json(exc.status, exc.body)
        if rule is not None:
            late = self._fault_response(rule, name, now)
            if late is not None:
                return late
            if rule.kind == "slow":
                response.delay_s = rule.delay_s
            if rule.kind == "malformed":
                response.body = response.body[: max(1, len(response.body) // 2)]
        return response

    # ------------------------------------------------------------------ faults

    def _pick_fault(self, name: str) -> FaultRule | None:
        for rule in self.faults:
            if rule.exhausted() or rule.endpoint not in ("*", name):
                continue
            if rule.kind == "search_quota" and name != "search":
                continue
            if rule.probability is not None and self.state.rng_faults.random() >= (
                rule.probability
            ):
                continue
            rule.fired += 1
            return rule
        return None

    def _fault_response(self, rule: FaultRule, name: str, now: float) -> Response | None:
        if rule.kind == "status":
            if rule.status >= 500 and rule.status != 500:
                return _text(
                    rule.status,
                    f"<html><head><title>{rule.status}</title></head><body><center><h1>"
                    f"{rule.status} {'Bad Gateway' if rule.status == 502 else 'Error'}"
                    f"</h1></center><hr><center>nginx</center></body></html>",
                    "text/html",
                )
            return _json(
                rule.status,
                {"success": False, "error": "internal_error", "msg": "Internal server error"},
            )
        if rule.kind == "drop":
            return Response(0, b"", drop=True)
        if rule.kind == "rate_limit":
            return self._too_frequent(name, self.rate_limits.get(name, 1.0), now, rule.shape)
        if rule.kind == "search_quota":
            return self._quota_exceeded(now)
        return None

    # ------------------------------------------------------------------ limits

    def _identity(self, request: Request) -> str:
        key = self._key_of(request) or ""
        return hashlib.sha256(f"{key}|{request.client_ip}".encode()).hexdigest()[:16]

    def _too_frequent(
        self, name: str, threshold: float, now: float, shape: str | None = None
    ) -> Response:
        shape = shape or self.rate_limit_body or _RATE_LIMIT_SHAPES.get(name, "detail")
        headers = [("x-ratelimit-limit", f"{threshold}"), ("x-ratelimit-remaining", "0")]
        if self.retry_after:
            headers.append(("Retry-After", str(max(1, math.ceil(threshold)))))
        message = f"API requests too frequent endpoint threshold={threshold}"
        if shape == "text":
            response = _text(429, f"API requests too frequent: endpoint threshold={threshold}")
            response.headers.extend(headers)
            return response
        if shape == "error":
            return _json(
                429, {"success": False, "error": "rate_limit_exceeded", "msg": message}, headers
            )
        return _json(429, {"detail": message}, headers)

    def _rate_limit(self, name: str, request: Request, now: float) -> Response | None:
        who = self._identity(request)
        if name == "search":
            if not self.search_limited:
                return None
            count, window = SEARCH_WINDOW
            calls = [t for t in self._search_calls.get(who, []) if t > now - window]
            if len(calls) >= count:
                self._search_calls[who] = calls
                return self._too_frequent(name, window / count, now)
            calls.append(now)
            self._search_calls[who] = calls
            return None
        threshold = self.rate_limits.get(name)
        if not threshold:
            return None
        last = self._last_call.get((name, who))
        if last is not None and now - last < threshold:
            return self._too_frequent(name, threshold, now)
        self._last_call[(name, who)] = now
        return None

    def _quota_exceeded(self, now: float) -> Response:
        reset = _next_utc_midnight(now)
        return _json(
            429,
            {
                "success": False,
                "error": "search_quota_exceeded",
                "msg": "Daily search quota exceeded.",
            },
            [("X-RateLimit-Reset", str(int(reset)))],
        )

    def _check_quota(self, request: Request, now: float) -> Response | None:
        if self.search_quota is None:
            return None
        who = self._identity(request)
        day = int(now // 86_400)
        used_day, used = self._quota.get(who, (day, 0))
        if used_day != day:
            used = 0
        if used >= self.search_quota:
            return self._quota_exceeded(now)
        self._quota[who] = (day, used + 1)
        return None

    # ------------------------------------------------------------------ auth

    @staticmethod
    def _key_of(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return request.query.get("api_key")

    def _authenticate(self, name: str, request: Request, match: re.Match[str]) -> _Auth:
        if name in _PUBLIC:
            return _Auth("none")
        key = self._key_of(request)
        if key is None or key == "":
            if name == "search":
                return _Auth("none")
            raise error(401, "auth_error", "Invalid user key")
        if key == self.api_key:
            return _Auth("account")
        for inst in self.state.instances.values():
            if inst.api_key == key:
                own = match.groups() and int(match.group(1)) == inst.id
                if name not in _INSTANCE_KEY_ROUTES or not own:
                    raise error(
                        403,
                        "not_authorized",
                        "This API key is limited to its own instance (start, stop, destroy, show).",
                    )
                return _Auth("instance", inst.id)
        raise error(401, "auth_error", "Invalid user key")

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise error(400, "invalid_args", "Invalid JSON body") from None
        if not isinstance(payload, dict):
            raise error(400, "invalid_args", "The body must be a JSON object")
        return payload

    @staticmethod
    def _json_param(request: Request, name: str, default: Any) -> Any:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return json.loads(raw)
        except ValueError:
            raise error(
                400, "invalid_request", f"Error in query parameters: {name} is not valid JSON"
            ) from None

    # ------------------------------------------------------------------ offers

    def offer_getter(self, kind: str, storage: float) -> Callable[[Machine, str], Any]:
        """A column reader for offer rows priced for rental ``kind`` and ``storage`` GB."""
        state = self.state
        now = state.now

        def get(m: Machine, column: str) -> Any:
            if column in ("id", "ask_contract_id", "bundle_id"):
                return m.ask_id
            if column == "machine_id":
                return m.id
            if column == "gpu_name":
                return m.gpu_name
            if column in ("gpu_ram",):
                return m.gpu_model.ram_mb
            if column == "gpu_total_ram":
                return m.gpu_model.ram_mb * m.num_gpus
            if column == "gpu_frac":
                return 1.0
            if column == "gpu_arch":
                return "nvidia"
            if column == "driver_vers":
                return int("".join(p.zfill(3) for p in m.driver_version.split(".")))
            if column == "cpu_cores_effective":
                return float(m.cpu_cores)
            if column in ("dph_base",):
                return state.min_bid(m) if kind == "bid" else m.dph_base
            if column == "storage_total_cost":
                return m.storage_dph(storage)
            if column == "dph_total":
                base = state.min_bid(m) if kind == "bid" else m.dph_base
                return base + m.storage_dph(storage)
            if column == "min_bid":
                return state.min_bid(m)
            if column == "is_bid":
                return kind == "bid"
            if column == "total_flops":
                return m.total_flops
            if column in ("dlperf_per_dphtotal", "flops_per_dphtotal", "score"):
                total = get(m, "dph_total")
                value = m.dlperf if column != "flops_per_dphtotal" else m.total_flops
                ratio = value / total if total else 0.0
                return ratio * m.reliability if column == "score" else ratio
            if column in ("reliability", "expected_reliability"):
                return m.reliability
            if column == "rentable":
                return state.rentable(m)
            if column == "rented":
                return state.rented_by_user(m)
            if column == "vericode":
                return {"verified": 1, "unverified": 0, "deverified": -1}[m.verification]
            if column == "verified":
                return m.verification == "verified"
            if column == "external":
                return False
            if column == "datacenter":
                return m.hosting_type == 1
            if column == "geolocode":
                return int(hashlib.md5(m.geolocation.encode()).hexdigest()[:8], 16)
            if column == "duration":
                return m.end_date - now
            if column == "gpu_max_power":
                return float(m.gpu_model.max_power)
            if column == "gpu_max_temp":
                return 83.0
            if column == "gpu_display_active":
                return False
            if column == "gpu_lanes":
                return 16
            if column == "cluster_id":
                return None
            if column == "resource_type":
                return "gpu"
            if column == "hostname":
                return None
            if column == "vram_costperhour":
                total_gb = m.gpu_model.ram_mb * m.num_gpus / 1024
                return get(m, "dph_base") / total_gb if total_gb else 0.0
            return getattr(m, column, None)

        return get

    def render_offer(self, m: Machine, kind: str, storage: float) -> dict[str, Any]:
        """An offer object (reference section 2.5)."""
        get = self.offer_getter(kind, storage)
        row: dict[str, Any] = {}
        for column in sorted(_OFFER_COLUMNS):
            value = get(m, column)
            row[column] = _r(value) if isinstance(value, float) else value
        duration = row["duration"]
        row["reliability2"] = row["reliability"]
        row["reliability_mult"] = _r(0.5 + m.reliability / 2, 4)
        row["compute_cap"] = m.compute_cap
        row["gpu_ids"] = list(range(m.num_gpus))
        row["inet_up_billed"] = None
        row["internet_up_cost_per_tb"] = _r(m.inet_up_cost * 1000, 4)
        row["internet_down_cost_per_tb"] = _r(m.inet_down_cost * 1000, 4)
        row["time_remaining"] = _human(duration)
        row["time_remaining_isbid"] = _human(duration) if kind == "bid" else ""
        row["is_vm_deverified"] = False
        row["credit_discount_max"] = 0.4
        discount = 0.2 if kind == "reserved" else 0.0
        row["discount_rate"] = discount
        row["discounted_hourly"] = _r(get(m, "dph_base") * (1 - discount))
        row["discounted_dph_total"] = _r(
            get(m, "dph_total") * (1 - discount) if discount else get(m, "dph_total")
        )
        row["dph_total_adj"] = row["dph_total"]
        pricing = {
            "gpuCostPerHour": _r(get(m, "dph_base")),
            "diskHour": _r(m.storage_dph(storage)),
            "totalHour": row["dph_total"],
            "discountTotalHour": _r(get(m, "dph_total") * discount),
            "discountedTotalPerHour": row["discounted_dph_total"],
        }
        row["search"] = pricing
        row["instance"] = dict(pricing)
        row["platform_fee"] = 0.0
        row["bundled_results"] = None
        row["logo"] = "/static/logos/vastai_small2.png"
        row["webpage"] = None
        row["rn"] = None
        row["avail_vol_ask_id"] = None
        row["avail_vol_dph"] = None
        row["avail_vol_size"] = None
        row["nw_disk_min_bw"] = None
        row["nw_disk_max_bw"] = None
        row["nw_disk_avg_bw"] = None
        return row

    def search(self, query: Any) -> list[dict[str, Any]]:
        """Run an offer query and render the offers (no auth, limits or faults)."""
        try:
            spec = parse_search(query)
        except (QueryError, TypeError) as exc:
            raise error(400, "invalid_args", f"error 400: Invalid args: {exc}") from None
        storage = spec.allocated_storage if spec.allocated_storage is not None else 8.0
        if spec.allocated_storage is not None:
            spec.filters.append(("disk_space", "gte", spec.allocated_storage))
        if not spec.mentions("rentable"):
            spec.filters.append(("rentable", "eq", True))
        if spec.type != "bid":
            # An on-demand/reserved renter cannot take GPUs held on demand (not rentable),
            # and the host must be online.
            spec.filters.append(("host_status", "eq", "online"))
        else:
            spec.filters.append(("host_status", "eq", "online"))
        get = self.offer_getter(spec.type, storage)
        columns = _OFFER_COLUMNS | {"host_status"}
        try:
            found = run_search(spec, self.state.machines, get, columns, self.default_search_limit)
        except QueryError as exc:
            raise error(400, "invalid_args", f"error 400: Invalid args: {exc}") from None
        return [self.render_offer(m, spec.type, storage) for m in found]

    def _do_search(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        if request.method == "GET":
            query = self._json_param(request, "q", {})
        else:
            body = self._body(request)
            query = body.get("q", body) if request.method == "PUT" else body
        return _json(200, {"offers": self.search(query)})

    # ------------------------------------------------------------------ create

    @staticmethod
    def _validate_create(ask_id: int, body: dict[str, Any]) -> None:
        def bad(message: str, code: str = "invalid_args") -> ApiError:
            return error(400, code, f"error 400/3467: Invalid args: {message}", ask_id=ask_id)

        image = body.get("image")
        if not image and not body.get("template_hash_id"):
            raise bad("image is required (or template_hash_id)")
        if image is not None and (not isinstance(image, str) or len(image) > 1024):
            raise bad("image must be a string of at most 1024 characters")
        env = body.get("env", {})
        if env is not None and not isinstance(env, dict):
            raise bad("invalid env type: env must be a dict")
        total = 0
        for key, value in (env or {}).items():
            entry = len(str(key)) + len(str(value))
            if entry > 256:
                raise bad(f"env entry {key!r} is longer than 256 characters")
            total += entry
        if total > 32_768:
            raise bad("env is larger than 32768 characters")
        disk = body.get("disk", 8)
        try:
            disk_value = float(disk) if disk is not None else 8.0
        except (TypeError, ValueError):
            raise bad("disk must be a number") from None
        if disk_value < 8:
            raise bad("disk must be at least 8 GB")
        price = body.get("price")
        if price is not None:
            try:
                price_value = float(price)
            except (TypeError, ValueError):
                raise bad("price must be a number", "invalid_price") from None
            if not 0.001 <= price_value <= 128:
                raise bad("price must be between 0.001 and 128", "invalid_price")
        label = body.get("label")
        if label is not None and (not isinstance(label, str) or len(label) > 256):
            raise bad("label must be a string of at most 256 characters")
        size = sum(len(str(body.get(k) or "")) for k in ("onstart", "args_str"))
        size += sum(len(str(a)) for a in body.get("args") or [])
        if size > 4096:
            raise bad("args, args_str and onstart together exceed 4096 characters")
        if body.get("state") is not None or body.get("target_state") not in (
            None,
            "running",
            "stopped",
        ):
            raise bad("target_state must be running or stopped")

    def _do_create(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        ask_id = int(match.group(1))
        body = self._body(request)
        self._validate_create(ask_id, body)
        status, answer = self.state.create(ask_id, body)
        return _json(status, answer)

    def _do_create_bulk(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        body = self._body(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids:
            raise error(400, "invalid_args", "ids must be a non-empty list of offer ids")
        results = []
        for raw in ids:
            ask_id = int(raw)
            try:
                self._validate_create(ask_id, body)
                _, answer = self.state.create(ask_id, {k: v for k, v in body.items() if k != "ids"})
            except ApiError as exc:
                answer = exc.body
            results.append({"ask_id": ask_id, **answer})
        return _json(200, {"success": True, "results": results})

    # ------------------------------------------------------------------ instances

    def render_instance(self, inst: Instance) -> dict[str, Any]:
        """An instance object (reference section 4.4)."""
        s = self.state
        m = inst.machine
        now = s.now
        host = m.host_status
        actual = inst.actual if host == "online" else host
        intended = "stopped" if (inst.outbid or not inst.wants_run) else "running"
        cur = "running" if inst.holds else "stopped"
        running = inst.actual == "running" and inst.holds and host != "offline"
        storage_dph = inst.disk * inst.storage_cost / HOURS_PER_STORAGE_MONTH
        ip = s.runner.public_ipaddr or m.public_ipaddr
        has_direct = bool(inst.ports)
        extra_env = [[k, v] for k, v in inst.env.items()]
        uptime = (now - inst.start_date) / 60 if running and inst.start_date else None
        pricing = {
            "gpuCostPerHour": _r(inst.price),
            "diskHour": _r(storage_dph),
            "totalHour": _r(inst.price + storage_dph),
            "discountTotalHour": 0.0,
            "discountedTotalPerHour": _r(inst.price + storage_dph),
        }
        current = dict(pricing)
        if not running:
            current["gpuCostPerHour"] = 0.0
            current["totalHour"] = _r(storage_dph if host != "offline" else 0.0)
            current["discountedTotalPerHour"] = current["totalHour"]
        return {
            "id": inst.id,
            "machine_id": m.id,
            "host_id": m.host_id,
            "bundle_id": m.ask_id,
            "actual_status": actual,
            "intended_status": intended,
            "cur_state": cur,
            "next_state": cur,
            "status_msg": inst.status_msg,
            "label": inst.label,
            "template_id": None,
            "template_hash_id": inst.template_hash_id,
            "template_name": None,
            "image_uuid": inst.image,
            "image_args": list(inst.args),
            "image_runtype": inst.runtype,
            "extra_env": extra_env,
            "onstart": inst.onstart,
            "jupyter_token": inst.jupyter_token,
            "public_ipaddr": ip,
            "local_ipaddrs": "172.17.0.2 ",
            "ssh_host": f"ssh{inst.ssh_idx}.vast.ai" if running else None,
            "ssh_port": inst.ssh_port if running else None,
            "ssh_idx": str(inst.ssh_idx),
            "machine_dir_ssh_port": (m.direct_port_start if m.direct_port_start > 0 else None),
            "direct_port_count": m.direct_port_count,
            "direct_port_start": m.direct_port_start if has_direct else -1,
            "direct_port_end": (m.direct_port_start + len(inst.ports) if has_direct else -1),
            "ports": dict(inst.ports) if running else None,
            "static_ip": m.static_ip,
            "geolocation": m.geolocation,
            "country_code": m.country_code,
            "verification": m.verification,
            "rentable": s.rentable(m),
            "hosting_type": m.hosting_type,
            "external": False,
            "start_date": inst.start_date if inst.start_date is not None else inst.created_at,
            "end_date": inst.end_date,
            "duration": _r(now - inst.created_at, 3),
            "uptime_mins": _r(uptime, 3) if uptime is not None else None,
            "client_run_time": _r(inst.gpu_hours, 6),
            "host_run_time": _r(inst.disk_hours, 6),
            "time_remaining": _human(inst.end_date - now),
            "time_remaining_isbid": _human(inst.end_date - now) if inst.is_bid else "",
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
            "inet_up_cost": inst.inet_up_cost,
            "inet_down_cost": inst.inet_down_cost,
            "internet_up_cost_per_tb": _r(inst.inet_up_cost * 1000, 4),
            "internet_down_cost_per_tb": _r(inst.inet_down_cost * 1000, 4),
            "inet_up_billed": _r(inst.up_gb * 1_000_000, 3),
            "inet_down_billed": _r(inst.down_gb * 1_000_000, 3),
            "is_bid": inst.is_bid,
            "min_bid": s.min_bid(m),
            "dph_base": _r(inst.price),
            "dph_total": _r(inst.price + storage_dph),
            "storage_cost": inst.storage_cost,
            "storage_total_cost": _r(storage_dph),
            "vram_costperhour": _r(inst.price / (m.gpu_model.ram_mb * m.num_gpus / 1024)),
            "search": pricing,
            "instance": current,
            "credit_balance": None,
            "credit_discount": None,
            "credit_discount_max": 0.4,
            "dlperf": m.dlperf,
            "dlperf_per_dphtotal": _r(m.dlperf / (inst.price + storage_dph)),
            "flops_per_dphtotal": _r(m.total_flops / (inst.price + storage_dph)),
            "total_flops": m.total_flops,
            "score": _r(m.dlperf / (inst.price + storage_dph) * m.reliability),
            "reliability2": m.reliability,
            "os_version": m.os_version,
            "mobo_name": m.mobo_name,
            "pci_gen": m.pci_gen,
            "pcie_bw": m.pcie_bw,
            "logo": "/static/logos/vastai_small2.png",
            "webpage": None,
            "volume_info": [],
        }

    def _visible(self, auth: _Auth) -> list[Instance]:
        return list(self.state.instances.values())

    def _do_list(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        filters = self._json_param(request, "select_filters", {})
        order_by = self._json_param(request, "order_by", [{"col": "id", "dir": "asc"}])
        select_cols = self._json_param(request, "select_cols", ["*"])
        try:
            limit = int(request.query.get("limit", "25"))
        except ValueError:
            raise error(400, "invalid_request", "Error in query parameters: limit") from None
        limit = 5 if limit <= 0 else min(limit, 25)
        if not isinstance(filters, dict):
            raise error(400, "invalid_request", "Error in query parameters: select_filters")
        rows = [self.render_instance(i) for i in self._visible(auth)]
        for column, condition in filters.items():
            if column not in _STORED_COLUMNS:
                raise error(
                    400,
                    "invalid_request",
                    f"Error in query parameters: {column} is not a valid search key",
                )
            if not isinstance(condition, dict):
                condition = {"eq": condition}
            for op, value in condition.items():
                if op not in ("eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"):
                    raise error(
                        400, "invalid_request", f"Error in query parameters: unknown operator {op}"
                    )
                try:
                    rows = [r for r in rows if compare(r[column], op, value, column)]
                except QueryError as exc:
                    raise error(
                        400, "invalid_request", f"Error in query parameters: {exc}"
                    ) from None
        if not isinstance(order_by, list):
            raise error(400, "invalid_request", "Error in query parameters: order_by")
        order: list[tuple[str, bool]] = []
        for item in order_by:
            column = item.get("col") if isinstance(item, dict) else None
            if column not in _STORED_COLUMNS:
                raise error(
                    400,
                    "invalid_request",
                    f"Error in query parameters: {column} is not a valid order column",
                )
            order.append((str(column), str(item.get("dir", "asc")).lower() == "desc"))
        if not any(c == "id" for c, _ in order):
            order.append(("id", False))
        compare_rows = functools.partial(_compare_rows, order)
        rows.sort(key=functools.cmp_to_key(compare_rows))
        label_counts: dict[str, int] = {}
        for row in rows:
            label = row["label"] or ""
            label_counts[label] = label_counts.get(label, 0) + 1
        total = len(rows)
        token = request.query.get("after_token")
        if token:
            marker = _decode_token(token)
            if not isinstance(marker, list) or len(marker) != len(order):
                raise error(400, "invalid_token", "Invalid after_token")
            marker_row = {c: v for (c, _), v in zip(order, marker, strict=True)}
            rows = [r for r in rows if compare_rows(r, marker_row) > 0]
        page = rows[:limit]
        next_token = None
        if len(rows) > limit:
            next_token = _encode_token([page[-1][c] for c, _ in order])
        if select_cols != ["*"] and isinstance(select_cols, list):
            page = [{c: row.get(c) for c in select_cols} for row in page]
        return _json(
            200,
            {
                "success": True,
                "instances_found": len(page),
                "total_instances": total,
                "label_counts": label_counts,
                "next_token": next_token,
                "instances": page,
            },
        )

    def _do_list_v0(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        return _json(
            410,
            {
                "success": False,
                "error": "deprecated_endpoint",
                "msg": "/api/v0/instances/ is deprecated. Use /api/v1/instances/ instead.",
            },
        )

    def _do_show(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        inst = self.state.instances.get(int(match.group(1)))
        return _json(200, {"instances": self.render_instance(inst) if inst else None})

    def _do_manage(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        inst = self.state.instance(int(match.group(1)))
        body = self._body(request)
        if auth.kind == "instance" and set(body) - {"state"}:
            raise error(403, "not_authorized", "An instance key may only start or stop.")
        if "label" in body:
            label = body["label"]
            if label is not None and (not isinstance(label, str) or len(label) > 1024):
                raise error(400, "label_too_long", "Label is too long (at most 1024).")
            inst.label = label
        if "state" in body:
            self.state.set_state(inst, str(body["state"]))
        if "label" not in body and "state" not in body:
            raise error(400, "invalid_args", "Nothing to change: give state or label.")
        return _json(200, {"success": True})

    def _do_manage_bulk(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        body = self._body(request)
        ids = body.get("ids")
        if not isinstance(ids, list):
            raise error(400, "invalid_args", "ids must be a list")
        state = str(body.get("state"))
        for raw in ids:
            inst = self.state.instances.get(int(raw))
            if inst is not None:
                self.state.set_state(inst, state)
        return _json(200, {"success": True})

    def _do_destroy(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        inst = self.state.instance(int(match.group(1)))
        self.state.destroy(inst)
        return _json(200, {"success": True, "msg": f"Instance {inst.id} destroyed."})

    def _do_destroy_bulk(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        body = self._body(request)
        ids = body.get("instance_ids")
        if not isinstance(ids, list):
            raise error(400, "invalid_args", "instance_ids must be a list")
        for raw in ids:
            inst = self.state.instances.get(int(raw))
            if inst is not None:
                self.state.destroy(inst)
        return _json(200, {"success": True})

    def _do_bid_price(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        inst = self.state.instance(int(match.group(1)))
        body = self._body(request)
        price = body.get("price")
        if price is not None:
            try:
                value = float(price)
            except (TypeError, ValueError):
                raise error(400, "invalid_price", "Please set a bid price >= 0.001.") from None
            if value < 0.001:
                raise error(400, "invalid_price", "Please set a bid price >= 0.001.")
            if value > 32.0 * inst.machine.num_gpus:
                raise error(
                    400,
                    "invalid_price",
                    f"Bid price must be at most {32.0 * inst.machine.num_gpus}.",
                )
            price = value
        self.state.change_bid(inst, price)
        return _json(200, {"success": True})

    def _do_reboot(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        inst = self.state.instance(int(match.group(1)))
        self.state.reboot(inst)
        return _json(200, {"success": True})

    def _do_recycle(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        inst = self.state.instances.get(int(match.group(1)))
        if inst is None:
            raise error(404, "invalid_id", "Invalid instance id.")
        self.state.reboot(inst, recycle=True)
        return _json(200, {"success": True})

    def _publish(self, request: Request, text: str) -> str:
        self._result_counter += 1
        token = hashlib.sha256(
            f"{self.state.seed}:{self._result_counter}:{self.state.now}".encode()
        ).hexdigest()[:32]
        self._results[token] = (self.state.now + self.state.timings.log_ready_s, text)
        return f"{request.base_url}/emulator/results/{token}.log"

    def _do_request_logs(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        inst = self.state.instances.get(int(match.group(1)))
        if inst is None:
            raise error(404, "invalid_id", "Invalid instance id.")
        body = self._body(request)
        text = self.state.runner.logs(inst.id)
        lines = text.splitlines(keepends=True)
        grep = body.get("filter")
        if grep:
            lines = [line for line in lines if str(grep) in line]
        tail = body.get("tail")
        if tail is not None:
            try:
                count = int(tail)
            except (TypeError, ValueError):
                raise error(400, "invalid_args", "tail must be a number") from None
            lines = lines[-count:] if count > 0 else []
        url = self._publish(request, "".join(lines))
        return _json(
            200,
            {
                "success": True,
                "result_url": url,
                "msg": "Logs requested; fetch result_url in a few seconds.",
            },
        )

    def _do_command(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        inst = self.state.instances.get(int(match.group(1)))
        if inst is None:
            raise error(400, "invalid_container_id", "Invalid container id.")
        body = self._body(request)
        command = str(body.get("command") or "")
        if len(command) > 512 or command.split()[:1] not in (["ls"], ["rm"], ["du"]):
            raise error(400, "invalid_args", "Only ls, rm and du are allowed (<=512 chars).")
        url = self._publish(request, "")
        return _json(
            200,
            {
                "success": True,
                "writeable_path": "/workspace",
                "result_url": url,
                "msg": "Command is executing, wait a few seconds and then view the result_url",
            },
        )

    def _do_result(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        entry = self._results.get(match.group(1))
        if entry is None or self.state.now < entry[0]:
            return _text(
                404,
                '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey'
                "</Code><Message>The specified key does not exist.</Message>"
                "</Error>",
                "application/xml",
            )
        return _text(200, entry[1])

    # ------------------------------------------------------------------ account

    def user_object(self) -> dict[str, Any]:
        """The ``users/current`` object."""
        s = self.state
        return {
            "id": 100_000 + s.seed % 900_000,
            "key_id": 1,
            "sid": None,
            "email": "emulator@example.com",
            "username": "emulator",
            "fullname": "Vast Emulator",
            "credit": _r(s.credit),
            "balance": _r(min(s.credit, 0.0)),
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
            "total_spend": _r(s.total_spend),
        }

    def _do_user(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        return _json(200, self.user_object())

    def _do_gpu_names(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        names = sorted({m.gpu_name for m in self.state.machines})
        return _json(200, {"gpu_names": names})

    def charges(self, start: float, end: float) -> list[dict[str, Any]]:
        """Per-instance charges between ``start`` and ``end`` (Unix seconds)."""
        out = []
        every = list(self.state.instances.values()) + list(self.state.destroyed.values())
        for inst in sorted(every, key=lambda i: i.id):
            gpu = disk = gpu_h = disk_h = 0.0
            first = last = None
            for s0, s1, gpu_rate, disk_rate in inst.segments:
                lo, hi = max(s0, start), min(s1, end)
                if hi <= lo:
                    continue
                hours = (hi - lo) / 3600
                gpu += gpu_rate * hours
                disk += disk_rate * hours
                gpu_h += hours if gpu_rate else 0.0
                disk_h += hours if disk_rate else 0.0
                first = lo if first is None else min(first, lo)
                last = hi if last is None else max(last, hi)
            up = sum(u for t, u, _ in inst.traffic if start <= t <= end)
            down = sum(d for t, _, d in inst.traffic if start <= t <= end)
            if first is None and not (up or down):
                continue
            first = first if first is not None else start
            last = last if last is not None else end
            items = [
                _item("gpu", gpu, gpu_h, inst.price),
                _item(
                    "disk", disk, disk_h, inst.disk * inst.storage_cost / HOURS_PER_STORAGE_MONTH
                ),
                {
                    "type": "bwu",
                    "description": f"{inst.up_gb:.3f} GB upload",
                    "amount": round(up, 6),
                },
                {
                    "type": "bwd",
                    "description": f"{inst.down_gb:.3f} GB download",
                    "amount": round(down, 6),
                },
            ]
            days = max(1, math.ceil((last - first) / 86_400))
            out.append(
                {
                    "start": first,
                    "end": last,
                    "type": "instance",
                    "source": f"instance-{inst.id}",
                    "description": f"Instance {inst.id} Charges - {days} days",
                    "amount": round(gpu + disk + up + down, 3),
                    "metadata": {
                        "template_id": None,
                        "label": inst.label,
                        "endpoint_id": None,
                        "workergroup_id": None,
                    },
                    "items": items,
                }
            )
        return out

    def _do_charges(self, request: Request, auth: _Auth, match: re.Match[str]) -> Response:
        filters = self._json_param(request, "select_filters", {})
        day = filters.get("day") if isinstance(filters, dict) else None
        if not isinstance(day, dict) or "gte" not in day or "lte" not in day:
            return _json(
                400,
                {
                    "success": False,
                    "msg": "Must provide both 'day' gte and lte filters for instance charges",
                },
            )
        try:
            start, end = float(day["gte"]), float(day["lte"])
        except (TypeError, ValueError):
            raise error(400, "invalid_request", "day gte and lte must be numbers") from None
        results = self.charges(start, end)
        kinds = filters.get("type", {}).get("in") if isinstance(filters.get("type"), dict) else None
        if kinds is not None and "instance" not in kinds:
            results = []
        if str(request.query.get("latest_first", "")).lower() in ("true", "1"):
            results.reverse()
        try:
            limit = min(max(int(request.query.get("limit", "20")), 1), 500)
        except ValueError:
            raise error(400, "invalid_request", "limit must be a number") from None
        offset = 0
        token = request.query.get("after_token")
        if token:
            marker = _decode_token(token)
            if not isinstance(marker, int):
                raise error(400, "invalid_token", "Invalid after_token")
            offset = marker
        page = results[offset : offset + limit]
        next_token = _encode_token(offset + limit) if offset + limit < len(results) else None
        return _json(
            200,
            {
                "success": True,
                "count": len(page),
                "total": len(results),
                "next_token": next_token,
                "results": page,
            },
        )


def _item(kind: str, amount: float, hours: float, rate: float) -> dict[str, Any]:
    return {
        "type": kind,
        "description": f"{hours:.3f} hours at ${rate:.3f}/hour",
        "quantity": round(hours, 6),
        "rate": round(rate, 6),
        "amount": round(amount, 6),
    }


def _compare_values(a: Any, b: Any) -> int:
    if a is None or b is None:
        return (a is not None) - (b is not None)
    try:
        return int(a > b) - int(a < b)
    except TypeError:
        return (str(a) > str(b)) - (str(a) < str(b))


def _compare_rows(order: list[tuple[str, bool]], a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    for column, desc in order:
        result = _compare_values(a.get(column), b.get(column))
        if result:
            return -result if desc else result
    return 0


def _encode_token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _decode_token(token: str) -> Any:
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        raise error(400, "invalid_token", "Invalid after_token") from None


def _next_utc_midnight(now: float) -> float:
    day = dt.datetime.fromtimestamp(now, dt.UTC).date() + dt.timedelta(days=1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def _human(seconds: float) -> str:
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


def parse_query_string(raw: str) -> dict[str, str]:
    """Decode a URL query string (last value wins)."""
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}

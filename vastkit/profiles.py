"""GPU profiles: what to rent, at most at what price, for how long.

A profile names a GPU type and count, the most the whole instance may cost per hour, the least
reliability a machine must have and the longest the work may run. Profiles come from a YAML file
in the reference architecture's ``config/gpu_profiles.yaml`` format::

    profiles:
      dev-test:
        gpu_name: RTX_4090        # underscores mean spaces; a list is allowed
        num_gpus: 1
        max_dph: 0.25             # $/h for the WHOLE instance, storage included
        reliability_min: 0.95
        max_duration_hours: 4

or are built in Python (:class:`GpuProfile`) or from a dict (:meth:`GpuProfile.from_dict`).
vastkit ships four built-in profiles (``dev-test``, ``training-standard``,
``training-distributed``, ``inference-batch``), used when no file is given.

This module is pure policy (layer 2): it reads a YAML file when asked and does nothing else.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Literal

import attrs

from vastkit._yaml import (
    ConfigTypeError,
    ConfigValueError,
    Document,
    did_you_mean,
    load_document,
    read_source,
)
from vastkit.errors import ConfigError
from vastkit.gpus import UnknownGpuError, gpu_catalog

__all__ = [
    "PROFILE_KEYS",
    "GpuProfile",
    "builtin_profiles",
    "get_profile",
    "load_profiles",
]

logger = logging.getLogger("vastkit.profiles")

Rental = Literal["on-demand", "interruptible"]
RankBy = Literal["price", "perf_per_dollar", "score"]

_RENTALS: tuple[str, ...] = ("on-demand", "interruptible")
_RANK_BY: tuple[str, ...] = ("price", "perf_per_dollar", "score")
_QUERY_OPS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"})
_COUNTRY = re.compile(r"[A-Z]{2}")
MIN_DISK_GB = 8.0
"""Vast's smallest disk for an instance, in GB."""


_FieldError = ConfigValueError
"""A bad value for one profile key: a ConfigError that is also a ValueError."""
_FIELD_ERRORS = (ConfigValueError, ConfigTypeError)
_MAX_INT = 2**63
_MAX_GPUS = 64
_SCALAR = str | int | float | bool


def _gpu_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Sequence[Any] = [value]
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        items = value
    else:
        raise ConfigTypeError(
            "gpu_name", f"gpu_name must be a GPU name or a list of them (got {value!r})"
        )
    names: list[str] = []
    catalog = gpu_catalog()
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise _FieldError("gpu_name", f"gpu_name entries must be non-empty text (got {item!r})")
        try:
            match = catalog.resolve(item)
        except UnknownGpuError as exc:
            raise _FieldError("gpu_name", str(exc)) from None
        if match.notice is not None:
            logger.warning("%s", match.notice)
        names.extend(name for name in match.names if name not in names)
    if not names:
        raise _FieldError("gpu_name", "gpu_name must name at least one GPU")
    return tuple(names)


def _regions(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, bytes | bytearray):
        raise ConfigTypeError("regions", f"regions must be a list of country codes (got {value!r})")
    codes: list[str] = []
    for item in items:
        code = item.strip().upper() if isinstance(item, str) else None
        if code is None or not _COUNTRY.fullmatch(code):
            raise _FieldError(
                "regions", f"regions must hold two-letter country codes like 'US' (got {item!r})"
            )
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def _frozen_query(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigTypeError(
            "extra_query",
            "extra_query must map field names to {operator: value}, "
            f"e.g. {{cpu_ram: {{gte: 32000}}}} (got {value!r})",
        )
    result: dict[str, Any] = {}
    for field, ops in value.items():
        if not isinstance(field, str) or not field.strip():
            raise ConfigTypeError(
                "extra_query", f"extra_query field names must be text (got {_short(field)})"
            )
        if not isinstance(ops, Mapping):
            raise ConfigTypeError(
                "extra_query",
                f"extra_query.{field} must map operators to values, e.g. {{gte: 32000}} "
                f"(got {_short(ops)})",
            )
        checked: dict[str, Any] = {}
        for op, operand in ops.items():
            if op not in _QUERY_OPS:
                raise _FieldError(
                    "extra_query",
                    f"extra_query.{field}: unknown operator '{op}'"
                    f"{did_you_mean(str(op), sorted(_QUERY_OPS))} "
                    f"(operators: {', '.join(sorted(_QUERY_OPS))})",
                )
            checked[op] = _query_value(field, op, operand)
        result[field] = checked
    return result


def _number(key: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a whole number" if integer else "a number"
        raise ConfigTypeError(key, f"{key} must be {kind} (got {_short(value)})")
    if isinstance(value, int) and abs(value) >= _MAX_INT:
        raise _FieldError(key, f"{key} is out of range (got {_short(value)})")
    if not math.isfinite(value):
        raise _FieldError(key, f"{key} must be a finite number (got {value!r})")
    if integer and isinstance(value, float) and not value.is_integer():
        raise _FieldError(key, f"{key} must be a whole number (got {value!r})")
    return float(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _query_value(field: str, op: str, value: Any) -> Any:
    where = f"extra_query.{field}.{op}"
    if op in ("in", "notin"):
        if not isinstance(value, Sequence) or isinstance(value, str | bytes | bytearray):
            raise ConfigTypeError(
                "extra_query", f"{where} needs a list of values (got {_short(value)})"
            )
        return [_query_value(field, "eq", item) for item in value]
    if value is not None and not isinstance(value, _SCALAR):
        raise ConfigTypeError(
            "extra_query",
            f"{where} must be text, a number, true/false or null (got {_short(value)})",
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise _FieldError("extra_query", f"{where} must be a finite number (got {value!r})")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _MAX_INT:
        raise _FieldError("extra_query", f"{where} is out of range (got {_short(value)})")
    return value


def _positive(key: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise _FieldError(key, f"{key} must be greater than 0 (got {value:g})")


@attrs.frozen(kw_only=True)
class GpuProfile:
    """What to rent and the limits it must respect.

    ``max_dph`` caps the effective price of the **whole instance** per hour: the GPU rate of
    all ``num_gpus`` GPUs plus storage for ``disk_gb`` (like Vast's ``dph_total``), not the price
    per GPU. For 4 GPUs at ``max_dph: 4.00`` that leaves about $1/h per GPU.

    Constructing one with a bad value raises a :class:`~vastkit.errors.ConfigError` that is also
    a :class:`ValueError` (a value out of range, not finite, unknown) or a :class:`TypeError` (a
    value of the wrong type), with ``key`` naming the field; loading one from YAML or a dict
    raises a :class:`~vastkit.errors.ConfigError` naming the file, the line and the key.
    """

    name: str
    """The profile name (``dev-test``)."""
    gpu_name: tuple[str, ...] = attrs.field(converter=_gpu_names)
    """Acceptable GPU models in Vast's spelling (``("RTX 4090",)``). ``"RTX_4090"`` or a list
    is accepted and normalised; a family (``"A100"``) becomes its models (``A100 PCIE``,
    ``A100 SXM4``, ...) with a logged notice naming them; a name that is neither (see
    :mod:`vastkit.gpus`) is an error that suggests the nearest."""
    max_dph: float
    """The most the whole instance may cost in $/h, storage included."""
    num_gpus: int = 1
    """GPUs per instance."""
    reliability_min: float = 0.9
    """Least machine reliability, 0 to 1."""
    max_duration_hours: float = 24.0
    """Longest the work may run; also: the host's contract must last at least this long."""
    rental: Rental = "on-demand"
    """``on-demand`` (fixed price, never interrupted) or ``interruptible`` (a bid; cheaper but
    may be outbid)."""
    max_bid: float | None = None
    """Interruptible only: the highest GPU bid for the whole instance in $/h (storage excluded).
    The bid is also capped so that bid plus storage stays within ``max_dph``."""
    bid_margin: float = 0.1
    """Interruptible only: bid this fraction above the offer's ``min_bid`` (0.1 = 10 %), within
    the caps, so a small rise in the minimum does not outbid us at once."""
    min_gpu_ram_gb: float | None = None
    """Least memory per GPU in GB."""
    disk_gb: float = 16.0
    """Local disk in GB (at least 8); its storage price is part of the effective price."""
    min_cuda: float | None = None
    """Least CUDA version the host driver must support (``12.1``)."""
    min_inet_down_mbps: float | None = None
    """Least measured download bandwidth in Mb/s."""
    regions: tuple[str, ...] = attrs.field(default=(), converter=_regions)
    """Allowed two-letter country codes (``("US", "CA")``); empty means anywhere."""
    verified: bool = True
    """Only machines Vast has verified."""
    datacenter_only: bool = False
    """Only datacenter hosts."""
    image: str | None = None
    """Default Docker image for instances of this profile."""
    rank_by: RankBy = "price"
    """How to order qualifying offers: ``price`` (cheapest effective $/h first),
    ``perf_per_dollar`` (highest ``dlperf`` per effective $/h first) or ``score`` (Vast's)."""
    extra_query: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_query)
    """More search filters in Vast's query format, e.g. ``{"cpu_ram": {"gte": 32000}}``;
    merged into the query and re-checked on each offer where the field is known."""
    description: str | None = None
    """Free text for people."""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigTypeError("name", f"a profile needs a non-empty name (got {self.name!r})")
        for key in ("max_dph", "reliability_min", "max_duration_hours", "disk_gb", "bid_margin"):
            _number(key, getattr(self, key))
        if isinstance(self.num_gpus, bool) or not isinstance(self.num_gpus, int):
            raise ConfigTypeError(
                "num_gpus", f"num_gpus must be a whole number (got {_short(self.num_gpus)})"
            )
        if not 1 <= self.num_gpus <= _MAX_GPUS:
            bound = "at least 1" if self.num_gpus < 1 else f"at most {_MAX_GPUS}"
            raise _FieldError("num_gpus", f"num_gpus must be {bound} (got {self.num_gpus})")
        _positive("max_dph", self.max_dph)
        if not 0.0 <= self.reliability_min <= 1.0:
            raise _FieldError(
                "reliability_min",
                f"reliability_min must be between 0 and 1 (got {self.reliability_min:g})",
            )
        _positive("max_duration_hours", self.max_duration_hours)
        if self.rental not in _RENTALS:
            raise _FieldError(
                "rental",
                f"rental must be 'on-demand' or 'interruptible' (got {self.rental!r})"
                f"{did_you_mean(str(self.rental), _RENTALS)}",
            )
        if self.rank_by not in _RANK_BY:
            raise _FieldError(
                "rank_by",
                f"rank_by must be one of {', '.join(_RANK_BY)} (got {self.rank_by!r})"
                f"{did_you_mean(str(self.rank_by), _RANK_BY)}",
            )
        for key in ("max_bid", "min_gpu_ram_gb", "min_cuda", "min_inet_down_mbps"):
            value = getattr(self, key)
            if value is not None:
                _positive(key, _number(key, value))
        if self.max_bid is not None and self.rental != "interruptible":
            raise _FieldError("max_bid", "max_bid only applies to rental: interruptible")
        if not 0.0 <= self.bid_margin <= 10.0:
            raise _FieldError(
                "bid_margin", f"bid_margin must be between 0 and 10 (got {self.bid_margin:g})"
            )
        if self.disk_gb < MIN_DISK_GB:
            raise _FieldError(
                "disk_gb", f"disk_gb must be at least {MIN_DISK_GB:g} (got {self.disk_gb:g})"
            )
        for key in ("verified", "datacenter_only"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigTypeError(
                    key, f"{key} must be true or false (got {_short(getattr(self, key))})"
                )
        for key in ("image", "description"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ConfigTypeError(key, f"{key} must be text (got {_short(value)})")
            if value is not None and not value.strip():
                raise _FieldError(key, f"{key} must be non-empty text (got {value!r})")

    @property
    def interruptible(self) -> bool:
        """True for ``rental: interruptible``."""
        return self.rental == "interruptible"

    @property
    def max_duration_s(self) -> float:
        """``max_duration_hours`` in seconds."""
        return self.max_duration_hours * 3600.0

    @property
    def worst_case_gpu_usd(self) -> float:
        """``max_dph x max_duration_hours``: the most a full-length run can cost while running."""
        return self.max_dph * self.max_duration_hours

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> GpuProfile:
        """Build a profile from a mapping with the YAML file's keys.

        Args:
            name: The profile name.
            data: Keys as in ``gpu_profiles.yaml`` (``gpu_name``, ``max_dph``, ...).

        Returns:
            The profile.

        Raises:
            ConfigError: A key is unknown (with the nearest valid key suggested), missing, of the
                wrong type or out of range. ``key`` is ``profiles.<name>.<key>``.
        """
        return cls.from_document(name, Document(data=data, path="<dict>", root=("profiles", name)))

    @classmethod
    def from_document(cls, name: str, doc: Document) -> GpuProfile:
        """Build a profile from a loaded YAML mapping, reporting errors where it was written.

        A job file's inline ``profile:`` mapping is read with
        ``GpuProfile.from_document(job_name, doc.sub("profile"))``: a bad key is reported with
        the job file, the line of that key and ``profile.<key>``.

        Args:
            name: The profile name.
            doc: A :class:`~vastkit._yaml.Document` (or a view from its ``sub``) whose ``data``
                is the profile's mapping.

        Returns:
            The profile.

        Raises:
            ConfigError: A key is unknown, missing, of the wrong type or out of range.
        """
        return _from_document(name, doc)

    def to_dict(self) -> dict[str, Any]:
        """Return the profile as a mapping that :meth:`from_dict` reads back (defaults omitted).

        Returns:
            A plain dict, ready for ``yaml.safe_dump``.
        """
        out: dict[str, Any] = {}
        for field in attrs.fields(GpuProfile):
            if field.name == "name":
                continue
            value = getattr(self, field.name)
            default: Any = field.default
            if field.name == "extra_query":
                default = {}
            if value == default and field.name not in _REQUIRED:
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[field.name] = value
        return out


_REQUIRED = ("gpu_name", "max_dph")
PROFILE_KEYS: tuple[str, ...] = tuple(f.name for f in attrs.fields(GpuProfile) if f.name != "name")
"""Every key a profile may have in ``gpu_profiles.yaml``."""

_FLOAT_KEYS = frozenset(
    {
        "max_dph",
        "reliability_min",
        "max_duration_hours",
        "max_bid",
        "bid_margin",
        "min_gpu_ram_gb",
        "disk_gb",
        "min_cuda",
        "min_inet_down_mbps",
    }
)


def _coerce(key: str, value: Any) -> Any:
    if key in _FLOAT_KEYS:
        if value is None and key not in _REQUIRED and key not in ("disk_gb", "bid_margin"):
            return None
        return _number(key, value)
    if key == "num_gpus":
        return int(_number(key, value, integer=True))
    if key in ("rental", "rank_by", "image", "description") and not isinstance(value, str):
        if value is None and key in ("image", "description"):
            return None
        raise ConfigTypeError(key, f"{key} must be text (got {_short(value)})")
    return value


def _from_document(name: str, doc: Document) -> GpuProfile:
    """Build profile ``name`` from ``doc.data``; errors name ``doc``'s file, line and key."""
    data = doc.data
    if not isinstance(data, Mapping):
        raise doc.error(
            f"profile '{name}' must be a mapping of keys such as gpu_name and max_dph "
            f"(got {type(data).__name__})"
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in PROFILE_KEYS:
            raise doc.error(
                f"unknown key '{key}' in profile '{name}'{did_you_mean(str(key), PROFILE_KEYS)}",
                key,
            )
        try:
            kwargs[key] = _coerce(key, value)
        except _FIELD_ERRORS as exc:
            raise doc.error(f"profile '{name}': {exc.message}", key) from None
    missing = [key for key in _REQUIRED if key not in kwargs]
    if missing:
        raise doc.error(
            f"profile '{name}' is missing required key{'s' if len(missing) > 1 else ''} "
            + ", ".join(f"'{key}'" for key in missing)
        )
    try:
        return GpuProfile(name=name, **kwargs)
    except _FIELD_ERRORS as exc:
        key_path = (exc.key,) if exc.key in data else ()
        raise doc.error(f"profile '{name}': {exc.message}", *key_path) from None


def _profiles_from_document(doc: Document) -> dict[str, GpuProfile]:
    data = doc.data
    if isinstance(data, str) and doc.path == "<string>" and "\n" not in data:
        raise ConfigError(
            f"'{data}' is neither an existing file nor YAML text with a 'profiles:' mapping"
        )
    if not isinstance(data, Mapping) or "profiles" not in data:
        found = f" (found: {', '.join(map(str, data))})" if isinstance(data, Mapping) else ""
        raise doc.error(f"expected a top-level 'profiles:' mapping{found}")
    extra = [key for key in data if key != "profiles"]
    if extra:
        raise doc.error(
            f"unknown top-level key '{extra[0]}'{did_you_mean(str(extra[0]), ['profiles'])}; "
            "profiles go under 'profiles:'",
            extra[0],
        )
    profiles = data["profiles"]
    if not isinstance(profiles, Mapping) or not profiles:
        raise doc.error("'profiles' must map profile names to their settings", "profiles")
    result: dict[str, GpuProfile] = {}
    for name in profiles:
        if not isinstance(name, str) or not name.strip():
            raise doc.error(f"profile names must be non-empty text (got {name!r})", "profiles")
        result[name] = _from_document(name, doc.sub("profiles", name))
    return result


def load_profiles(
    source: str | os.PathLike[str] | Mapping[str, Any] | Document,
) -> dict[str, GpuProfile]:
    """Load profiles from a ``gpu_profiles.yaml`` file, YAML text or a mapping.

    Args:
        source: A path (a :class:`os.PathLike`, or a string ending in ``.yaml``/``.yml`` or
            naming an existing file), YAML text, an already-parsed mapping with a
            ``profiles`` key, or a loaded :class:`~vastkit._yaml.Document` (or a ``sub`` view
            of one: errors then name its file and lines).

    Returns:
        Profiles by name, in file order.

    Raises:
        ConfigError: The file is missing or unreadable, is not valid YAML, or a profile is wrong.
            The error names the file, the line, the profile and the key, and for a misspelt key
            suggests the nearest valid one.
    """
    if isinstance(source, Document):
        doc = source
    elif isinstance(source, Mapping):
        doc = Document(data=source, path="<dict>")
    else:
        text, name = read_source(source, what="GPU profiles")
        doc = load_document(text, name)
    return _profiles_from_document(doc)


_builtin_cache: dict[str, GpuProfile] | None = None


def builtin_profiles() -> dict[str, GpuProfile]:
    """Return the profiles vastkit ships (``vastkit/data/gpu_profiles.yaml``).

    Returns:
        ``dev-test``, ``training-standard``, ``training-distributed`` and ``inference-batch``.
    """
    global _builtin_cache
    if _builtin_cache is None:
        text = resources.files("vastkit").joinpath("data/gpu_profiles.yaml").read_text("utf-8")
        _builtin_cache = _profiles_from_document(load_document(text, "<built-in gpu_profiles>"))
    return dict(_builtin_cache)


def get_profile(
    name: str | GpuProfile,
    path: str | os.PathLike[str] | None = None,
) -> GpuProfile:
    """Return one profile by name, from ``path`` or from the built-in profiles.

    Args:
        name: The profile name, or a :class:`GpuProfile` (returned as is).
        path: A ``gpu_profiles.yaml`` file (or YAML text); None for the built-in profiles.

    Returns:
        The profile.

    Raises:
        ConfigError: The file is wrong, or no profile has that name (the message lists the
            known names and suggests the nearest).
    """
    if isinstance(name, GpuProfile):
        return name
    profiles = builtin_profiles() if path is None else load_profiles(path)
    try:
        return profiles[name]
    except KeyError:
        where = "built-in profiles" if path is None else "profiles file"
        file = None if path is None else str(path) if "\n" not in str(path) else "<string>"
        raise ConfigError(
            f"unknown profile '{name}'; known {where}: {', '.join(profiles)}"
            f"{did_you_mean(name, profiles)}",
            path=file,
        ) from None

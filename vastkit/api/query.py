"""Offer search queries: the official CLI's query language and a typed builder.

Vast searches offers with a JSON *query object*: one key per column holding ``{operator: value}``
(several operators may share a column), plus a few top-level options (``order``, ``type``,
``limit``, ``allocated_storage``)::

    {"num_gpus": {"gte": 2}, "gpu_name": {"in": ["RTX 4090"]},
     "order": [["dph_total", "asc"]], "type": "on-demand"}

:func:`parse_query` turns the official CLI's human query language (``"gpu_name=RTX_4090
num_gpus>=2 dph<1.5"``) into that object exactly as ``vastai`` 1.9.1 does, quirks included;
:func:`parse_order` does the same for the ``-o`` order string. :class:`OfferQuery` is an immutable
typed builder for the same object that round-trips with the wire dict.

Values in an :class:`OfferQuery` are in wire units (RAM in MB, durations in seconds); only the
text language converts units (``gpu_ram>=24`` is 24,000 MB).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias

import attrs

from vastkit.errors import QueryError

__all__ = [
    "CLI_DEFAULT_FILTERS",
    "DEFAULT_FILTERS",
    "DEFAULT_ORDER",
    "FIELD_ALIASES",
    "FIELD_MULTIPLIERS",
    "KNOWN_FIELDS",
    "OPERATORS",
    "OfferQuery",
    "Operator",
    "QueryError",
    "normalize_rental_type",
    "parse_order",
    "parse_query",
    "search_body",
]

Operator: TypeAlias = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"]
"""A comparison operator of the query object."""

OPERATORS: Final[frozenset[str]] = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"})
"""Every operator the query object accepts."""

_LIST_OPERATORS: Final = frozenset({"in", "notin"})

_OP_NAMES: Final[Mapping[str, str]] = {
    ">=": "gte",
    ">": "gt",
    "gt": "gt",
    "gte": "gte",
    "<=": "lte",
    "<": "lt",
    "lt": "lt",
    "lte": "lte",
    "!=": "neq",
    "==": "eq",
    "=": "eq",
    "eq": "eq",
    "neq": "neq",
    "noteq": "neq",
    "not eq": "neq",
    "notin": "notin",
    "not in": "notin",
    "nin": "notin",
    "in": "in",
}

FIELD_ALIASES: Final[Mapping[str, str]] = {
    "cuda_vers": "cuda_max_good",
    "display_active": "gpu_display_active",
    "dlperf_usd": "dlperf_per_dphtotal",
    "dph": "dph_total",
    "flops_usd": "flops_per_dphtotal",
}
"""Names the CLI renames before sending (``dph`` is ``dph_total``)."""

FIELD_MULTIPLIERS: Final[Mapping[str, float]] = {
    "cpu_ram": 1000.0,
    "gpu_ram": 1000.0,
    "gpu_total_ram": 1000.0,
    "duration": 24.0 * 60.0 * 60.0,
}
"""Unit conversions of the text language: GB to MB for RAM, days to seconds for ``duration``."""

KNOWN_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "bw_nvlink", "compute_cap", "cpu_arch", "cpu_cores", "cpu_cores_effective", "cpu_ghz",
        "cpu_ram", "cuda_max_good", "datacenter", "direct_port_count", "driver_version",
        "disk_bw", "disk_space", "dlperf", "dlperf_per_dphtotal", "dph_total", "duration",
        "external", "flops_per_dphtotal", "gpu_arch", "gpu_display_active", "gpu_frac",
        "gpu_mem_bw", "gpu_name", "gpu_ram", "gpu_total_ram", "gpu_max_power", "gpu_max_temp",
        "has_avx", "host_id", "id", "inet_down", "inet_down_cost", "inet_up", "inet_up_cost",
        "machine_id", "min_bid", "mobo_name", "num_gpus", "pci_gen", "pcie_bw", "reliability",
        "rentable", "rented", "storage_cost", "static_ip", "total_flops", "ubuntu_version",
        "verification", "verified", "vms_enabled", "geolocation", "cluster_id",
    }
)  # fmt: skip
"""The columns the official CLI recognises (others are sent anyway, as the CLI does)."""

CLI_DEFAULT_FILTERS: Final[Mapping[str, Mapping[str, Any]]] = {
    "verified": {"eq": True},
    "external": {"eq": False},
    "rentable": {"eq": True},
}
"""What ``vastai search offers`` seeds before parsing a query string."""

DEFAULT_FILTERS: Final[Mapping[str, Mapping[str, Any]]] = {
    "verified": {"eq": True},
    "external": {"eq": False},
    "rentable": {"eq": True},
    "rented": {"eq": False},
}
"""What the official SDK adds to a dict query (and :meth:`OfferQuery.with_defaults` adds)."""

_TOKEN = re.compile(
    r"([a-zA-Z0-9_]+)( *[=><!]+| +(?:[lg]te?|nin|neq|eq|not ?eq|not ?in|in) )?( *)"
    r"(\[[^\]]+\]|\"[^\"]+\"|[^ ]+)?( *)"
)
_WILDCARDS: Final = frozenset({"?", "*", "any"})


def _clip(value: Any) -> str:
    """``repr(value)``, cut to 80 characters for messages."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _finite(value: Any, fragment: str) -> Any:
    """Refuse NaN and infinities, in a number or in text that reads as one (``"nan"``)."""
    if isinstance(value, list | tuple):
        for item in value:
            _finite(item, fragment)
        return value
    number: float | None = None
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is not None and not math.isfinite(number):
        raise QueryError(
            f"{_clip(fragment)}: {_clip(value)} is not a finite number; "
            "queries compare finite numbers only",
            fragment=fragment,
        )
    return value


def _numeric_version(text: str) -> int:
    """``"535.86.05"`` -> ``535086005``, exactly as the official CLI reads a driver version.

    Three parts, each zero-padded to three digits (an empty part pads to ``000``: ``535..05``
    is ``535000005``; a longer part is kept whole). Two parts (``550.54``, which would match
    every real driver), non-digits, or a version that reads as 0 (``0.0.0``) are refused, as
    the official parser refuses them ("Value cannot be blank").
    """
    parts = text.split(".")
    if len(parts) != 3 or not all(
        p == "" or (p.isascii() and p.isdigit() and len(p) <= 9) for p in parts
    ):
        raise QueryError(
            f"driver_version {_clip(text)} is not a three-part version like 535.86.05",
            fragment=text,
        )
    value = int("".join(part.zfill(3) for part in parts))
    if value == 0:
        raise QueryError(f"driver_version {_clip(text)} reads as 0: not a version", fragment=text)
    return value


def parse_query(text: str | Sequence[str], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parse the official CLI's query language into a query object.

    The grammar and its quirks follow ``vastai`` 1.9.1 exactly: space-separated ``field op value``
    comparisons; operators ``= == != > >= < <= eq neq noteq "not eq" gt gte lt lte in notin
    "not in" nin``; lists ``[a,b]``; ``_`` in a value becomes a space (so ``RTX_4090`` is
    ``"RTX 4090"``, and a value that really contains ``_`` cannot be written); surrounding
    double quotes are stripped; ``true``/``false``/``null``/``None`` become JSON literals;
    other values stay strings (the server coerces numbers); ``cpu_ram``, ``gpu_ram`` and
    ``gpu_total_ram`` are GB (sent as float MB) and ``duration`` days (sent as float seconds); a
    dotted ``driver_version`` becomes an int (``535.86.05`` -> ``535086005``); aliases
    (``dph``, ``cuda_vers``, ...) are renamed; ``field=any`` (or ``?``, ``*``) deletes the field,
    including a default; a repeated field merges its operators.

    Args:
        text: The query, e.g. ``"gpu_name=RTX_4090 num_gpus>=1 dph<1.5"``. A list of words is
            joined with spaces, as the CLI does with its arguments.
        base: Filters to seed before parsing (copied, never modified); pass
            :data:`CLI_DEFAULT_FILTERS` to get what ``vastai search offers`` sends.

    Returns:
        A new query object (filters only; no ``order``/``type``/``limit``).

    Raises:
        QueryError: The text does not parse: unconsumed text, an unknown operator, a blank
            value, a wildcard with an operator other than ``=``, a non-numeric value for a
            field with a unit conversion, or a number that is not finite (``cpu_ram>=nan``).
            The message names the fragment. A :class:`ValueError` too.
    """
    if not isinstance(text, str):
        text = " ".join(text)
    result: dict[str, Any] = {k: dict(v) for k, v in (base or {}).items()}
    text = text.strip()
    matches = _TOKEN.findall(text)
    joined = "".join("".join(groups) for groups in matches)
    if joined != text:
        raise QueryError(
            f"Unconsumed text in query {text!r} (parsed only {joined!r}). "
            "Did you forget to quote a value with spaces?",
            fragment=text[len(joined) :] if text.startswith(joined) else text,
        )
    for groups in matches:
        raw_field, raw_op, _, raw_value, _ = groups
        fragment = "".join(groups).strip()  # exactly as written in the query
        value: Any = raw_value.strip(",[]")
        op = raw_op.strip()
        op_name = _OP_NAMES.get(op)
        field = FIELD_ALIASES.get(raw_field, raw_field)
        if op_name is None:
            raise QueryError(
                f"Unknown operator {op!r} for field {raw_field!r} in query {text!r} "
                "(operators: = == != > >= < <= eq neq gt gte lt lte in notin)",
                fragment=fragment,
            )
        if op_name in _LIST_OPERATORS and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if field == "driver_version":  # each version of a list too (the official CLI crashes)
            if isinstance(value, list):
                value = [_numeric_version(v) if "." in v else v for v in value]
            elif isinstance(value, str) and "." in value:
                value = _numeric_version(value)
        if value in ("", []):
            raise QueryError(
                f"Value cannot be blank for field {raw_field!r} in query {text!r}",
                fragment=fragment,
            )
        if isinstance(value, str) and value in _WILDCARDS:
            if op_name != "eq":
                raise QueryError(
                    f"Wildcard {value!r} only makes sense with '=' (field {raw_field!r})",
                    fragment=fragment,
                )
            result.pop(field, None)
            continue
        if isinstance(value, str):
            value = value.replace("_", " ").strip('"')
        elif isinstance(value, list):
            value = [
                item.replace("_", " ").strip('"') if isinstance(item, str) else item
                for item in value
            ]
        if value in ("", []):
            raise QueryError(
                f"Value cannot be blank for field {raw_field!r} in query {text!r}",
                fragment=fragment,
            )
        _finite(value, fragment)
        if field in FIELD_MULTIPLIERS:
            try:
                value = _finite(float(value) * FIELD_MULTIPLIERS[field], fragment)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, QueryError):
                    raise
                raise QueryError(
                    f"{raw_field} needs a number (in {'days' if field == 'duration' else 'GB'}),"
                    f" got {raw_value!r}",
                    fragment=fragment,
                ) from None
        elif value in ("true", "True"):
            value = True
        elif value in ("false", "False"):
            value = False
        elif value in ("None", "null"):
            value = None
        result.setdefault(field, {})[op_name] = value
    return result


def parse_order(text: str) -> list[list[str]]:
    """Parse the CLI's order string (``-o``) into the query object's ``order`` list.

    Comma-separated column names; a leading or trailing ``-`` sorts descending, ``+`` ascending,
    no sign ascending; aliases apply (``"dph+"`` gives ``[["dph_total", "asc"]]``).

    Args:
        text: e.g. ``"score-"`` or ``"num_gpus-,dph_total"``.

    Returns:
        A list of ``[column, "asc" | "desc"]`` pairs.

    Raises:
        QueryError: A part names no column (a ValueError too).
    """
    order: list[list[str]] = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            continue
        direction = "asc"
        column = name
        if name.strip("-") != name:
            direction = "desc"
            column = name.strip("-")
        if name.strip("+") != name:
            direction = "asc"
            column = name.strip("+")
        if not column:
            raise QueryError(f"order part {part!r} names no column", fragment=part)
        order.append([FIELD_ALIASES.get(column, column), direction])
    return order


# --- the typed builder ------------------------------------------------------------------------


class _FrozenMap(tuple):  # type: ignore[type-arg]
    """A JSON object inside a frozen value: a tuple of ``(key, value)`` pairs."""

    __slots__ = ()


def _freeze(value: Any) -> Any:
    """Make a JSON value hashable: lists become tuples, objects :class:`_FrozenMap`."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, Mapping):
        return _FrozenMap((str(k), _freeze(v)) for k, v in value.items())
    return value


def _thaw(value: Any) -> Any:
    """Undo :func:`_freeze`."""
    if isinstance(value, _FrozenMap):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


_RENTAL_TYPES: Final[Mapping[str, str]] = {
    "on-demand": "on-demand",
    "ondemand": "on-demand",
    "interruptible": "bid",
    "bid": "bid",
    "reserved": "reserved",
}


def normalize_rental_type(value: str) -> str:
    """Map a rental type to the search's ``type`` value.

    Args:
        value: ``on-demand`` (or ``ondemand``), ``interruptible`` (or ``bid``), ``reserved``.

    Returns:
        ``"on-demand"``, ``"bid"`` or ``"reserved"``.

    Raises:
        ValueError: Any other value.
    """
    try:
        return _RENTAL_TYPES[value.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown rental type {value!r}; use on-demand, interruptible (bid) or reserved"
        ) from None


_OPTION_KEYS: Final = ("order", "type", "limit", "allocated_storage")

Filter: TypeAlias = tuple[str, tuple[tuple[str, Any], ...]]


@attrs.frozen(kw_only=True)
class OfferQuery:
    """An immutable offer query that builds the wire query object.

    Every method returns a new query::

        q = (
            OfferQuery()
            .where("num_gpus", "gte", 2)
            .where("gpu_name", "in", ["RTX 4090", "RTX 3090"])
            .where("dph_total", "lte", 1.5)
            .order_by("dph_total")
            .with_limit(100)
        )
        q.to_dict()
        # {"num_gpus": {"gte": 2}, "gpu_name": {"in": ["RTX 4090", "RTX 3090"]},
        #  "dph_total": {"lte": 1.5}, "order": [["dph_total", "asc"]], "limit": 100}

    Columns and values are Vast's wire names and units (``gpu_ram`` in MB, ``dph_total`` in $/h):
    this is the query object, not the text language. Nothing is added behind your back: call
    :meth:`with_defaults` for the official SDK's default filters.
    """

    filters: tuple[Filter, ...] = ()
    """``(column, ((operator, value), ...))`` in insertion order; list values as tuples."""
    order: tuple[tuple[str, str], ...] | None = None
    """``(column, "asc" | "desc")`` pairs, or None to leave the server default (score desc)."""
    type: str | None = None
    """``"on-demand"``, ``"bid"`` or ``"reserved"``; None leaves it to the caller."""
    limit: int | None = None
    """Most offers to return; None leaves the server default."""
    allocated_storage: float | None = None
    """GB of disk used to price ``dph_total`` (and a ``disk_space >=`` filter server-side)."""
    extra: tuple[tuple[str, Any], ...] = ()
    """Other top-level keys of the wire object (``disable_bundling``, ...), kept verbatim."""

    # -- reading -------------------------------------------------------------------------------

    def conditions(self) -> Iterator[tuple[str, str, Any]]:
        """Yield every ``(column, operator, value)`` condition, lists as Python lists."""
        for column, ops in self.filters:
            for op, value in ops:
                yield column, op, _thaw(value)

    def get(self, column: str) -> dict[str, Any]:
        """Return the ``{operator: value}`` conditions on ``column`` (empty when none)."""
        for name, ops in self.filters:
            if name == column:
                return {op: _thaw(value) for op, value in ops}
        return {}

    def __contains__(self, column: object) -> bool:
        return any(name == column for name, _ in self.filters)

    # -- building ------------------------------------------------------------------------------

    def where(self, column: str, op: Operator | str, value: Any) -> OfferQuery:
        """Add (or replace) the condition ``column op value``.

        Args:
            column: The offer column, e.g. ``"num_gpus"``.
            op: One of :data:`OPERATORS`.
            value: A JSON value; a list (or tuple) for ``in``/``notin``.

        Returns:
            A new query. Another operator on the same column is kept (``gte`` and ``lte`` make a
            range); the same operator is replaced.

        Raises:
            QueryError: Unknown operator, empty column, or a number that is not finite (a
                ValueError too).
            TypeError: ``in``/``notin`` without a list.
        """
        if not isinstance(column, str) or not column:
            raise QueryError("column must be non-empty text", fragment=repr(column))
        if op not in OPERATORS:
            raise QueryError(
                f"unknown operator {op!r}; use one of {sorted(OPERATORS)}",
                fragment=f"{column} {op}",
            )
        if isinstance(value, float) or (
            isinstance(value, list | tuple) and any(isinstance(v, float) for v in value)
        ):
            _finite(value, f"{column} {op} {value!r}")
        if op in _LIST_OPERATORS and (
            isinstance(value, str | bytes) or not isinstance(value, Iterable)
        ):
            raise TypeError(f"{op!r} needs a list of values, got {value!r}")
        if op in _LIST_OPERATORS:
            value = list(value)
        frozen = _freeze(value)
        filters = list(self.filters)
        for index, (name, ops) in enumerate(filters):
            if name == column:
                merged = [(o, v) for o, v in ops if o != op]
                merged.append((op, frozen))
                filters[index] = (name, tuple(merged))
                break
        else:
            filters.append((column, ((op, frozen),)))
        return attrs.evolve(self, filters=tuple(filters))

    def without(self, column: str) -> OfferQuery:
        """Return a query with every condition on ``column`` removed (the text ``column=any``)."""
        return attrs.evolve(self, filters=tuple(item for item in self.filters if item[0] != column))

    def order_by(self, *keys: str | tuple[str, str]) -> OfferQuery:
        """Set the sort order (replacing any earlier one).

        Args:
            *keys: Column names with the CLI's sign convention (``"dph_total"`` ascending,
                ``"score-"`` or ``"-score"`` descending), or ``(column, "asc" | "desc")`` pairs.

        Returns:
            A new query.

        Raises:
            ValueError: A direction other than asc/desc.
        """
        pairs: list[tuple[str, str]] = []
        for key in keys:
            if isinstance(key, str):
                pairs.extend((column, direction) for column, direction in parse_order(key))
            else:
                column, direction = key
                if direction not in ("asc", "desc"):
                    raise ValueError(f"order direction must be asc or desc, got {direction!r}")
                pairs.append((column, direction))
        return attrs.evolve(self, order=tuple(pairs))

    def with_type(self, rental_type: str | None) -> OfferQuery:
        """Return a query priced for ``rental_type``: on-demand, interruptible/bid, reserved."""
        return attrs.evolve(
            self, type=None if rental_type is None else normalize_rental_type(rental_type)
        )

    def with_limit(self, limit: int | None) -> OfferQuery:
        """Return a query that asks for at most ``limit`` offers."""
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0
        ):
            raise QueryError(f"limit must be a positive whole number, got {limit!r}")
        return attrs.evolve(self, limit=limit)

    def with_storage(self, gb: float | None) -> OfferQuery:
        """Return a query that prices ``dph_total`` with ``gb`` GB of disk."""
        if gb is not None and not (
            isinstance(gb, int | float) and not isinstance(gb, bool) and 0 <= gb < math.inf
        ):
            raise QueryError(f"allocated storage must be a finite number of GB >= 0, got {gb!r}")
        return attrs.evolve(self, allocated_storage=gb)

    def with_defaults(self, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> OfferQuery:
        """Add the default filters where this query does not already constrain the column.

        Args:
            defaults: The filters to add; default :data:`DEFAULT_FILTERS` (verified, not
                external, rentable, not already rented), the official SDK's defaults.

        Returns:
            A new query; the defaults come first, as the SDK sends them.
        """
        query = OfferQuery()
        for column, ops in (DEFAULT_FILTERS if defaults is None else defaults).items():
            if column not in self:
                for op, value in ops.items():
                    query = query.where(column, op, value)
        return attrs.evolve(self, filters=query.filters + self.filters)

    # -- wire format ---------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, base: Mapping[str, Any] | None = None) -> OfferQuery:
        """Build a query from the CLI's text language (see :func:`parse_query`)."""
        return cls.from_dict(parse_query(text, base))

    @classmethod
    def from_dict(cls, wire: Mapping[str, Any]) -> OfferQuery:
        """Build a query from a wire query object.

        A key whose value is an object is a column filter; ``order``, ``type``, ``limit`` and
        ``allocated_storage`` are the options; any other key is kept in :attr:`extra`.

        Raises:
            ValueError: A filter uses an unknown operator (or ``in`` without a list), or
                ``order`` is malformed.
        """
        query = cls()
        options: dict[str, Any] = {}
        extra: list[tuple[str, Any]] = []
        for key, value in wire.items():
            if key in _OPTION_KEYS:
                options[key] = value
            elif isinstance(value, Mapping):
                if not value:
                    query = attrs.evolve(query, filters=(*query.filters, (key, ())))
                for op, operand in value.items():
                    try:
                        query = query.where(key, op, operand)
                    except TypeError as exc:
                        raise QueryError(f"filter {key!r}: {exc}", fragment=str(key)) from None
            else:
                extra.append((key, _freeze(value)))
        order = options.get("order")
        pairs: tuple[tuple[str, str], ...] | None = None
        if order is not None:
            try:
                pairs = tuple((str(col), str(direction)) for col, direction in order)
            except (TypeError, ValueError):
                raise QueryError(
                    f"order must be a list of [column, direction], got {order!r}"
                ) from None
        return attrs.evolve(
            query,
            order=pairs,
            type=options.get("type"),
            limit=options.get("limit"),
            allocated_storage=options.get("allocated_storage"),
            extra=tuple(extra),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the wire query object (a new dict of JSON values)."""
        wire: dict[str, Any] = {
            column: {op: _thaw(value) for op, value in ops} for column, ops in self.filters
        }
        if self.order is not None:
            wire["order"] = [[column, direction] for column, direction in self.order]
        if self.type is not None:
            wire["type"] = self.type
        if self.limit is not None:
            wire["limit"] = self.limit
        if self.allocated_storage is not None:
            wire["allocated_storage"] = self.allocated_storage
        for key, value in self.extra:
            wire[key] = _thaw(value)
        return wire


DEFAULT_ORDER: Final[tuple[tuple[str, str], ...]] = (("score", "desc"),)
"""The order of a search that names none: Vast's score, best first."""


def search_body(
    query: OfferQuery | Mapping[str, Any] | str | None = None,
    *,
    type: str | None = None,
    order: str | Sequence[Sequence[str]] | None = None,
    limit: int | None = None,
    allocated_storage: float | None = None,
) -> dict[str, Any]:
    """The JSON body of an offer search (``POST /api/v0/bundles/``).

    Args:
        query: An :class:`OfferQuery` or a wire query object (sent as given); a string in the
            CLI's query language (seeded with :data:`CLI_DEFAULT_FILTERS`); None: those defaults.
        type: The rental type (see :func:`normalize_rental_type`); default the query's, else
            on-demand.
        order: The CLI's order string or ``[[column, dir]]``; default the query's, else
            :data:`DEFAULT_ORDER`.
        limit: Most offers to return.
        allocated_storage: GB of disk to price ``dph_total`` with.

    Returns:
        A fresh dict, safe to change.

    Raises:
        TypeError: ``query`` is of another type.
        ValueError: The query string does not parse, an unknown rental type, or ``limit <= 0``.
    """
    if query is None:
        wire: dict[str, Any] = {k: dict(v) for k, v in CLI_DEFAULT_FILTERS.items()}
    elif isinstance(query, OfferQuery):
        wire = query.to_dict()
    elif isinstance(query, str):
        wire = parse_query(query, CLI_DEFAULT_FILTERS)
    elif isinstance(query, Mapping):
        wire = json.loads(json.dumps(query))
    else:
        raise TypeError(f"query must be an OfferQuery, a dict or a string, got {query!r}")
    if order is not None:
        wire["order"] = (
            parse_order(order) if isinstance(order, str) else [list(pair) for pair in order]
        )
    wire.setdefault("order", [list(pair) for pair in DEFAULT_ORDER])
    if type is not None:
        wire["type"] = normalize_rental_type(type)
    elif "type" in wire:
        wire["type"] = normalize_rental_type(str(wire["type"]))
    else:
        wire["type"] = "on-demand"
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        wire["limit"] = limit
    if allocated_storage is not None:
        wire["allocated_storage"] = allocated_storage
    return wire

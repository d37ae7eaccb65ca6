"""The emulator's own evaluator of Vast's offer query language (reference section 2.2).

Written from the reference, independently of vastkit's client-side query builder, so that the two
check each other. A query is a JSON object: one key per column with ``{op: value}``, plus the
non-filter keys ``order``, ``type``, ``limit``, ``allocated_storage`` and a few others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["QueryError", "SearchSpec", "compare", "parse_search", "run_search"]

T = TypeVar("T")

OPERATORS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "in", "notin", "nin"})

_RENAMES = {
    "reliability2": "reliability",
    "dphtotal": "dph_total",
    "dph": "dph_total",
    "gpu_totalram": "gpu_total_ram",
    "ubuntu_version": "os_version",
    "driver_version": "driver_vers",
    "cuda_vers": "cuda_max_good",
    "display_active": "gpu_display_active",
    "dlperf_usd": "dlperf_per_dphtotal",
    "flops_usd": "flops_per_dphtotal",
    "target_reliability": "expected_reliability",
}
_TIMES_1000 = {"gpu_totalram_GB": "gpu_total_ram", "cpu_ram_GB": "cpu_ram", "gpu_ram_GB": "gpu_ram"}

NON_FILTER_KEYS = frozenset(
    {
        "order",
        "type",
        "limit",
        "allocated_storage",
        "disable_bundling",
        "extra_ids",
        "gpu_option",
        "show_incompatible",
        "sort_option",
        "template_id",
        "resource_type",
    }
)

_TYPES = {
    "on-demand": "on-demand",
    "ondemand": "on-demand",
    "ask": "on-demand",
    "bid": "bid",
    "interruptible": "bid",
    "reserved": "reserved",
}


class QueryError(ValueError):
    """A query the server would refuse with 400 ``invalid_args``."""


@dataclass
class SearchSpec:
    """A parsed search: filters on columns, order, limit, rental type and storage."""

    filters: list[tuple[str, str, Any]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None
    type: str = "on-demand"
    allocated_storage: float | None = None

    def mentions(self, column: str) -> bool:
        """Whether a filter names ``column``."""
        return any(col == column for col, _, _ in self.filters)


def _number(value: Any, column: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise QueryError(f"{column}: {value!r} is not a number") from None
    raise QueryError(f"{column}: {value!r} is not a number")


def _driver_int(value: Any) -> Any:
    if isinstance(value, str) and "." in value:
        parts = value.strip().split(".")
        try:
            return int("".join(part.zfill(3) for part in parts))
        except ValueError:
            raise QueryError(f"driver_version: {value!r} is not a version") from None
    return value


def parse_search(query: Any) -> SearchSpec:
    """Parse a query object into a :class:`SearchSpec`.

    Args:
        query: The decoded JSON body (or ``q``) of a search request.

    Returns:
        The parsed search.

    Raises:
        QueryError: The query is not an object, names an unknown operator or rental type, or
            carries a non-numeric value where a number is needed.
    """
    if query is None:
        query = {}
    if not isinstance(query, dict):
        raise QueryError("the query must be a JSON object")
    spec = SearchSpec()
    spec.type = _rental_type(query)
    if query.get("limit") is not None:
        spec.limit = int(_number(query["limit"], "limit"))
    if query.get("allocated_storage") is not None:
        spec.allocated_storage = _number(query["allocated_storage"], "allocated_storage")
    spec.order.extend(_order(query.get("order", [["score", "desc"]])))
    for raw_column, condition in query.items():
        if raw_column not in NON_FILTER_KEYS:
            spec.filters.extend(_filters(raw_column, condition))
    return spec


def _rental_type(query: dict[str, Any]) -> str:
    raw_type = query.get("type", "on-demand")
    if raw_type is None:
        raw_type = "on-demand"
    if not isinstance(raw_type, str) or raw_type.lower() not in _TYPES:
        raise QueryError(f"type: {raw_type!r} is not one of on-demand, bid, reserved")
    return _TYPES[raw_type.lower()]


def _order(order: Any) -> list[tuple[str, bool]]:
    """``order`` as ``(column, descending)`` pairs; one bare pair is accepted too."""
    if isinstance(order, list) and len(order) == 2 and all(isinstance(x, str) for x in order):
        order = [order]
    if not isinstance(order, list):
        raise QueryError("order must be a list of [column, direction] pairs")
    pairs = []
    for item in order:
        if isinstance(item, str):
            column, direction = item, "asc"
        elif isinstance(item, list | tuple) and item and isinstance(item[0], str):
            column = item[0]
            direction = str(item[1]) if len(item) > 1 else "asc"
        else:
            raise QueryError(f"order: {item!r} is not a [column, direction] pair")
        pairs.append((_RENAMES.get(column, column), direction.lower() == "desc"))
    return pairs


def _filters(raw_column: str, condition: Any) -> list[tuple[str, str, Any]]:
    """The ``(column, operator, value)`` filters of one query key, values normalised."""
    column = raw_column
    scale = 1.0
    if column in _TIMES_1000:
        column, scale = _TIMES_1000[column], 1000.0
    column = _RENAMES.get(column, column)
    if not isinstance(condition, dict):
        # A bare value is an equality (some hand-written queries do this).
        condition = {"eq": condition}
    filters = []
    for op, value in condition.items():
        if op not in OPERATORS:
            raise QueryError(f"{raw_column}: unknown operator {op!r}")
        if op in ("in", "notin", "nin") and not isinstance(value, list):
            value = [value]
        if column == "driver_vers":
            value = (
                [_driver_int(v) for v in value] if isinstance(value, list) else _driver_int(value)
            )
        if scale != 1.0:
            value = (
                [_number(v, raw_column) * scale for v in value]
                if isinstance(value, list)
                else _number(value, raw_column) * scale
            )
        filters.append((column, "notin" if op == "nin" else op, value))
    return filters


def _coerce(sample: Any, value: Any, column: str) -> Any:
    """Coerce a query value to the type of the row's value (string numerics and booleans)."""
    if value is None:
        return None
    if isinstance(sample, bool):
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise QueryError(f"{column}: {value!r} is not a boolean")
        return bool(value)
    if isinstance(sample, int | float):
        return _number(value, column)
    if isinstance(sample, str):
        return str(value)
    return value


def compare(row_value: Any, op: str, value: Any, column: str = "") -> bool:
    """Whether ``row_value <op> value`` holds, coercing ``value`` to the row's type.

    Args:
        row_value: The column's value in the row.
        op: One of eq, neq, gt, gte, lt, lte, in, notin.
        value: The query's value (a list for in/notin).
        column: The column name, for error messages and the geolocation rule.

    Returns:
        The comparison's result; a null row value only equals null.

    Raises:
        QueryError: A value cannot be coerced to the column's type.
    """
    if op in ("in", "notin"):
        items = value if isinstance(value, list) else [value]
        hit = any(compare(row_value, "eq", item, column) for item in items)
        return hit if op == "in" else not hit
    if row_value is None:
        if op == "eq":
            return value is None
        if op == "neq":
            return value is not None
        return False
    if column == "geolocation" and isinstance(row_value, str) and op in ("eq", "neq"):
        text = str(value)
        code = row_value.rsplit(",", 1)[-1].strip()
        hit = text == row_value or text.upper() == code
        return hit if op == "eq" else not hit
    coerced = _coerce(row_value, value, column)
    if op == "eq":
        return bool(row_value == coerced)
    if op == "neq":
        return bool(row_value != coerced)
    if coerced is None:
        return False
    try:
        if op == "gt":
            return bool(row_value > coerced)
        if op == "gte":
            return bool(row_value >= coerced)
        if op == "lt":
            return bool(row_value < coerced)
        if op == "lte":
            return bool(row_value <= coerced)
    except TypeError:
        raise QueryError(f"{column}: cannot compare {row_value!r} with {value!r}") from None
    raise QueryError(f"{column}: unknown operator {op!r}")


def run_search(
    spec: SearchSpec,
    rows: Iterable[T],
    get: Callable[[T, str], Any],
    known_columns: Sequence[str] | frozenset[str],
    default_limit: int,
) -> list[T]:
    """Filter, order and limit ``rows`` by ``spec``.

    Filters on columns the emulator does not know are ignored (the live server warns about
    unknown fields only client-side; inferred).

    Args:
        spec: The parsed search.
        rows: The candidate rows.
        get: Reads a column of a row (including computed and virtual columns).
        known_columns: The columns ``get`` understands.
        default_limit: The limit when the query has none.

    Returns:
        The matching rows, ordered and limited.
    """
    filters = [(c, op, v) for c, op, v in spec.filters if c in known_columns]
    matched = [row for row in rows if all(compare(get(row, c), op, v, c) for c, op, v in filters)]
    order = [(c, desc) for c, desc in spec.order if c in known_columns]
    for column, desc in reversed(order):
        present = [r for r in matched if get(r, column) is not None]
        missing = [r for r in matched if get(r, column) is None]
        present.sort(key=lambda r: get(r, column), reverse=desc)
        matched = present + missing
    limit = spec.limit if spec.limit is not None else default_limit
    if limit <= 0:
        return []
    return matched[:limit]

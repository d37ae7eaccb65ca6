"""Issue 16: offer query strings parse to finite queries or raise a ``QueryError``.

Random text, text from the query language's own tokens, and well-formed comparisons whose values
include NaN, infinities, huge numbers and garbage go through :func:`parse_query` and
:func:`search_body`. Each example either parses, and then no value in the query is NaN or
infinite, or raises :class:`~vastkit.api.query.QueryError` (a ``ConfigError`` and a
``ValueError``) naming the fragment; any other exception fails the property.

Example budget: :data:`EXAMPLES` per property, raised here on purpose (well under a millisecond
each); ``--hypothesis-show-statistics`` prints the outcome counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from vastkit.api.query import (
    CLI_DEFAULT_FILTERS,
    FIELD_ALIASES,
    FIELD_MULTIPLIERS,
    OfferQuery,
    QueryError,
    parse_order,
    parse_query,
    search_body,
)
from vastkit.errors import ConfigError, VastkitError

EXAMPLES = 500

_FIELDS = st.sampled_from(
    sorted({*FIELD_MULTIPLIERS, *FIELD_ALIASES, "num_gpus", "gpu_name", "driver_version"})
)
_OPS = st.sampled_from(
    ["=", "==", "!=", ">", ">=", "<", "<=", " eq ", " gte ", " in ", " notin ", " nin ", "~", "=>"]
)
_VALUES = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "+nan"]),
    st.sampled_from(["9" * 400, "1.2.3", "535.86.05", "1." + "9" * 50, "any", "?", '""', '"']),
    st.sampled_from(["[1,nan]", "[RTX_4090,A100]", "[]", "[,]", "true", "null", "\u0662"]),
    st.floats().map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.text(alphabet="abcXYZ019._-+,[]\"'", min_size=1, max_size=8),
)
_TOKENS = st.sampled_from(
    [
        "num_gpus", "cpu_ram", "dph", "gpu_name", "=", ">=", "<", "!=", " in ", " ", "  ", "[",
        "]", ",", '"', "nan", "inf", "1", "0.5", "_", "not eq", "driver_version", "1.2.3", "\t",
        "~",
    ]
)  # fmt: skip


def _finite_everywhere(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_everywhere(v) for v in value)
    if isinstance(value, str):
        try:
            return math.isfinite(float(value))
        except ValueError:
            return True
    return True


def attempt(call: Callable[[], Any]) -> tuple[Any, VastkitError | None]:
    """Run ``call``: its result, or the VastkitError it raised; any other exception escapes."""
    try:
        return call(), None
    except VastkitError as exc:
        return None, exc


def _parse(text: str) -> str:
    """Parse ``text``: ``"parsed"`` or ``"QueryError"``; any other exception escapes."""
    parsed, error = attempt(lambda: parse_query(text, CLI_DEFAULT_FILTERS))
    if error is not None:
        assert isinstance(error, QueryError)
        assert isinstance(error, ConfigError | ValueError)
        assert str(error)
        return "QueryError"
    assert _finite_everywhere(parsed), parsed
    json.dumps(parsed, allow_nan=False)  # what goes on the wire is strict JSON
    body = search_body(text)
    assert _finite_everywhere(body)
    assert OfferQuery.from_dict(parsed).to_dict() == parsed
    return "parsed"


@settings(max_examples=EXAMPLES)
@given(st.text(max_size=80))
def test_random_text_parses_finite_or_is_a_query_error(text: str) -> None:
    event(_parse(text))


@settings(max_examples=EXAMPLES)
@given(st.lists(_TOKENS, max_size=30).map("".join))
def test_query_token_soup_parses_finite_or_is_a_query_error(text: str) -> None:
    event(_parse(text))


@settings(max_examples=EXAMPLES)
@given(st.lists(st.tuples(_FIELDS, _OPS, _VALUES), min_size=1, max_size=5))
def test_comparisons_with_hostile_values_parse_finite_or_name_the_fragment(
    comparisons: list[tuple[str, str, str]],
) -> None:
    text = " ".join(f"{field}{op}{value}" for field, op, value in comparisons)
    parsed, error = attempt(lambda: parse_query(text))
    event(type(error).__name__ if error else "parsed")
    if error is not None:
        assert isinstance(error, QueryError)
        assert error.fragment is not None
        assert error.fragment in text
        return
    assert _finite_everywhere(parsed), parsed


@settings(max_examples=EXAMPLES)
@given(st.text(max_size=40))
def test_order_strings_parse_or_are_query_errors(text: str) -> None:
    order, error = attempt(lambda: parse_order(text))
    event(type(error).__name__ if error else "parsed")
    if error is not None:
        assert isinstance(error, QueryError)
        return
    assert all(direction in ("asc", "desc") for _, direction in order)

"""The CLI query language and the OfferQuery builder."""

from __future__ import annotations

import json
import math
import re
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vastkit.api.query import (
    CLI_DEFAULT_FILTERS,
    DEFAULT_FILTERS,
    OPERATORS,
    OfferQuery,
    QueryError,
    normalize_rental_type,
    parse_order,
    parse_query,
    search_body,
)
from vastkit.errors import VastkitError

VERIFIED_EXAMPLE = (
    "gpu_name=RTX_4090 num_gpus>=1 reliability>0.98 gpu_ram>=24 disk_space>=50 "
    "cuda_vers>=12.1 driver_version>=535.86.05 geolocation in [US,CA] dph<1.5 duration>=3 "
    "cpu_ram>32 verified=any"
)
VERIFIED_JSON = (
    '{"external":{"eq":false},"rentable":{"eq":true},"gpu_name":{"eq":"RTX 4090"},'
    '"num_gpus":{"gte":"1"},"reliability":{"gt":"0.98"},"gpu_ram":{"gte":24000.0},'
    '"disk_space":{"gte":"50"},"cuda_max_good":{"gte":"12.1"},'
    '"driver_version":{"gte":535086005},"geolocation":{"in":["US","CA"]},'
    '"dph_total":{"lt":"1.5"},"duration":{"gte":259200.0},"cpu_ram":{"gt":32000.0}}'
)


def test_verified_example_matches_the_official_cli_byte_for_byte() -> None:
    parsed = parse_query(VERIFIED_EXAMPLE, CLI_DEFAULT_FILTERS)
    assert json.dumps(parsed, separators=(",", ":")) == VERIFIED_JSON


def test_seeding_does_not_modify_the_defaults() -> None:
    parse_query("verified=any", CLI_DEFAULT_FILTERS)
    assert CLI_DEFAULT_FILTERS["verified"] == {"eq": True}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("num_gpus>=2", {"num_gpus": {"gte": "2"}}),
        ("num_gpus gte 2", {"num_gpus": {"gte": "2"}}),
        ("num_gpus > 2", {"num_gpus": {"gt": "2"}}),
        ("num_gpus<=4", {"num_gpus": {"lte": "4"}}),
        ("num_gpus lt 4", {"num_gpus": {"lt": "4"}}),
        ("gpu_name!=RTX_3090", {"gpu_name": {"neq": "RTX 3090"}}),
        ("gpu_name noteq A100", {"gpu_name": {"neq": "A100"}}),
        ("gpu_name not eq A100", {"gpu_name": {"neq": "A100"}}),
        ("gpu_name==A100", {"gpu_name": {"eq": "A100"}}),
        ("gpu_name eq A100", {"gpu_name": {"eq": "A100"}}),
        ("gpu_name in [A100,H100_SXM]", {"gpu_name": {"in": ["A100", "H100 SXM"]}}),
        ("gpu_name notin [A100]", {"gpu_name": {"notin": ["A100"]}}),
        ("gpu_name not in [A100]", {"gpu_name": {"notin": ["A100"]}}),
        ("gpu_name nin [A100]", {"gpu_name": {"notin": ["A100"]}}),
        (
            'gpu_name in ["RTX 4090","RTX 3090"]',
            {"gpu_name": {"in": ["RTX 4090", "RTX 3090"]}},
        ),
        ('gpu_name="RTX 4090"', {"gpu_name": {"eq": "RTX 4090"}}),
        ("rentable=true", {"rentable": {"eq": True}}),
        ("rentable=True", {"rentable": {"eq": True}}),
        ("external=false", {"external": {"eq": False}}),
        ("cluster_id=null", {"cluster_id": {"eq": None}}),
        ("cluster_id=None", {"cluster_id": {"eq": None}}),
        ("cpu_arch=x86_64", {"cpu_arch": {"eq": "x86 64"}}),  # the CLI's documented quirk
        ("gpu_total_ram>=80", {"gpu_total_ram": {"gte": 80000.0}}),
        ("dph<1 dph>0.2", {"dph_total": {"lt": "1", "gt": "0.2"}}),
        ("num_gpus>=2 num_gpus<=4", {"num_gpus": {"gte": "2", "lte": "4"}}),
        ("display_active=false", {"gpu_display_active": {"eq": False}}),
        ("dlperf_usd>10", {"dlperf_per_dphtotal": {"gt": "10"}}),
        ("flops_usd>10", {"flops_per_dphtotal": {"gt": "10"}}),
        ("driver_version=535", {"driver_version": {"eq": "535"}}),
        ("gpu_name=*", {}),
        ("gpu_name=?", {}),
        ("", {}),
        ("  num_gpus=1  ", {"num_gpus": {"eq": "1"}}),
        ("made_up_field=3", {"made_up_field": {"eq": "3"}}),  # sent anyway, as the CLI does
    ],
)
def test_parse_query_table(text: str, expected: dict[str, Any]) -> None:
    assert parse_query(text) == expected


def test_a_list_of_words_is_joined() -> None:
    assert parse_query(["num_gpus>=1", "dph<2"]) == {
        "num_gpus": {"gte": "1"},
        "dph_total": {"lt": "2"},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num_gpus", "Unknown operator"),
        ("num_gpus>=", "blank"),
        ("gpu_name>=any", "Wildcard"),
        ("gpu_ram>=lots", "needs a number"),
        ("gpu_ram in [1,2]", "needs a number"),
        ("driver_version>=5x.1", "three-part version"),
        ("num_gpus>=1 (", "Unconsumed"),
        ("num_gpus ~ 2", "Unknown operator"),
    ],
)
def test_parse_query_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_query(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("score-", [["score", "desc"]]),
        ("-score", [["score", "desc"]]),
        ("dph+", [["dph_total", "asc"]]),
        ("dph_total", [["dph_total", "asc"]]),
        ("num_gpus-, dph", [["num_gpus", "desc"], ["dph_total", "asc"]]),
        ("", []),
    ],
)
def test_parse_order(text: str, expected: list[list[str]]) -> None:
    assert parse_order(text) == expected


def test_parse_order_rejects_a_bare_sign() -> None:
    with pytest.raises(ValueError, match="names no column"):
        parse_order("-")


# --- hypothesis: structure of parse_query --------------------------------------------------

_FIELDS = st.sampled_from(
    ["num_gpus", "gpu_name", "dph_total", "reliability", "disk_space", "cpu_cores", "host_id"]
)
_WORDS = st.text(
    alphabet=string.ascii_letters + string.digits + ".", min_size=1, max_size=8
).filter(lambda word: word.lower() not in ("nan", "inf", "infinity"))
"""Words a query may hold: not ones that read as a non-finite number (those are refused)."""
_SYMBOLS = {"eq": "=", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LITERALS = {"true", "True", "false", "False", "None", "null", "any"}


@st.composite
def _comparisons(draw: st.DrawFn) -> tuple[str, str, Any]:
    field = draw(_FIELDS)
    op = draw(st.sampled_from(sorted(OPERATORS)))
    if op in ("in", "notin"):
        value: Any = draw(st.lists(_WORDS, min_size=1, max_size=4))
        return field, op, value
    value = draw(_WORDS.filter(lambda word: word not in _LITERALS))
    return field, op, value


def _render(field: str, op: str, value: Any) -> str:
    if op in ("in", "notin"):
        return f"{field} {op} [{','.join(value)}]"
    return f"{field}{_SYMBOLS[op]}{value}"


@given(st.lists(_comparisons(), max_size=8))
def test_parse_query_keeps_every_comparison(comparisons: list[tuple[str, str, Any]]) -> None:
    """The last value written for (field, op) wins, fields keep first-seen order."""
    parsed = parse_query(" ".join(_render(*c) for c in comparisons))
    expected: dict[str, dict[str, Any]] = {}
    for field, op, value in comparisons:
        expected.setdefault(field, {})[op] = value
    assert parsed == expected
    assert list(parsed) == list(expected)
    for ops in parsed.values():
        assert set(ops) <= OPERATORS


@given(st.lists(_comparisons(), max_size=8))
def test_parsed_queries_round_trip_through_offer_query(
    comparisons: list[tuple[str, str, Any]],
) -> None:
    wire = parse_query(" ".join(_render(*c) for c in comparisons), CLI_DEFAULT_FILTERS)
    query = OfferQuery.from_dict(wire)
    assert query.to_dict() == wire
    assert json.dumps(query.to_dict()) == json.dumps(wire)  # key order too
    assert OfferQuery.from_dict(query.to_dict()) == query


_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    _WORDS,
)


@st.composite
def _wire_queries(draw: st.DrawFn) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    for field in draw(st.lists(_FIELDS, unique=True, max_size=5)):
        ops = draw(st.lists(st.sampled_from(sorted(OPERATORS)), unique=True, min_size=1))
        wire[field] = {
            op: draw(st.lists(_JSON_SCALARS, max_size=3))
            if op in ("in", "notin")
            else draw(_JSON_SCALARS)
            for op in ops
        }
    if draw(st.booleans()):
        wire["order"] = [
            [col, draw(st.sampled_from(["asc", "desc"]))]
            for col in draw(st.lists(_FIELDS, max_size=2))
        ]
    if draw(st.booleans()):
        wire["type"] = draw(st.sampled_from(["on-demand", "bid", "reserved"]))
    if draw(st.booleans()):
        wire["limit"] = draw(st.integers(1, 5000))
    if draw(st.booleans()):
        wire["allocated_storage"] = draw(st.floats(0, 1000))
    if draw(st.booleans()):
        wire["disable_bundling"] = draw(st.booleans())
    if draw(st.booleans()):
        wire["extra_ids"] = draw(st.lists(st.integers(0, 100), max_size=3))
    return wire


@given(_wire_queries())
def test_wire_dicts_round_trip(wire: dict[str, Any]) -> None:
    query = OfferQuery.from_dict(wire)
    assert query.to_dict() == wire
    assert hash(query) == hash(OfferQuery.from_dict(wire))


# --- the builder -----------------------------------------------------------------------------


def test_builder_produces_the_wire_object() -> None:
    query = (
        OfferQuery()
        .where("num_gpus", "gte", 2)
        .where("num_gpus", "lte", 4)
        .where("gpu_name", "in", ["RTX 4090", "RTX 3090"])
        .where("dph_total", "lte", 1.5)
        .order_by("dph_total", ("score", "desc"))
        .with_type("interruptible")
        .with_limit(100)
        .with_storage(40)
    )
    assert query.to_dict() == {
        "num_gpus": {"gte": 2, "lte": 4},
        "gpu_name": {"in": ["RTX 4090", "RTX 3090"]},
        "dph_total": {"lte": 1.5},
        "order": [["dph_total", "asc"], ["score", "desc"]],
        "type": "bid",
        "limit": 100,
        "allocated_storage": 40,
    }
    assert query.get("num_gpus") == {"gte": 2, "lte": 4}
    assert "gpu_name" in query
    assert ("gpu_name", "in", ["RTX 4090", "RTX 3090"]) in list(query.conditions())


def test_builder_is_immutable_and_replaces_the_same_operator() -> None:
    base = OfferQuery().where("num_gpus", "gte", 1)
    changed = base.where("num_gpus", "gte", 2)
    assert base.get("num_gpus") == {"gte": 1}
    assert changed.get("num_gpus") == {"gte": 2}
    assert changed.without("num_gpus").to_dict() == {}


def test_with_defaults_adds_only_missing_columns_first() -> None:
    query = OfferQuery().where("num_gpus", "eq", 1).where("rented", "eq", True).with_defaults()
    wire = query.to_dict()
    assert wire == {
        "verified": {"eq": True},
        "external": {"eq": False},
        "rentable": {"eq": True},
        "num_gpus": {"eq": 1},
        "rented": {"eq": True},
    }
    assert set(DEFAULT_FILTERS) <= set(wire)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: OfferQuery().where("num_gpus", "bigger", 1), ValueError),
        (lambda: OfferQuery().where("", "eq", 1), ValueError),
        (lambda: OfferQuery().where("gpu_name", "in", "RTX 4090"), TypeError),
        (lambda: OfferQuery().order_by(("dph_total", "up")), ValueError),
        (lambda: OfferQuery().with_limit(0), ValueError),
        (lambda: OfferQuery().with_type("spot"), ValueError),
        (lambda: OfferQuery.from_dict({"gpu_name": {"in": "x"}}), ValueError),
        (lambda: OfferQuery.from_dict({"order": 3}), ValueError),
    ],
)
def test_builder_rejects_mistakes(call: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


@pytest.mark.parametrize(
    ("given_type", "wire"),
    [
        ("on-demand", "on-demand"),
        ("ondemand", "on-demand"),
        ("interruptible", "bid"),
        ("bid", "bid"),
        ("Reserved", "reserved"),
    ],
)
def test_rental_types(given_type: str, wire: str) -> None:
    assert normalize_rental_type(given_type) == wire


def test_parse_builds_a_query_from_text() -> None:
    query = OfferQuery.parse("num_gpus>=2 gpu_name=H100_SXM", CLI_DEFAULT_FILTERS)
    assert query.get("gpu_name") == {"eq": "H100 SXM"}
    assert query.get("verified") == {"eq": True}


# --- issue 16: bad input never costs money --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("cpu_ram>=nan", "cpu_ram>=nan"),
        ("num_gpus>=1 gpu_ram>=inf", "gpu_ram>=inf"),
        ("dph<NaN", "dph<NaN"),
        ("duration>=-Infinity", "duration>=-Infinity"),
        ("reliability>0.9 num_gpus>=1e999", "num_gpus>=1e999"),
        ("gpu_name in [RTX_4090,nan]", "gpu_name in [RTX_4090,nan]"),
    ],
)
def test_issue16_non_finite_numbers_are_refused_naming_the_fragment(
    text: str, fragment: str
) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(text)
    assert info.value.fragment == fragment
    assert repr(fragment) in str(info.value)
    assert "not a finite number" in str(info.value)
    assert isinstance(info.value, VastkitError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "message", "fragment"),
    [
        ("num_gpus", "Unknown operator ''", "num_gpus"),
        ("num_gpus=>2", "Unknown operator '=>'", "num_gpus=>2"),
        ("num_gpus>=1 (((", "Unconsumed text", "((("),
        ("driver_version>=5x.1", "three-part version", "5x.1"),
        ("driver_version>=" + "9" * 5000, "not a finite number", "driver_version>=" + "9" * 5000),
        ("driver_version>=1." + "9" * 5000, "three-part version", "1." + "9" * 5000),
        ("driver_version>=1.\u0662", "three-part version", "1.\u0662"),
        ("gpu_ram>=lots", "needs a number", "gpu_ram>=lots"),
        ('gpu_name="', "blank", 'gpu_name="'),
    ],
)
def test_issue16_garbage_gets_a_typed_error_naming_the_fragment(
    text: str, message: str, fragment: str
) -> None:
    with pytest.raises(QueryError, match=re.escape(message)) as info:
        parse_query(text)
    assert info.value.fragment == fragment


def test_issue16_no_nan_reaches_a_search_body() -> None:
    with pytest.raises(QueryError, match="not a finite number"):
        search_body("cpu_ram>=nan")
    with pytest.raises(QueryError, match="not a finite number"):
        OfferQuery().where("dph_total", "lte", math.nan)
    with pytest.raises(QueryError, match="not a finite number"):
        OfferQuery().where("gpu_ram", "in", [1.0, math.inf])
    with pytest.raises(QueryError, match="finite number of GB"):
        OfferQuery().with_storage(math.nan)
    with pytest.raises(QueryError, match="not a finite number"):
        OfferQuery.from_dict({"cpu_ram": {"gte": math.nan}})
    assert search_body("cpu_ram>=32")["cpu_ram"] == {"gte": 32000.0}


def test_issue16_a_bad_operator_names_the_fragment_as_written() -> None:
    """Found by the fuzz suite: the fragment was rebuilt without the spaces of the query."""
    text = 'cuda_vers=" cpu_ram="0 cpu_ram=nan'
    with pytest.raises(QueryError) as info:
        parse_query(text)
    assert info.value.fragment is not None
    assert info.value.fragment in text


@pytest.mark.parametrize(
    "text",
    [
        "driver_version>=535.86.05",
        "driver_version>=535..05",
        "driver_version<1000.1.1",
        "driver_version>=550.54",
        "driver_version>=0.0.0",
        "driver_version>=5a.1.1",
        "driver_version=535",
    ],
)
def test_issue17_driver_version_reads_as_the_official_parser_reads_it(text: str) -> None:
    """Equal to vastai 1.9.1's parse_query: a value it accepts is the same number here; a value
    it refuses (two parts, 0.0.0, non-digits) is a QueryError here (was: 550.54 -> 550054,
    matching every real driver, 535..05 refused, 0.0.0 -> 0)."""
    import contextlib
    import io

    official = pytest.importorskip("vastai.api.query")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            theirs: Any = official.parse_query(
                text, {}, official.offers_fields, official.offers_alias, official.offers_mult
            )
    except (ValueError, TypeError, AttributeError):
        theirs = None
    if theirs is None:
        with pytest.raises(QueryError):
            parse_query(text)
    else:
        assert parse_query(text)["driver_version"] == theirs["driver_version"]


def test_issue17_driver_version_lists_convert_every_version() -> None:
    """The official parser crashes on a list (AttributeError on an int); each version is read."""
    got = parse_query("driver_version in [535.86.05,550.54.15]")
    assert got["driver_version"] == {"in": [535086005, 550054015]}

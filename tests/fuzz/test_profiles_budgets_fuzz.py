"""Issue 16: generated profile and budget documents are validated completely.

Profiles and budgets are generated with every key drawn from valid values and from garbage
(NaN, infinities, negatives, 400-digit numbers, text, lists, mappings, null), written as YAML
and loaded, and also built in Python. Each example either succeeds, and then every value is in
range and finite, or raises a :class:`~vastkit.errors.ConfigError` naming the file, line and key
(from YAML) or a ``VastkitError`` that is also a ``ValueError``/``TypeError`` (from Python).

Example budget: :data:`EXAMPLES` per property, raised here on purpose (about a millisecond each);
``--hypothesis-show-statistics`` prints the outcome counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vastkit.budget import Budget, load_budgets
from vastkit.errors import ConfigError, VastkitError
from vastkit.profiles import PROFILE_KEYS, GpuProfile, load_profiles

EXAMPLES = 300

_GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**400), 10**400),
    st.floats(),  # NaN and infinities included
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, -0.0, 1e308, 10**30]),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=2),
)

_VALID: dict[str, st.SearchStrategy[Any]] = {
    "gpu_name": st.sampled_from(["RTX_4090", ["A100_SXM4", "H100 SXM"]]),
    "max_dph": st.floats(0.01, 50),
    "num_gpus": st.integers(1, 8),
    "reliability_min": st.floats(0, 1),
    "max_duration_hours": st.floats(0.1, 100),
    "rental": st.sampled_from(["on-demand", "interruptible"]),
    "max_bid": st.floats(0.01, 10),
    "bid_margin": st.floats(0, 10),
    "min_gpu_ram_gb": st.floats(1, 80),
    "disk_gb": st.floats(8, 2000),
    "min_cuda": st.floats(10, 13),
    "min_inet_down_mbps": st.floats(1, 10_000),
    "regions": st.lists(st.sampled_from(["US", "CA", "DE"]), max_size=2),
    "verified": st.booleans(),
    "datacenter_only": st.booleans(),
    "image": st.sampled_from(["pytorch/pytorch:latest", "ubuntu"]),
    "rank_by": st.sampled_from(["price", "perf_per_dollar", "score"]),
    "extra_query": st.sampled_from([{"cpu_ram": {"gte": 32000}}, {"cpu_ram": {"gte": math.nan}}]),
    "description": st.text(min_size=1, max_size=10),
}


@st.composite
def _profile_body(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    clean = draw(st.integers(0, 2)) == 0  # a third of the bodies hold only valid values
    names = [*PROFILE_KEYS] if clean else [*PROFILE_KEYS, "num_gpu", "max-dph"]
    keys = draw(st.lists(st.sampled_from(names), unique=True))
    for key in ["gpu_name", "max_dph", *keys]:
        valid = _VALID.get(key, _GARBAGE)
        body[key] = draw(valid if clean or draw(st.booleans()) else st.one_of(valid, _GARBAGE))
    if clean and body.get("rental") != "interruptible":
        body.pop("max_bid", None)
    if clean and body.get("extra_query") is not None:
        body["extra_query"] = {"cpu_ram": {"gte": 32000}}
    if not clean and draw(st.integers(0, 9)) == 0:
        body.pop(draw(st.sampled_from(["gpu_name", "max_dph"])))
    return body


def attempt(call: Callable[[], Any]) -> tuple[Any, VastkitError | None]:
    """Run ``call``: its result, or the VastkitError it raised; any other exception escapes."""
    try:
        return call(), None
    except VastkitError as exc:
        return None, exc


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def _check_profile(profile: GpuProfile) -> None:
    for key in ("max_dph", "max_duration_hours", "disk_gb", "bid_margin", "reliability_min"):
        assert math.isfinite(getattr(profile, key)), key
    assert profile.max_dph > 0
    assert profile.max_duration_hours > 0
    assert profile.disk_gb >= 8
    assert 0 <= profile.reliability_min <= 1
    assert isinstance(profile.num_gpus, int)
    assert 1 <= profile.num_gpus <= 64
    for key in ("max_bid", "min_gpu_ram_gb", "min_cuda", "min_inet_down_mbps"):
        value = getattr(profile, key)
        assert value is None or (math.isfinite(value) and value > 0), key
    for ops in profile.extra_query.values():
        for operand in ops.values():
            assert not (isinstance(operand, float) and not math.isfinite(operand))


@settings(max_examples=EXAMPLES)
@given(st.dictionaries(st.sampled_from(["dev", "big", "p 1"]), _profile_body(), min_size=1))
def test_generated_profile_files_load_valid_or_name_file_line_key(
    profiles: dict[str, dict[str, Any]],
) -> None:
    text = _dump({"profiles": profiles})
    loaded, error = attempt(lambda: load_profiles(text))
    event(type(error).__name__ if error else "loaded")
    if error is not None:
        assert isinstance(error, ConfigError)
        assert error.path == "<string>"
        assert error.line is not None
        assert error.key is not None
        assert error.key.startswith("profiles.")
        return
    assert list(loaded) == list(profiles)
    for profile in loaded.values():
        _check_profile(profile)


@settings(max_examples=EXAMPLES)
@given(_profile_body())
def test_python_built_profiles_are_valid_or_typed_errors(body: dict[str, Any]) -> None:
    kwargs = {key: value for key, value in body.items() if key in PROFILE_KEYS}
    kwargs.setdefault("gpu_name", "X")  # a missing argument is Python's own call error
    kwargs.setdefault("max_dph", 1.0)
    profile, error = attempt(lambda: GpuProfile(name="p", **kwargs))
    event(type(error).__name__ if error else "built")
    if error is not None:
        assert isinstance(error, ValueError | TypeError)
        assert isinstance(error, ConfigError)
        assert error.key in PROFILE_KEYS
        return
    _check_profile(profile)


_BUDGET_VALUE = st.one_of(
    st.fixed_dictionaries(
        {"limit_usd": st.one_of(st.floats(0, 10_000), _GARBAGE)},
        optional={
            "period": st.one_of(st.sampled_from(["total", "monthly", "daily"]), _GARBAGE),
            "warn_at": st.one_of(st.lists(st.floats(0.01, 1), max_size=3), _GARBAGE),
            "team": st.one_of(st.just("ml"), _GARBAGE),
            "limt_usd": _GARBAGE,
        },
    ),
    _GARBAGE,
)


@settings(max_examples=EXAMPLES)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "teams": st.dictionaries(st.sampled_from(["ml", "ops"]), _BUDGET_VALUE, max_size=2),
            "projects": st.dictionaries(st.sampled_from(["vision"]), _BUDGET_VALUE, max_size=1),
            "job": _BUDGET_VALUE,
            "warn_at": st.one_of(st.lists(st.floats(0.01, 1), max_size=3), _GARBAGE),
        },
    )
)
def test_generated_budget_files_load_valid_or_name_file_line_key(data: dict[str, Any]) -> None:
    budgets, error = attempt(lambda: load_budgets(_dump(data) if data else "{}"))
    event(type(error).__name__ if error else "loaded")
    if error is not None:
        assert isinstance(error, ConfigError)
        assert error.path == "<string>"
        assert error.line is not None
        return
    every = [*budgets.teams.values(), *budgets.projects.values()]
    every += [budgets.job] if budgets.job is not None else []
    for budget in every:
        assert math.isfinite(budget.limit_usd)
        assert budget.limit_usd >= 0
        assert all(0 < w <= 1 for w in budget.warn_at)


@settings(max_examples=EXAMPLES)
@given(
    scope=st.one_of(st.sampled_from(["team", "project", "job"]), _GARBAGE),
    name=st.one_of(st.just("ml"), _GARBAGE),
    limit=st.one_of(st.floats(0, 1000), _GARBAGE),
    period=st.one_of(st.sampled_from(["total", "monthly", "daily"]), _GARBAGE),
)
def test_python_built_budgets_are_valid_or_typed_errors(
    scope: Any, name: Any, limit: Any, period: Any
) -> None:
    budget, error = attempt(lambda: Budget(scope=scope, name=name, limit_usd=limit, period=period))
    event(type(error).__name__ if error else "built")
    if error is not None:
        assert isinstance(error, ValueError | TypeError)
        return
    assert math.isfinite(budget.limit_usd)
    assert budget.limit_usd >= 0

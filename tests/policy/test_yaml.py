"""The YAML loader under hostile input (issue 16): linear time, limits, merge keys, lines.

Each case the issue lists is a test named after it. Work is measured by what the loader builds,
never by the wall clock.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from vastkit import _yaml
from vastkit._yaml import (
    ALIAS_EXPANSION_BUDGET,
    MAX_DEPTH,
    MAX_DOCUMENT_CHARS,
    ConfigTypeError,
    ConfigValueError,
    Document,
    load_document,
)
from vastkit.budget import Budget, BudgetGuard, Budgets, load_budgets
from vastkit.errors import ConfigError, VastkitError
from vastkit.profiles import GpuProfile, load_profiles


def alias_bomb(levels: int) -> str:
    """A "billion laughs": each level lists the previous one nine times (9**levels values)."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nprofiles:\n  p: {gpu_name: RTX_4090, max_dph: 1}\n"


def profiles_text(count: int) -> str:
    """A valid gpu_profiles.yaml with ``count`` profiles (about 200 bytes each)."""
    body = "".join(
        f"  p{i}:\n    gpu_name: [RTX_4090, A100_SXM4]\n    max_dph: 0.{i % 90 + 10}\n"
        f"    reliability_min: 0.95\n    max_duration_hours: 4\n    regions: [US, CA]\n"
        f"    description: profile number {i}\n"
        for i in range(count)
    )
    return "profiles:\n" + body


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every value the loader builds (the work an alias bomb multiplies)."""
    counter = [0]
    original = _yaml._Builder.build

    def counting(self: Any, *args: Any) -> Any:
        counter[0] += 1
        return original(self, *args)

    monkeypatch.setattr(_yaml._Builder, "build", counting)
    return counter


# --- alias bomb ---------------------------------------------------------------------------------


def test_issue16_alias_bomb_in_gpu_profiles_is_refused_within_the_budget(
    tmp_path: Path, built: list[int]
) -> None:
    path = tmp_path / "gpu_profiles.yaml"
    path.write_text(alias_bomb(7))  # 9**7 = 4.8 million values once expanded
    with pytest.raises(ConfigError) as info:
        load_profiles(path)
    error = info.value
    assert "alias expansion budget exceeded" in str(error)
    assert error.path == str(path)
    assert error.line is not None
    assert 2 <= error.line <= 8  # the line of an alias (*aN)
    assert str(error).startswith(f"{path}:{error.line}: ")
    # Refused after building at most the document's own values plus the budget, not millions.
    assert built[0] <= 100 + ALIAS_EXPANSION_BUDGET + 1


def test_issue16_aliases_within_the_budget_still_expand() -> None:
    doc = load_document(alias_bomb(3), "b.yaml")  # 9**3 = 729 values
    assert len(doc.data["a3"]) == 9
    assert doc.data["a3"][8][8][8] == ["lol"] * 9


def test_issue16_recursive_and_unknown_aliases_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"refers to the value that contains it") as info:
        load_document("a: &a [1, *a]\n", "r.yaml")
    assert (info.value.path, info.value.line) == ("r.yaml", 1)
    with pytest.raises(ConfigError, match=r"unknown alias '\*nope'"):
        load_document("a: 1\nb: *nope\n", "u.yaml")


# --- depth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "profiles: " + "[" * 3000 + "]" * 3000 + "\n",
        "profiles: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
        "profiles:\n" + "".join(" " * level + f"k{level}:\n" for level in range(1, 3000)),
    ],
    ids=["flow-lists", "flow-mappings", "block-mappings"],
)
def test_issue16_3000_deep_nesting_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_profiles(text)
    assert "nest" in str(info.value)
    assert info.value.line == 1 or "levels deep" in str(info.value)


def test_issue16_depth_limit_also_holds_through_aliases() -> None:
    half = MAX_DEPTH // 2 + 5
    text = f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n"
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels deep") as info:
        load_document(text, "d.yaml")
    assert info.value.key is not None
    assert info.value.key.startswith("b.0.0")


# --- numbers -------------------------------------------------------------------------------------


def test_issue16_400_digit_number_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text("job:\n  limit_usd: " + "9" * 400 + "\n")
    with pytest.raises(ConfigError) as info:
        load_budgets(path)
    assert (info.value.path, info.value.line, info.value.key) == (str(path), 2, "job.limit_usd")
    assert "number too long" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_profiles("profiles:\n  p:\n    gpu_name: RTX_4090\n    max_dph: 1" + "0" * 30 + "\n")
    assert (info.value.line, info.value.key) == (4, "profiles.p.max_dph")
    assert "does not fit in 64 bits" in str(info.value)
    with pytest.raises(ConfigError, match="too large for a float") as info:
        load_profiles("profiles:\n  p: {gpu_name: RTX_4090, max_dph: 1.0e+400}\n")
    assert info.value.key == "profiles.p.max_dph"


def test_issue16_400_digit_number_from_python_is_a_typed_error() -> None:
    with pytest.raises(ConfigError, match="limit_usd must be a finite number"):
        load_budgets({"job": {"limit_usd": 10**400}})
    with pytest.raises(ConfigValueError, match="max_dph is out of range"):
        GpuProfile(name="x", gpu_name="RTX_4090", max_dph=10**400)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "-1"])
@pytest.mark.parametrize(
    "key", ["max_dph", "max_duration_hours", "disk_gb", "min_gpu_ram_gb", "min_cuda"]
)
def test_issue16_non_finite_or_negative_profile_numbers_name_file_line_key(
    key: str, value: str
) -> None:
    text = f"profiles:\n  p:\n    gpu_name: RTX_4090\n    max_dph: 1\n    {key}: {value}\n"
    if key == "max_dph":
        text = (
            f"profiles:\n  p:\n    gpu_name: RTX_4090\n    rental: on-demand\n    {key}: {value}\n"
        )
    with pytest.raises(ConfigError) as info:
        load_profiles(text)
    assert (info.value.path, info.value.line, info.value.key) == (
        "<string>",
        5,
        f"profiles.p.{key}",
    )
    assert (
        "finite" in str(info.value)
        or "greater than 0" in str(info.value)
        or ("at least" in str(info.value))
    )


@pytest.mark.parametrize("value", [".nan", ".inf", "-5", "cheap", "true", "[1]"])
def test_issue16_bad_budget_limits_name_file_line_key(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_budgets(f"teams:\n  ml:\n    limit_usd: {value}\n")
    assert (info.value.line, info.value.key) == (3, "teams.ml.limit_usd")
    assert "limit_usd must be" in str(info.value)


def test_issue16_extra_query_nan_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_profiles("profiles:\n  p:\n    gpu_name: RTX_4090\n    max_dph: 1\n"
                      "    extra_query: {cpu_ram: {gte: .nan}}\n")  # fmt: skip
    assert (info.value.line, info.value.key) == (5, "profiles.p.extra_query")
    assert "extra_query.cpu_ram.gte must be a finite number" in str(info.value)
    with pytest.raises(ConfigError, match=r"must map operators to values"):
        load_profiles(
            "profiles:\n  p: {gpu_name: RTX_4090, max_dph: 1, extra_query: {cpu_ram: 3}}\n"
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: 2020-02-30\n", "day is out of range"),
        ("x: !!int abc\n", "cannot read 'abc'"),
        ("x: !!float abc\n", "cannot read 'abc'"),
        ("x: !!float\n", "cannot read ''"),  # found by tests/fuzz: IndexError inside PyYAML
        ("x: !!int\n", "cannot read ''"),
        ("x: !!binary 'a'\n", "not valid YAML"),
        ("x: !!python/object:os.system {}\n", "unsupported tag"),
        ("x: !!set {a, b}\n", "unsupported tag"),
        ("x: !!python/name:os.system\n", "not valid YAML"),
        ("a: 1\n---\nb: 2\n", "expected a single YAML document"),
        ("a: \x01\n", "not valid YAML"),
        ("? [a, b]\n: 1\n", "keys must be plain words or numbers"),
    ],
)
def test_issue16_odd_scalars_and_streams_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_document(text, "odd.yaml")


# --- merge keys ---------------------------------------------------------------------------------

MERGED = """\
defaults: &base
  gpu_name: RTX_4090
  max_dph: 0.5
  reliability_min: 0.95
profiles:
  dev:
    <<: *base
    max_dph: 0.25
  big:
    <<: [{num_gpus: 2, max_dph: 9}, *base]
    disk_gb: 50
"""


def test_issue16_merge_key_then_override_is_honoured() -> None:
    doc = load_document(MERGED, "gpu_profiles.yaml")
    assert doc.data["profiles"]["dev"] == {
        "gpu_name": "RTX_4090",
        "max_dph": 0.25,
        "reliability_min": 0.95,
    }
    # In a list of merged mappings the earlier one wins; the mapping's own keys win over all.
    assert doc.data["profiles"]["big"]["max_dph"] == 9
    assert doc.data["profiles"]["big"]["num_gpus"] == 2
    assert doc.line("profiles", "dev", "max_dph") == 8  # the override's line
    assert doc.line("profiles", "dev", "reliability_min") == 4  # where the merged value is
    sub = doc.sub("profiles")
    sub.data.pop("defaults", None)
    profiles = load_profiles(Document(data={"profiles": sub.data}, path="x"))
    assert profiles["dev"].max_dph == 0.25
    assert profiles["big"].num_gpus == 2


def test_issue16_merged_profile_errors_point_at_the_merged_line() -> None:
    text = (
        "base: &b {gpu_name: RTX_4090, max_dph: -1}\nprofiles:\n  p:\n    <<: *b\n    num_gpus: 1\n"
    )
    doc = load_document(text, "m.yaml")
    with pytest.raises(ConfigError) as info:
        GpuProfile.from_document("p", doc.sub("profiles", "p"))
    assert (info.value.path, info.value.line, info.value.key) == ("m.yaml", 1, "profiles.p.max_dph")


def test_issue16_real_duplicate_keys_are_still_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_document("a: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n  y: 3\n", "dup.yaml")
    assert str(info.value) == "dup.yaml:5: c.y: duplicate key 'y' (first on line 4)"
    with pytest.raises(ConfigError, match="merge key '<<' takes a mapping"):
        load_document("a:\n  <<: 3\n", "m.yaml")


# --- size ----------------------------------------------------------------------------------------


def test_issue16_20mb_profiles_file_is_refused_before_it_is_read(
    tmp_path: Path, built: list[int]
) -> None:
    path = tmp_path / "gpu_profiles.yaml"
    block = profiles_text(1000)
    with path.open("w") as out:
        out.write(block)
        out.write("\n#" + "x" * (20_000_000 - len(block)) + "\n")
    with pytest.raises(ConfigError) as info:
        load_profiles(path)
    assert info.value.path == str(path)
    assert "file too large" in str(info.value)
    assert f"{MAX_DOCUMENT_CHARS:,} bytes" in str(info.value)
    with pytest.raises(ConfigError, match="file too large"):
        load_profiles("profiles:\n" + "#" * MAX_DOCUMENT_CHARS)
    assert built[0] == 0


def test_issue16_large_file_below_the_cap_loads_completely(tmp_path: Path) -> None:
    path = tmp_path / "gpu_profiles.yaml"
    path.write_text(profiles_text(5000))  # about 1 MB
    profiles = load_profiles(path)
    assert len(profiles) == 5000
    assert profiles["p4999"].regions == ("US", "CA")


# --- inline mappings ----------------------------------------------------------------------------


def test_issue16_inline_profile_errors_name_the_job_file_and_line() -> None:
    text = "name: train\ncommand: python train.py\nprofile: {gpu_name: RTX_4090, max_dph: -1}\n"
    doc = load_document(text, "job.yaml")
    with pytest.raises(ConfigError) as info:
        GpuProfile.from_document("train", doc.sub("profile"))
    assert str(info.value) == (
        "job.yaml:3: profile.max_dph: profile 'train': max_dph must be greater than 0 (got -1)"
    )
    block = "name: train\nprofile:\n  gpu_name: RTX_4090\n  max_dph: 1\n  num_gpu: 2\n"
    with pytest.raises(ConfigError) as info:
        GpuProfile.from_document("train", load_document(block, "job.yaml").sub("profile"))
    assert (info.value.line, info.value.key) == (5, "profile.num_gpu")
    assert "did you mean 'num_gpus'?" in str(info.value)


def test_issue16_document_sub_keeps_file_lines_and_full_keys() -> None:
    doc = load_document("a:\n  b:\n    - x: 1\n    - x: 2\n", "f.yaml")
    sub = doc.sub("a", "b", 1)
    assert sub.data == {"x": 2}
    assert (sub.path, sub.root, sub.line("x")) == ("f.yaml", ("a", "b", 1), 4)
    error = sub.error("bad", "x")
    assert (error.line, error.key) == (4, "a.b.1.x")
    with pytest.raises(KeyError):
        doc.sub("a", "c")


def test_issue16_budgets_from_a_sub_document_name_the_outer_file() -> None:
    doc = load_document("budgets:\n  job:\n    limit_usd: .nan\n", "vastkit.yaml")
    with pytest.raises(ConfigError) as info:
        load_budgets(doc.sub("budgets"))
    assert (info.value.path, info.value.line, info.value.key) == (
        "vastkit.yaml",
        3,
        "budgets.job.limit_usd",
    )


# --- Python construction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "kind", "key"),
    [
        (lambda: GpuProfile(name="x", gpu_name="L4", max_dph=math.nan), ValueError, "max_dph"),
        (lambda: GpuProfile(name="x", gpu_name="L4", max_dph=1, disk_gb=-5), ValueError, "disk_gb"),
        (lambda: GpuProfile(name="x", gpu_name="L4", max_dph="1"), TypeError, "max_dph"),
        (lambda: GpuProfile(name="x", gpu_name=5, max_dph=1), TypeError, "gpu_name"),
        (
            lambda: GpuProfile(name="x", gpu_name="L4", max_dph=1, num_gpus=1000),
            ValueError,
            "num_gpus",
        ),
        (lambda: GpuProfile(name="x", gpu_name="L4", max_dph=1, image=5), TypeError, "image"),
        (
            lambda: GpuProfile(name="x", gpu_name="L4", max_dph=1, max_duration_hours=math.inf),
            ValueError,
            "max_duration_hours",
        ),
        (lambda: Budget(scope="job", name="*", limit_usd=math.inf), ValueError, "limit_usd"),
        (lambda: Budget(scope="job", name="*", limit_usd="5"), TypeError, "limit_usd"),
        (lambda: Budget(scope="jobs", name="*", limit_usd=5), ValueError, "scope"),
        (lambda: Budget(scope="team", name="ml", limit_usd=5, team=[1]), TypeError, "team"),
        (
            lambda: BudgetGuard(Budgets(), _NoSpend(), poll_interval_s=math.nan),
            ValueError,
            "poll_interval_s",
        ),
        (
            lambda: BudgetGuard(Budgets(), _NoSpend(), job_limit_usd=math.inf),
            ValueError,
            "job_limit_usd",
        ),
        (
            lambda: BudgetGuard(Budgets(), _NoSpend()).check(math.nan),
            ValueError,
            "rate_dph",
        ),
    ],
)  # fmt: skip
def test_issue16_python_construction_raises_typed_vastkit_errors(
    build: Any, kind: type[Exception], key: str
) -> None:
    with pytest.raises(kind) as info:
        build()
    assert isinstance(info.value, VastkitError)
    assert isinstance(info.value, ConfigValueError if kind is ValueError else ConfigTypeError)
    assert info.value.key == key
    assert key in str(info.value)


class _NoSpend:
    def spend(self, **_: Any) -> float:
        return 0.0

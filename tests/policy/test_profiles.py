"""Profiles: the reference file format, the built-ins, and the errors a user reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastkit.errors import ConfigError
from vastkit.profiles import GpuProfile, builtin_profiles, get_profile, load_profiles

REFERENCE = """\
profiles:
  dev-test:
    gpu_name: RTX_4090
    num_gpus: 1
    max_dph: 0.25
    reliability_min: 0.95
    max_duration_hours: 4
  training-distributed:
    gpu_name: H100_SXM
    num_gpus: 4
    max_dph: 4.00
    reliability_min: 0.98
    max_duration_hours: 48
"""


def test_reference_format_loads_unchanged() -> None:
    profiles = load_profiles(REFERENCE)
    assert list(profiles) == ["dev-test", "training-distributed"]
    dev = profiles["dev-test"]
    assert dev.gpu_name == ("RTX 4090",)
    assert (dev.num_gpus, dev.max_dph, dev.reliability_min, dev.max_duration_hours) == (
        1,
        0.25,
        0.95,
        4.0,
    )
    assert dev.rental == "on-demand"
    assert profiles["training-distributed"].gpu_name == ("H100 SXM",)


def test_builtins_are_the_four_reference_profiles() -> None:
    profiles = builtin_profiles()
    assert list(profiles) == [
        "dev-test",
        "training-standard",
        "training-distributed",
        "inference-batch",
    ]
    assert profiles["dev-test"].max_dph == 0.35
    assert profiles["training-distributed"].num_gpus == 4
    assert profiles["training-distributed"].max_dph == 8.0
    assert profiles["inference-batch"].interruptible


def test_example_file_matches_builtins() -> None:
    example = Path(__file__).parents[2] / "examples" / "config" / "gpu_profiles.yaml"
    assert load_profiles(example) == builtin_profiles()


def test_gpu_name_list_and_optional_keys() -> None:
    profiles = load_profiles(
        """
profiles:
  cheap:
    gpu_name: [RTX_3090, "RTX 4090", RTX_3090]
    max_dph: 0.3
    rental: interruptible
    max_bid: 0.2
    min_gpu_ram_gb: 24
    disk_gb: 40
    min_cuda: 12.1
    min_inet_down_mbps: 200
    regions: [us, CA]
    verified: false
    datacenter_only: true
    image: pytorch/pytorch:latest
    rank_by: perf_per_dollar
    extra_query: {cpu_ram: {gte: 32000}}
"""
    )
    cheap = profiles["cheap"]
    assert cheap.gpu_name == ("RTX 3090", "RTX 4090")
    assert cheap.regions == ("US", "CA")
    assert cheap.max_bid == 0.2
    assert cheap.extra_query == {"cpu_ram": {"gte": 32000}}
    assert cheap.rank_by == "perf_per_dollar"
    assert GpuProfile.from_dict("cheap", cheap.to_dict()) == cheap


def test_python_and_dict_construction() -> None:
    built = GpuProfile(name="x", gpu_name="A100_SXM4", max_dph=2)
    assert built.gpu_name == ("A100 SXM4",)
    assert built == GpuProfile.from_dict("x", {"gpu_name": "A100 SXM4", "max_dph": 2})
    assert load_profiles({"profiles": {"x": {"gpu_name": "A100_SXM4", "max_dph": 2}}})["x"] == built


def test_typo_names_file_line_profile_key_and_suggests(tmp_path: Path) -> None:
    path = tmp_path / "gpu_profiles.yaml"
    path.write_text(
        "profiles:\n  dev-test:\n    gpu_name: RTX_4090\n    max_dph: 0.25\n"
        "    reliabilty_min: 0.95\n"
    )
    with pytest.raises(ConfigError) as info:
        load_profiles(path)
    assert str(info.value) == (
        f"{path}:5: profiles.dev-test.reliabilty_min: unknown key 'reliabilty_min' in profile "
        "'dev-test'; did you mean 'reliability_min'?"
    )
    assert (info.value.path, info.value.line) == (str(path), 5)
    assert info.value.key == "profiles.dev-test.reliabilty_min"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("reliability_min: 1.5", "reliability_min must be between 0 and 1 (got 1.5)"),
        ("max_dph: -0.1", "max_dph must be greater than 0 (got -0.1)"),
        ("num_gpus: 0", "num_gpus must be at least 1 (got 0)"),
        ("num_gpus: 1.5", "num_gpus must be a whole number (got 1.5)"),
        ("max_duration_hours: 0", "max_duration_hours must be greater than 0 (got 0)"),
        ("max_dph: cheap", "max_dph must be a number (got 'cheap')"),
        ("rental: spot", "rental must be 'on-demand' or 'interruptible' (got 'spot')"),
        ("rank_by: cost", "rank_by must be one of price, perf_per_dollar, score (got 'cost')"),
        ("disk_gb: 4", "disk_gb must be at least 8 (got 4)"),
        ("regions: [USA]", "regions must hold two-letter country codes like 'US' (got 'USA')"),
        ("verified: maybe", "verified must be true or false (got 'maybe')"),
        ("max_bid: 0.1", "max_bid only applies to rental: interruptible"),
        (
            "extra_query: {cpu_ram: {gtee: 1}}",
            "extra_query.cpu_ram: unknown operator 'gtee'; did you mean 'gte'?",
        ),
    ],
)
def test_out_of_range_values(line: str, expected: str) -> None:
    key = line.split(":", maxsplit=1)[0]
    price = "    rental: on-demand\n" if key == "max_dph" else "    max_dph: 1\n"
    text = f"profiles:\n  p:\n    gpu_name: RTX_4090\n{price}    {line}\n"
    with pytest.raises(ConfigError) as info:
        load_profiles(text)
    assert info.value.line == 5
    assert info.value.key == f"profiles.p.{key}"
    assert f"profile 'p': {expected}" in str(info.value)


def test_missing_required_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_profiles("profiles:\n  p:\n    num_gpus: 2\n")
    assert str(info.value) == (
        "<string>:2: profiles.p: profile 'p' is missing required keys 'gpu_name', 'max_dph'"
    )


def test_structure_errors() -> None:
    with pytest.raises(ConfigError, match=r"expected a top-level 'profiles:' mapping"):
        load_profiles("dev-test:\n  gpu_name: RTX_4090\n")
    with pytest.raises(ConfigError, match=r"unknown top-level key 'profile'; did you mean"):
        load_profiles("profiles:\n  p: {gpu_name: RTX_4090, max_dph: 1}\nprofile: {}\n")
    with pytest.raises(ConfigError, match=r"profile 'p' must be a mapping"):
        load_profiles("profiles:\n  p: 3\n")
    with pytest.raises(ConfigError) as info:
        load_profiles(
            "profiles:\n  p: {gpu_name: L4, max_dph: 1}\n  p: {gpu_name: A10, max_dph: 1}\n"
        )
    assert str(info.value) == "<string>:3: profiles.p: duplicate key 'p' (first on line 2)"


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_profiles("profiles:\n  p:\n    gpu_name: [RTX\n    max_dph: 1\n")
    assert info.value.line is not None
    assert "not valid YAML" in str(info.value)
    assert info.value.__cause__ is not None  # chained, but a ConfigError is what escapes


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_profiles(missing)
    assert str(info.value) == f"{missing}: GPU profiles file not found"
    with pytest.raises(ConfigError, match="GPU profiles file not found"):
        load_profiles(str(missing))
    with pytest.raises(ConfigError) as info:
        get_profile("dev-test", "config/profiles")
    assert str(info.value) == (
        "'config/profiles' is neither an existing file nor YAML text with a 'profiles:' mapping"
    )


def test_get_profile_unknown_lists_known_names(tmp_path: Path) -> None:
    assert get_profile("dev-test").max_dph == 0.35
    with pytest.raises(ConfigError) as info:
        get_profile("dev-tset")
    assert str(info.value) == (
        "unknown profile 'dev-tset'; known built-in profiles: dev-test, training-standard, "
        "training-distributed, inference-batch; did you mean 'dev-test'?"
    )
    path = tmp_path / "p.yaml"
    path.write_text(REFERENCE)
    assert get_profile("training-distributed", path).num_gpus == 4
    with pytest.raises(ConfigError, match=r"known profiles file: dev-test, training-distributed"):
        get_profile("inference-batch", path)


def test_python_construction_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"reliability_min must be between 0 and 1 \(got 2\)"):
        GpuProfile(name="x", gpu_name="RTX_4090", max_dph=1, reliability_min=2)
    with pytest.raises(ValueError, match="gpu_name must name at least one GPU"):
        GpuProfile(name="x", gpu_name=[], max_dph=1)


def test_from_dict_raises_config_error_with_key() -> None:
    with pytest.raises(ConfigError) as info:
        GpuProfile.from_dict("x", {"gpu_name": "X", "max_dph": 1, "num_gpu": 2})
    assert info.value.key == "profiles.x.num_gpu"
    assert "did you mean 'num_gpus'?" in str(info.value)

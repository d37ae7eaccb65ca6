"""The GPU catalog: Vast's names, families, underscores, and unknown names a user reads."""

from __future__ import annotations

import logging

import pytest

from vastkit.errors import ConfigError
from vastkit.gpus import GpuCatalog, UnknownGpuError, gpu_catalog, gpu_names_report
from vastkit.profiles import GpuProfile, load_profiles

from .conftest import make_offer


def test_catalog_has_the_official_cli_and_emulator_names() -> None:
    from vastai.data import query as vastai_names

    from vastkit.emulator._market import GPU_MODELS

    names = set(gpu_catalog().names)
    official = {v for k, v in vars(vastai_names).items() if k[0].isalpha() and isinstance(v, str)
                and k not in ("annotations",) and not k.islower()}  # fmt: skip
    assert {"A100 PCIE", "A100 SXM4", "A100X", "H100 SXM", "RTX 4090", "RTX 6000Ada"} <= names
    assert official - names == set()
    assert {model.name for model in GPU_MODELS} <= names


def test_underscores_and_case_give_vast_spelling() -> None:
    profile = GpuProfile(name="p", gpu_name=["H100_SXM", "rtx_4090", "RTX  6000Ada"], max_dph=9)
    assert profile.gpu_name == ("H100 SXM", "RTX 4090", "RTX 6000Ada")


def test_family_expands_with_a_notice(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vastkit.profiles"):
        profile = GpuProfile(name="p", gpu_name="A100", max_dph=2)
    assert profile.gpu_name == ("A100 PCIE", "A100 SXM4", "A100 SXM", "A100X")
    assert caplog.messages == [
        "gpu_name 'A100' is not one Vast model; it matches 4: A100 PCIE, A100 SXM4, A100 SXM, "
        "A100X (name one of them to choose)"
    ]


def test_a_model_is_never_a_family() -> None:
    catalog = gpu_catalog()
    assert catalog.resolve("A10").names == ("A10",)
    assert catalog.resolve("H200").names == ("H200",)
    assert catalog.family("RTX") == ()
    assert catalog.resolve("H100").names == ("H100 PCIE", "H100 SXM", "H100 NVL")


def test_unknown_name_is_a_config_error_with_line_and_suggestion() -> None:
    text = "profiles:\n  p:\n    max_dph: 1\n    gpu_name: [RTX_4090, RTX_4009]\n"
    with pytest.raises(ConfigError) as info:
        load_profiles(text)
    assert (info.value.path, info.value.line, info.value.key) == (
        "<string>",
        4,
        "profiles.p.gpu_name",
    )
    assert "unknown GPU 'RTX_4009': not a Vast GPU name; did you mean 'RTX_4090'?" in str(
        info.value
    )


def test_unknown_family_prefix_suggests_the_family() -> None:
    with pytest.raises(UnknownGpuError) as info:
        gpu_catalog().resolve("A10O")
    assert info.value.suggestion in ("A100", "A10")


def test_live_names_report_flags_unknown_and_register_accepts() -> None:
    offers = [make_offer(id=i, gpu_name=n) for i, n in enumerate(["RTX 4090", "RTX 4090", "B300"])]
    report = gpu_names_report(o.gpu_name for o in offers)
    assert report.counts == {"RTX 4090": 2, "B300": 1}
    assert report.unknown == ("B300",)
    assert "1 name(s) not in vastkit's catalog: B300" in str(report)
    assert GpuCatalog(gpu_catalog().names).with_names(report.unknown).resolve("B300").names == (
        "B300",
    )

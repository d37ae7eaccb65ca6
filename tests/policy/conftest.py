"""Shared helpers for the policy tests: offers and a hypothesis strategy for them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

from vastkit.api.models import Offer

NOW = 1_767_225_600.0  # 2026-01-01 UTC, ManualClock's default start


def make_offer(**overrides: Any) -> Offer:
    """A plausible 1x RTX 4090 on-demand offer; override any field."""
    fields: dict[str, Any] = {
        "id": 1000,
        "machine_id": 10,
        "num_gpus": 1,
        "gpu_name": "RTX 4090",
        "gpu_ram_mb": 24564.0,
        "cuda_max_good": 12.4,
        "inet_down_mbps": 800.0,
        "disk_space_gb": 200.0,
        "dph_base": 0.20,
        "dph_total": 0.2044,
        "storage_cost_per_gb_month": 0.20,
        "min_bid": 0.10,
        "reliability": 0.99,
        "verification": "verified",
        "hosting_type": 0,
        "geolocation": "California, US",
        "end_date": NOW + 30 * 86400,
        "dlperf": 60.0,
        "score": 100.0,
    }
    fields.update(overrides)
    return Offer(**fields)


@pytest.fixture
def offer_factory() -> Any:
    return make_offer


GPU_NAMES = ("RTX 4090", "RTX 3090", "H100 SXM")


@st.composite
def offers(draw: st.DrawFn, offer_id: int) -> Offer:
    """A random offer around the dev-test price range, with ids given by the caller."""
    return make_offer(
        id=offer_id,
        machine_id=draw(st.integers(1, 8)),
        num_gpus=draw(st.sampled_from([1, 1, 1, 1, 2])),
        gpu_name=draw(st.sampled_from((*GPU_NAMES, "RTX 4090", "RTX 4090"))),
        gpu_ram_mb=draw(st.sampled_from([12000.0, 24564.0, 81559.0])),
        cuda_max_good=draw(st.sampled_from([11.8, 12.2, 12.8])),
        inet_down_mbps=draw(st.sampled_from([10.0, 600.0, 2000.0])),
        disk_space_gb=draw(st.sampled_from([5.0, 60.0, 500.0])),
        dph_base=draw(st.sampled_from([0.05, 0.1, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5])),
        storage_cost_per_gb_month=draw(st.sampled_from([0.0, 0.1, 0.3])),
        min_bid=draw(st.one_of(st.none(), st.sampled_from([0.02, 0.05, 0.1, 0.2]))),
        reliability=draw(st.sampled_from([0.8, 0.9, 0.95, 0.97, 0.99, 0.99, 1.0])),
        verification=draw(st.sampled_from(["verified", "unverified"])),
        hosting_type=draw(st.sampled_from([0, 1])),
        geolocation=draw(st.sampled_from(["California, US", "Ontario, CA", "Bavaria, DE", None])),
        end_date=draw(st.one_of(st.none(), st.floats(NOW, NOW + 10 * 86400))),
        dlperf=draw(st.one_of(st.none(), st.sampled_from([10.0, 30.0, 60.0]))),
        score=draw(st.one_of(st.none(), st.sampled_from([1.0, 50.0, 100.0]))),
        rentable=draw(st.sampled_from([True, True, True, False])),
    )

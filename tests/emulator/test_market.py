"""The seeded catalog and the offer query language."""

from __future__ import annotations

import statistics

import pytest

from tests.emulator.conftest import CLI
from vastkit.clock import ManualClock
from vastkit.emulator import GPU_MODELS, Emulator


def test_catalog_is_deterministic_per_seed() -> None:
    clock = ManualClock()
    a = Emulator(7, offers=200, clock=clock).search({"limit": 200, "order": [["id", "asc"]]})
    b = Emulator(7, offers=200, clock=clock).search({"limit": 200, "order": [["id", "asc"]]})
    c = Emulator(8, offers=200, clock=clock).search({"limit": 200, "order": [["id", "asc"]]})
    assert a == b
    assert [o["id"] for o in a] != [o["id"] for o in c]


def test_default_catalog_is_realistic() -> None:
    emu = Emulator(0, clock=ManualClock())
    offers = emu.search({"rentable": {"eq": True}, "limit": 5000})
    assert len(offers) == 2000
    names = {o["gpu_name"] for o in offers}
    for name in (
        "RTX 3090",
        "RTX 4090",
        "RTX 5090",
        "RTX A6000",
        "L40S",
        "A100 PCIE",
        "A100 SXM4",
        "H100 PCIE",
        "H100 SXM",
        "H100 NVL",
    ):
        assert name in names
    bands = {m.name: (m.price_low, m.price_high) for m in GPU_MODELS}
    for name in ("RTX 4090", "H100 SXM"):
        per_gpu = [o["dph_base"] / o["num_gpus"] for o in offers if o["gpu_name"] == name]
        low, high = bands[name]
        assert low * 0.99 <= statistics.median(per_gpu) <= high
    counts = [o["num_gpus"] for o in offers]
    assert counts.count(1) > counts.count(2) > counts.count(8) > 0
    bids = [o["min_bid"] / o["dph_base"] for o in offers]
    assert 0.4 < statistics.median(bids) < 0.8
    assert any(r > 1.0 for r in bids)  # some bid floors exceed the on-demand price
    assert 0.9 < statistics.median(o["reliability"] for o in offers) < 1.0
    assert {o["verification"] for o in offers} == {"verified", "unverified", "deverified"}
    assert all(o["geolocation"].rsplit(", ", 1)[1].isupper() for o in offers)
    assert all(o["end_date"] > emu.clock.now() for o in offers)
    assert {o["cuda_max_good"] for o in offers} >= {12.2, 12.8}
    assert all(o["cuda_max_good"] >= 12.8 for o in offers if o["gpu_name"] == "RTX 5090")


def test_catalog_size_limits() -> None:
    with pytest.raises(ValueError, match="between 1 and 50000"):
        Emulator(0, offers=50_001, clock=ManualClock())


def test_string_numerics_aliases_and_multipliers(api: CLI) -> None:
    query = {
        "num_gpus": {"gte": "2", "lte": "4"},
        "reliability2": {"gt": "0.95"},
        "gpu_ram_GB": {"gte": "24"},
        "dph": {"lt": "3.5"},
        "cuda_vers": {"gte": "12.1"},
        "driver_version": {"gte": "535.86.05"},
        "limit": 500,
    }
    offers = api.search(**query).json()["offers"]
    assert offers
    for o in offers:
        assert 2 <= o["num_gpus"] <= 4
        assert o["reliability"] > 0.95
        assert o["gpu_ram"] >= 24000
        assert o["dph_total"] < 3.5
        assert o["cuda_max_good"] >= 12.1
        assert o["driver_vers"] >= 535086005


def test_in_notin_and_geolocation_country_codes(api: CLI) -> None:
    offers = api.search(
        geolocation={"in": ["US", "CA"]}, gpu_name={"notin": ["RTX 3090"]}, limit=500
    ).json()["offers"]
    assert offers
    assert {o["geolocation"][-2:] for o in offers} <= {"US", "CA"}
    assert all(o["gpu_name"] != "RTX 3090" for o in offers)


def test_virtual_columns(api: CLI, clock: ManualClock) -> None:
    unverified = api.search(verified={"eq": False}, limit=500).json()["offers"]
    assert unverified
    assert all(o["verification"] != "verified" for o in unverified)
    datacenter = api.search(datacenter={"eq": True}, limit=500).json()["offers"]
    assert datacenter
    assert all(o["hosting_type"] == 1 for o in datacenter)
    long = api.search(duration={"gte": str(30 * 86400)}, limit=500).json()["offers"]
    assert long
    assert all(o["end_date"] - clock.now() >= 30 * 86400 for o in long)
    roomy = api.search(allocated_storage=500, limit=500).json()["offers"]
    assert roomy
    assert all(o["disk_space"] >= 500 for o in roomy)


def test_dph_total_is_priced_with_allocated_storage(api: CLI) -> None:
    small = {o["id"]: o for o in api.search(allocated_storage=10, limit=50).json()["offers"]}
    big = {o["id"]: o for o in api.search(allocated_storage=100, limit=500).json()["offers"]}
    common = set(small) & set(big)
    assert common
    for offer_id in common:
        s, b = small[offer_id], big[offer_id]
        expected = 90 * s["storage_cost"] / 720
        assert abs((b["dph_total"] - s["dph_total"]) - expected) < 1e-5


def test_order_and_limit(api: CLI) -> None:
    offers = api.search(order=[["dph_total", "asc"]], limit=7).json()["offers"]
    assert len(offers) == 7
    prices = [o["dph_total"] for o in offers]
    assert prices == sorted(prices)
    multi = api.search(order=[["num_gpus", "desc"], ["dph_total", "asc"]], limit=50).json()
    rows = [(o["num_gpus"], o["dph_total"]) for o in multi["offers"]]
    assert rows == sorted(rows, key=lambda r: (-r[0], r[1]))


@pytest.mark.parametrize("kind", ["on-demand", "ondemand"])
def test_on_demand_spellings(api: CLI, kind: str) -> None:
    offers = api.search(type=kind, limit=3).json()["offers"]
    assert offers
    assert all(not o["is_bid"] for o in offers)


def test_bid_search_is_priced_at_min_bid(api: CLI) -> None:
    on_demand = {o["id"]: o for o in api.search(limit=300).json()["offers"]}
    bid = api.search(type="bid", limit=300).json()["offers"]
    assert bid
    for o in bid:
        assert o["is_bid"] is True
        assert abs(o["dph_total"] - (o["min_bid"] + 5.0 * o["storage_cost"] / 720)) < 1e-5
        if o["id"] in on_demand:
            assert o["min_bid"] == on_demand[o["id"]]["min_bid"]


def test_reserved_shows_discounted_prices(api: CLI) -> None:
    offer = api.search(type="reserved", limit=1).json()["offers"][0]
    assert offer["discounted_dph_total"] < offer["dph_total"]


def test_bad_queries_are_400(api: CLI) -> None:
    assert api.search(type="spot").status_code == 400
    bad_op = api.search(num_gpus={"about": "1"})
    assert bad_op.status_code == 400
    assert bad_op.json()["error"] == "invalid_args"
    assert api.search(num_gpus={"gte": "many"}).status_code == 400


def test_running_bid_raises_min_bid_and_keeps_the_offer_on_demand(api: CLI) -> None:
    offer = api.search(type="bid", order=[["dph_total", "asc"]], limit=1).json()["offers"][0]
    bid = round(offer["min_bid"] + 0.1, 4)
    api.rent(offer_id=offer["id"], price=bid)
    same = [
        o
        for o in api.search(type="bid", limit=1000).json()["offers"]
        if o["machine_id"] == offer["machine_id"]
    ]
    assert same
    assert same[0]["min_bid"] == bid
    on_demand = [
        o for o in api.search(limit=1000).json()["offers"] if o["machine_id"] == offer["machine_id"]
    ]
    assert on_demand
    assert on_demand[0]["rentable"] is True
    assert on_demand[0]["rented"] is True


@pytest.mark.slow
def test_large_catalog_builds_and_searches() -> None:
    emu = Emulator(1, offers=20_000, clock=ManualClock())
    found = emu.search(
        {
            "gpu_name": {"eq": "H100 SXM"},
            "num_gpus": {"eq": "8"},
            "order": [["dph_total", "asc"]],
            "limit": 5,
        }
    )
    assert len(found) == 5
    assert all(o["gpu_name"] == "H100 SXM" and o["num_gpus"] == 8 for o in found)

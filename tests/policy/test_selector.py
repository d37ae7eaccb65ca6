"""The selector: query building, effective prices, explanations and the ranking properties."""

from __future__ import annotations

import random

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vastkit.api.models import Offer
from vastkit.errors import NoOfferError
from vastkit.profiles import GpuProfile, get_profile
from vastkit.selector import (
    Candidate,
    Reason,
    bad_prices,
    build_query,
    effective_price,
    explain_offers,
    select_offers,
)

from .conftest import NOW, make_offer
from .conftest import offers as offer_strategy

DEV = GpuProfile(
    name="dev", gpu_name="RTX_4090", max_dph=0.25, reliability_min=0.95, max_duration_hours=4
)


def test_query_for_dev_test() -> None:
    wire = build_query(get_profile("dev-test")).to_dict()
    assert wire == {
        "gpu_name": {"eq": "RTX 4090"},
        "num_gpus": {"eq": 1},
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "reliability": {"gte": 0.95},
        "disk_space": {"gte": 16.0},
        "duration": {"gte": 4 * 3600.0},
        "dph_total": {"lte": 0.35},
        "verified": {"eq": True},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
        "limit": 1000,
        "allocated_storage": 16.0,
    }


def test_query_with_every_option() -> None:
    profile = GpuProfile(
        name="p",
        gpu_name=["RTX_3090", "RTX_4090"],
        max_dph=0.3,
        rental="interruptible",
        min_gpu_ram_gb=24,
        min_cuda=12.1,
        min_inet_down_mbps=100,
        regions=["US"],
        datacenter_only=True,
        verified=False,
        rank_by="perf_per_dollar",
        extra_query={"cpu_ram": {"gte": 32000}},
    )
    wire = build_query(profile, limit=50).to_dict()
    assert wire["gpu_name"] == {"in": ["RTX 3090", "RTX 4090"]}
    assert wire["gpu_ram"] == {"gte": 24000.0}
    assert wire["cuda_max_good"] == {"gte": 12.1}
    assert wire["inet_down"] == {"gte": 100}
    assert wire["geolocation"] == {"in": ["US"]}
    assert wire["datacenter"] == {"eq": True}
    assert "verified" not in wire
    assert wire["cpu_ram"] == {"gte": 32000}
    assert wire["type"] == "bid"
    assert wire["order"] == [["dlperf_per_dphtotal", "desc"]]
    assert wire["limit"] == 50


def test_effective_price_on_demand_includes_storage() -> None:
    offer = make_offer(dph_base=0.2, storage_cost_per_gb_month=0.36)
    price, bid, problem = effective_price(DEV, offer)
    # 16 GB x 0.36 / 720 = 0.008 $/h
    assert price == pytest.approx(0.208)
    assert bid is None
    assert problem is None


def test_effective_price_interruptible_bid_margin_and_caps() -> None:
    profile = GpuProfile(name="b", gpu_name="RTX 4090", max_dph=0.25, rental="interruptible")
    offer = make_offer(dph_base=0.5, min_bid=0.10, storage_cost_per_gb_month=0.0)
    price, bid, _ = effective_price(profile, offer)
    assert bid == pytest.approx(0.11)  # min_bid + 10 %
    assert price == pytest.approx(0.11)
    capped = GpuProfile(
        name="b", gpu_name="RTX 4090", max_dph=0.25, rental="interruptible", max_bid=0.105
    )
    assert effective_price(capped, offer)[1] == pytest.approx(0.105)
    too_low = GpuProfile(
        name="b", gpu_name="RTX 4090", max_dph=0.25, rental="interruptible", max_bid=0.05
    )
    assert effective_price(too_low, offer)[2] == "min_bid 0.1000 $/h > max_bid 0.05"


def test_explain_accounts_for_every_offer() -> None:
    offers = [
        make_offer(id=1, machine_id=1, dph_base=0.22),
        make_offer(id=2, machine_id=2, dph_base=0.18),
        make_offer(id=3, machine_id=3, dph_base=0.40),
        make_offer(id=4, machine_id=4, reliability=0.90),
        make_offer(id=5, machine_id=5, gpu_name="RTX 3090"),
        make_offer(id=6, machine_id=6, end_date=NOW + 3600),
        make_offer(id=7, machine_id=7),
        make_offer(id=8, machine_id=8, verification="unverified", dph_base=0.9),
    ]
    explanation = explain_offers(DEV, offers, now=NOW, blocked={7})
    assert [c.offer.id for c in explanation.candidates] == [2, 1]
    assert explanation.considered == 8
    assert {r.offer.id: r.reasons for r in explanation.rejections} == {
        3: (Reason.PRICE,),
        4: (Reason.RELIABILITY,),
        5: (Reason.GPU_NAME,),
        6: (Reason.CONTRACT_ENDS,),
        7: (Reason.BLOCKED,),
        8: (Reason.UNVERIFIED, Reason.PRICE),
    }
    assert explanation.counts()[Reason.PRICE] == 2
    assert sum(explanation.first_reason_counts().values()) == 6
    assert explanation.summary() == (
        "profile 'dev': 2 of 8 offers qualify; rejected: too expensive (2), GPU model not "
        "accepted (1), machine not verified (1), reliability too low (1), host contract ends "
        "too soon (1), machine blocked (1)"
    )
    text = str(explanation)
    assert "offer 6 (machine 6): contract ends in 1.0 h < max_duration_hours 4" in text
    assert "offer 3 (machine 3): 0.4044 $/h (0.4000 GPU + 0.0044 storage) > max_dph 0.25" in text


def test_no_offer_error_carries_the_explanation() -> None:
    offers = [make_offer(id=1, dph_base=0.5), make_offer(id=2, reliability=0.5, dph_base=0.6)]
    with pytest.raises(NoOfferError) as info:
        select_offers(DEV, offers, now=NOW)
    assert str(info.value) == (
        "no offer qualifies: profile 'dev': 0 of 2 offers qualify; rejected: too expensive (2), "
        "reliability too low (1)"
    )
    assert info.value.explanation.counts() == {Reason.PRICE: 2, Reason.RELIABILITY: 1}
    with pytest.raises(NoOfferError, match=r"0 of 0 offers qualify \(the search returned no"):
        select_offers(DEV, [], now=NOW)


def test_interruptible_needs_min_bid() -> None:
    profile = GpuProfile(name="b", gpu_name="RTX 4090", max_dph=0.25, rental="interruptible")
    explanation = explain_offers(profile, [make_offer(min_bid=None)], now=NOW)
    assert explanation.rejections[0].reasons == (Reason.NOT_BIDDABLE,)


def test_extra_query_is_rechecked() -> None:
    profile = GpuProfile(
        name="x", gpu_name="RTX 4090", max_dph=1, extra_query={"cpu_ram": {"gte": 64000}}
    )
    explanation = explain_offers(
        profile,
        [make_offer(id=1, cpu_ram_mb=32000.0), make_offer(id=2, cpu_ram_mb=128000.0)],
        now=NOW,
    )
    assert [c.offer.id for c in explanation.candidates] == [2]
    assert explanation.rejections[0].details == ("cpu_ram 32000.0 fails gte 64000",)


# --- properties --------------------------------------------------------------------------------

profiles = st.builds(
    GpuProfile,
    name=st.just("p"),
    gpu_name=st.sampled_from(["RTX_4090", ["RTX_4090", "RTX_3090"], ["RTX_3090"]]),
    max_dph=st.sampled_from([0.15, 0.25, 0.5, 1.0]),
    num_gpus=st.sampled_from([1, 1, 1, 2]),
    reliability_min=st.sampled_from([0.0, 0.9, 0.95]),
    max_duration_hours=st.sampled_from([1.0, 4.0, 4.0, 48.0]),
    rental=st.sampled_from(["on-demand", "interruptible"]),
    min_gpu_ram_gb=st.sampled_from([None, None, 20.0]),
    min_cuda=st.sampled_from([None, None, 12.0]),
    min_inet_down_mbps=st.sampled_from([None, None, 500.0]),
    disk_gb=st.sampled_from([8.0, 8.0, 50.0]),
    regions=st.sampled_from([(), (), ("US",), ("US", "CA")]),
    verified=st.sampled_from([False, False, True]),
    datacenter_only=st.sampled_from([False, False, True]),
    rank_by=st.sampled_from(["price", "perf_per_dollar", "score"]),
)
blocked_sets = st.frozensets(st.integers(1, 8), max_size=3)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[GpuProfile, list[Offer]]:
    """A profile and offers of which about half fit its structural constraints, so that price,
    reliability, contract end, blocking and ranking decide."""
    profile = draw(profiles)
    result = []
    for index in range(draw(st.integers(0, 10))):
        offer = draw(offer_strategy(offer_id=index + 1))
        if draw(st.booleans()):
            offer = attrs.evolve(
                offer,
                gpu_name=draw(st.sampled_from(profile.gpu_name)),
                num_gpus=profile.num_gpus,
                rentable=True,
                verification="verified",
                hosting_type=1,
                geolocation="California, US",
                gpu_ram_mb=81559.0,
                cuda_max_good=12.8,
                inet_down_mbps=2000.0,
                disk_space_gb=500.0,
                min_bid=draw(st.sampled_from([0.02, 0.05, 0.1])),
            )
        result.append(offer)
    return profile, result


def _satisfies(profile: GpuProfile, c: Candidate, blocked: frozenset[int]) -> bool:
    o: Offer = c.offer
    ends_ok = o.end_date is None or o.end_date >= NOW + profile.max_duration_hours * 3600
    return (
        o.gpu_name in profile.gpu_name
        and o.num_gpus == profile.num_gpus
        and o.rentable
        and not o.rented
        and (o.verified or not profile.verified)
        and (o.datacenter or not profile.datacenter_only)
        and (not profile.regions or o.country_code in profile.regions)
        and (profile.min_gpu_ram_gb is None or o.gpu_ram_mb >= profile.min_gpu_ram_gb * 1000)
        and (profile.min_cuda is None or (o.cuda_max_good or 0) >= profile.min_cuda)
        and (
            profile.min_inet_down_mbps is None
            or (o.inet_down_mbps or 0) >= profile.min_inet_down_mbps
        )
        and o.disk_space_gb >= profile.disk_gb
        and o.reliability >= profile.reliability_min
        and ends_ok
        and o.machine_id not in blocked
        and c.effective_dph <= profile.max_dph + 1e-12
        and c.effective_dph == pytest.approx(c.gpu_dph + o.storage_dph(profile.disk_gb))
        and (
            (c.bid is None and not profile.interruptible and c.gpu_dph == o.dph_base)
            or (
                c.bid is not None
                and profile.interruptible
                and o.min_bid is not None
                and c.bid >= o.min_bid
                and (profile.max_bid is None or c.bid <= profile.max_bid)
            )
        )
    )


def _key(profile: GpuProfile, c: Candidate) -> float:
    if profile.rank_by == "price":
        return c.effective_dph
    if profile.rank_by == "perf_per_dollar":
        return -c.perf_per_dollar
    return -(c.offer.score if c.offer.score is not None else float("-inf"))


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), blocked=blocked_sets)
def test_every_pick_satisfies_every_constraint_and_is_optimal(
    scenario: tuple[GpuProfile, list[Offer]], blocked: frozenset[int]
) -> None:
    profile, offers = scenario
    explanation = explain_offers(profile, offers, now=NOW, blocked=blocked)
    # every offer is accounted for exactly once
    ids = sorted(
        [c.offer.id for c in explanation.candidates] + [r.offer.id for r in explanation.rejections]
    )
    assert ids == sorted(o.id for o in offers)
    for candidate in explanation.candidates:
        assert _satisfies(profile, candidate, blocked)
    # the order is optimal under the ranking: keys never decrease
    keys = [_key(profile, c) for c in explanation.candidates]
    assert keys == sorted(keys)
    # rejections all have a reason
    assert all(r.reasons and len(r.reasons) == len(r.details) for r in explanation.rejections)


@settings(max_examples=100, deadline=None)
@given(scenario=scenarios(), blocked=blocked_sets, seed=st.integers(0, 10**6))
def test_ties_break_deterministically(
    scenario: tuple[GpuProfile, list[Offer]], blocked: frozenset[int], seed: int
) -> None:
    profile, offers = scenario
    shuffled = list(offers)
    random.Random(seed).shuffle(shuffled)
    first = explain_offers(profile, offers, now=NOW, blocked=blocked)
    second = explain_offers(profile, shuffled, now=NOW, blocked=blocked)
    assert [c.offer.id for c in first.candidates] == [c.offer.id for c in second.candidates]


@settings(max_examples=100, deadline=None)
@given(scenario=scenarios(), blocked=blocked_sets)
def test_no_offer_error_exactly_when_nothing_qualifies(
    scenario: tuple[GpuProfile, list[Offer]], blocked: frozenset[int]
) -> None:
    profile, offers = scenario
    qualifying = [
        o for o in offers if explain_offers(profile, [o], now=NOW, blocked=blocked).candidates
    ]
    if qualifying:
        picks = select_offers(profile, offers, now=NOW, blocked=blocked)
        assert {c.offer.id for c in picks} == {o.id for o in qualifying}
    else:
        with pytest.raises(NoOfferError) as info:
            select_offers(profile, offers, now=NOW, blocked=blocked)
        assert len(info.value.explanation.rejections) == len(offers)


# -- garbled prices (issue 16): dropped with a counted reason, never ranked first --------------

GARBAGE = (float("nan"), float("inf"), float("-inf"), -0.01, -1e9)
PRICE_FIELDS = (
    "dph_base",
    "dph_total",
    "storage_cost_per_gb_month",
    "min_bid",
    "inet_up_cost_per_gb",
    "inet_down_cost_per_gb",
)


@pytest.mark.parametrize("field", PRICE_FIELDS)
@pytest.mark.parametrize("value", GARBAGE, ids=repr)
def test_an_offer_with_a_nan_or_negative_price_is_dropped_with_a_counted_reason(
    field: str, value: float
) -> None:
    good = make_offer(id=1, machine_id=1, dph_base=0.20)
    garbled = make_offer(**{"id": 2, "machine_id": 2, "dph_base": 0.01, field: value})
    for profile in (DEV, attrs.evolve(DEV, rental="interruptible")):
        explanation = explain_offers(profile, [garbled, good], now=NOW)

        assert [c.offer.id for c in explanation.candidates] == [1]
        (rejection,) = explanation.rejections
        assert rejection.offer.id == 2
        assert rejection.reasons[0] is Reason.BAD_PRICE
        assert Reason.PRICE not in rejection.reasons  # a garbled price prices nothing
        assert explanation.counts()[Reason.BAD_PRICE] == 1
        assert "price not a finite number of 0 or more (1)" in explanation.summary()
        name = {"storage_cost_per_gb_month": "storage_cost"}.get(field, field)
        name = name.replace("_per_gb", "")
        assert f"bad price: {name} {value!r}" in str(rejection)


def test_only_garbled_offers_give_a_no_offer_error_that_counts_them() -> None:
    offers = [make_offer(id=i, machine_id=i, dph_base=-1.0) for i in range(3)]
    with pytest.raises(NoOfferError, match=r"price not a finite number of 0 or more \(3\)"):
        select_offers(DEV, offers, now=NOW)


def test_a_nan_in_a_checked_field_fails_closed() -> None:
    nan = float("nan")
    profile = attrs.evolve(DEV, min_cuda=12.0, min_inet_down_mbps=100.0, min_gpu_ram_gb=20.0)
    cases = {
        "reliability": Reason.RELIABILITY,
        "disk_space_gb": Reason.DISK,
        "cuda_max_good": Reason.CUDA,
        "inet_down_mbps": Reason.INET_DOWN,
        "gpu_ram_mb": Reason.GPU_RAM,
        "end_date": Reason.CONTRACT_ENDS,
    }
    for i, (field, reason) in enumerate(cases.items()):
        explanation = explain_offers(profile, [make_offer(id=i, **{field: nan})], now=NOW)
        assert explanation.rejections[0].reasons == (reason,), field
    # a NaN dlperf ranks like no dlperf, never as a NaN that breaks the order
    ppd = attrs.evolve(DEV, rank_by="perf_per_dollar")
    picks = select_offers(
        ppd, [make_offer(id=1, machine_id=1, dlperf=nan), make_offer(id=2, machine_id=2)], now=NOW
    )
    assert [c.offer.id for c in picks] == [2, 1]
    assert picks[1].perf_per_dollar == 0.0


_garbage = st.one_of(st.sampled_from(GARBAGE), st.floats(max_value=-1e-9), st.just(float("nan")))


@settings(max_examples=150, deadline=None)
@given(
    scenario=scenarios(),
    damage=st.lists(st.tuples(st.sampled_from(PRICE_FIELDS), _garbage), min_size=1, max_size=3),
    which=st.integers(0, 10**6),
)
def test_a_garbled_offer_is_never_a_candidate(
    scenario: tuple[GpuProfile, list[Offer]], damage: list[tuple[str, float]], which: int
) -> None:
    profile, offers = scenario
    if not offers:
        return
    index = which % len(offers)
    garbled = attrs.evolve(offers[index], **dict(damage))
    offers = [*offers[:index], garbled, *offers[index + 1 :]]

    explanation = explain_offers(profile, offers, now=NOW)

    assert garbled.id not in {c.offer.id for c in explanation.candidates}
    assert explanation.counts()[Reason.BAD_PRICE] == 1
    for candidate in explanation.candidates:
        assert bad_prices(candidate.offer) == []
        assert candidate.effective_dph >= 0

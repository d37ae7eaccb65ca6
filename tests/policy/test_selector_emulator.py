"""The selector against the emulator's market, over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vastkit.api.client import Client
from vastkit.api.models import Offer
from vastkit.api.query import OfferQuery
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator, serve
from vastkit.errors import NoOfferError
from vastkit.profiles import GpuProfile, builtin_profiles
from vastkit.selector import build_query, explain_offers, select_offers

RELAXED = GpuProfile(
    name="relaxed-4090", gpu_name="RTX_4090", max_dph=0.6, reliability_min=0.9,
    max_duration_hours=8,
)  # fmt: skip
BID = GpuProfile(
    name="bid-3090", gpu_name=["RTX_3090", "RTX_4090"], max_dph=0.3, rental="interruptible",
    max_duration_hours=8,
)  # fmt: skip


@pytest.fixture(scope="module")
def market() -> Iterator[tuple[Emulator, Client, ManualClock]]:
    clock = ManualClock()
    with (
        serve(seed=0, clock=clock, offers=600, rate_limits=False) as emulator,
        Client(emulator.api_key, base_url=emulator.url, clock=clock, max_retries=0) as client,
    ):
        yield emulator, client, clock


@pytest.mark.parametrize("profile", [*builtin_profiles().values(), RELAXED, BID], ids=str)
def test_pick_is_what_a_careful_human_would_pick(
    market: tuple[Emulator, Client, ManualClock], profile: GpuProfile
) -> None:
    _, client, clock = market
    now = clock.now()
    # A broad search: only the GPU model and count, so the selector sees every near-miss.
    broad = (
        OfferQuery()
        .where("gpu_name", "in", list(profile.gpu_name))
        .where("num_gpus", "eq", profile.num_gpus)
        .with_type("interruptible" if profile.interruptible else "on-demand")
        .with_storage(profile.disk_gb)
        .with_limit(1000)
    )
    everything = client.search_offers(broad)
    explanation = explain_offers(profile, everything, now=now)
    assert explanation.considered == len({o.id for o in everything})
    assert sum(explanation.first_reason_counts().values()) == len(explanation.rejections)

    # The careful human, written out independently: every hard constraint by hand, storage for
    # the profile's disk included in the price, the cheapest possible bid for interruptible.
    def human_price(offer: Offer) -> float:
        gpu = (offer.min_bid or 0.0) if profile.interruptible else offer.dph_base
        return gpu + offer.storage_dph(profile.disk_gb)

    acceptable = [
        o for o in everything
        if o.rentable and not o.rented
        and (o.verified or not profile.verified)
        and o.reliability >= profile.reliability_min
        and o.disk_space_gb >= profile.disk_gb
        and (o.end_date is None or o.end_date >= now + profile.max_duration_s)
        and (o.min_bid is not None or not profile.interruptible)
        and human_price(o) <= profile.max_dph
    ]  # fmt: skip
    assert {c.offer.id for c in explanation.candidates} == {o.id for o in acceptable}
    narrow = client.search_offers(build_query(profile))
    if not acceptable:
        with pytest.raises(NoOfferError) as info:
            select_offers(profile, narrow, now=now)
        assert "offers qualify" in str(info.value)
        return
    if profile.rank_by == "price" and not profile.interruptible:
        assert explanation.candidates[0].effective_dph == min(map(human_price, acceptable))
    if profile.rank_by == "perf_per_dollar":
        best = max((o.dlperf or 0) / human_price(o) for o in acceptable)
        assert explanation.candidates[0].perf_per_dollar == pytest.approx(best)
    # The server-side query finds the same best offer as the broad search.
    pick = select_offers(profile, narrow, now=now)[0]
    assert pick.offer.id == explanation.candidates[0].offer.id

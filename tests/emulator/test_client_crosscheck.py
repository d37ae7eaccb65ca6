"""vastkit's own client, written separately from the reference, works against the emulator.

This is the cross-check the emulator exists for: the two were written independently from the
same reference, so a disagreement here is a bug in one of them (or in the reference).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from vastkit.clock import ManualClock
from vastkit.emulator import Emulator

client_module = pytest.importorskip("vastkit.api.client")
models = pytest.importorskip("vastkit.api.models")


@pytest.fixture
def setup() -> Iterator[tuple[Emulator, Any, ManualClock]]:
    clock = ManualClock()
    with Emulator(0, offers=300, clock=clock) as emu:  # documented rate limits on
        http = httpx.Client(transport=emu.transport)
        client = client_module.Client(
            api_key=emu.api_key, base_url=emu.url, http_client=http, clock=clock
        )
        try:
            yield emu, client, clock
        finally:
            client.close()
            http.close()


def test_rent_watch_outbid_and_destroy_with_the_client(
    setup: tuple[Emulator, Any, ManualClock],
) -> None:
    emu, c, clock = setup
    offers = c.search_offers("gpu_name=RTX_4090 reliability>0.9", order="dph+", limit=3)
    assert offers
    assert all(o.gpu_name == "RTX 4090" for o in offers)
    assert [o.dph_total for o in offers] == sorted(o.dph_total for o in offers)
    created = c.create_instance(
        offers[0].id, models.CreateInstanceRequest(image="pytorch/pytorch", label="vastkit/r/1")
    )
    clock.advance(60)
    inst = c.get_instance(created.id)
    assert inst is not None
    assert inst.state == models.InstanceState.RUNNING
    assert "22/tcp" in inst.ports
    assert [i.label for i in c.list_instances(label="vastkit/r/1")] == ["vastkit/r/1"]
    bid_offer = c.search_offers(None, type="bid", order="dph+", limit=1)[0]
    bid = c.create_instance(
        bid_offer.id, models.CreateInstanceRequest(image="x", price=bid_offer.min_bid + 0.01)
    )
    clock.advance(60)
    emu.preempt(bid.id)
    assert c.get_instance(bid.id).state == models.InstanceState.OUTBID
    c.change_bid(bid.id, 5.0)
    clock.advance(60)
    assert c.get_instance(bid.id).state == models.InstanceState.RUNNING
    user = c.current_user()
    assert user.total_spend == pytest.approx(emu.user.total_spend, abs=1e-5)
    charges = c.charges(0, clock.now())
    assert {ch.source for ch in charges} == {f"instance-{created.id}", f"instance-{bid.id}"}
    assert c.destroy_instance(created.id) is True
    assert c.destroy_instance(created.id) is False
    assert c.get_instance(created.id) is None

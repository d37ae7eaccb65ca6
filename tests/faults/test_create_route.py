"""A create answered by the route instead of Vast's create handler (issue 15, gone means gone).

Vast says an offer is gone with ``no_such_ask`` (404 ``invalid_args`` or 410): the job moves on to
the next offer and stays off that machine. Any other 404 or 410 on the create route (a proxy's
HTML page, "No such endpoint", a 410 ``deprecated_endpoint``) says nothing about the offer: the
route itself has moved, so no other offer can help. The job lists by label (the create may have
gone through behind the page), adopts what it finds, and otherwise stops with a
``RouteNotFoundError`` after one create, with nothing rented and nothing left open.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.conftest import FaultWorld, reasons, succeeded
from vastkit.errors import RouteNotFoundError

pytestmark = pytest.mark.faults

PAGES = ["html", "no_such_endpoint", "deprecated", "empty"]


@pytest.mark.parametrize("page", PAGES)
def test_a_moved_create_route_stops_the_job_after_one_create(
    world_factory: Callable[..., FaultWorld], page: str
) -> None:
    world = world_factory()
    world.workers(total_steps=30)
    world.emu.inject("missing_route", "create", count=None, page=page)  # type: ignore[arg-type]

    outcome = world.run(world.job())

    assert isinstance(outcome.error, RouteNotFoundError), outcome
    assert "PUT /api/v0/asks/" in str(outcome.error)
    assert "not Vast's answer" in str(outcome.error)
    assert world.creates() == 1  # not sent again, not tried on the next offer
    assert world.emu.instances == []
    assert world.ledger.pending_intents() == []
    runs = world.ledger.runs()
    assert [r.status for r in runs] == ["failed"]
    assert [a.end_reason for a in world.ledger.attempts(runs[0].run_id)] == ["route_missing"]


def test_a_create_that_rented_behind_a_route_page_is_adopted(
    world_factory: Callable[..., FaultWorld],
) -> None:
    """The create went through, but a proxy answered with its 404 page: found by label."""
    world = world_factory()
    world.workers(total_steps=30)
    world.emu.inject("missing_route", "create", page="html", processed=True)

    result = succeeded(world.run(world.job()))

    assert reasons(result) == ["succeeded"]
    assert world.creates() == 1
    world.assert_invariants()


@pytest.mark.parametrize("status", [404, 410])
def test_vasts_no_such_ask_moves_on_to_the_next_offer(
    world_factory: Callable[..., FaultWorld], status: int
) -> None:
    world = world_factory()
    world.workers(total_steps=30)
    world.emu.inject("offer_gone", "create", status=status)

    result = succeeded(world.run(world.job()))

    assert reasons(result) == ["offer_gone", "succeeded"]
    first, second = result.attempts
    assert first.machine_id != second.machine_id
    world.assert_invariants()


def test_an_unrelated_404_on_create_is_not_an_offer_gone(
    world_factory: Callable[..., FaultWorld],
) -> None:
    """A JSON 404 without ``no_such_ask`` (here ``internal_error``) is the route's, not Vast's."""
    world = world_factory()
    world.workers(total_steps=30)
    world.emu.inject("status", "create", status=404)

    outcome = world.run(world.job())

    assert isinstance(outcome.error, RouteNotFoundError), outcome
    assert world.emu.instances == []
    assert world.ledger.pending_intents() == []

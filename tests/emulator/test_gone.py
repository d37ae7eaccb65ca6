"""Gone means gone, against the emulator (issue 15, item 4).

The emulator answers a destroy or show of an unknown or destroyed instance exactly as Vast does
(404 ``no_such_instance``; ``{"instances": null}``), and its ``missing_route`` fault answers as a
moved or retired route would (an HTML 404 page, "No such endpoint", 410 ``deprecated_endpoint``,
an empty 404). vastkit must read only the first as gone: with the route fault on, the instance
keeps billing, so it stays open in the ledger and the destroy keeps being retried.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator.conftest import CLI
from vastkit._owner import owner_metadata
from vastkit._provision import destroy_confirmed
from vastkit.api import Client, CreateInstanceRequest
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator
from vastkit.errors import AuthenticationError, DestroyFailedError, RouteNotFoundError
from vastkit.labels import make_label
from vastkit.ledger import Ledger
from vastkit.reconcile import reconcile

PAGES = ["html", "no_such_endpoint", "deprecated", "empty"]


@pytest.fixture
def client(emu: Emulator, clock: ManualClock) -> Iterator[Client]:
    with (
        httpx.Client(transport=emu.transport) as http,
        Client(
            emu.api_key,
            base_url=emu.url,
            http_client=http,
            clock=clock,
            max_retries=2,
            rng=random.Random(3),
        ) as c,
    ):
        yield c


@pytest.fixture
def ledger(tmp_path: Path, clock: ManualClock) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db", clock=clock) as led:
        yield led


def live(emu: Emulator) -> set[int]:
    return {i.id for i in emu.instances}


# --- the emulator's answers ------------------------------------------------------------------


def test_destroy_and_show_of_a_gone_instance_answer_like_vast(cli: CLI) -> None:
    instance_id = cli.rent()
    assert cli.destroy(instance_id).json() == {
        "success": True,
        "msg": f"Instance {instance_id} destroyed.",
    }
    for gone in (instance_id, 999):  # destroyed, and never existed
        again = cli.destroy(gone)
        assert again.status_code == 404
        assert again.headers["content-type"] == "application/json"
        body = again.json()
        assert body["success"] is False
        assert body["error"] == "no_such_instance"
        assert f"no_such_instance {gone}" in body["msg"]
        shown = cli.show(gone)
        assert (shown.status_code, shown.json()) == (200, {"instances": None})


def test_an_unknown_path_answers_no_such_endpoint(cli: CLI) -> None:
    answer = cli.request("DELETE", "/api/v0/instancez/5/")
    assert answer.status_code == 404
    assert answer.json() == {
        "success": False,
        "error": "not_found",
        "msg": "No such endpoint: /api/v0/instancez/5/",
    }


def _says(answer: httpx.Response, key: str, start: str) -> bool:
    return str(answer.json()[key]).startswith(start)


ROUTE_PAGES: dict[str, tuple[int, str, Any]] = {
    "html": (404, "text/html", lambda a: "<title>404 Not Found</title>" in a.text),
    "no_such_endpoint": (
        404,
        "application/json",
        lambda a: _says(a, "msg", "No such endpoint: /api/v0/instances/"),
    ),
    "deprecated": (410, "application/json", lambda a: _says(a, "error", "deprecated_endpoint")),
    "empty": (404, "text/plain; charset=utf-8", lambda a: a.content == b""),
}
"""page -> (status, content type, a check of the body)."""


@pytest.mark.parametrize("page", PAGES)
def test_the_missing_route_fault_answers_without_reaching_the_handler(
    emu: Emulator, cli: CLI, page: str
) -> None:
    status, content_type, check = ROUTE_PAGES[page]
    instance_id = cli.rent()
    rule = emu.inject("missing_route", "destroy", page=page)  # type: ignore[arg-type]
    answer = cli.destroy(instance_id)
    assert (answer.status_code, answer.headers["content-type"]) == (status, content_type)
    assert check(answer)
    assert rule.fired == 1
    assert instance_id in live(emu)  # the destroy never happened
    assert cli.destroy(instance_id).status_code == 200  # the fault is spent


def test_an_unknown_missing_route_page_is_refused(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="page"):
        emu.inject("missing_route", "destroy", page="teapot")  # type: ignore[arg-type]


def test_a_bad_key_on_show_is_404_auth_error_not_gone(cli: CLI) -> None:
    instance_id = cli.rent()
    for headers in ({"Authorization": "Bearer nope"}, {}):
        shown = cli.http.get(f"/api/v0/instances/{instance_id}/?owner=me", headers=headers)
        assert shown.status_code == 404
        assert shown.json() == {"success": False, "error": "auth_error", "msg": "Invalid user key"}
    bad_destroy = cli.http.request(
        "DELETE", f"/api/v0/instances/{instance_id}/", headers={"Authorization": "Bearer nope"}
    )
    assert bad_destroy.status_code == 401


# --- the client against them -----------------------------------------------------------------


def rent(client: Client, label: str | None = None) -> int:
    offer = client.search_offers(None, order="dph+", limit=1)[0]
    request = CreateInstanceRequest(image="pytorch/pytorch:latest", disk_gb=16, label=label)
    return client.create_instance(offer.id, request).id


@pytest.mark.parametrize("page", PAGES)
def test_the_client_raises_on_a_route_answer_and_reads_a_real_gone(
    emu: Emulator, client: Client, page: str
) -> None:
    instance_id = rent(client)
    emu.inject("missing_route", "destroy", page=page)  # type: ignore[arg-type]
    with pytest.raises(RouteNotFoundError) as caught:
        client.destroy_instance(instance_id)
    assert caught.value.route == f"DELETE /api/v0/instances/{instance_id}/"
    assert emu.api_key not in str(caught.value)
    assert instance_id in live(emu)
    emu.inject("missing_route", "show", page=page)  # type: ignore[arg-type]
    with pytest.raises(RouteNotFoundError):
        client.get_instance(instance_id)
    assert client.destroy_instance(instance_id) is True
    assert client.destroy_instance(instance_id) is False  # Vast's own no_such_instance
    assert client.get_instance(instance_id) is None  # Vast's own {"instances": null}


def test_the_client_reads_a_bad_key_on_show_as_an_authentication_error(
    emu: Emulator, client: Client, clock: ManualClock
) -> None:
    instance_id = rent(client)
    with (
        httpx.Client(transport=emu.transport) as http,
        Client("not-the-key", base_url=emu.url, http_client=http, clock=clock) as stranger,
    ):
        with pytest.raises(AuthenticationError):
            stranger.get_instance(instance_id)
        with pytest.raises(AuthenticationError):
            destroy_confirmed(stranger, instance_id, clock=clock, deadline=60)
    assert instance_id in live(emu)


@pytest.mark.parametrize("page", PAGES)
def test_destroy_confirmed_keeps_retrying_a_missing_route_then_fails_loudly(
    emu: Emulator, client: Client, clock: ManualClock, page: str
) -> None:
    instance_id = rent(client)
    rule = emu.inject("missing_route", "destroy", count=None, page=page)  # type: ignore[arg-type]
    started = clock.now()
    with pytest.raises(DestroyFailedError) as caught:
        destroy_confirmed(client, instance_id, clock=clock, deadline=120, max_delay=10)
    assert caught.value.instance_id == instance_id
    assert rule.fired >= 5  # it kept trying until the deadline
    assert clock.now() - started >= 100
    assert instance_id in live(emu)


def test_destroy_confirmed_rides_out_a_missing_route_until_the_real_destroy(
    emu: Emulator, client: Client, clock: ManualClock
) -> None:
    instance_id = rent(client)
    rule = emu.inject("missing_route", "destroy", count=3, page="html")
    destroy_confirmed(client, instance_id, clock=clock, deadline=120)
    assert rule.fired == 3
    assert instance_id not in live(emu)


# --- end to end: the ledger keeps the instance until a real "gone" ----------------------------


def record_dead_owner_run(ledger: Ledger, clock: ManualClock, run_id: str, instance_id: int) -> int:
    dead = {**owner_metadata(), "pid": 2**22 + 4321}
    ledger.record_run(run_id, metadata={"owner": dead}, status="running")
    label = make_label(run_id, 1, ledger_id=ledger.ledger_id)
    intent = ledger.begin_intent(run_id, 1, offer_id=1, label=label)
    attempt = ledger.record_attempt(
        run_id, 1, offer_id=1, machine_id=1, label=label, intent_at=clock.now()
    )
    ledger.complete_intent(intent, instance_id=instance_id)
    ledger.update_attempt(attempt, instance_id=instance_id, created_at=clock.now())
    ledger.add_cost_sample(attempt, state="running", rate_dph=0.36)
    return attempt


@pytest.mark.parametrize("page", ["html", "no_such_endpoint", "deprecated"])
def test_reconcile_keeps_the_attempt_open_until_vast_says_gone(
    emu: Emulator, client: Client, ledger: Ledger, clock: ManualClock, page: str
) -> None:
    instance_id = rent(client, make_label("moved", 1, ledger_id=ledger.ledger_id))
    attempt = record_dead_owner_run(ledger, clock, "moved", instance_id)
    emu.inject("missing_route", "destroy", count=None, page=page)  # type: ignore[arg-type]

    report = reconcile(client, ledger, destroy_deadline=60)

    assert [x.instance_id for x in report.failed] == [instance_id]
    assert report.destroyed == ()
    assert instance_id in live(emu)
    row = ledger.get_attempt(attempt)
    assert row is not None
    assert (row.ended_at, row.destroyed_at, row.end_reason) == (None, None, None)

    emu.clear_faults()
    clock.advance(60)
    again = reconcile(client, ledger, destroy_deadline=60)
    assert [x.instance_id for x in again.destroyed] == [instance_id]
    assert live(emu) == set()
    row = ledger.get_attempt(attempt)
    assert row is not None
    assert row.end_reason == "reconciled"
    assert row.destroyed_at is not None


def test_reconcile_closes_the_attempt_on_a_real_gone_behind_the_fault(
    emu: Emulator, client: Client, ledger: Ledger, clock: ManualClock
) -> None:
    """The first destroy takes effect but its answer is a proxy's HTML 404, and so is the
    second's; only the third answer, Vast's own no_such_instance, closes the attempt."""
    instance_id = rent(client, make_label("proxied", 1, ledger_id=ledger.ledger_id))
    attempt = record_dead_owner_run(ledger, clock, "proxied", instance_id)
    rule = emu.inject("missing_route", "destroy", count=2, page="html", processed=True)

    report = reconcile(client, ledger, destroy_deadline=60)

    assert rule.fired == 2
    assert [x.instance_id for x in report.destroyed] == [instance_id]
    assert report.failed == ()
    assert live(emu) == set()
    row = ledger.get_attempt(attempt)
    assert row is not None
    assert row.end_reason == "reconciled"
    assert row.destroyed_at is not None

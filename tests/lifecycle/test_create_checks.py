"""The check after a create that may have rented, and what it costs.

The reference (section 9.2) says Vast enforces its minimum intervals per key and answers 429;
it does not say the create handler never ran. So a create answered 429 is still followed by a
list by label before it is sent again, as are a timeout, a dropped answer and a 5xx. The
creates of one account in the process share those lists (``LabelSweeps``): creates answered
429 together cost one or two lists, not one each; a list only answers for the creates that
asked before it was sent.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

from tests._support.api_factories import offer_json
from tests._support.waiting import wait_until
from vastkit._label_sweeps import LabelSweeps, label_sweeps_for
from vastkit._provision import Provisioner
from vastkit.access import RentalAccess
from vastkit.api import CreateInstanceRequest
from vastkit.api._converter import structure
from vastkit.api.client import Client
from vastkit.api.models import Offer
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator, Timings
from vastkit.ledger import Ledger

BASE = "https://vast.test"
CREATE = r"/api/v0/asks/\d+/"
LIST = "/api/v1/instances/"
TOO_FREQUENT = {"detail": "API requests too frequent endpoint threshold=4.5"}


def engine(client: Client, ledger: Ledger, clock: ManualClock) -> Provisioner:
    return Provisioner(client, ledger, clock, access=RentalAccess())


def label(n: int = 1) -> str:
    return f"vastkit/r-20260101-{n:04d}/1"


def offer(offer_id: int = 7) -> Offer:
    return structure(offer_json(offer_id), Offer)


@pytest.fixture
def ledger(tmp_path: Path, clock: ManualClock) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db", clock=clock) as opened:
        yield opened


# --- on the emulator: what the server sees -------------------------------------------------------


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[Emulator]:
    with Emulator(0, offers=50, clock=clock, rate_limits=False, timings=Timings()) as emu:
        yield emu


def emulator_client(emu: Emulator, clock: ManualClock) -> Client:
    return Client(emu.api_key, base_url=emu.url, http_client=emu.client(), clock=clock)


def first_offer(emu: Emulator) -> Offer:
    return structure(emu.search({"limit": 1})[0], Offer)


def test_a_create_answered_429_is_checked_by_label_then_sent_again(
    emulator: Emulator, ledger: Ledger, clock: ManualClock
) -> None:
    emulator.inject("rate_limit", "create")
    with emulator_client(emulator, clock) as client:
        created = engine(client, ledger, clock).create(
            first_offer(emulator), CreateInstanceRequest(image="img", label=label())
        )
    assert emulator.requests == [
        ("PUT", "create", 429),
        ("GET", "list", 200),
        ("PUT", "create", 200),
    ]
    assert [i.id for i in emulator.instances] == [created]


def test_a_create_whose_answer_was_lost_is_found_by_label_not_sent_again(
    emulator: Emulator, ledger: Ledger, clock: ManualClock
) -> None:
    emulator.inject("drop", "create", processed=True)  # rented, then the connection dropped
    with emulator_client(emulator, clock) as client:
        created = engine(client, ledger, clock).create(
            first_offer(emulator), CreateInstanceRequest(image="img", label=label())
        )
    assert [(method, endpoint) for method, endpoint, _ in emulator.requests] == [
        ("PUT", "create"),
        ("GET", "list"),
    ]
    assert [(i.id, i.label) for i in emulator.instances] == [(created, label())]


# --- with a fake server: timeouts and many creates at once ---------------------------------------


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


@pytest.fixture
def http(router: respx.Router) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.MockTransport(router.handler)) as client:
        yield client


def client_on(http: httpx.Client, clock: ManualClock, key: str) -> Client:
    return Client(key, base_url=BASE, http_client=http, clock=clock, min_intervals={})


def list_answer(instances: list[dict[str, object]] | None = None) -> httpx.Response:
    return httpx.Response(
        200, json={"success": True, "instances": instances or [], "next_token": None}
    )


def test_a_create_that_timed_out_is_still_checked_by_label(
    router: respx.Router, http: httpx.Client, ledger: Ledger, clock: ManualClock
) -> None:
    calls: list[str] = []

    def create(request: httpx.Request) -> httpx.Response:
        calls.append("create")
        if len(calls) == 1:
            raise httpx.ReadTimeout("the answer never came", request=request)
        return httpx.Response(200, json={"success": True, "new_contract": 31})

    def listed(request: httpx.Request) -> httpx.Response:
        calls.append(f"list {json.loads(request.url.params['select_filters'])}")
        return list_answer()

    router.put(url__regex=CREATE).mock(side_effect=create)
    router.get(LIST).mock(side_effect=listed)
    with client_on(http, clock, f"vk-{uuid.uuid4().hex}") as client:
        created = engine(client, ledger, clock).create(
            offer(), CreateInstanceRequest(image="img", label=label())
        )
    assert created == 31
    assert calls == ["create", f"list { {'label': {'eq': label()}} }", "create"]


def test_creates_answered_429_together_share_the_lists(
    router: respx.Router, http: httpx.Client, ledger: Ledger, clock: ManualClock
) -> None:
    """Four jobs, each with its own Client on one key, all answered 429: two lists, not four.

    The first create to ask sends a list for its label at once; the others, answered while that
    list is out, wait for the next one (the one out was sent before their answers), which asks
    for all three labels together."""
    jobs = 4
    key = f"vk-{uuid.uuid4().hex}"
    lock = threading.Lock()
    creates: list[int] = []
    lists: list[dict[str, object]] = []
    contracts = itertools.count(100)
    clients = [client_on(http, clock, key) for _ in range(jobs)]
    sweeps = label_sweeps_for(clients[0].account_id)

    def create(request: httpx.Request) -> httpx.Response:
        with lock:
            creates.append(int(request.url.path.rstrip("/").rsplit("/", 1)[1]))
            if len(creates) <= jobs:
                return httpx.Response(429, json=TOO_FREQUENT)
            return httpx.Response(200, json={"success": True, "new_contract": next(contracts)})

    def listed(request: httpx.Request) -> httpx.Response:
        with lock:
            lists.append(json.loads(request.url.params["select_filters"]))
            first = len(lists) == 1
        if first:  # held until every other create waits for the next list
            wait_until(lambda: sweeps.waiting() == jobs - 1, "the other creates wait")
        return list_answer()

    router.put(url__regex=CREATE).mock(side_effect=create)
    router.get(LIST).mock(side_effect=listed)
    results: dict[int, int | object] = {}

    def rent(n: int) -> None:
        request = CreateInstanceRequest(image="img", label=label(n))
        results[n] = engine(clients[n], ledger, clock).create(offer(10 + n), request)

    threads = [threading.Thread(target=rent, args=(n,)) for n in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for client in clients:
        client.close()

    assert sorted(results.values()) == [100, 101, 102, 103]  # type: ignore[type-var]
    assert len(creates) == 2 * jobs
    first, second = lists
    [(first_label, _)] = [(v["eq"], k) for k, v in first.items()]  # type: ignore[union-attr]
    assert second == {
        "label": {"in": sorted(label(n) for n in range(jobs) if label(n) != first_label)}
    }
    assert sum(c.stats.requests.get("list_instances", 0) for c in clients) == 2


def test_creates_on_two_keys_do_not_share_lists(http: httpx.Client) -> None:
    one, other = client_on(http, ManualClock(), "vk-one"), client_on(http, ManualClock(), "vk-2")
    with one, other:
        assert label_sweeps_for(one.account_id) is not label_sweeps_for(other.account_id)
        assert label_sweeps_for(one.account_id) is label_sweeps_for(one.account_id)


# --- the sweeps themselves -----------------------------------------------------------------------


def test_a_list_sent_before_a_caller_asked_never_answers_for_it() -> None:
    sweeps = LabelSweeps()
    out = threading.Event()
    release = threading.Event()
    sent: list[frozenset[str]] = []

    def slow_lister(labels: frozenset[str]) -> list[tuple[int, str | None]]:
        sent.append(labels)
        out.set()
        release.wait(30)
        return [(5, "a"), (7, " b ")]  # an answer that would wrongly serve b

    def quick_lister(labels: frozenset[str]) -> list[tuple[int, str | None]]:
        sent.append(labels)
        return [(3, None), (4, "c")]  # unlabelled and other labels are not b's

    found: dict[str, list[int]] = {}
    first = threading.Thread(target=lambda: found.update(a=sweeps.find("a", slow_lister)))
    first.start()
    out.wait(30)
    second = threading.Thread(target=lambda: found.update(b=sweeps.find("b", quick_lister)))
    second.start()
    wait_until(lambda: sweeps.waiting() == 1, "b waits for the next list")
    release.set()
    first.join(30)
    second.join(30)
    assert found == {"a": [5], "b": []}
    assert sent == [frozenset({"a"}), frozenset({"b"})]
    assert sweeps.sent == 2


class ListFailed(Exception):
    """A list that failed for good (its retries spent)."""


def test_when_a_shared_list_fails_its_sender_raises_and_the_others_send_their_own() -> None:
    sweeps = LabelSweeps()
    out = threading.Event()
    release = threading.Event()
    sent: list[frozenset[str]] = []

    def lister(labels: frozenset[str]) -> list[tuple[int, str | None]]:
        sent.append(labels)
        if len(sent) == 1:  # a's list, out while b and c ask
            out.set()
            release.wait(30)
        if len(sent) == 2:  # the list for b and c together fails for good
            raise ListFailed("the list kept failing")
        return [(9, "c"), (8, "b")]

    results: dict[str, list[int] | BaseException] = {}

    def ask(name: str) -> None:
        try:
            results[name] = sweeps.find(name, lister)
        except ListFailed as exc:
            results[name] = exc

    threads = {name: threading.Thread(target=ask, args=(name,)) for name in "abc"}
    threads["a"].start()
    out.wait(30)
    threads["b"].start()
    threads["c"].start()
    wait_until(lambda: sweeps.waiting() == 2, "b and c wait for the next list")
    release.set()
    for thread in threads.values():
        thread.join(30)
    assert results["a"] == []
    failed = [name for name in "bc" if isinstance(results[name], ListFailed)]
    assert len(failed) == 1  # the one that sent the shared list
    [other] = set("bc") - set(failed)
    assert results[other] == {"b": [8], "c": [9]}[other]
    assert sent == [frozenset("a"), frozenset("bc"), frozenset(other)]

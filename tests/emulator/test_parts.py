"""The emulator's parts on their own: routing, rate limits, faults and billing.

The end-to-end suites drive these through HTTP; here each part is checked where its rule lives.
"""

from __future__ import annotations

import random

import pytest

from vastkit.clock import ManualClock
from vastkit.emulator import Emulator
from vastkit.emulator._billing import Account
from vastkit.emulator._faults import FaultRule, pick_fault
from vastkit.emulator._http import Request
from vastkit.emulator._limits import RateLimiter
from vastkit.emulator._market import generate_catalog
from vastkit.emulator._model import Instance
from vastkit.emulator._routes import ROUTES, route


def _request(method: str, path: str, key: str = "k", ip: str = "127.0.0.1") -> Request:
    return Request(
        method=method,
        path=path,
        query={},
        headers={"authorization": f"Bearer {key}"},
        body=b"",
        base_url="http://x",
        client_ip=ip,
    )


def test_every_route_has_a_handler_and_every_handler_a_route() -> None:
    with Emulator(0, offers=5, clock=ManualClock()) as emu:
        handlers = set(emu._app.handlers)
    assert handlers == {name for _, _, name in ROUTES}


@pytest.mark.parametrize(
    ("method", "path", "endpoint", "known"),
    [
        ("GET", "/api/v0/instances/123/", "show", True),
        ("PUT", "/api/v0/instances/bid_price/123", "bid_price", True),
        ("PATCH", "/api/v0/instances/", None, True),
        ("GET", "/api/v0/nothing/", None, False),
    ],
)
def test_route_names_the_endpoint_or_says_whether_the_path_exists(
    method: str, path: str, endpoint: str | None, known: bool
) -> None:
    routed = route(_request(method, path))
    assert (routed.endpoint, routed.path_known) == (endpoint, known)


def test_rate_limit_counts_per_key_and_address_and_answers_the_endpoints_own_body() -> None:
    limiter = RateLimiter(
        rate_limits={"show": 2.0},
        search_limited=True,
        rate_limit_body=None,
        retry_after=False,
        search_quota=None,
    )
    assert limiter.check("show", _request("GET", "/"), 100.0) is None
    refused = limiter.check("show", _request("GET", "/"), 101.0)
    assert refused is not None
    assert refused.status == 429
    assert refused.body.startswith(b"API requests too frequent")  # show answers plain text
    assert limiter.check("show", _request("GET", "/", key="other"), 101.0) is None
    assert limiter.check("show", _request("GET", "/", ip="10.0.0.2"), 101.0) is None
    assert limiter.check("show", _request("GET", "/"), 102.5) is None


def test_a_fault_with_a_probability_draws_from_its_generator_and_stops_when_spent() -> None:
    rule = FaultRule(kind="status", endpoint="list", count=3, probability=0.5)
    rng, twin = random.Random(7), random.Random(7)
    for _ in range(20):
        expect_hit = not rule.exhausted() and twin.random() < 0.5
        assert (pick_fault([rule], "list", rng) is rule) == expect_hit
    assert rule.fired == 3
    assert pick_fault([FaultRule(kind="status", endpoint="show")], "list", rng) is None


def _instance() -> Instance:
    machine = generate_catalog(0, 1, 0.0)[0]
    return Instance(
        id=1,
        machine=machine,
        api_key="k",
        label=None,
        image="img",
        env={},
        onstart=None,
        runtype="ssh",
        args=[],
        disk=100.0,
        is_bid=False,
        price=0.72,
        storage_cost=0.1,
        inet_up_cost=0.01,
        inet_down_cost=0.02,
        created_at=0.0,
        end_date=1e9,
        actual="running",
        holds=True,
    )


def test_billing_merges_spans_at_the_same_rates_and_splits_when_a_rate_changes() -> None:
    account = Account(10.0)
    inst = _instance()
    disk_rate = 100.0 * 0.1 / 720
    account.accrue([inst], 0.0, 1800.0)
    account.accrue([inst], 1800.0, 3600.0)
    inst.actual = "stopped"
    account.accrue([inst], 3600.0, 7200.0)
    assert inst.segments == [[0.0, 3600.0, 0.72, disk_rate], [3600.0, 7200.0, 0.0, disk_rate]]
    assert inst.gpu_cost == pytest.approx(0.72)
    assert account.total_spend == pytest.approx(0.72 + 2 * disk_rate)
    assert account.credit == pytest.approx(10.0 - account.total_spend)


def test_an_offline_host_bills_nothing_and_traffic_is_billed_at_the_contract_prices() -> None:
    account = Account(1.0)
    inst = _instance()
    inst.machine.host_status = "offline"
    assert account.rates(inst) == (0.0, 0.0)
    account.charge_traffic(inst, up_gb=10.0, down_gb=5.0, now=42.0)
    ((when, up, down),) = inst.traffic
    assert when == 42.0
    assert up == pytest.approx(0.1)
    assert down == pytest.approx(0.1)
    assert account.credit == pytest.approx(0.8)

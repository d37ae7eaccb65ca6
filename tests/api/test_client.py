"""Every client method against a respx table of Vast's real request and response shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from tests._support.api_factories import BASE, KEY, instance_json, offer_json
from vastkit.api import Client, CreateInstanceRequest, InstanceState, OfferQuery
from vastkit.clock import ManualClock
from vastkit.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    GoneError,
    NotFoundError,
    ResponseValidationError,
    RouteNotFoundError,
)


def _json(request: httpx.Request) -> Any:
    return json.loads(request.content)


def _query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(str(request.url)).query)


# --- search ----------------------------------------------------------------------------------


def test_search_with_a_query_string_sends_the_cli_wire_format(
    client: Client, router: respx.Router
) -> None:
    route = router.post("/api/v0/bundles/").respond(
        json={"offers": [offer_json(1), offer_json(2, dph_total=0.5)]}
    )
    offers = client.search_offers("gpu_name=RTX_4090 num_gpus>=1 dph<1.5", order="dph+")
    assert [o.id for o in offers] == [1, 2]
    assert offers[1].dph_total == 0.5
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert _json(sent) == {
        "verified": {"eq": True},
        "external": {"eq": False},
        "rentable": {"eq": True},
        "gpu_name": {"eq": "RTX 4090"},
        "num_gpus": {"gte": "1"},
        "dph_total": {"lt": "1.5"},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
    }


def test_search_with_an_offer_query_sends_it_as_built(client: Client, router: respx.Router) -> None:
    route = router.post("/api/v0/bundles/").respond(json={"offers": []})
    query = OfferQuery().where("num_gpus", "gte", 2).order_by("score-").with_type("reserved")
    assert client.search_offers(query, limit=50, allocated_storage=30.0) == []
    assert _json(route.calls.last.request) == {
        "num_gpus": {"gte": 2},
        "order": [["score", "desc"]],
        "type": "reserved",
        "limit": 50,
        "allocated_storage": 30.0,
    }


@pytest.mark.parametrize(
    ("given", "wire"),
    [("on-demand", "on-demand"), ("ondemand", "on-demand"), ("interruptible", "bid"),
     ("bid", "bid"), ("reserved", "reserved")],
)  # fmt: skip
def test_search_rental_types(client: Client, router: respx.Router, given: str, wire: str) -> None:
    route = router.post("/api/v0/bundles/").respond(json={"offers": []})
    client.search_offers({"num_gpus": {"eq": 1}}, type=given)
    body = _json(route.calls.last.request)
    assert body["type"] == wire
    assert body["num_gpus"] == {"eq": 1}
    assert body["order"] == [["score", "desc"]]


def test_search_with_no_query_uses_the_cli_defaults(client: Client, router: respx.Router) -> None:
    route = router.post("/api/v0/bundles/").respond(json={"offers": []})
    client.search_offers()
    body = _json(route.calls.last.request)
    assert body["verified"] == {"eq": True}
    assert body["type"] == "on-demand"


def test_search_rejects_bad_input(client: Client) -> None:
    with pytest.raises(ValueError, match="Unconsumed"):
        client.search_offers("num_gpus>=1 (")
    with pytest.raises(ValueError, match="rental type"):
        client.search_offers("", type="spot")
    with pytest.raises(TypeError):
        client.search_offers(42)  # type: ignore[arg-type]


def test_search_garbled_response(client: Client, router: respx.Router) -> None:
    router.post("/api/v0/bundles/").respond(
        json={"offers": [offer_json(1), offer_json(2, dph_total="n/a")]}
    )
    with pytest.raises(ResponseValidationError, match=r"\$\.offers\[1\]\.dph_total"):
        client.search_offers("")
    router.post("/api/v0/bundles/").respond(json={"results": []})
    with pytest.raises(ResponseValidationError, match=r"missing @ \$\.offers"):
        client.search_offers("")


# --- create ----------------------------------------------------------------------------------


def test_create_on_demand_sends_the_documented_body(client: Client, router: respx.Router) -> None:
    route = router.put("/api/v0/asks/777/").respond(
        json={"success": True, "new_contract": 9001, "instance_api_key": "inst-abc"}
    )
    request = CreateInstanceRequest(
        image="pytorch/pytorch:latest",
        disk_gb=40,
        env={"A": "1", "-p 8080:8080": "1"},
        onstart="echo hi",
        label="vastkit/run/1",
    )
    created = client.create_instance(777, request)
    assert created.id == 9001
    assert created.instance_api_key == "inst-abc"
    body = _json(route.calls.last.request)
    assert body["client_id"] == "me"
    assert body["image"] == "pytorch/pytorch:latest"
    assert body["disk"] == 40
    assert body["env"] == {"A": "1", "-p 8080:8080": "1"}
    assert body["price"] is None  # on-demand
    assert body["label"] == "vastkit/run/1"
    assert body["onstart"] == "echo hi"
    assert body["runtype"] == "ssh_direc ssh_proxy"
    assert body["cancel_unavail"] is False
    assert "args" not in body


def test_create_interruptible_only_when_price_is_set(client: Client, router: respx.Router) -> None:
    route = router.put("/api/v0/asks/5/").respond(json={"success": True, "new_contract": 6})
    client.create_instance(5, CreateInstanceRequest(image="img", price=0.25, args=("a", "b")))
    body = _json(route.calls.last.request)
    assert body["price"] == 0.25
    assert body["args"] == ["a", "b"]


def test_create_error_carries_new_contract(client: Client, router: respx.Router) -> None:
    router.put("/api/v0/asks/5/").respond(
        400,
        json={
            "success": False,
            "error": "invalid_price",
            "msg": "error 400/3467: bid too low",
            "new_contract": 4242,
        },
    )
    with pytest.raises(BadRequestError) as info:
        client.create_instance(5, CreateInstanceRequest(image="img", price=0.01))
    assert info.value.new_contract == 4242
    assert info.value.error == "invalid_price"


def test_create_success_false_with_200_raises(client: Client, router: respx.Router) -> None:
    router.put("/api/v0/asks/5/").respond(
        json={"success": False, "error": "invalid_args", "msg": "nope", "new_contract": "77"}
    )
    with pytest.raises(APIStatusError, match="invalid_args: nope") as info:
        client.create_instance(5, CreateInstanceRequest(image="img"))
    assert info.value.new_contract == 77


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            404,
            {
                "success": False,
                "error": "invalid_args",
                "msg": "error 404/3603: no_such_ask Instance type by id 5 is not available.",
            },
            NotFoundError,
        ),
        (
            410,
            {
                "success": False,
                "error": "no_such_ask",
                "msg": "error 410/3907: no_such_ask Instance type 5 is no longer available.",
            },
            GoneError,
        ),
        (404, "<html><title>404 Not Found</title></html>", RouteNotFoundError),
        (
            404,
            {"success": False, "error": "not_found", "msg": "No such endpoint"},
            RouteNotFoundError,
        ),
        (410, {"success": False, "error": "deprecated_endpoint"}, RouteNotFoundError),
        (404, {"success": False, "error": "invalid_args", "msg": "bad"}, RouteNotFoundError),
    ],
)
def test_create_reads_only_no_such_ask_as_the_offer_gone(
    client: Client, router: respx.Router, status: int, body: Any, expected: type[Exception]
) -> None:
    if isinstance(body, str):
        router.put("/api/v0/asks/5/").respond(
            status, text=body, headers={"content-type": "text/html"}
        )
    else:
        router.put("/api/v0/asks/5/").respond(status, json=body)
    with pytest.raises(APIStatusError) as info:
        client.create_instance(5, CreateInstanceRequest(image="img"))
    assert type(info.value) is expected
    assert KEY not in str(info.value)


def test_create_rejects_bad_ids(client: Client) -> None:
    with pytest.raises(ValueError, match="positive"):
        client.create_instance(0, CreateInstanceRequest(image="img"))
    with pytest.raises(TypeError):
        client.create_instance("5", CreateInstanceRequest(image="img"))  # type: ignore[arg-type]


# --- show and list ---------------------------------------------------------------------------


def test_get_instance(client: Client, router: respx.Router) -> None:
    route = router.get("/api/v0/instances/42/").respond(json={"instances": instance_json(42)})
    inst = client.get_instance(42)
    assert inst is not None
    assert inst.id == 42
    assert inst.state is InstanceState.RUNNING
    assert _query(route.calls.last.request) == {"owner": ["me"]}


def test_get_instance_missing_is_none(client: Client, router: respx.Router) -> None:
    router.get("/api/v0/instances/43/").respond(json={"instances": None})
    assert client.get_instance(43) is None
    router.get("/api/v0/instances/44/").respond(
        404, json={"success": False, "error": "no_such_instance", "msg": "not found"}
    )
    assert client.get_instance(44) is None


def test_get_instance_bad_key_is_an_authentication_error(
    client: Client, router: respx.Router
) -> None:
    router.get("/api/v0/instances/45/").respond(
        404, json={"success": False, "error": "auth_error", "msg": "Invalid user key"}
    )
    with pytest.raises(AuthenticationError):
        client.get_instance(45)


def test_list_instances_follows_every_page(client: Client, router: respx.Router) -> None:
    pages: dict[str | None, dict[str, Any]] = {
        None: {"instances": [instance_json(i) for i in range(1, 26)], "next_token": "t1"},
        "t1": {"instances": [instance_json(i) for i in range(26, 51)], "next_token": "t2"},
        "t2": {"instances": [instance_json(51)], "next_token": None},
    }

    def page(request: httpx.Request) -> httpx.Response:
        token = _query(request).get("after_token", [None])[0]
        return httpx.Response(200, json={"success": True, **pages[token]})

    route = router.get("/api/v1/instances/").mock(side_effect=page)
    instances = client.list_instances(label="vastkit/run/1")
    assert [i.id for i in instances] == list(range(1, 52))
    assert route.call_count == 3
    first = _query(route.calls[0].request)
    assert json.loads(first["select_filters"][0]) == {"label": {"eq": "vastkit/run/1"}}
    assert first["limit"] == ["25"]
    assert "after_token" not in first
    assert _query(route.calls[2].request)["after_token"] == ["t2"]


def test_list_instances_extra_filters_and_empty(client: Client, router: respx.Router) -> None:
    route = router.get("/api/v1/instances/").respond(
        json={"success": True, "instances": [], "next_token": None}
    )
    assert client.list_instances(filters={"actual_status": {"eq": "running"}}) == []
    sent = json.loads(_query(route.calls.last.request)["select_filters"][0])
    assert sent == {"actual_status": {"eq": "running"}}


def test_list_instances_stops_on_a_repeating_token(client: Client, router: respx.Router) -> None:
    router.get("/api/v1/instances/").respond(
        json={"instances": [instance_json(1)], "next_token": "same"}
    )
    with pytest.raises(ResponseValidationError, match="did not advance"):
        client.list_instances()


# --- actions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "args", "path", "body"),
    [
        ("stop_instance", (42,), "/api/v0/instances/42/", {"state": "stopped"}),
        ("start_instance", (42,), "/api/v0/instances/42/", {"state": "running"}),
        ("label_instance", (42, "x/y"), "/api/v0/instances/42/", {"label": "x/y"}),
        (
            "change_bid",
            (42, 0.3),
            "/api/v0/instances/bid_price/42/",
            {"client_id": "me", "price": 0.3},
        ),
        (
            "change_bid",
            (42, None),
            "/api/v0/instances/bid_price/42/",
            {"client_id": "me", "price": None},
        ),
    ],
)
def test_instance_actions(  # noqa: PLR0917
    client: Client,
    router: respx.Router,
    method: str,
    args: tuple[Any, ...],
    path: str,
    body: dict[str, Any],
) -> None:
    route = router.put(path).respond(json={"success": True})
    assert getattr(client, method)(*args) is None
    assert _json(route.calls.last.request) == body


def test_action_on_a_missing_instance_raises(client: Client, router: respx.Router) -> None:
    router.put("/api/v0/instances/42/").respond(
        json={"success": False, "error": "no_such_instance", "msg": "Instance 42 not found."}
    )
    with pytest.raises(APIStatusError, match="no_such_instance"):
        client.stop_instance(42)


def test_action_argument_checks(client: Client) -> None:
    with pytest.raises(ValueError, match="256"):
        client.label_instance(1, "x" * 257)
    with pytest.raises(ValueError, match=r"0\.001"):
        client.change_bid(1, 0.0)


def test_destroy(client: Client, router: respx.Router) -> None:
    route = router.delete("/api/v0/instances/42/").respond(json={"success": True})
    assert client.destroy_instance(42) is True
    assert _json(route.calls.last.request) == {}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"success": False, "error": "no_such_instance", "msg": "gone"}),
        (404, {"success": False, "error": "invalid_id", "msg": "Invalid instance id."}),
        (200, {"success": False, "error": "no_such_instance", "msg": "gone"}),
    ],
)
def test_destroy_already_gone_is_false(
    client: Client, router: respx.Router, status: int, body: dict[str, Any]
) -> None:
    router.delete("/api/v0/instances/42/").respond(status, json=body)
    assert client.destroy_instance(42) is False


def test_destroy_other_failures_raise(client: Client, router: respx.Router) -> None:
    router.delete("/api/v0/instances/42/").respond(
        403, json={"success": False, "error": "not_authorized", "msg": "not yours"}
    )
    with pytest.raises(APIStatusError, match="not_authorized"):
        client.destroy_instance(42)


# --- logs ------------------------------------------------------------------------------------

LOG_URL = "https://s3.amazonaws.com/vast.ai/instance_logs/abc.log"


def test_instance_logs_polls_the_result_url_without_the_key(
    client: Client, router: respx.Router, clock: ManualClock
) -> None:
    request_route = router.put("/api/v0/instances/request_logs/42/").respond(
        json={"success": True, "result_url": LOG_URL, "msg": "ok"}
    )
    log_route = router.get(LOG_URL).mock(
        side_effect=[httpx.Response(404), httpx.Response(403), httpx.Response(200, text="hello\n")]
    )
    assert client.instance_logs(42, tail=100) == "hello\n"
    assert _json(request_route.calls.last.request) == {"tail": "100"}
    assert log_route.call_count == 3
    for call in log_route.calls:
        assert "Authorization" not in call.request.headers
        assert KEY not in str(call.request.url)
    assert clock.slept.count(0.5) == 2


def test_instance_logs_gives_up_in_virtual_time(
    client: Client, router: respx.Router, clock: ManualClock
) -> None:
    router.put("/api/v0/instances/request_logs/42/").respond(json={"result_url": LOG_URL})
    router.get(LOG_URL).respond(404)
    start = clock.now()
    with pytest.raises(APITimeoutError, match="not ready"):
        client.instance_logs(42, timeout=5.0)
    assert 4.0 <= clock.now() - start <= 6.0


def test_instance_logs_bad_result_url(client: Client, router: respx.Router) -> None:
    router.put("/api/v0/instances/request_logs/42/").respond(json={"result_url": "file:///x"})
    with pytest.raises(ResponseValidationError, match="result_url"):
        client.instance_logs(42)


def test_instance_logs_connection_error_is_translated(client: Client, router: respx.Router) -> None:
    router.put("/api/v0/instances/request_logs/42/").respond(json={"result_url": LOG_URL})
    router.get(LOG_URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError) as info:
        client.instance_logs(42)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


# --- account ---------------------------------------------------------------------------------


def test_current_user(client: Client, router: respx.Router) -> None:
    router.get("/api/v0/users/current").respond(
        json={"id": 7, "email": "me@example.com", "credit": 25.0, "api_key": KEY, "sid": "x"}
    )
    user = client.current_user()
    assert (user.id, user.email, user.credit) == (7, "me@example.com", 25.0)
    assert KEY not in repr(user)


def test_current_user_garbled_response_does_not_leak_the_key(
    client: Client, router: respx.Router
) -> None:
    router.get("/api/v0/users/current").respond(json={"id": "me", "api_key": KEY})
    with pytest.raises(ResponseValidationError) as info:
        client.current_user()
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value.body)


def test_charges_pages_and_filters(client: Client, router: respx.Router) -> None:
    item = {
        "start": 1767225600,
        "end": 1767312000,
        "type": "instance",
        "source": "instance-42",
        "amount": 1.5,
        "items": [{"type": "gpu", "amount": 1.4}, {"type": "disk", "amount": 0.1}],
    }

    def page(request: httpx.Request) -> httpx.Response:
        token = _query(request).get("after_token", [None])[0]
        if token is None:
            return httpx.Response(200, json={"results": [item], "next_token": "n"})
        return httpx.Response(200, json={"results": [dict(item, source="instance-43")]})

    route = router.get("/api/v0/charges/").mock(side_effect=page)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    charges = client.charges(start, 1767312000.0)
    assert [c.instance_id for c in charges] == [42, 43]
    assert charges[0].items[0].amount == 1.4
    sent = json.loads(_query(route.calls[0].request)["select_filters"][0])
    assert sent == {"day": {"gte": 1767225600, "lte": 1767312000}}


def test_charges_argument_checks(client: Client) -> None:
    with pytest.raises(ValueError, match="before"):
        client.charges(100, 50)
    with pytest.raises(ValueError, match="timezone"):
        client.charges(datetime(2026, 1, 1), datetime(2026, 1, 2))


# --- the client object -----------------------------------------------------------------------


def test_context_manager_closes_only_its_own_http_client(http: httpx.Client) -> None:
    with Client(KEY, base_url=BASE, http_client=http) as client:
        assert client.base_url == BASE
    assert not http.is_closed
    owned = Client(KEY, base_url=BASE)
    inner = owned._http
    with owned:
        pass
    assert inner.is_closed
    owned.close()  # twice is fine


def test_default_base_url_and_vast_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(KEY) as client:
        assert client.base_url == "https://console.vast.ai"
    monkeypatch.setenv("VAST_URL", "http://localhost:8999/")
    with Client(KEY) as client:
        assert client.base_url == "http://localhost:8999"
    with Client(KEY, base_url="https://cloud.vast.ai") as client:
        assert client.base_url == "https://cloud.vast.ai"


def test_stats_count_requests_per_endpoint(client: Client, router: respx.Router) -> None:
    router.post("/api/v0/bundles/").respond(json={"offers": []})
    router.delete("/api/v0/instances/1/").respond(json={"success": True})
    client.search_offers("")
    client.search_offers("")
    client.destroy_instance(1)
    snapshot = client.stats.snapshot()
    assert snapshot["requests"] == {"search_offers": 2, "destroy_instance": 1}
    assert client.stats.total_requests == 3
    assert client.stats.total_rate_limited == 0

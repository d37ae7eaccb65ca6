"""Errors, retries, pacing and redaction, seen through the client."""

from __future__ import annotations

import email.utils
import itertools
import logging
import random
import threading
from typing import Any

import httpx
import pytest
import respx

from tests._support.api_factories import BASE, KEY, instance_json
from vastkit.api import Client, CreateInstanceRequest
from vastkit.api._transport import PACING_MARGIN, parse_retry_after
from vastkit.clock import ManualClock
from vastkit.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    GoneError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    SearchQuotaExceededError,
    ServerError,
)
from vastkit.retry import RetryPolicy

USER = "/api/v0/users/current"
USER_BODY = {"id": 7, "email": "me@example.com", "credit": 3.0}


def _no_retry_client(http: httpx.Client, clock: ManualClock) -> Client:
    return Client(KEY, base_url=BASE, http_client=http, clock=clock, max_retries=0)


# --- every documented error body shape -------------------------------------------------------

ERROR_TABLE: list[tuple[int, dict[str, Any], type[APIStatusError], str | None, str | None]] = [
    (
        400,
        {"json": {"success": False, "error": "invalid_args", "msg": "error 400/3467: bad"}},
        BadRequestError,
        "invalid_args",
        "error 400/3467: bad",
    ),
    (
        401,
        {"json": {"success": False, "error": "auth_error", "msg": "Invalid user key"}},
        AuthenticationError,
        "auth_error",
        "Invalid user key",
    ),
    (
        404,
        {"json": {"success": False, "error": "auth_error", "msg": "Invalid user key"}},
        AuthenticationError,
        "auth_error",
        "Invalid user key",
    ),
    (
        404,
        {"json": {"error": "whatever", "msg": "Invalid user key"}},
        AuthenticationError,
        "whatever",
        "Invalid user key",
    ),
    (
        404,
        {"json": {"msg": "Session expired. Please log in again."}},
        AuthenticationError,
        None,
        "Session expired. Please log in again.",
    ),
    (
        403,
        {"json": {"success": False, "error": "not_authorized", "msg": "not yours"}},
        PermissionDeniedError,
        "not_authorized",
        "not yours",
    ),
    (
        404,
        {"json": {"success": False, "error": "no_such_ask", "msg": "error 404/3603: no_such_ask"}},
        NotFoundError,
        "no_such_ask",
        "error 404/3603: no_such_ask",
    ),
    (
        410,
        {"json": {"success": False, "error": "deprecated_endpoint", "msg": "use v1"}},
        GoneError,
        "deprecated_endpoint",
        "use v1",
    ),
    (
        429,
        {"json": {"detail": "API requests too frequent endpoint threshold=1.0"}},
        RateLimitError,
        None,
        "API requests too frequent endpoint threshold=1.0",
    ),
    (
        429,
        {"json": {"success": False, "error": "rate_limit_exceeded", "msg": "too frequent"}},
        RateLimitError,
        "rate_limit_exceeded",
        "too frequent",
    ),
    (
        429,
        {"text": "API requests too frequent: endpoint threshold=3.0"},
        RateLimitError,
        None,
        "API requests too frequent: endpoint threshold=3.0",
    ),
    (
        502,
        {
            "text": "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            "headers": {"content-type": "text/html"},
        },
        ServerError,
        None,
        "502 Bad Gateway",
    ),
    (500, {"content": b""}, ServerError, None, None),
    (
        400,
        {"json": {"message": "only message here"}},
        BadRequestError,
        None,
        "only message here",
    ),
    (
        422,
        {"json": {"detail": [{"loc": ["body"], "msg": "field required"}]}},
        APIStatusError,
        None,
        '[{"loc": ["body"], "msg": "field required"}]',
    ),
    (483, {"text": "Invalid json_body"}, APIStatusError, None, "Invalid json_body"),
]


@pytest.mark.parametrize(("status", "response", "cls", "error", "msg"), ERROR_TABLE)
def test_error_shapes_map_to_exceptions(  # noqa: PLR0917
    http: httpx.Client,
    router: respx.Router,
    clock: ManualClock,
    status: int,
    response: dict[str, Any],
    cls: type[APIStatusError],
    error: str | None,
    msg: str | None,
) -> None:
    router.get(USER).respond(status, **response)
    with _no_retry_client(http, clock) as client, pytest.raises(APIStatusError) as info:
        client.current_user()
    exc = info.value
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.error == error
    assert exc.msg == msg
    text = str(exc)
    assert f"-> {status}" in text
    assert "/api/v0/users/current" in text
    assert (msg or "(no detail message supplied)") in text
    assert KEY not in text


def test_rate_limit_error_carries_retry_after(
    http: httpx.Client, router: respx.Router, clock: ManualClock
) -> None:
    router.get(USER).respond(429, headers={"Retry-After": "7"}, text="slow down")
    with _no_retry_client(http, clock) as client, pytest.raises(RateLimitError) as info:
        client.current_user()
    assert info.value.retry_after == 7.0


def test_non_json_success_body(client: Client, router: respx.Router) -> None:
    router.get(USER).respond(200, text="<html>login</html>")
    with pytest.raises(ResponseValidationError, match="not JSON"):
        client.current_user()


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried_then_succeed(
    client: Client, router: respx.Router, clock: ManualClock, status: int
) -> None:
    route = router.get(USER).mock(
        side_effect=[
            httpx.Response(status),
            httpx.Response(status),
            httpx.Response(200, json=USER_BODY),
        ]
    )
    assert client.current_user().id == 7
    assert route.call_count == 3
    assert client.stats.requests["current_user"] == 3
    assert client.stats.retries["current_user"] == 2
    assert client.stats.rate_limited.get("current_user", 0) == (2 if status == 429 else 0)


def test_retries_give_up_after_max_retries(
    client: Client, router: respx.Router, clock: ManualClock
) -> None:
    route = router.get(USER).respond(503, text="busy")
    with pytest.raises(ServerError, match="503"):
        client.current_user()
    assert route.call_count == 4  # 1 + max_retries (3)


def test_backoff_grows_with_jitter(
    http: httpx.Client, router: respx.Router, clock: ManualClock
) -> None:
    router.get(USER).respond(502)
    policy = RetryPolicy()
    with (
        Client(
            KEY,
            base_url=BASE,
            http_client=http,
            clock=clock,
            min_intervals={},
            rng=random.Random(1),
        ) as client,
        pytest.raises(ServerError),
    ):
        client.current_user()
    waits = [s for s in clock.slept if s > 0]
    assert len(waits) == 3
    for retry, wait in enumerate(waits):
        step = policy.initial_delay * policy.multiplier**retry
        assert step / 2 <= wait <= step
    assert len(set(waits)) == 3


def test_other_statuses_are_not_retried(client: Client, router: respx.Router) -> None:
    route = router.get(USER).respond(500, json={"msg": "boom"})
    with pytest.raises(ServerError):
        client.current_user()
    assert route.call_count == 1


def test_retry_after_seconds_is_honoured(
    client: Client, router: respx.Router, clock: ManualClock
) -> None:
    router.get(USER).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "12"}),
            httpx.Response(200, json=USER_BODY),
        ]
    )
    start = clock.now()
    client.current_user()
    assert 12.0 <= clock.now() - start <= 12.2


def test_retry_after_http_date_is_honoured(
    client: Client, router: respx.Router, clock: ManualClock
) -> None:
    when = email.utils.formatdate(clock.now() + 20, usegmt=True)
    router.get(USER).mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": when}),
            httpx.Response(200, json=USER_BODY),
        ]
    )
    start = clock.now()
    client.current_user()
    assert 19.0 <= clock.now() - start <= 21.0


def test_retry_after_beyond_the_cap_is_not_waited_for(
    client: Client, router: respx.Router, clock: ManualClock
) -> None:
    route = router.get(USER).respond(429, headers={"Retry-After": "3600"})
    start = clock.now()
    with pytest.raises(RateLimitError) as info:
        client.current_user()
    assert info.value.retry_after == 3600.0
    assert route.call_count == 1
    assert clock.now() - start < 60


def test_parse_retry_after() -> None:
    assert parse_retry_after("5", 0) == 5.0
    assert parse_retry_after("-3", 0) == 0.0
    assert parse_retry_after("", 0) is None
    assert parse_retry_after(None, 0) is None
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0


def test_a_429_pushes_back_the_next_caller(
    client: Client, router: respx.Router, clock: ManualClock
) -> None:
    """Vast sends no Retry-After: a 429 waits at least the endpoint's interval."""
    router.get("/api/v0/instances/1/").mock(
        side_effect=[
            httpx.Response(429, json={"detail": "API requests too frequent"}),
            httpx.Response(200, json={"instances": instance_json(1)}),
        ]
    )
    start = clock.now()
    assert client.get_instance(1) is not None
    assert clock.now() - start >= 2.0  # show_instance's documented threshold


def test_connection_errors_are_retried_and_translated(client: Client, router: respx.Router) -> None:
    route = router.get(USER).mock(
        side_effect=[httpx.ReadError("reset"), httpx.Response(200, json=USER_BODY)]
    )
    assert client.current_user().id == 7
    assert route.call_count == 2
    router.get(USER).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError) as info:
        client.current_user()
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert not isinstance(info.value, APITimeoutError)


def test_timeouts_become_api_timeout_errors(client: Client, router: respx.Router) -> None:
    router.get(USER).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError, match="timed out") as info:
        client.current_user()
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_search_quota_is_raised_at_once_with_reset_time(
    client: Client, router: respx.Router
) -> None:
    route = router.post("/api/v0/bundles/").respond(
        429,
        json={"error": "search_quota_exceeded", "msg": "Daily search quota exceeded"},
        headers={"X-RateLimit-Reset": "1767312000"},
    )
    with pytest.raises(SearchQuotaExceededError) as info:
        client.search_offers("")
    assert route.call_count == 1
    assert info.value.resets_at == 1767312000.0
    assert "Resets at 2026-01-02 00:00 UTC" in str(info.value)
    assert client.stats.rate_limited["search_offers"] == 1


def test_search_quota_without_header_resets_at_utc_midnight(
    client: Client, router: respx.Router, clock: ManualClock
) -> None:
    clock.advance(3 * 3600)
    router.post("/api/v0/bundles/").respond(429, json={"error": "search_quota_exceeded"})
    with pytest.raises(SearchQuotaExceededError) as info:
        client.search_offers("")
    assert info.value.resets_at == 1767225600.0 + 86400


# --- create is never retried once it may have reached the server -----------------------------

CREATE = "/api/v0/asks/5/"
REQUEST = CreateInstanceRequest(image="img", label="vastkit/r/1")


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(502),
        httpx.Response(503),
        httpx.Response(429, json={"detail": "API requests too frequent"}),
        httpx.ReadTimeout("no answer"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("dropped"),
        httpx.WriteError("broken pipe"),
    ],
)
def test_create_is_not_retried_after_it_may_have_arrived(
    client: Client, router: respx.Router, failure: Any
) -> None:
    route = router.put(CREATE).mock(
        side_effect=[failure, httpx.Response(200, json={"success": True, "new_contract": 1})]
    )
    with pytest.raises((APIStatusError, APIConnectionError)):
        client.create_instance(5, REQUEST)
    assert route.call_count == 1


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow")])
def test_create_is_retried_when_it_never_left(
    client: Client, router: respx.Router, failure: Exception
) -> None:
    route = router.put(CREATE).mock(
        side_effect=[failure, httpx.Response(200, json={"success": True, "new_contract": 11})]
    )
    assert client.create_instance(5, REQUEST).id == 11
    assert route.call_count == 2


# --- pacing ----------------------------------------------------------------------------------


def test_each_endpoint_is_paced_to_its_interval(
    client: Client, router: respx.Router, clock: ManualClock
) -> None:
    times: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        times.append(clock.now())
        return httpx.Response(200, json={"success": True})

    router.delete(url__regex=r"/api/v0/instances/\d+/").mock(side_effect=record)
    for instance_id in range(1, 5):
        client.destroy_instance(instance_id)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # destroy's documented threshold, 3 s, widened by the pacing margin
    assert gaps == pytest.approx([3.0 * PACING_MARGIN] * 3)
    assert min(gaps) > 3.0


def test_pacing_is_per_endpoint(client: Client, router: respx.Router, clock: ManualClock) -> None:
    router.delete("/api/v0/instances/1/").respond(json={"success": True})
    router.get(USER).respond(json=USER_BODY)
    start = clock.now()
    client.destroy_instance(1)
    client.current_user()
    assert clock.now() == start  # different endpoints do not wait for each other


class _FrozenClock:
    """A clock whose time stands still while threads sleep: it records what each was told."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return 1_000.0

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)


def test_pacing_is_shared_between_threads(router: respx.Router, http: httpx.Client) -> None:
    """Concurrent callers each reserve their own slot: waits are 0, 1.1, 2.2, ... seconds."""
    router.get("/api/v1/instances/").respond(
        json={"success": True, "instances": [], "next_token": None}
    )
    clock = _FrozenClock()
    with Client(KEY, base_url=BASE, http_client=http, clock=clock) as client:
        threads = [threading.Thread(target=client.list_instances) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.stats.requests["list_instances"] == 8
    # the first waits 0; list_instances is paced at 1 s, widened by the margin
    assert sorted(clock.slept) == pytest.approx([n * PACING_MARGIN for n in range(1, 8)])


def test_pacing_can_be_disabled(
    router: respx.Router, http: httpx.Client, clock: ManualClock
) -> None:
    router.delete(url__regex=r"/api/v0/instances/\d+/").respond(json={"success": True})
    with Client(KEY, base_url=BASE, http_client=http, clock=clock, min_intervals={}) as client:
        for instance_id in range(1, 4):
            client.destroy_instance(instance_id)
    assert clock.slept == []


# --- redaction -------------------------------------------------------------------------------


def test_the_key_is_only_in_the_authorization_header(client: Client, router: respx.Router) -> None:
    router.get(url__regex=r".*").respond(
        json={"instances": [], "next_token": None, "id": 1, "success": True}
    )
    router.route().respond(json={"success": True, "offers": [], "new_contract": 1})
    client.search_offers("")
    client.list_instances(label="x")
    client.current_user()
    client.create_instance(5, REQUEST)
    calls = list(router.calls)
    assert len(calls) == 4
    for request, _ in calls:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert KEY not in str(request.url)
        assert KEY not in request.content.decode()
        assert "api_key" not in str(request.url)


def test_the_key_is_never_logged(
    client: Client, router: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    router.get(USER).mock(
        side_effect=[httpx.Response(503), httpx.ReadError("x"), httpx.Response(200, json=USER_BODY)]
    )
    router.put(CREATE).respond(json={"success": True, "new_contract": 3})
    client.current_user()
    client.create_instance(5, REQUEST)
    assert caplog.records, "expected debug/info/warning records"
    for record in caplog.records:
        assert KEY not in record.getMessage()


def test_the_key_is_not_in_reprs(client: Client) -> None:
    assert KEY not in repr(client)
    assert KEY not in repr(client._transport)
    assert KEY not in str(vars(client.stats))
    with pytest.raises(TypeError, match="pickled"):
        client.__getstate__()


def test_an_echoed_key_is_redacted_from_errors(client: Client, router: respx.Router) -> None:
    router.get(USER).respond(401, json={"error": "auth_error", "msg": f"Invalid user key {KEY}"})
    with pytest.raises(AuthenticationError) as info:
        client.current_user()
    assert KEY not in str(info.value)
    assert KEY not in (info.value.msg or "")
    assert "[redacted]" in str(info.value)
    assert info.value.request is not None
    assert KEY not in repr(info.value.request)
    assert KEY not in repr(info.value.request.headers)


def test_connection_error_messages_are_redacted(client: Client, router: respx.Router) -> None:
    router.get(USER).mock(side_effect=httpx.ConnectError(f"proxy said {KEY}"))
    with pytest.raises(APIConnectionError) as info:
        client.current_user()
    assert KEY not in str(info.value)

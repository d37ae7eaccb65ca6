"""The client retries through the one retry policy of vastkit.retry."""

from __future__ import annotations

import httpx
import pytest
import respx

from vastkit.api import Client
from vastkit.api._transport import MAX_RETRY_AFTER
from vastkit.clock import ManualClock
from vastkit.errors import RateLimitError, ServerError
from vastkit.retry import RetryPolicy

BASE = "https://vast.test"
USER = "/api/v0/users/current"
USER_BODY = {"id": 7, "email": "me@example.com", "credit": 3.0}


def _client(http: httpx.Client, clock: ManualClock, **kwargs: object) -> Client:
    return Client("k", base_url=BASE, http_client=http, clock=clock, min_intervals={}, **kwargs)  # type: ignore[arg-type]


def test_max_retries_is_a_shorthand_for_attempts(http: httpx.Client, clock: ManualClock) -> None:
    with _client(http, clock, max_retries=2) as client:
        assert client.retry == RetryPolicy(attempts=3)
    with _client(http, clock) as client:
        assert client.retry == RetryPolicy(attempts=4)


def test_a_retry_policy_sets_attempts_and_backoff(
    http: httpx.Client, router: respx.Router, clock: ManualClock
) -> None:
    route = router.get(USER).respond(503)
    policy = RetryPolicy(attempts=2, initial_delay=4.0)
    with _client(http, clock, retry=policy) as client, pytest.raises(ServerError):
        client.current_user()
    assert route.call_count == 2
    assert len(clock.slept) == 1
    assert 2.0 <= clock.slept[0] <= 4.0


def test_a_deadline_stops_retrying(
    http: httpx.Client, router: respx.Router, clock: ManualClock
) -> None:
    route = router.get(USER).respond(503)
    policy = RetryPolicy(attempts=10, initial_delay=1.0, multiplier=2.0, deadline=5.0)
    with _client(http, clock, retry=policy) as client, pytest.raises(ServerError):
        client.current_user()
    assert route.call_count < 10
    assert sum(clock.slept) <= 5.0


def test_retry_after_is_honoured_up_to_the_cap(
    http: httpx.Client, router: respx.Router, clock: ManualClock
) -> None:
    route = router.get(USER).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": str(int(MAX_RETRY_AFTER))}),
            httpx.Response(200, json=USER_BODY),
        ]
    )
    with _client(http, clock) as client:
        assert client.current_user().id == 7
    assert route.call_count == 2
    assert MAX_RETRY_AFTER <= clock.slept[0] <= MAX_RETRY_AFTER + 0.1
    route.mock(
        side_effect=None,
        return_value=httpx.Response(429, headers={"Retry-After": str(int(MAX_RETRY_AFTER) + 1)}),
    )
    with _client(http, clock) as client, pytest.raises(RateLimitError) as info:
        client.current_user()
    assert route.call_count == 3  # the first two above, then one: no retry past the cap
    assert info.value.retry_after == MAX_RETRY_AFTER + 1


def test_retry_and_max_retries_together_are_refused(http: httpx.Client) -> None:
    with pytest.raises(TypeError, match="not both"):
        Client("k", base_url=BASE, http_client=http, max_retries=1, retry=RetryPolicy())

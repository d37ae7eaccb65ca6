"""Gone means gone: only Vast's own "no such instance" answers read as gone (issue 15, item 4).

A route-level 404 or 410 (an HTML page, "No such endpoint", ``deprecated_endpoint``, a 404
without Vast's JSON error) raises :class:`RouteNotFoundError`, so the instance stays on the books.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from tests._support.api_factories import KEY, instance_json
from vastkit.api import Client
from vastkit.api.gone import Absence, read_absence
from vastkit.errors import (
    AuthenticationError,
    NotFoundError,
    ResponseValidationError,
    RouteNotFoundError,
)

DESTROY = "/api/v0/instances/42/"
SHOW = "/api/v0/instances/42/"

HTML_404 = (
    "<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1>"
    f"</center><hr><center>nginx</center><!-- {KEY} --></body></html>"
)

ROUTE_ANSWERS: list[tuple[str, httpx.Response]] = [
    ("html-404", httpx.Response(404, text=HTML_404, headers={"content-type": "text/html"})),
    (
        "no-such-endpoint-json",
        httpx.Response(
            404,
            json={"success": False, "error": "not_found", "msg": f"No such endpoint: {DESTROY}"},
        ),
    ),
    ("no-such-endpoint-text", httpx.Response(404, text="No such endpoint")),
    (
        "deprecated-410",
        httpx.Response(
            410,
            json={
                "success": False,
                "error": "deprecated_endpoint",
                "msg": "/api/v0/instances/ is deprecated. Use /api/v1/instances/ instead.",
            },
        ),
    ),
    ("410-gone-json", httpx.Response(410, json={"success": False, "error": "gone"})),
    ("empty-404", httpx.Response(404)),
    ("framework-404", httpx.Response(404, json={"detail": "Not found."})),
    (
        "200-deprecated",
        httpx.Response(200, json={"success": False, "error": "deprecated_endpoint"}),
    ),
]
"""Answers that are about the route, not the instance."""

ROUTE_IDS = [name for name, _ in ROUTE_ANSWERS]


# --- the pure decision -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"success": False, "error": "no_such_instance", "msg": "x"}, Absence.INSTANCE),
        (404, {"error": "invalid_id", "msg": "Invalid instance id."}, Absence.INSTANCE),
        (200, {"success": False, "error": "no_such_instance"}, Absence.INSTANCE),
        (404, {"error": "not_found"}, Absence.UNCONFIRMED),
        (200, {"success": False, "error": "not_found"}, Absence.UNCONFIRMED),
        (404, {"error": "not_found", "msg": "No such endpoint: /x"}, Absence.ROUTE),
        (404, {"error": "no_such_instance", "msg": "No such endpoint"}, Absence.ROUTE),
        (410, {"error": "no_such_instance"}, Absence.ROUTE),
        (410, {"error": "deprecated_endpoint"}, Absence.ROUTE),
        (200, {"success": False, "error": "deprecated_endpoint"}, Absence.ROUTE),
        (404, "<html>Not Found</html>", Absence.ROUTE),
        (404, "", Absence.ROUTE),
        (404, {"detail": "Not found."}, Absence.ROUTE),
        (200, {"success": False, "error": "not_authorized"}, None),
        (200, {"success": True}, None),
        (403, {"error": "no_such_instance"}, None),
        (500, "<html>oops</html>", None),
    ],
)
def test_read_absence(status: int, body: Any, expected: Absence | None) -> None:
    assert read_absence(status, body) is expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@given(
    status=st.sampled_from([200, 404, 410]),
    body=st.text(max_size=60) | st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
def test_only_vasts_instance_codes_read_as_gone(status: int, body: Any) -> None:
    """Gone needs a 200/404 JSON object whose error is no_such_instance or invalid_id, and
    never a mention of "no such endpoint"."""
    if read_absence(status, body) is Absence.INSTANCE:
        assert status in (200, 404)
        assert isinstance(body, dict)
        assert body.get("error") in ("no_such_instance", "invalid_id")
        text = " ".join(str(body.get(k) or "") for k in ("msg", "message", "detail"))
        assert "no such endpoint" not in text.lower()


# --- destroy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"success": False, "error": "no_such_instance", "msg": "error 404/3600: no_such_instance"},
        {"success": False, "error": "invalid_id", "msg": "Invalid instance id."},
    ],
)
def test_destroy_of_a_gone_instance_is_false(
    client: Client, router: respx.Router, body: dict[str, Any]
) -> None:
    router.delete(DESTROY).respond(404, json=body)
    assert client.destroy_instance(42) is False


@pytest.mark.parametrize(("name", "answer"), ROUTE_ANSWERS, ids=ROUTE_IDS)
def test_destroy_on_a_route_answer_raises(
    client: Client, router: respx.Router, name: str, answer: httpx.Response
) -> None:
    route = router.delete(DESTROY).mock(return_value=answer)
    with pytest.raises(RouteNotFoundError) as caught:
        client.destroy_instance(42)
    error = caught.value
    assert route.call_count == 1
    assert error.route == f"DELETE {DESTROY}"
    assert error.status_code == answer.status_code
    assert "may still exist" in str(error)
    assert KEY not in str(error)
    assert KEY not in error.answer
    assert not isinstance(error, NotFoundError), "a NotFoundError reads as gone to callers"


def test_destroy_names_what_came_back(client: Client, router: respx.Router) -> None:
    router.delete(DESTROY).mock(return_value=ROUTE_ANSWERS[0][1])
    with pytest.raises(RouteNotFoundError, match=r"an HTML page \(404 Not Found\)"):
        client.destroy_instance(42)
    router.delete(DESTROY).respond(410, json={"success": False, "error": "deprecated_endpoint"})
    with pytest.raises(RouteNotFoundError, match="410 with JSON error deprecated_endpoint"):
        client.destroy_instance(42)


def test_destroy_not_found_is_gone_once_show_confirms(client: Client, router: respx.Router) -> None:
    router.delete(DESTROY).respond(404, json={"error": "not_found"})
    show = router.get(SHOW).respond(json={"instances": None})
    assert client.destroy_instance(42) is False
    assert show.call_count == 1


def test_destroy_not_found_while_show_still_lists_it_raises(
    client: Client, router: respx.Router
) -> None:
    router.delete(DESTROY).respond(404, json={"error": "not_found"})
    router.get(SHOW).respond(json={"instances": instance_json(42)})
    with pytest.raises(RouteNotFoundError, match="show-instance still lists instance 42"):
        client.destroy_instance(42)


def test_destroy_not_found_when_show_is_missing_too_raises(
    client: Client, router: respx.Router
) -> None:
    router.delete(DESTROY).respond(404, json={"error": "not_found"})
    router.get(SHOW).respond(404, text=HTML_404, headers={"content-type": "text/html"})
    with pytest.raises(RouteNotFoundError) as caught:
        client.destroy_instance(42)
    assert caught.value.route == f"GET {SHOW}"


# --- show ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"instances": None}),
        httpx.Response(404, json={"success": False, "error": "no_such_instance", "msg": "x"}),
        httpx.Response(404, json={"error": "invalid_id", "msg": "Invalid instance id."}),
    ],
)
def test_show_of_a_gone_instance_is_none(
    client: Client, router: respx.Router, answer: httpx.Response
) -> None:
    router.get(SHOW).mock(return_value=answer)
    assert client.get_instance(42) is None


@pytest.mark.parametrize(
    ("name", "answer"),
    [*ROUTE_ANSWERS, ("not-found", httpx.Response(404, json={"error": "not_found"}))],
    ids=[*ROUTE_IDS, "not-found"],
)
def test_show_on_a_route_answer_raises(
    client: Client, router: respx.Router, name: str, answer: httpx.Response
) -> None:
    router.get(SHOW).mock(return_value=answer)
    with pytest.raises(RouteNotFoundError) as caught:
        client.get_instance(42)
    assert caught.value.route == f"GET {SHOW}"
    assert KEY not in str(caught.value)


def test_show_list_without_the_instance_is_not_gone(client: Client, router: respx.Router) -> None:
    router.get(SHOW).respond(json={"instances": [instance_json(7)]})
    with pytest.raises(ResponseValidationError, match="without instance 42"):
        client.get_instance(42)


def test_show_bad_key_stays_an_authentication_error(client: Client, router: respx.Router) -> None:
    router.get(SHOW).respond(
        404, json={"success": False, "error": "auth_error", "msg": "Invalid user key"}
    )
    with pytest.raises(AuthenticationError):
        client.get_instance(42)

"""Injected request faults: which rule hits a request, and what the hit answer looks like."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from vastkit.emulator._http import Response, json_response, text_response
from vastkit.emulator._limits import RateLimiter

__all__ = [
    "FAULT_KINDS",
    "ROUTE_PAGES",
    "FaultRule",
    "fault_answer",
    "no_such_endpoint",
    "pick_fault",
    "route_answer",
    "spoil",
]

FAULT_KINDS = frozenset(
    {
        "status",
        "drop",
        "slow",
        "malformed",
        "rate_limit",
        "search_quota",
        "missing_route",
        "offer_gone",
    }
)

ROUTE_PAGES = frozenset({"html", "no_such_endpoint", "deprecated", "empty"})
"""The answers of a ``missing_route`` fault (see :func:`route_answer`)."""


@dataclass
class FaultRule:
    """A programmed fault (see :meth:`vastkit.emulator.Emulator.inject`)."""

    kind: str
    """``status``, ``drop``, ``slow``, ``malformed``, ``rate_limit``, ``search_quota`` or
    ``missing_route``."""
    endpoint: str = "*"
    """The endpoint name it applies to, or ``"*"``."""
    count: int | None = 1
    """How many requests it hits (None: no limit)."""
    probability: float | None = None
    """The chance each matching request is hit (drawn from the seed); None: always."""
    status: int = 503
    """The status code of a ``status`` fault."""
    delay_s: float = 2.0
    """The real-time delay of a ``slow`` answer."""
    processed: bool = False
    """Handle the request first, then fail its answer."""
    shape: str = "detail"
    """The 429 body of a ``rate_limit`` fault: ``detail``, ``error`` or ``text``."""
    page: str = "html"
    """The answer of a ``missing_route`` fault: one of :data:`ROUTE_PAGES`."""
    fired: int = 0
    """How many requests it has hit so far."""

    def exhausted(self) -> bool:
        """Whether the rule has fired its ``count`` times."""
        return self.count is not None and self.fired >= self.count


def pick_fault(rules: Iterable[FaultRule], endpoint: str, rng: random.Random) -> FaultRule | None:
    """The first live rule that hits a request to ``endpoint`` (counted as fired), or None.

    A rule with a ``probability`` draws from ``rng`` each time it is considered.
    """
    for rule in rules:
        if rule.exhausted() or rule.endpoint not in ("*", endpoint):
            continue
        if rule.kind == "search_quota" and endpoint != "search":
            continue
        if rule.probability is not None and rng.random() >= rule.probability:
            continue
        rule.fired += 1
        return rule
    return None


def fault_answer(
    rule: FaultRule, endpoint: str, now: float, limiter: RateLimiter, path: str = ""
) -> Response | None:
    """The answer a fault gives instead of the real one; None for ``slow`` and ``malformed``.

    ``path`` is the request's path, quoted by ``missing_route`` answers as a server would.
    """
    if rule.kind == "missing_route":
        return route_answer(rule.page, path)
    if rule.kind == "status":
        return _status_page(rule.status)
    if rule.kind == "offer_gone":
        return offer_gone_answer(rule.status, path)
    if rule.kind == "drop":
        return Response(0, b"", drop=True)
    if rule.kind == "rate_limit":
        return limiter.too_frequent(endpoint, limiter.rate_limits.get(endpoint, 1.0), rule.shape)
    if rule.kind == "search_quota":
        return limiter.quota_exceeded(now)
    return None


def spoil(rule: FaultRule, response: Response) -> Response:
    """Apply a ``slow`` (delay) or ``malformed`` (truncated body) fault to a real answer."""
    if rule.kind == "slow":
        response.delay_s = rule.delay_s
    if rule.kind == "malformed":
        response.body = response.body[: max(1, len(response.body) // 2)]
    return response


def _status_page(status: int) -> Response:
    """A gateway's HTML page for 5xx other than 500; the API's JSON for the rest."""
    if status >= 500 and status != 500:
        return text_response(
            status,
            f"<html><head><title>{status}</title></head><body><center><h1>"
            f"{status} {'Bad Gateway' if status == 502 else 'Error'}"
            f"</h1></center><hr><center>nginx</center></body></html>",
            "text/html",
        )
    return json_response(
        status,
        {"success": False, "error": "internal_error", "msg": "Internal server error"},
    )


def offer_gone_answer(status: int, path: str) -> Response:
    """Vast's answer to a create on an offer that was just taken (404) or cannot start (410)."""
    ask_id = "".join(ch for ch in path if ch.isdigit()) or "0"
    if status == 410:
        return json_response(
            410,
            {
                "success": False,
                "error": "no_such_ask",
                "msg": (
                    f"error 410/3907: no_such_ask Instance type {ask_id} is no longer available."
                ),
            },
        )
    return json_response(
        404,
        {
            "success": False,
            "error": "invalid_args",
            "msg": f"error 404/3603: no_such_ask Instance type by id {ask_id} is not available.",
            "ask_id": int(ask_id),
        },
    )


def no_such_endpoint(path: str) -> Response:
    """The API's own 404 for a path it has no route for."""
    return json_response(
        404, {"success": False, "error": "not_found", "msg": f"No such endpoint: {path}"}
    )


def route_answer(page: str, path: str) -> Response:
    """What a request gets when its route has moved or been retired (a ``missing_route`` fault).

    ``html``: a proxy's 404 page; ``no_such_endpoint``: the API's own 404 for an unknown path;
    ``deprecated``: a 410 ``deprecated_endpoint``, as Vast answers the retired v0 instance list;
    ``empty``: a 404 with no body. None of them is Vast's answer about an instance.
    """
    if page == "html":
        return text_response(
            404,
            "<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found"
            "</h1></center><hr><center>nginx</center></body></html>",
            "text/html",
        )
    if page == "no_such_endpoint":
        return no_such_endpoint(path)
    if page == "deprecated":
        return json_response(
            410,
            {
                "success": False,
                "error": "deprecated_endpoint",
                "msg": f"{path} is deprecated. Use the v1 API instead.",
            },
        )
    if page == "empty":
        return Response(404, b"", [("Content-Type", "text/plain; charset=utf-8")])
    raise ValueError(f"unknown missing_route page {page!r}; one of {sorted(ROUTE_PAGES)}")

"""Rate limits: per-endpoint minimum intervals, the offer-search window, the daily search quota,
and the 429 answers each endpoint really sends (reference sections 3.5, 5 and 9.2)."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping

from vastkit.emulator._http import Request, Response, json_response, presented_key, text_response

__all__ = ["DEFAULT_RATE_LIMITS", "RATE_LIMIT_SHAPES", "SEARCH_WINDOW", "RateLimiter"]

DEFAULT_RATE_LIMITS: Mapping[str, float] = {
    "list": 1.0,
    "show": 2.0,
    "manage": 1.0,
    "manage_bulk": 1.0,
    "destroy": 3.0,
    "destroy_bulk": 3.0,
    "create": 4.5,
    "create_bulk": 4.5,
    "bid_price": 5.5,
    "command": 1.5,
    "reboot": 1.0,
    "recycle": 1.0,
    "charges": 1.0,
    "ssh_key_create": 1.0,
    "templates": 3.0,
}
"""Minimum seconds between two requests to an endpoint per identity (reference section 9.2).
Offer search is limited separately to 10 requests per 60 s."""

SEARCH_WINDOW = (10, 60.0)
"""Offer search: at most this many requests in this many seconds, per identity."""

RATE_LIMIT_SHAPES: Mapping[str, str] = {
    "create": "detail",
    "create_bulk": "detail",
    "destroy": "error",
    "destroy_bulk": "error",
    "bid_price": "error",
    "show": "text",
    "command": "text",
}
"""Which documented 429 body each endpoint answers with (``detail`` for the others)."""


class RateLimiter:
    """Remembers who called what when, and answers 429 when a call comes too soon.

    A caller's identity is its API key and IP address together, as on the live API.

    Args:
        rate_limits: Endpoint name -> minimum interval in seconds (empty: no limits).
        search_limited: Whether offer search has its 10-per-minute limit.
        rate_limit_body: Force one 429 body shape (``detail``, ``error``, ``text``) everywhere.
        retry_after: Send ``Retry-After`` with 429 answers (the live API does not).
        search_quota: Searches allowed per UTC day (None: unlimited).
    """

    def __init__(
        self,
        *,
        rate_limits: Mapping[str, float],
        search_limited: bool,
        rate_limit_body: str | None,
        retry_after: bool,
        search_quota: int | None,
    ) -> None:
        self.rate_limits = dict(rate_limits)
        self.search_limited = search_limited
        self.rate_limit_body = rate_limit_body
        self.retry_after = retry_after
        self.search_quota = search_quota
        self._last_call: dict[tuple[str, str], float] = {}
        self._search_calls: dict[str, list[float]] = {}
        self._quota: dict[str, tuple[int, int]] = {}

    @staticmethod
    def identity(request: Request) -> str:
        """Who is calling: a digest of the key and the client address."""
        key = presented_key(request) or ""
        return hashlib.sha256(f"{key}|{request.client_ip}".encode()).hexdigest()[:16]

    def check(self, endpoint: str, request: Request, now: float) -> Response | None:
        """Record the call; the 429 answer if it came too soon, else None."""
        who = self.identity(request)
        if endpoint == "search":
            return self._check_search_window(who, now) if self.search_limited else None
        threshold = self.rate_limits.get(endpoint)
        if not threshold:
            return None
        last = self._last_call.get((endpoint, who))
        if last is not None and now - last < threshold:
            return self.too_frequent(endpoint, threshold)
        self._last_call[(endpoint, who)] = now
        return None

    def _check_search_window(self, who: str, now: float) -> Response | None:
        count, window = SEARCH_WINDOW
        calls = [t for t in self._search_calls.get(who, []) if t > now - window]
        if len(calls) >= count:
            self._search_calls[who] = calls
            return self.too_frequent("search", window / count)
        calls.append(now)
        self._search_calls[who] = calls
        return None

    def too_frequent(self, endpoint: str, threshold: float, shape: str | None = None) -> Response:
        """The 429 ``endpoint`` answers with, in ``shape`` or the endpoint's own."""
        shape = shape or self.rate_limit_body or RATE_LIMIT_SHAPES.get(endpoint, "detail")
        headers = [("x-ratelimit-limit", f"{threshold}"), ("x-ratelimit-remaining", "0")]
        if self.retry_after:
            headers.append(("Retry-After", str(max(1, math.ceil(threshold)))))
        message = f"API requests too frequent endpoint threshold={threshold}"
        if shape == "text":
            response = text_response(
                429, f"API requests too frequent: endpoint threshold={threshold}"
            )
            response.headers.extend(headers)
            return response
        if shape == "error":
            return json_response(
                429, {"success": False, "error": "rate_limit_exceeded", "msg": message}, headers
            )
        return json_response(429, {"detail": message}, headers)

    def check_quota(self, request: Request, now: float) -> Response | None:
        """Count one search against the caller's daily quota; the 429 when it is used up."""
        if self.search_quota is None:
            return None
        who = self.identity(request)
        day = int(now // 86_400)
        used_day, used = self._quota.get(who, (day, 0))
        if used_day != day:
            used = 0
        if used >= self.search_quota:
            return self.quota_exceeded(now)
        self._quota[who] = (day, used + 1)
        return None

    @staticmethod
    def quota_exceeded(now: float) -> Response:
        """The daily search quota's 429, with the next UTC midnight as ``X-RateLimit-Reset``."""
        reset = next_utc_midnight(now)
        return json_response(
            429,
            {
                "success": False,
                "error": "search_quota_exceeded",
                "msg": "Daily search quota exceeded.",
            },
            [("X-RateLimit-Reset", str(int(reset)))],
        )


def next_utc_midnight(now: float) -> float:
    """The Unix time of the UTC midnight after ``now``."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date() + dt.timedelta(days=1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()

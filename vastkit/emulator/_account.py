"""Endpoints on the account: the current user and the charges list."""

from __future__ import annotations

from vastkit.emulator._http import Response, decode_token, encode_token, error, json_response
from vastkit.emulator._render import charges, user_object
from vastkit.emulator._routes import Call, Handler
from vastkit.emulator._state import State

__all__ = ["AccountEndpoints"]


class AccountEndpoints:
    """``user`` and ``charges`` over the market ``state``."""

    def __init__(self, state: State) -> None:
        self.state = state

    def endpoints(self) -> dict[str, Handler]:
        """Endpoint name -> handler."""
        return {"user": self.user, "charges": self.charges}

    def user(self, call: Call) -> Response:
        """``GET /api/v0/users/current/``."""
        return json_response(200, user_object(self.state))

    def charges(self, call: Call) -> Response:
        """``GET /api/v0/charges/``: needs a ``day`` window; paged by offset tokens."""
        request = call.request
        filters = request.json_param("select_filters", {})
        day = filters.get("day") if isinstance(filters, dict) else None
        if not isinstance(day, dict) or "gte" not in day or "lte" not in day:
            return json_response(
                400,
                {
                    "success": False,
                    "msg": "Must provide both 'day' gte and lte filters for instance charges",
                },
            )
        try:
            start, end = float(day["gte"]), float(day["lte"])
        except (TypeError, ValueError):
            raise error(400, "invalid_request", "day gte and lte must be numbers") from None
        results = charges(self.state, start, end)
        kinds = filters.get("type", {}).get("in") if isinstance(filters.get("type"), dict) else None
        if kinds is not None and "instance" not in kinds:
            results = []
        if str(request.query.get("latest_first", "")).lower() in ("true", "1"):
            results.reverse()
        try:
            limit = min(max(int(request.query.get("limit", "20")), 1), 500)
        except ValueError:
            raise error(400, "invalid_request", "limit must be a number") from None
        offset = _offset(request.query.get("after_token"))
        page = results[offset : offset + limit]
        next_token = encode_token(offset + limit) if offset + limit < len(results) else None
        return json_response(
            200,
            {
                "success": True,
                "count": len(page),
                "total": len(results),
                "next_token": next_token,
                "results": page,
            },
        )


def _offset(token: str | None) -> int:
    """Where a charges page starts: 0, or the offset an ``after_token`` carries."""
    if not token:
        return 0
    marker = decode_token(token)
    if not isinstance(marker, int):
        raise error(400, "invalid_token", "Invalid after_token")
    return marker

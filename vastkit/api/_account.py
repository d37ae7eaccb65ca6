"""The account endpoints of :class:`vastkit.api.Client`: the user, the server's clock, charges."""

from __future__ import annotations

import email.utils
import json
from datetime import datetime

from vastkit.api._converter import structure
from vastkit.api._responses import all_pages, epoch
from vastkit.api._transport import Transport
from vastkit.api.models import Charge, User
from vastkit.clock import Clock

__all__ = ["AccountEndpoints"]


class AccountEndpoints:
    """The account calls of :class:`vastkit.api.Client` (a mixin: the client provides the
    transport and the clock)."""

    _transport: Transport
    _clock: Clock

    def current_user(self) -> User:
        """The account behind the key (``GET /api/v0/users/current``).

        Raises:
            AuthenticationError: The key is wrong.
            APIError: Anything else that went wrong.
        """
        body = self._transport.request("GET", "/api/v0/users/current", endpoint="current_user")
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "api_key"}
        return structure(body, User)

    def server_time(self) -> tuple[float, float, float] | None:
        """Read the server's clock from the HTTP ``Date`` header of an API response.

        Sends one GET without the Authorization header (the answer's status does not matter,
        only its ``Date``), timed with this client's clock.

        Returns:
            ``(sent, server, received)`` in Unix seconds: this client's clock before sending,
            the server's ``Date`` (whole seconds), this client's clock after the answer; None when
            the answer carries no usable ``Date`` header.

        Raises:
            APIConnectionError: No answer.
        """
        sent = self._clock.now()
        response = self._transport.get_plain(
            self._transport.url("/api/v0/users/current"), endpoint="server_time"
        )
        received = self._clock.now()
        header = response.headers.get("Date")
        if not header:
            return None
        try:
            parsed = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        if parsed.tzinfo is None:
            return None
        return sent, parsed.timestamp(), received

    def charges(self, start: float | datetime, end: float | datetime) -> list[Charge]:
        """Charges per instance over a period (``GET /api/v0/charges/``), all pages.

        Args:
            start: Period start (Unix seconds or an aware datetime).
            end: Period end.

        Returns:
            The charges.

        Raises:
            ValueError: ``end`` before ``start``.
            APIError: Anything that went wrong.
        """
        gte, lte = epoch(start), epoch(end)
        if lte < gte:
            raise ValueError(f"end ({lte}) is before start ({gte})")
        params: dict[str, str | int | float] = {
            "select_filters": json.dumps({"day": {"gte": gte, "lte": lte}}),
            "limit": 100,
        }
        return all_pages(
            self._transport,
            "/api/v0/charges/",
            params,
            endpoint="charges",
            key="results",
            cls=Charge,
            what="charges list",
        )

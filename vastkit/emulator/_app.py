"""The emulator's HTTP application: one request in, one response out.

:meth:`App.handle` runs every request through the same steps, each in its own module:

1. route it to an endpoint (:mod:`~vastkit.emulator._routes`): unknown paths get 404, known
   paths with another method 405;
2. let a programmed fault hit it (:mod:`~vastkit.emulator._faults`);
3. apply the endpoint's rate limit (:mod:`~vastkit.emulator._limits`);
4. authenticate the key, count offer searches against the daily quota;
5. call the endpoint's handler: offers and create (:mod:`~vastkit.emulator._offers`), instances
   (:mod:`~vastkit.emulator._instances`), logs and commands (:mod:`~vastkit.emulator._logs`),
   the account (:mod:`~vastkit.emulator._account`), SSH keys (:mod:`~vastkit.emulator._keys`),
   templates (:mod:`~vastkit.emulator._templates`); answers are shaped by
   :mod:`~vastkit.emulator._render` and :mod:`~vastkit.emulator._offer_columns`.

The loopback server (:mod:`vastkit.emulator._server`) and the in-process httpx transport both
call :meth:`App.handle`, so they behave the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from vastkit.emulator._account import AccountEndpoints
from vastkit.emulator._faults import (
    FaultRule,
    fault_answer,
    no_such_endpoint,
    pick_fault,
    spoil,
)
from vastkit.emulator._http import ApiError, Request, Response, json_response
from vastkit.emulator._instances import InstanceEndpoints
from vastkit.emulator._keys import KeyEndpoints
from vastkit.emulator._limits import RateLimiter
from vastkit.emulator._logs import LogEndpoints
from vastkit.emulator._offers import OfferEndpoints
from vastkit.emulator._routes import (
    PUBLIC,
    ROUTES,
    Auth,
    Call,
    Handler,
    Routed,
    authenticate,
    route,
)
from vastkit.emulator._state import State
from vastkit.emulator._templates import TemplateEndpoints

__all__ = ["App"]


class App:
    """The HTTP application over a :class:`State`.

    Args:
        state: The market state.
        clock_now: Reads the emulator's clock.
        api_key: The account's API key.
        rate_limits: Endpoint name -> minimum interval in seconds (empty: no limits).
        search_limited: Whether offer search has its 10-per-minute limit.
        rate_limit_body: Force one 429 body shape (``detail``, ``error``, ``text``) everywhere.
        retry_after: Send ``Retry-After`` with 429 answers (the live API does not).
        search_quota: Searches allowed per UTC day (None: unlimited).
        default_search_limit: Offers returned when a search has no ``limit``.
    """

    def __init__(
        self,
        state: State,
        clock_now: Callable[[], float],
        *,
        api_key: str,
        rate_limits: Mapping[str, float],
        search_limited: bool,
        rate_limit_body: str | None,
        retry_after: bool,
        search_quota: int | None,
        default_search_limit: int,
    ) -> None:
        self.state = state
        self.clock_now = clock_now
        self.api_key = api_key
        self.limiter = RateLimiter(
            rate_limits=rate_limits,
            search_limited=search_limited,
            rate_limit_body=rate_limit_body,
            retry_after=retry_after,
            search_quota=search_quota,
        )
        self.offers = OfferEndpoints(state, default_search_limit)
        self.handlers: dict[str, Handler] = {
            **self.offers.endpoints(),
            **InstanceEndpoints(state).endpoints(),
            **LogEndpoints(state).endpoints(),
            **AccountEndpoints(state).endpoints(),
            **KeyEndpoints(state).endpoints(),
            **TemplateEndpoints().endpoints(),
        }
        missing = {name for _, _, name in ROUTES} - set(self.handlers)
        assert not missing, f"routes without a handler: {sorted(missing)}"
        self.faults: list[FaultRule] = []
        """Programmed request faults, tried in order."""
        self.requests: list[tuple[str, str, int]] = []
        """(method, endpoint name, status) of every request answered (for assertions)."""

    def handle(self, request: Request) -> Response:
        """Answer one request (thread-safe)."""
        with self.state.lock:
            now = self.clock_now()
            self.state.advance_to(now)
            routed = route(request)
            response = self._handle(request, routed, now)
            self.requests.append((request.method, routed.endpoint or "?", response.status))
            return response

    def _handle(self, request: Request, routed: Routed, now: float) -> Response:
        name, match = routed.endpoint, routed.match
        if name is None or match is None:
            return _no_route(request, routed.path_known)
        rule = pick_fault(self.faults, name, self.state.rng_faults)
        if rule is not None and not rule.processed:
            early = fault_answer(rule, name, now, self.limiter, request.path)
            if early is not None:
                return early
        if name not in PUBLIC:
            limited = self.limiter.check(name, request, now)
            if limited is not None:
                return limited
        try:
            auth = self._authenticate(name, request, match)
            if name == "search":
                quota = self.limiter.check_quota(request, now)
                if quota is not None:
                    return quota  # final: a fault does not spoil the quota answer
            response = self.handlers[name](Call(request, auth, match))
        except ApiError as exc:
            response = json_response(exc.status, exc.body)
        if rule is None:
            return response
        # A processed fault fails the answer now that the request has taken effect; slow and
        # malformed faults spoil the real answer.
        late = fault_answer(rule, name, now, self.limiter, request.path)
        return late if late is not None else spoil(rule, response)

    def _authenticate(self, name: str, request: Request, match: re.Match[str]) -> Auth:
        return authenticate(
            name,
            request,
            match,
            account_key=self.api_key,
            instances=self.state.instances.values(),
        )


def _no_route(request: Request, path_known: bool) -> Response:
    if path_known:
        return json_response(
            405,
            {
                "success": False,
                "error": "method_not_allowed",
                "msg": f"{request.method} is not allowed here",
            },
        )
    return no_such_endpoint(request.path)

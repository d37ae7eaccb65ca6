"""Routing and authentication: which endpoint a request names, and on whose behalf it comes.

Every endpoint the emulator answers is one line of :data:`ROUTES`; its name is what rate
limits, faults and :attr:`vastkit.emulator.Emulator.requests` call it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from vastkit.emulator._http import Request, Response, error, presented_key
from vastkit.emulator._model import Instance

__all__ = [
    "INSTANCE_KEY_ROUTES",
    "KEY_ERROR_404_ROUTES",
    "PUBLIC",
    "ROUTES",
    "Auth",
    "Call",
    "Caller",
    "Handler",
    "Routed",
    "authenticate",
    "route",
]

ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/api/v0/bundles"), "search"),
    ("GET", re.compile(r"/api/v0/bundles"), "search"),
    ("PUT", re.compile(r"/api/v0/search/asks"), "search"),
    ("POST", re.compile(r"/api/v0/asks/bulk"), "create_bulk"),
    ("PUT", re.compile(r"/api/v0/asks/(\d+)"), "create"),
    ("GET", re.compile(r"/api/v1/instances"), "list"),
    ("GET", re.compile(r"/api/v0/instances/filters"), "instance_filters"),
    ("GET", re.compile(r"/api/v0/instances"), "list_v0"),
    ("PUT", re.compile(r"/api/v0/instances"), "manage_bulk"),
    ("DELETE", re.compile(r"/api/v0/instances"), "destroy_bulk"),
    ("GET", re.compile(r"/api/v0/instances/(\d+)"), "show"),
    ("PUT", re.compile(r"/api/v0/instances/(\d+)"), "manage"),
    ("DELETE", re.compile(r"/api/v0/instances/(\d+)"), "destroy"),
    ("PUT", re.compile(r"/api/v0/instances/bid_price/(\d+)"), "bid_price"),
    ("PUT", re.compile(r"/api/v0/instances/reboot/(\d+)"), "reboot"),
    ("PUT", re.compile(r"/api/v0/instances/recycle/(\d+)"), "recycle"),
    ("PUT", re.compile(r"/api/v0/instances/request_logs/(\d+)"), "request_logs"),
    ("PUT", re.compile(r"/api/v0/instances/command/(\d+)"), "command"),
    ("GET", re.compile(r"/api/v0/instances/(\d+)/ssh"), "instance_ssh_keys"),
    ("POST", re.compile(r"/api/v0/instances/(\d+)/ssh"), "instance_ssh_attach"),
    ("DELETE", re.compile(r"/api/v0/instances/(\d+)/ssh/(\d+)"), "instance_ssh_detach"),
    ("GET", re.compile(r"/api/v0/ssh"), "ssh_keys"),
    ("POST", re.compile(r"/api/v0/ssh"), "ssh_key_create"),
    ("PUT", re.compile(r"/api/v0/ssh/(\d+)"), "ssh_key_update"),
    ("DELETE", re.compile(r"/api/v0/ssh/(\d+)"), "ssh_key_delete"),
    ("GET", re.compile(r"/api/v0/template"), "templates"),
    ("GET", re.compile(r"/api/v0/users/current"), "user"),
    ("GET", re.compile(r"/api/v0/charges"), "charges"),
    ("GET", re.compile(r"/api/v0/gpu_names/unique"), "gpu_names"),
    ("GET", re.compile(r"/emulator/results/([0-9a-f]+)\.log"), "result"),
]
"""``(method, path pattern, endpoint name)``; a trailing slash is ignored."""

PUBLIC = frozenset({"gpu_names", "result"})
"""Endpoints that need no key and have no rate limit."""

INSTANCE_KEY_ROUTES = frozenset({"show", "manage", "destroy"})
"""Endpoints an instance's own key may call, on that instance only."""

KEY_ERROR_404_ROUTES = frozenset({"search", "show"})
"""Endpoints that answer a bad key with 404 ``auth_error`` instead of 401 (reference 4.3, 9.1)."""


@dataclass(frozen=True)
class Routed:
    """Where a request goes: the endpoint and its path match, or why there is none."""

    endpoint: str | None
    """The endpoint name; None when no route takes this method and path."""
    match: re.Match[str] | None
    path_known: bool
    """Some route has this path (with another method): the answer is 405, not 404."""


def route(request: Request) -> Routed:
    """Find the endpoint for ``request``."""
    path = request.path.rstrip("/") or "/"
    path_known = False
    for method, pattern, name in ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        path_known = True
        if method == request.method:
            return Routed(name, match, True)
    return Routed(None, None, path_known)


class Caller(Enum):
    """Who sends a request."""

    ACCOUNT = "account"
    """The account's API key."""
    INSTANCE = "instance"
    """An instance's own key (``CONTAINER_API_KEY``)."""
    ANONYMOUS = "none"
    """No key: public endpoints and offer search."""


@dataclass(frozen=True)
class Auth:
    """The authenticated caller."""

    caller: Caller
    instance_id: int | None = None
    """The instance whose key was used (for :attr:`Caller.INSTANCE`)."""


@dataclass(frozen=True)
class Call:
    """One routed, authenticated request, as a handler receives it."""

    request: Request
    auth: Auth
    match: re.Match[str]

    @property
    def path_id(self) -> int:
        """The number in the path (an offer or instance id)."""
        return int(self.match.group(1))


def authenticate(
    endpoint: str,
    request: Request,
    match: re.Match[str],
    *,
    account_key: str,
    instances: Iterable[Instance],
) -> Auth:
    """Who sends ``request`` to ``endpoint``.

    Raises:
        ApiError: 401 for a missing or unknown key (404 on :data:`KEY_ERROR_404_ROUTES`, as
            Vast answers there), 403 for an instance key used beyond its own instance's show,
            start/stop and destroy.
    """
    if endpoint in PUBLIC:
        return Auth(Caller.ANONYMOUS)
    refused = error(
        404 if endpoint in KEY_ERROR_404_ROUTES else 401, "auth_error", "Invalid user key"
    )
    key = presented_key(request)
    if key is None or key == "":
        if endpoint == "search":
            return Auth(Caller.ANONYMOUS)
        raise refused
    if key == account_key:
        return Auth(Caller.ACCOUNT)
    for inst in instances:
        if inst.api_key == key:
            own = match.groups() and int(match.group(1)) == inst.id
            if endpoint not in INSTANCE_KEY_ROUTES or not own:
                raise error(
                    403,
                    "not_authorized",
                    "This API key is limited to its own instance (start, stop, destroy, show).",
                )
            return Auth(Caller.INSTANCE, inst.id)
    raise refused


Handler = Callable[[Call], Response]
"""Answers one endpoint; raises :class:`~vastkit.emulator._http.ApiError` to refuse."""

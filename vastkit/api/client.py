"""The typed Vast.ai REST API client.

::

    from vastkit.api import Client, OfferQuery, CreateInstanceRequest

    with Client() as vast:  # key from VAST_API_KEY or ~/.config/vastai/vast_api_key
        offers = vast.search_offers("gpu_name=RTX_4090 num_gpus>=1 dph<0.8", order="dph+")
        created = vast.create_instance(
            offers[0].id, CreateInstanceRequest(image="pytorch/pytorch:latest", label="demo")
        )
        print(vast.get_instance(created.id))
        vast.destroy_instance(created.id)

Every method returns typed models (:mod:`vastkit.api.models`) and raises the exceptions of
:mod:`vastkit.errors`; no ``httpx`` or ``cattrs`` exception escapes.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx

from vastkit._settings import DEFAULT_BASE_URL, resolve_api_key, resolve_connection
from vastkit.api._converter import structure, structure_list
from vastkit.api._transport import RetryPolicy, Transport, TransportStats
from vastkit.api.models import (
    Charge,
    CreatedInstance,
    CreateInstanceRequest,
    Instance,
    Offer,
    User,
)
from vastkit.api.query import (
    CLI_DEFAULT_FILTERS,
    OfferQuery,
    normalize_rental_type,
    parse_order,
    parse_query,
)
from vastkit.clock import Clock, SystemClock
from vastkit.errors import (
    APIStatusError,
    APITimeoutError,
    GoneError,
    NotFoundError,
    ResponseValidationError,
)

__all__ = ["DEFAULT_BASE_URL", "Client", "resolve_api_key"]

logger = logging.getLogger("vastkit.api")

_DEFAULT_ORDER: Final = [["score", "desc"]]
_PAGE_LIMIT: Final = 25  # the v1 instance list's maximum page size
_MAX_PAGES: Final = 10_000
_T = TypeVar("_T")


def _epoch(value: float | datetime) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give charges() timezone-aware datetimes (or Unix seconds)")
        return int(value.timestamp())
    return int(value)


def _check_id(value: int, what: str = "instance id") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {value}")
    return value


class Client:
    """A client for the Vast.ai REST API.

    Args:
        api_key: The API key; see :func:`resolve_api_key` for where it is looked for when None.
        base_url: The server; default ``VAST_URL``, else the config file's ``base_url``
            (:mod:`vastkit.config`), else ``https://console.vast.ai``.
        timeout: Seconds per request (None: no timeout).
        max_retries: Retries of an idempotent call after a 429, 502, 503, 504 or a connection
            error (0 disables retries).
        http_client: An ``httpx.Client`` to send with (for proxies, custom transports, tests).
            The client closes only an ``httpx.Client`` it created itself.
        clock: Where every wait goes (pacing, backoff, log polling); default real time.
        min_intervals: Per-endpoint minimum seconds between requests, replacing the documented
            defaults (:data:`vastkit.api._transport.MIN_INTERVALS`); ``{}`` disables pacing.
        rng: Random source for retry jitter.

    Raises:
        ConfigError: No API key was found.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | None = 60.0,
        max_retries: int = 3,
        http_client: httpx.Client | None = None,
        clock: Clock | None = None,
        min_intervals: Mapping[str, float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {max_retries}")
        connection = resolve_connection(api_key, base_url)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()
        self._clock = clock if clock is not None else SystemClock()
        self._closed = False
        self._transport = Transport(
            api_key=connection.api_key,
            base_url=connection.base_url,
            http_client=self._http,
            clock=self._clock,
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries),
            min_intervals=min_intervals,
            rng=rng,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server this client talks to."""
        return self._transport.base_url

    @property
    def stats(self) -> TransportStats:
        """Requests sent and 429s seen, per endpoint."""
        return self._transport.stats

    @property
    def clock(self) -> Clock:
        """The clock every wait goes through."""
        return self._clock

    def close(self) -> None:
        """Close the HTTP client if this client created it. Safe to call twice."""
        if not self._closed:
            self._closed = True
            if self._owns_http:
                self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"

    def __getstate__(self) -> None:
        raise TypeError("a vastkit Client cannot be pickled (it holds the API key)")

    # -- offers -------------------------------------------------------------------------------

    def search_offers(
        self,
        query: OfferQuery | Mapping[str, Any] | str | None = None,
        *,
        type: str | None = None,
        order: str | Sequence[Sequence[str]] | None = None,
        limit: int | None = None,
        allocated_storage: float | None = None,
    ) -> list[Offer]:
        """Search the marketplace (``POST /api/v0/bundles/``).

        Args:
            query: An :class:`OfferQuery`; a wire query object (sent as given); or a string in
                the official CLI's query language, which is seeded with the CLI's defaults
                (verified, not external, rentable; ``verified=any`` removes one). An
                :class:`OfferQuery` or dict is sent as it is: add the defaults with
                :meth:`OfferQuery.with_defaults`. None searches with the CLI's defaults.
            type: ``on-demand`` (or ``ondemand``), ``interruptible`` (or ``bid``: prices are
                minimum bids) or ``reserved``; default the query's type, else on-demand.
            order: The CLI's order string (``"dph+"``, ``"score-"``) or ``[[column, dir]]``;
                default the query's order, else ``score`` descending.
            limit: Most offers to return (default the query's, else the server's).
            allocated_storage: GB of disk to price ``dph_total`` with (default the query's,
                else the server's).

        Returns:
            The offers, in the order the server sent them.

        Raises:
            ValueError: The query string does not parse, or an unknown rental type.
            SearchQuotaExceededError: The daily search quota is spent (never retried).
            APIError: Anything else that went wrong.
        """
        if query is None:
            wire: dict[str, Any] = {k: dict(v) for k, v in CLI_DEFAULT_FILTERS.items()}
        elif isinstance(query, OfferQuery):
            wire = query.to_dict()
        elif isinstance(query, str):
            wire = parse_query(query, CLI_DEFAULT_FILTERS)
        elif isinstance(query, Mapping):
            wire = json.loads(json.dumps(query))
        else:
            raise TypeError(f"query must be an OfferQuery, a dict or a string, got {query!r}")
        if order is not None:
            wire["order"] = (
                parse_order(order) if isinstance(order, str) else [list(pair) for pair in order]
            )
        wire.setdefault("order", [list(pair) for pair in _DEFAULT_ORDER])
        if type is not None:
            wire["type"] = normalize_rental_type(type)
        elif "type" in wire:
            wire["type"] = normalize_rental_type(str(wire["type"]))
        else:
            wire["type"] = "on-demand"
        if limit is not None:
            if limit <= 0:
                raise ValueError(f"limit must be positive, got {limit}")
            wire["limit"] = limit
        if allocated_storage is not None:
            wire["allocated_storage"] = allocated_storage
        body = self._transport.request(
            "POST", "/api/v0/bundles/", endpoint="search_offers", json_body=wire
        )
        offers = self._field(body, "offers", list)
        return structure_list(offers, Offer, path="$.offers")

    # -- instances ----------------------------------------------------------------------------

    def create_instance(self, offer_id: int, request: CreateInstanceRequest) -> CreatedInstance:
        """Rent an offer (``PUT /api/v0/asks/{offer_id}/``).

        The rental is interruptible exactly when ``request.price`` is set (the bid in $/h);
        otherwise on-demand. The call is never retried once it may have reached the server:
        on a timeout or a dropped connection it raises, and the caller reconciles by label.

        Args:
            offer_id: The offer's ``id``.
            request: What to run.

        Returns:
            The new instance's id and its instance-scoped API key.

        Raises:
            APIStatusError: The server refused. When Vast created a stopped instance anyway (a
                bid too low), the exception's ``new_contract`` is its id: destroy it, or it
                keeps billing storage.
            APIConnectionError: No answer; the instance may or may not exist.
        """
        _check_id(offer_id, "offer id")
        payload: dict[str, Any] = {
            "client_id": "me",
            "image": request.image,
            "env": dict(request.env),
            "price": request.price,
            "disk": request.disk_gb,
            "label": request.label,
            "extra": None,
            "onstart": request.onstart,
            "image_login": request.image_login,
            "python_utf8": False,
            "lang_utf8": False,
            "use_jupyter_lab": False,
            "jupyter_dir": None,
            "force": False,
            "cancel_unavail": request.cancel_unavail,
            "template_hash_id": request.template_hash_id,
            "user": None,
        }
        if request.runtype is not None:
            payload["runtype"] = request.runtype
        if request.args is not None:
            payload["args"] = list(request.args)
        body = self._transport.request(
            "PUT",
            f"/api/v0/asks/{offer_id}/",
            endpoint="create_instance",
            json_body=payload,
            idempotent=False,
        )
        self._raise_unsuccessful(body, "PUT", f"/api/v0/asks/{offer_id}/")
        created = structure(body, CreatedInstance)
        logger.info(
            "created instance %d from offer %d (%s)",
            created.id,
            offer_id,
            "interruptible" if request.interruptible else "on-demand",
        )
        return created

    def get_instance(self, instance_id: int) -> Instance | None:
        """One instance (``GET /api/v0/instances/{id}/``), or None when it does not exist.

        Raises:
            AuthenticationError: The key is wrong (Vast answers 404 ``auth_error`` here).
            APIError: Anything else that went wrong.
        """
        _check_id(instance_id)
        try:
            body = self._transport.request(
                "GET",
                f"/api/v0/instances/{instance_id}/",
                endpoint="show_instance",
                params={"owner": "me"},
            )
        except NotFoundError:
            return None
        raw = self._field(body, "instances", (dict, list, type(None)))
        if raw is None:
            return None
        if isinstance(raw, list):
            matches = [
                item for item in raw if isinstance(item, dict) and item.get("id") == instance_id
            ]
            if not matches:
                return None
            raw = matches[0]
        return structure(raw, Instance, path="$.instances")

    def list_instances(
        self,
        *,
        label: str | None = None,
        filters: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[Instance]:
        """Every instance of the account (``GET /api/v1/instances/``), all pages.

        Args:
            label: Only instances with exactly this label.
            filters: More ``select_filters`` on stored columns, e.g.
                ``{"actual_status": {"eq": "running"}}``.

        Returns:
            The instances, in id order.

        Raises:
            APIError: Anything that went wrong.
        """
        select: dict[str, Any] = {k: dict(v) for k, v in (filters or {}).items()}
        if label is not None:
            select["label"] = {"eq": label}
        params: dict[str, str | int | float] = {
            "select_filters": json.dumps(select),
            "limit": _PAGE_LIMIT,
        }
        return self._all_pages(
            "/api/v1/instances/",
            params,
            endpoint="list_instances",
            key="instances",
            cls=Instance,
            what="instance list",
        )

    def _manage(self, instance_id: int, payload: dict[str, Any]) -> None:
        _check_id(instance_id)
        path = f"/api/v0/instances/{instance_id}/"
        body = self._transport.request("PUT", path, endpoint="manage_instance", json_body=payload)
        self._raise_unsuccessful(body, "PUT", path)

    def stop_instance(self, instance_id: int) -> None:
        """Stop an instance (GPU billing stops; storage keeps billing).

        Raises:
            NotFoundError: No such instance.
            APIError: Anything else that went wrong.
        """
        self._manage(instance_id, {"state": "stopped"})

    def start_instance(self, instance_id: int) -> None:
        """Ask a stopped instance to run again (it may wait for its GPUs: "scheduling").

        Raises:
            NotFoundError: No such instance.
            APIError: Anything else that went wrong.
        """
        self._manage(instance_id, {"state": "running"})

    def label_instance(self, instance_id: int, label: str) -> None:
        """Set an instance's label.

        Raises:
            ValueError: The label is longer than 256 characters.
            APIError: Anything that went wrong.
        """
        if len(label) > 256:
            raise ValueError(f"label is {len(label)} characters; Vast allows 256")
        self._manage(instance_id, {"label": label})

    def change_bid(self, instance_id: int, price: float | None) -> None:
        """Change an interruptible instance's bid (``PUT /api/v0/instances/bid_price/{id}/``).

        Args:
            instance_id: The instance.
            price: The new bid in $/h for the whole instance; None lets Vast pick a winning bid.

        Raises:
            ValueError: A price below 0.001.
            APIError: Anything that went wrong.
        """
        _check_id(instance_id)
        if price is not None and price < 0.001:
            raise ValueError(f"bid must be at least 0.001 $/h, got {price}")
        path = f"/api/v0/instances/bid_price/{instance_id}/"
        body = self._transport.request(
            "PUT", path, endpoint="change_bid", json_body={"client_id": "me", "price": price}
        )
        self._raise_unsuccessful(body, "PUT", path)

    def destroy_instance(self, instance_id: int) -> bool:
        """Destroy an instance and stop all its billing. Irreversible.

        Returns:
            True when this call destroyed it; False when it was already gone (not an error).
            A retried request whose first attempt did the work also reads as False.

        Raises:
            APIError: Anything else that went wrong.
        """
        _check_id(instance_id)
        path = f"/api/v0/instances/{instance_id}/"
        try:
            body = self._transport.request("DELETE", path, endpoint="destroy_instance")
        except (NotFoundError, GoneError):
            logger.info("instance %d was already gone", instance_id)
            return False
        if isinstance(body, Mapping) and body.get("success") is False:
            if body.get("error") in ("no_such_instance", "not_found", "invalid_id"):
                return False
            self._raise_unsuccessful(body, "DELETE", path)
        logger.info("destroyed instance %d", instance_id)
        return True

    def instance_logs(
        self,
        instance_id: int,
        *,
        tail: int | None = None,
        timeout: float = 30.0,
        poll_interval: float = 0.5,
    ) -> str:
        """The container's log (``PUT /api/v0/instances/request_logs/{id}/``).

        Vast writes the log to a URL (``result_url``) a moment after the request; this polls
        that URL, without the API key, until it is ready.

        Args:
            instance_id: The instance.
            tail: Only the last ``tail`` lines.
            timeout: Seconds to wait for the log to appear.
            poll_interval: Seconds between polls.

        Returns:
            The log text.

        Raises:
            APITimeoutError: The log did not appear within ``timeout``.
            APIError: Anything else that went wrong.
        """
        _check_id(instance_id)
        if tail is not None and tail <= 0:
            raise ValueError(f"tail must be positive, got {tail}")
        path = f"/api/v0/instances/request_logs/{instance_id}/"
        payload: dict[str, Any] = {} if tail is None else {"tail": str(tail)}
        body = self._transport.request("PUT", path, endpoint="request_logs", json_body=payload)
        self._raise_unsuccessful(body, "PUT", path)
        result_url = self._field(body, "result_url", str)
        if not result_url.startswith(("https://", "http://")):
            raise ResponseValidationError(
                "the log request returned an unusable result_url",
                errors=["not an http(s) URL @ $.result_url"],
                body=body,
            )
        deadline = self._clock.now() + timeout
        polls = 0
        while True:
            response = self._transport.get_plain(result_url, endpoint="instance_logs_result")
            polls += 1
            if response.status_code == 200:
                return response.text
            if response.status_code not in (403, 404):
                raise self._transport._status_error(response, "GET", "(log result_url)")
            if self._clock.now() + poll_interval > deadline:
                raise APITimeoutError(
                    f"the log of instance {instance_id} was not ready after {polls} polls "
                    f"({timeout:g}s)",
                    request=response.request,
                )
            self._clock.sleep(poll_interval)

    # -- account ------------------------------------------------------------------------------

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
        gte, lte = _epoch(start), _epoch(end)
        if lte < gte:
            raise ValueError(f"end ({lte}) is before start ({gte})")
        params: dict[str, str | int | float] = {
            "select_filters": json.dumps({"day": {"gte": gte, "lte": lte}}),
            "limit": 100,
        }
        return self._all_pages(
            "/api/v0/charges/",
            params,
            endpoint="charges",
            key="results",
            cls=Charge,
            what="charges list",
        )

    # -- helpers ------------------------------------------------------------------------------

    def _all_pages(
        self,
        path: str,
        params: dict[str, str | int | float],
        *,
        endpoint: str,
        key: str,
        cls: type[_T],
        what: str,
    ) -> list[_T]:
        """GET ``path`` page after page (``next_token`` -> ``after_token``); ``body[key]`` items.

        ``params`` gains ``after_token``. A repeated or non-string token, or more than
        ``_MAX_PAGES`` pages, raises ``ResponseValidationError`` naming ``what``.
        """
        items: list[_T] = []
        seen_tokens: set[str] = set()
        for _ in range(_MAX_PAGES):
            body = self._transport.request("GET", path, endpoint=endpoint, params=params)
            page = self._field(body, key, (list, type(None))) or []
            items.extend(structure_list(page, cls, path=f"$.{key}"))
            token = body.get("next_token")
            if not token or not page:
                return items
            if not isinstance(token, str) or token in seen_tokens:
                raise ResponseValidationError(
                    f"the {what} did not advance",
                    errors=[f"next_token {token!r} repeats or is not a string @ $.next_token"],
                    body=body,
                )
            seen_tokens.add(token)
            params["after_token"] = token
        raise ResponseValidationError(
            f"the {what} did not end", errors=[f"more than {_MAX_PAGES} pages"]
        )

    @staticmethod
    def _field(body: Any, key: str, kinds: type | tuple[type, ...]) -> Any:
        if not isinstance(body, dict) or key not in body:
            raise ResponseValidationError(
                "unexpected response shape", errors=[f"missing @ $.{key}"], body=body
            )
        value = body[key]
        if not isinstance(value, kinds):
            raise ResponseValidationError(
                "unexpected response shape",
                errors=[f"unexpected {type(value).__name__} @ $.{key}"],
                body=body,
            )
        return value

    def _raise_unsuccessful(self, body: Any, method: str, path: str) -> None:
        """Vast sometimes answers 200 with ``{"success": false, ...}``: raise it as an error."""
        if not (isinstance(body, dict) and body.get("success") is False):
            return
        error = body.get("error") if isinstance(body.get("error"), str) else None
        raw_msg = body.get("msg") or body.get("message")
        msg = self._transport._redact(str(raw_msg)) if raw_msg else None
        response = httpx.Response(
            200, json=body, request=httpx.Request(method, self._transport.url(path))
        )
        parts = [f"{method} {path} -> 200 with success=false"]
        if error:
            parts.append(error)
        parts.append(msg or "(no detail message supplied)")
        raise APIStatusError(": ".join(parts), response=response, body=body, error=error, msg=msg)

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

import logging
import random
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from vastkit._settings import DEFAULT_BASE_URL, resolve_api_key, resolve_connection
from vastkit.api._account import AccountEndpoints
from vastkit.api._converter import structure_list
from vastkit.api._instances import InstanceEndpoints
from vastkit.api._responses import expect_field
from vastkit.api._ssh import SshEndpoints
from vastkit.api._transport import (
    MAX_RESPONSE_BYTES,
    Transport,
    TransportStats,
    account_id,
)
from vastkit.api.models import Offer
from vastkit.api.query import OfferQuery, search_body
from vastkit.clock import Clock, SystemClock
from vastkit.retry import RetryPolicy

__all__ = ["DEFAULT_BASE_URL", "Client", "resolve_api_key"]

logger = logging.getLogger("vastkit.api")

DEFAULT_MAX_RETRIES = 3
"""Retries of an idempotent call when neither ``retry`` nor ``max_retries`` is given."""


class Client(InstanceEndpoints, AccountEndpoints, SshEndpoints):
    """A client for the Vast.ai REST API.

    Args:
        api_key: The API key; see :func:`resolve_api_key` for where it is looked for when None.
        base_url: The server; default ``VAST_URL``, else the config file's ``base_url``
            (:mod:`vastkit.config`), else ``https://console.vast.ai``.
        timeout: Seconds per request (None: no timeout).
        max_retries: Retries of an idempotent call after a 429, 502, 503, 504 or a connection
            error (0 disables retries; default 3). A shorthand for
            ``retry=RetryPolicy(attempts=max_retries + 1)``.
        retry: The whole retry policy (:class:`vastkit.retry.RetryPolicy`: attempts, backoff,
            deadline); give this or ``max_retries``, not both.
        http_client: An ``httpx.Client`` to send with (for proxies, custom transports, tests).
            The client closes only an ``httpx.Client`` it created itself.
        clock: Where every wait goes (pacing, backoff, log polling); default real time.
        min_intervals: Per-endpoint minimum seconds between requests, replacing the documented
            documented defaults (see the client guide); ``{}`` disables pacing.
        rng: Random source for retry jitter.
        max_response_bytes: The longest answer read, in decoded bytes (default 64 MiB; None: no
            limit). A longer one stops reading there with
            :class:`~vastkit.errors.ResponseTooLargeError`, so memory stays bounded.

    Raises:
        ConfigError: No API key was found, the key is unusable (a line break, a control or
            non-ASCII character inside: the message names where it came from, never the
            key), or the config file is wrong. Raised here, before any request.
        TypeError: Both ``max_retries`` and ``retry`` were given.
        ValueError: A negative ``max_retries``.

    The instance calls come from :class:`~vastkit.api._instances.InstanceEndpoints` and the
    account calls from :class:`~vastkit.api._account.AccountEndpoints`, the SSH key and
    execute calls from :class:`~vastkit.api._ssh.SshEndpoints`; this class holds the
    connection and the offer search.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | None = 60.0,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
        clock: Clock | None = None,
        min_intervals: Mapping[str, float] | None = None,
        rng: random.Random | None = None,
        max_response_bytes: int | None = MAX_RESPONSE_BYTES,
    ) -> None:
        policy = _retry_policy(max_retries, retry)
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
            retry=policy,
            min_intervals=min_intervals,
            rng=rng,
            max_response_bytes=max_response_bytes,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server this client talks to."""
        return self._transport.base_url

    @property
    def account_id(self) -> str:
        """Who this client acts for: its server and a digest of its key (never the key itself).

        Jobs of one process that share an account share one instance list per poll interval.
        """
        return account_id(self._transport)

    @property
    def stats(self) -> TransportStats:
        """Requests sent and 429s seen, per endpoint."""
        return self._transport.stats

    @property
    def retry(self) -> RetryPolicy:
        """How failed idempotent calls are retried."""
        return self._transport.retry

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
        wire = search_body(
            query, type=type, order=order, limit=limit, allocated_storage=allocated_storage
        )
        body = self._transport.request(
            "POST", "/api/v0/bundles/", endpoint="search_offers", json_body=wire
        )
        offers = expect_field(body, "offers", list)
        return structure_list(offers, Offer, path="$.offers")


def _retry_policy(max_retries: int | None, retry: RetryPolicy | None) -> RetryPolicy:
    if retry is not None:
        if max_retries is not None:
            raise TypeError("give retry= or max_retries=, not both")
        return retry
    if max_retries is None:
        max_retries = DEFAULT_MAX_RETRIES
    if max_retries < 0:
        raise ValueError(f"max_retries must not be negative, got {max_retries}")
    return RetryPolicy(attempts=max_retries + 1)

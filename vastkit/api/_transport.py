"""Talking HTTP to Vast: auth, pacing, retries, error mapping, redaction and request counts.

* The API key is sent only as ``Authorization: Bearer``; it never appears in a URL, a log line,
  a repr or an exception (:class:`~vastkit.api._redaction.Redactor`: every spelling of the key,
  raw, ``repr``-, JSON- or URL-escaped, is replaced in each answer's bytes and decoded body, in
  every field of every error raised here and of the errors chained to it, and a request is
  stripped of its ``Authorization`` header once it has been sent).
* Every answer is read as a stream and stops at :data:`MAX_RESPONSE_BYTES` (decoded bytes,
  so a gzip bomb stops too) with :class:`~vastkit.errors.ResponseTooLargeError`; JSON nested
  deeper than :data:`MAX_JSON_DEPTH` is refused the same way before it is parsed; a body that
  cannot be decompressed is a :class:`~vastkit.errors.ResponseDecodingError`, and one that is not
  JSON a :class:`~vastkit.errors.ResponseValidationError`. Nothing from ``httpx`` or ``json``
  escapes.
* Each endpoint is paced to its documented minimum interval between requests (reference
  section 9.2), so a busy caller stays under Vast's limits even though Vast sends no
  ``Retry-After``. Vast counts per key, so pacing is per account and process
  (:mod:`vastkit.api._pacing`): every Transport of the process on the same server and key, in
  any thread, shares when each endpoint was last sent to and how long a 429 keeps it quiet;
  each request reserves the next free slot.
* Idempotent calls are retried on 429, 502, 503, 504 and on connection errors through the one
  retry loop, :func:`vastkit.retry.retry_call`, with its :class:`~vastkit.retry.RetryPolicy`
  (jittered exponential backoff); ``Retry-After`` (seconds or an HTTP date) is honoured up to
  :data:`MAX_RETRY_AFTER`. A call marked non-idempotent (creating an instance) is retried only
  when the connection failed before the request was sent (:func:`may_have_arrived`).
* The daily ``search_quota_exceeded`` 429 is raised at once as
  :class:`~vastkit.errors.SearchQuotaExceededError` with ``resets_at``.
* All waiting goes through the injected clock.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx

from vastkit._version import __version__
from vastkit.api._pacing import AccountPacing, pacing_for, quiet_after_429
from vastkit.api._redaction import Redactor, request_without_key
from vastkit.clock import Clock
from vastkit.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    GoneError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseDecodingError,
    ResponseTooLargeError,
    ResponseValidationError,
    SearchQuotaExceededError,
    ServerError,
)
from vastkit.retry import RetryPolicy, retry_call

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER",
    "MIN_INTERVALS",
    "PACING_MARGIN",
    "RETRY_STATUSES",
    "Transport",
    "TransportStats",
    "account_id",
    "decode_json",
    "json_depth_exceeds",
    "may_have_arrived",
    "parse_retry_after",
]

logger = logging.getLogger("vastkit.api")

MIN_INTERVALS: Final[Mapping[str, float]] = {
    "search_offers": 6.0,  # "10 requests per minute per IP"
    "create_instance": 4.5,
    "list_instances": 1.0,
    "show_instance": 2.0,
    "manage_instance": 1.0,  # stop, start, label
    "destroy_instance": 3.0,
    "change_bid": 5.5,
    "request_logs": 1.5,  # undocumented; paced like "execute"
    "current_user": 1.0,  # undocumented; paced like the other account endpoints
    "charges": 1.0,
}
"""Seconds between two requests to the same endpoint, from the documented thresholds."""

PACING_MARGIN: Final = 1.1
"""Requests are spaced 10% wider than the documented minimum: the server measures arrivals, and
network jitter would otherwise bring two requests just under the threshold (a 429)."""

RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
"""Statuses after which an idempotent call is tried again."""

MAX_RETRY_AFTER: Final = 60.0
"""The longest ``Retry-After`` (seconds) honoured; a longer one is not retried (the error carries
it)."""


MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
"""The longest answer read, in decoded bytes (64 MiB: about 25,000 offers as Vast sends them).
``Client(max_response_bytes=...)`` changes it; None reads without a limit."""

MAX_JSON_DEPTH: Final = 64
"""The deepest JSON accepted (Vast's answers nest 4 levels); deeper is refused before parsing."""

_BRACKETS_AND_STRINGS: Final = bytes(range(256)).translate(None, b'[]{}"\\')
"""Every byte except brackets, quotes and backslashes (deleted first by the depth check)."""
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_PAIRS: Final = (b"[]", b"{}")


def json_depth_exceeds(content: bytes, limit: int) -> bool:
    """Whether JSON ``content`` nests deeper than ``limit`` levels, without parsing it.

    Runs at C speed: everything but brackets, quotes and backslashes is deleted, then the
    strings, then innermost bracket pairs one level per pass (at most ``limit`` passes).
    Unbalanced brackets count as deep only when they leave more than ``limit`` opens; JSON that
    is not valid is refused by the parser anyway.
    """
    skeleton = _STRING.sub(b"", content.translate(None, _BRACKETS_AND_STRINGS))
    for _ in range(limit):
        if not skeleton:
            return False
        shorter = skeleton.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(skeleton):
            break  # unbalanced: what is left cannot nest
        skeleton = shorter
    else:
        return bool(skeleton) and any(pair in skeleton for pair in _PAIRS)
    return False


def decode_json(content: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON body (``NaN`` and ``Infinity`` allowed, as Python's json reads them).

    Raises:
        ResponseTooLargeError: Nested deeper than ``max_depth``.
        ValueError: Not JSON (not UTF-8, truncated, garbled, a number too long to read).
    """
    if json_depth_exceeds(content, max_depth):
        raise ResponseTooLargeError(
            f"the answer's JSON nests deeper than {max_depth} levels",
            limit=max_depth,
            unit="levels",
        )
    try:
        return json.loads(content)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply to parse") from exc


class TransportStats:
    """Requests sent per endpoint, and what came back. Thread-safe.

    Attributes:
        requests: Requests sent (every attempt counts) per endpoint name.
        rate_limited: 429 answers per endpoint name.
        retries: Retries per endpoint name.
        waited: Seconds spent pacing and backing off, per endpoint name.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.rate_limited: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.waited: dict[str, float] = {}

    def _add(self, table: dict[str, Any], endpoint: str, amount: float = 1) -> None:
        with self._lock:
            table[endpoint] = table.get(endpoint, 0) + amount

    @property
    def total_requests(self) -> int:
        """All requests sent."""
        with self._lock:
            return sum(self.requests.values())

    @property
    def total_rate_limited(self) -> int:
        """All 429 answers seen."""
        with self._lock:
            return sum(self.rate_limited.values())

    def snapshot(self) -> dict[str, dict[str, float]]:
        """A copy of every table, for reports and benchmarks."""
        with self._lock:
            return {
                "requests": dict(self.requests),
                "rate_limited": dict(self.rate_limited),
                "retries": dict(self.retries),
                "waited": dict(self.waited),
            }

    def reset(self) -> None:
        """Zero every count."""
        with self._lock:
            self.requests.clear()
            self.rate_limited.clear()
            self.retries.clear()
            self.waited.clear()

    def __repr__(self) -> str:
        return (
            f"TransportStats(requests={self.total_requests}, "
            f"rate_limited={self.total_rate_limited})"
        )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        parsed = email.utils.parsedate_tz(text)
        if parsed is None:
            return None
        return max(0.0, float(email.utils.mktime_tz(parsed)) - now)
    except (TypeError, ValueError, OverflowError, IndexError):  # a garbled date
        return None


def may_have_arrived(error: APIConnectionError) -> bool:
    """Whether a request that got no answer may have reached the server.

    Only a failure to connect (refused, or timed out while connecting) proves it did not; a read
    timeout or a dropped connection may come after the server acted.
    """
    return not isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout)


def _next_utc_midnight(now: float) -> float:
    day = 86400.0
    return (now // day + 1) * day


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


def _decode_body(response: httpx.Response, max_depth: int) -> Any:
    """The body as JSON when it is JSON (and not too deep), else the text (possibly empty)."""
    content = response.content
    if not content.strip():
        return ""
    try:
        return decode_json(content, max_depth=max_depth)
    except (ValueError, ResponseTooLargeError):
        return response.text


def _summarise_text(text: str, content_type: str) -> str:
    stripped = text.strip()
    if "html" in content_type.lower() or stripped.startswith("<"):
        title = _TITLE.search(stripped)
        if title:
            return " ".join(title.group(1).split())
        return " ".join(_TAGS.sub(" ", stripped).split())[:200] or "an HTML page"
    return stripped[:500]


def _read_limited(
    response: httpx.Response, limit: int | None, shown: httpx.Request, what: str
) -> bytes:
    """The decoded body of a streamed ``response``, read up to ``limit`` bytes.

    Raises:
        ResponseTooLargeError: The body is longer (reading stops there).
        httpx.HTTPError: Reading or decoding failed (the caller maps it).
    """
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if limit is not None and size > limit:
            raise ResponseTooLargeError(
                f"{what} answered {response.status_code} with more than {limit:,} bytes; reading "
                "stopped there (raise the limit with Client(max_response_bytes=...), or ask for "
                "fewer items)",
                limit=limit,
                request=shown,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _decoding_error(
    exc: httpx.DecodingError,
    shown: httpx.Request,
    what: str,
    encoding: str,
    redact: Callable[[str], str],
) -> ResponseDecodingError:
    return ResponseDecodingError(
        f"{what} answered with a body that cannot be decoded "
        f"(Content-Encoding: {redact(encoding)[:40]}): {redact(str(exc))[:200]}",
        request=shown,
    )


_STATUS_CLASSES: Final[Mapping[int, type[APIStatusError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    410: GoneError,
    429: RateLimitError,
}


class Transport:
    """Sends requests to the Vast API. Used by :class:`vastkit.api.Client`; not public.

    Args:
        api_key: The key, sent only as a Bearer header.
        base_url: The server, e.g. ``https://console.vast.ai``.
        http_client: The ``httpx.Client`` to send with.
        clock: Where every wait goes.
        timeout: Per-request timeout in seconds (None: no timeout).
        retry: The retry policy (``attempts`` counts the first try).
        min_intervals: Per-endpoint pacing; :data:`MIN_INTERVALS` by default.
        max_retry_after: The longest ``Retry-After`` honoured, in seconds.
        rng: The random source for jitter (inject a seeded one for reproducible tests).
        max_response_bytes: The longest answer read, in decoded bytes (None: no limit).
        max_json_depth: The deepest JSON accepted.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        http_client: httpx.Client,
        clock: Clock,
        timeout: float | None,
        retry: RetryPolicy,
        min_intervals: Mapping[str, float] | None = None,
        rng: random.Random | None = None,
        max_retry_after: float = MAX_RETRY_AFTER,
        max_response_bytes: int | None = MAX_RESPONSE_BYTES,
        max_json_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        if max_response_bytes is not None and (
            isinstance(max_response_bytes, bool)
            or not isinstance(max_response_bytes, int)
            or max_response_bytes <= 0
        ):
            raise ValueError(
                f"max_response_bytes must be a positive int or None, got {max_response_bytes!r}"
            )
        if isinstance(max_json_depth, bool) or not isinstance(max_json_depth, int):
            raise TypeError(f"max_json_depth must be an int, got {max_json_depth!r}")
        if not 1 <= max_json_depth <= 500:
            raise ValueError(f"max_json_depth must be between 1 and 500, got {max_json_depth}")
        self._api_key = api_key
        self._redactor = Redactor(api_key)
        self.max_response_bytes = max_response_bytes
        self.max_json_depth = max_json_depth
        self.base_url = base_url.rstrip("/")
        self.http = http_client
        self.clock = clock
        self.timeout = timeout
        self.retry = retry
        self.max_retry_after = max_retry_after
        self.min_intervals = dict(MIN_INTERVALS if min_intervals is None else min_intervals)
        self._rng = rng or random.Random()
        self.pacing: AccountPacing = pacing_for(account_id(self), clock)  # the account's
        self.stats = TransportStats()
        self.user_agent = f"vastkit/{__version__}"

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r})"

    # -- redaction ----------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with the API key, in any spelling, replaced by ``[redacted]``."""
        return self._redactor.text(text)

    def redact_value(self, value: Any) -> Any:
        """A decoded JSON value with the API key replaced in every string."""
        return self._redactor.value(value)

    def scrub(self, exc: BaseException) -> BaseException:
        """Remove the API key from every field of ``exc`` and of what it was chained from."""
        return self._redactor.exception(exc)

    # -- pacing -------------------------------------------------------------------------------

    def _pace(self, endpoint: str) -> None:
        interval = self.min_intervals.get(endpoint, 0.0) * PACING_MARGIN
        now, slot = self.pacing.reserve(endpoint, interval, self.clock)
        wait = slot - now
        if wait > 0:
            logger.debug("pacing %s: waiting %.2fs", endpoint, wait)
            self.stats._add(self.stats.waited, endpoint, wait)
            self.clock.sleep(wait)

    def _push_back(self, endpoint: str, delay: float) -> None:
        """After a 429, keep every caller of ``endpoint`` on the account away ``delay`` s."""
        self.pacing.keep_quiet(endpoint, self.clock.now() + delay)

    # -- requests -----------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """The absolute URL of an API path (``/api/v0/...``)."""
        return f"{self.base_url}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: Mapping[str, str | int | float] | None = None,
        json_body: Any = None,
        idempotent: bool = True,
    ) -> Any:
        """Send one API call and return its decoded JSON body.

        Args:
            method: ``GET``, ``POST``, ``PUT`` or ``DELETE``.
            path: The API path, ``/api/v0/...``.
            endpoint: The name used for pacing and counting (a key of :data:`MIN_INTERVALS`).
            params: Query parameters (already encoded to strings where Vast wants JSON).
            json_body: The JSON body; ``{}`` is sent for non-GET calls without one.
            idempotent: False for calls that must not be repeated once they may have reached
                the server (creating an instance).

        Returns:
            The decoded JSON body.

        Raises:
            APIStatusError: An error status (the subclass for its family), after retries.
            APIConnectionError: No answer, after retries.
            ResponseValidationError: A success status whose body is not JSON.
        """
        tries = 0

        def attempt() -> Any:
            nonlocal tries
            tries += 1
            request = self._build(method, path, params, json_body)
            try:
                return self._send_once(request, method, path, endpoint, tries)
            except BaseException as exc:
                self.scrub(exc)
                raise

        def retry_if(error: Exception) -> bool:
            return self.retryable(error, idempotent=idempotent)

        def wait_for(error: Exception) -> float | None:
            return self._server_wait(error, endpoint, tries)

        def on_retry(error: Exception, retry: int, wait: float) -> None:
            self._note_retry(error, retry, wait, method=method, path=path, endpoint=endpoint)

        return retry_call(
            attempt,
            policy=self.retry,
            clock=self.clock,
            retry_if=retry_if,
            rng=self._rng,
            wait_for=wait_for,
            on_retry=on_retry,
            what=f"{method} {path}",
        )

    def retryable(self, error: Exception, *, idempotent: bool) -> bool:
        """Whether ``error`` is worth another try of the same call.

        Connection errors are, unless the call is not idempotent and the request may have arrived;
        429, 502, 503 and 504 are for idempotent calls, unless the server asked for a wait longer
        than :attr:`max_retry_after`; the daily search quota and everything else are not.
        """
        if isinstance(error, APIConnectionError):
            return idempotent or not may_have_arrived(error)
        if isinstance(error, SearchQuotaExceededError) or not isinstance(error, APIStatusError):
            return False
        if error.status_code not in RETRY_STATUSES or not idempotent:
            return False
        asked = self._retry_after(error)
        return asked is None or asked <= self.max_retry_after

    def get_plain(self, url: str, *, endpoint: str) -> httpx.Response:
        """GET a URL outside the API (a log ``result_url``), without the Authorization header.

        Raises:
            APIConnectionError: No answer (:class:`~vastkit.errors.ResponseDecodingError`: a
                body that cannot be decompressed).
            ResponseValidationError: ``url`` cannot be fetched (no host, not http(s)).
            ResponseTooLargeError: The answer is longer than :attr:`max_response_bytes`.
        """
        self.stats._add(self.stats.requests, endpoint)
        try:
            request = self.http.build_request(
                "GET", url, headers={"User-Agent": self.user_agent}, timeout=self.timeout
            )
            if not request.url.host:
                raise httpx.InvalidURL("the URL has no host")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise self.scrub(
                ResponseValidationError(
                    "the answer named a URL that cannot be fetched",
                    errors=[f"{self.redact(str(exc))} @ $.result_url"],
                )
            ) from None
        request.headers.pop("Authorization", None)
        try:
            return self._receive(request, "GET", "(log result_url)")
        except BaseException as exc:
            self.scrub(exc)
            raise

    # -- helpers ------------------------------------------------------------------------------

    def _build(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int | float] | None,
        json_body: Any,
    ) -> httpx.Request:
        if json_body is None and method != "GET":
            json_body = {}
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": self.user_agent,
        }
        return self.http.build_request(
            method,
            self.url(path),
            params=dict(params) if params else None,
            json=json_body,
            headers=headers,
            timeout=self.timeout,
        )

    def _send_once(
        self, request: httpx.Request, method: str, path: str, endpoint: str, attempt: int
    ) -> Any:
        """One paced try: the decoded body, or the error it came to (raised)."""
        self._pace(endpoint)
        self.stats._add(self.stats.requests, endpoint)
        started = self.clock.now()
        response = self._receive(request, method, path)
        logger.debug(
            "%s %s -> %d (attempt %d, %.2fs)",
            method,
            path,
            response.status_code,
            attempt,
            self.clock.now() - started,
        )
        if response.status_code < 400:
            return self._success_body(response, method, path)
        error = self.status_error(response, method, path)
        if response.status_code == 429:
            self.stats._add(self.stats.rate_limited, endpoint)
            if not isinstance(error, SearchQuotaExceededError):  # a daily quota, not a spacing
                interval = self.min_intervals.get(endpoint, 0.0) * PACING_MARGIN
                asked = self._retry_after(error)
                self._push_back(endpoint, quiet_after_429(asked, interval, self.max_retry_after))
        raise error

    def _retry_after(self, error: Exception) -> float | None:
        if not isinstance(error, APIStatusError):
            return None
        return parse_retry_after(error.response.headers.get("Retry-After"), self.clock.now())

    def _server_wait(self, error: Exception, endpoint: str, tries: int) -> float | None:
        """The wait the answer asks for (``Retry-After``, or a 429's pacing), else None: backoff."""
        asked = self._retry_after(error)
        if asked is not None:
            return asked + self._rng.random() * 0.1
        if isinstance(error, APIStatusError) and error.status_code == 429:
            return max(self.retry.delay(tries, self._rng), self.min_intervals.get(endpoint, 0.0))
        return None

    def _note_retry(
        self, error: Exception, retry: int, wait: float, *, method: str, path: str, endpoint: str
    ) -> None:
        """Count and log a retry (INFO: a retry that fails for good raises); after a 429, keep
        every caller of ``endpoint`` away as long."""
        if isinstance(error, APIStatusError):
            status = error.status_code
            logger.info("%s %s -> %d; retry %d in %.2fs", method, path, status, retry, wait)
            if status == 429:
                self._push_back(endpoint, wait)
        else:
            cause = type(error.__cause__ or error).__name__
            logger.info("%s %s failed (%s); retry %d in %.2fs", method, path, cause, retry, wait)
        self.stats._add(self.stats.retries, endpoint)
        self.stats._add(self.stats.waited, endpoint, wait)

    def _receive(self, request: httpx.Request, method: str, path: str) -> httpx.Response:
        """Send ``request`` and read its answer as a stream, up to :attr:`max_response_bytes`.

        Returns:
            The answer, read whole, with the key removed from its body and headers (and without
            ``Content-Encoding``: the body is already decoded).

        Raises:
            APIConnectionError: No answer, or the answer broke off.
            ResponseDecodingError: The body could not be decompressed.
            ResponseTooLargeError: The body is longer than the limit.
        """
        shown = request_without_key(request)
        try:
            response = self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._connection_error(exc, shown, method, path) from exc
        except httpx.DecodingError as exc:  # a transport that decodes while it sends
            raise _decoding_error(exc, shown, f"{method} {path}", "?", self.redact) from exc
        except httpx.HTTPError as exc:  # a redirect loop, a stream error: no usable answer
            raise APIConnectionError(
                f"{method} {path} failed: {self.redact(str(exc)) or type(exc).__name__}",
                request=shown,
            ) from exc
        try:
            content = _read_limited(response, self.max_response_bytes, shown, f"{method} {path}")
        except httpx.DecodingError as exc:
            encoding = response.headers.get("content-encoding", "?")
            raise _decoding_error(exc, shown, f"{method} {path}", encoding, self.redact) from exc
        except httpx.TransportError as exc:
            raise self._connection_error(exc, shown, method, path) from exc
        except httpx.HTTPError as exc:
            raise APIConnectionError(
                f"{method} {path}: the answer broke off ({type(exc).__name__})", request=shown
            ) from exc
        finally:
            response.close()
        headers = [
            (name, self.redact(value))
            for name, value in response.headers.items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        extensions: dict[str, Any] = {
            name: response.extensions[name]
            for name in ("http_version", "reason_phrase")
            if name in response.extensions
        }
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=self._redactor.binary(content),
            request=shown,
            extensions=extensions,
        )

    def _connection_error(
        self, exc: httpx.TransportError, request: httpx.Request, method: str, path: str
    ) -> APIConnectionError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        detail = self.redact(str(exc)) or type(exc).__name__
        message = f"{method} {path} {kind}: {detail}"
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(message, request=request)
        return APIConnectionError(message, request=request)

    def _success_body(self, response: httpx.Response, method: str, path: str) -> Any:
        content = response.content
        try:
            body = decode_json(content, max_depth=self.max_json_depth)
        except ResponseTooLargeError as exc:
            raise ResponseTooLargeError(
                f"{method} {path} answered {response.status_code} with JSON nested deeper than "
                f"{exc.limit} levels",
                limit=exc.limit,
                unit=exc.unit,
                request=response.request,
            ) from None
        except ValueError as exc:
            text = self.redact(
                _summarise_text(response.text, response.headers.get("content-type", ""))
            )
            raise ResponseValidationError(
                f"{method} {path} answered {response.status_code} with a body that is not JSON",
                errors=[f"not JSON ({text[:100]!r}) @ $"],
                body=self.redact(response.text),
                request=response.request,
            ) from exc
        return self._redactor.decoded(content, body)

    def status_error(self, response: httpx.Response, method: str, path: str) -> APIStatusError:
        """Map an error response (any documented body shape) to its exception."""
        status = response.status_code
        body = self._redactor.decoded(response.content, _decode_body(response, self.max_json_depth))
        error: str | None = None
        msg: str | None = None
        if isinstance(body, Mapping):
            raw_error = body.get("error")
            if isinstance(raw_error, str) and raw_error:
                error = raw_error
            for key in ("msg", "message", "detail"):
                value = body.get(key)
                if value:
                    msg = value if isinstance(value, str) else json.dumps(value, default=str)
                    break
        elif isinstance(body, str) and body:
            msg = _summarise_text(body, response.headers.get("content-type", ""))
        elif body not in ("", None):
            msg = json.dumps(body, default=str)[:500]
        if msg is not None:
            msg = self.redact(msg)
        if isinstance(body, str):
            body = self.redact(body)

        cls: type[APIStatusError]
        lowered = (msg or "").lower()
        if status == 404 and (
            error == "auth_error" or "invalid user key" in lowered or "session expired" in lowered
        ):
            cls = AuthenticationError
        elif status >= 500:
            cls = ServerError
        else:
            cls = _STATUS_CLASSES.get(status, APIStatusError)

        reason = response.reason_phrase or ""
        parts = [f"{method} {path} -> {status}{' ' + reason if reason else ''}"]
        if error:
            parts.append(error)
        parts.append(msg or "(no detail message supplied)")
        message = ": ".join(parts)

        if status == 429 and error == "search_quota_exceeded":
            reset_header = response.headers.get("X-RateLimit-Reset")
            try:
                resets_at = float(reset_header) if reset_header else None
            except ValueError:
                resets_at = None
            if resets_at is not None and not 0 <= resets_at < 253402300800:  # year 10000
                resets_at = None
            if resets_at is None:
                resets_at = _next_utc_midnight(self.clock.now())
            stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(resets_at))
            return SearchQuotaExceededError(
                f"{message}. Resets at {stamp} UTC.",
                response=response,
                body=body,
                error=error,
                msg=msg,
                resets_at=resets_at,
            )
        if cls is RateLimitError:
            return RateLimitError(
                message,
                response=response,
                body=body,
                error=error,
                msg=msg,
                retry_after=parse_retry_after(
                    response.headers.get("Retry-After"), self.clock.now()
                ),
            )
        return cls(message, response=response, body=body, error=error, msg=msg)


def account_id(transport: Transport) -> str:
    """The server and a digest of the key: names the account without revealing the key.

    Vast's rate limits count per key, so this also names the pacing a transport shares
    (:func:`~vastkit.api._pacing.pacing_for`).
    """
    digest = hashlib.sha256(f"{transport.base_url}\0{transport._api_key}".encode()).hexdigest()
    return f"{transport.base_url}#{digest[:16]}"

"""Every exception vastkit raises on purpose.

The tree::

    VastkitError
    ├── ConfigError                     bad settings: a file, a line, a key
    │   ├── ConfigValueError            ... a bad value given in Python (also a ValueError)
    │   ├── ConfigTypeError             ... a wrong type given in Python (also a TypeError)
    │   └── QueryError                  ... an offer query that does not parse (a ValueError)
    ├── APIError                        anything that went wrong talking to Vast.ai
    │   ├── APIConnectionError          the request never got an answer
    │   │   ├── APITimeoutError         ... because it ran out of time
    │   │   └── ResponseDecodingError   ... because its body could not be decoded (bad gzip)
    │   ├── APIStatusError              the server answered with an error status
    │   │   ├── BadRequestError         400
    │   │   ├── AuthenticationError     401 (and the 404 "Invalid user key" some endpoints send)
    │   │   ├── PermissionDeniedError   403
    │   │   ├── NotFoundError           404
    │   │   ├── GoneError               410 (offer no longer available, deprecated endpoint)
    │   │   ├── RouteNotFoundError      a 404/410 about the route, not the instance: it may bill
    │   │   ├── RateLimitError          429, with ``retry_after``
    │   │   │   └── SearchQuotaExceededError   the daily search quota, with ``resets_at``
    │   │   └── ServerError             5xx
    │   └── ResponseValidationError     the answer did not have the documented shape
    │       └── ResponseTooLargeError   ... or was longer, or nested deeper, than allowed
    ├── NoOfferError                    no offer satisfies a profile (carries the explanation)
    ├── ProvisioningError               an instance could not be brought up
    ├── DestroyFailedError              destroy was not confirmed in time: it may still bill
    ├── BudgetExceededError             a budget or a duration cap forbids the spend
    ├── CheckpointError                 a checkpoint could not be written, found or read
    │   └── CheckpointCorruptError      a checkpoint failed verification
    ├── LedgerError                     the local ledger could not be opened or written
    └── JobError                        a job could not be run as asked

Programmer mistakes (a negative budget, an empty id) raise :class:`ValueError` or
:class:`TypeError` at the call instead.

No exception from httpx, cattrs, botocore or PyYAML escapes the public API: they are translated at
the boundary and chained (``raise ... from exc``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import httpx

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "CheckpointCorruptError",
    "CheckpointError",
    "ConfigError",
    "ConfigTypeError",
    "ConfigValueError",
    "DestroyFailedError",
    "GoneError",
    "JobError",
    "LedgerError",
    "NoOfferError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProvisioningError",
    "QueryError",
    "RateLimitError",
    "ResponseDecodingError",
    "ResponseTooLargeError",
    "ResponseValidationError",
    "RouteNotFoundError",
    "SearchQuotaExceededError",
    "ServerError",
    "VastkitError",
    "install_hint",
]


class VastkitError(Exception):
    """The root of every error vastkit raises on purpose."""


class ConfigError(VastkitError):
    """A configuration file or setting is wrong.

    Attributes:
        path: The file that holds the mistake, when there is one.
        line: The 1-based line of the mistake in that file, when known.
        key: The dotted key that is wrong (``profiles.dev-test.max_dph``), when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        where = ""
        if path is not None:
            where = path if line is None else f"{path}:{line}"
        if key is not None:
            where = f"{where}: {key}" if where else key
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class ConfigValueError(ConfigError, ValueError):
    """A setting given in Python has a value that is not allowed (also a :class:`ValueError`).

    One ``except ConfigError`` catches a bad file and a bad argument alike; ``path`` and
    ``line`` are None here.

    Attributes:
        key: The setting (``"poll_interval"``); also :attr:`field`.
        owner: The class whose field is wrong (``"JobTimeouts"``), when known.
        problem: What is wrong, after the field's name (``"must be ... (got -5)"``).
        allowed: What the field accepts, in words ("" when not stated).
    """

    def __init__(
        self,
        key: str,
        message: str,
        *,
        owner: str | None = None,
        problem: str | None = None,
        allowed: str = "",
    ) -> None:
        ConfigError.__init__(self, message)
        self.key = key
        self.field = key
        self.owner = owner
        self.problem = problem if problem is not None else message
        self.allowed = allowed

    @classmethod
    def of(cls, owner: str, field: str, problem: str, *, allowed: str = "") -> Self:
        """The error for ``owner.field``: the message reads ``"Owner.field <problem>"``."""
        return cls(
            field, f"{owner}.{field} {problem}", owner=owner, problem=problem, allowed=allowed
        )


class ConfigTypeError(ConfigValueError, TypeError):
    """A setting given in Python has the wrong type (also a :class:`TypeError`)."""


class QueryError(ConfigError, ValueError):
    """An offer query is wrong: it does not parse, or holds a value Vast cannot compare.

    A :class:`~vastkit.errors.ConfigError` (so a :class:`~vastkit.errors.VastkitError`) and a
    :class:`ValueError`.

    Attributes:
        fragment: The part of the query that is wrong (``"cpu_ram>=nan"``), when known.
    """

    def __init__(self, message: str, *, fragment: str | None = None) -> None:
        super().__init__(message)
        self.fragment = fragment


class APIError(VastkitError):
    """Something went wrong talking to the Vast.ai API.

    Attributes:
        request: The request that failed, when there was one. Its headers never hold the API key
            in any message vastkit builds.
    """

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class APIConnectionError(APIError):
    """The request did not get an answer (connection refused, reset, DNS failure...)."""


class APITimeoutError(APIConnectionError):
    """The request ran out of time before an answer arrived."""


class ResponseDecodingError(APIConnectionError):
    """The answer's body could not be decoded (a damaged gzip or deflate stream).

    The body arrived damaged, which a proxy or a dropped connection causes far more often than
    the API itself, so it is a connection-level failure: an idempotent call is retried, and a
    create that got one may have reached Vast (it is reconciled by label, never sent again).
    """


class ResponseValidationError(APIError):
    """The server's answer did not have the documented shape.

    Attributes:
        errors: Readable descriptions of what was wrong, each with a JSON path such as
            ``$.offers[3].dph_total``.
        body: The decoded body that failed validation.
    """

    def __init__(
        self,
        message: str,
        *,
        errors: list[str] | None = None,
        body: Any = None,
        request: httpx.Request | None = None,
    ) -> None:
        self.errors = list(errors or [])
        self.body = body
        detail = "; ".join(self.errors)
        super().__init__(f"{message}: {detail}" if detail else message, request=request)


class ResponseTooLargeError(ResponseValidationError):
    """The answer was longer, or its JSON nested deeper, than the client allows.

    Reading stops at the limit, so memory stays bounded whatever the server sends. Raise the
    limit with ``Client(max_response_bytes=...)`` when a search really needs more.

    Attributes:
        limit: The limit that was passed: bytes for a long body, levels for a deep one.
        unit: ``"bytes"`` or ``"levels"``.
    """

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        unit: str = "bytes",
        request: httpx.Request | None = None,
    ) -> None:
        self.limit = limit
        self.unit = unit
        super().__init__(message, errors=[f"more than {limit:,} {unit} @ $"], request=request)


class APIStatusError(APIError):
    """The server answered with an error status.

    Attributes:
        status_code: The HTTP status.
        error: Vast's machine-readable error code (``no_such_ask``), when the body has one.
        msg: Vast's human message, when the body has one.
        body: The parsed body: a dict for JSON, otherwise the text (possibly empty).
        response: The response.
    """

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        body: Any = None,
        error: str | None = None,
        msg: str | None = None,
    ) -> None:
        super().__init__(message, request=response.request)
        self.response = response
        self.status_code = response.status_code
        self.body = body
        self.error = error
        self.msg = msg

    @property
    def new_contract(self) -> int | None:
        """The instance id an error body still carries (a too-low bid creates a stopped one)."""
        if isinstance(self.body, Mapping):
            value = self.body.get("new_contract")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and value.isdigit():
                return int(value)
        return None


class BadRequestError(APIStatusError):
    """400: the request was malformed or its arguments were refused."""


class AuthenticationError(APIStatusError):
    """401 (or 404 ``auth_error``): the API key is missing, wrong or deleted."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this, or the resource is not yours."""


class NotFoundError(APIStatusError):
    """404: no such offer, instance or endpoint."""


class GoneError(APIStatusError):
    """410: the offer is no longer available, or the endpoint is deprecated."""


class RouteNotFoundError(APIStatusError):
    """A 404 or 410 from the route, not Vast's answer about the instance it names.

    An HTML page, "No such endpoint", a 410 ``deprecated_endpoint``, or a 404 without Vast's
    JSON error shape. It says nothing about the instance: it may still exist and bill. It is
    deliberately not a :class:`NotFoundError`, so code that reads a
    ``NotFoundError`` as "already gone" does not read this one so.

    Attributes:
        route: The method and path asked (``DELETE /api/v0/instances/42/``); never the key.
        answer: What came back, in words (``an HTML page (404 Not Found)``).
    """

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        route: str,
        answer: str,
        body: Any = None,
        error: str | None = None,
        msg: str | None = None,
    ) -> None:
        super().__init__(message, response=response, body=body, error=error, msg=msg)
        self.route = route
        self.answer = answer


class RateLimitError(APIStatusError):
    """429: too many requests.

    Attributes:
        retry_after: Seconds the server asked to wait, when it said (Vast usually does not).
    """

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        body: Any = None,
        error: str | None = None,
        msg: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, response=response, body=body, error=error, msg=msg)
        self.retry_after = retry_after


class SearchQuotaExceededError(RateLimitError):
    """429 ``search_quota_exceeded``: the daily search quota is spent. Never retried.

    Attributes:
        resets_at: When the quota resets (Unix seconds, UTC), from ``X-RateLimit-Reset``.
    """

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        body: Any = None,
        error: str | None = None,
        msg: str | None = None,
        resets_at: float | None = None,
    ) -> None:
        super().__init__(message, response=response, body=body, error=error, msg=msg)
        self.resets_at = resets_at


class ServerError(APIStatusError):
    """5xx: the server failed."""


class NoOfferError(VastkitError):
    """No offer satisfies a profile.

    Attributes:
        explanation: Why each offer was rejected, with counts per reason (a
            ``vastkit.selector.Explanation`` when raised by the selector).
        suggestions: The smallest changes to the profile that would rent, best first (each a
            ``vastkit.selector.Suggestion``: ``.changes`` such as ``{"max_dph": 0.26}``, how many
            offers would then qualify and the cheapest); empty when none was found or no
            relaxed search was made.
        advice: The ``vastkit.selector.NoOfferAdvice`` those came from (its ``headline`` is the
            first line of the message), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        explanation: Any = None,
        suggestions: Sequence[Any] = (),
        advice: Any = None,
    ) -> None:
        super().__init__(message)
        self.explanation = explanation
        self.suggestions = tuple(suggestions)
        self.advice = advice


class ProvisioningError(VastkitError):
    """An instance could not be brought up on any offer tried.

    Attributes:
        attempts: What happened on each offer tried, in order.
    """

    def __init__(self, message: str, *, attempts: list[Any] | None = None) -> None:
        super().__init__(message)
        self.attempts = list(attempts or [])


class DestroyFailedError(VastkitError):
    """Destroy was not confirmed in the time allowed: the instance may still be billing.

    Attributes:
        instance_id: The instance that may still exist.
    """

    def __init__(self, message: str, *, instance_id: int) -> None:
        super().__init__(message)
        self.instance_id = instance_id


class BudgetExceededError(VastkitError):
    """A budget or duration cap forbids the spend.

    Attributes:
        scope: What the limit applies to (``"project:vision"``, ``"team:ml"``, ``"job:abc"``).
        limit_usd: The cap in dollars, when it is a money cap.
        spent_usd: What had been spent when the check ran.
        needed_usd: What the refused action could cost at worst, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        scope: str | None = None,
        limit_usd: float | None = None,
        spent_usd: float | None = None,
        needed_usd: float | None = None,
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.needed_usd = needed_usd


class CheckpointError(VastkitError):
    """A checkpoint could not be written, found or read."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint failed verification (size or checksum mismatch, unreadable manifest)."""


class LedgerError(VastkitError):
    """The local ledger could not be opened, migrated or written."""


class JobError(VastkitError):
    """A job could not be run as asked (bad job spec, unreadable run directory...)."""


def install_hint(extra: str) -> str:
    """How to install one of vastkit's extras, for an error message: the published package's
    command, and the one for a clone (the only install there is before vastkit is published)."""
    return f'pip install "vastkit[{extra}]" (from a clone: pip install -e ".[{extra}]")'

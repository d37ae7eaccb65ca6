"""Reading Vast's answers: expected fields, ``success: false`` bodies, and paged lists.

Shared by the client's endpoint groups (:mod:`vastkit.api._instances`,
:mod:`vastkit.api._account`); every function takes the :class:`~vastkit.api._transport.Transport`
it sends with.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, TypeVar

import httpx

from vastkit.api._converter import structure_list
from vastkit.api._transport import Transport
from vastkit.errors import APIStatusError, ResponseValidationError

__all__ = [
    "MAX_PAGES",
    "all_pages",
    "check_id",
    "epoch",
    "expect_field",
    "raise_if_unsuccessful",
    "unsuccessful_error",
]

MAX_PAGES: Final = 10_000
"""The most pages one listing may take before it is treated as a server loop."""

T = TypeVar("T")


def check_id(value: int, what: str = "instance id") -> int:
    """``value`` when it is a positive int.

    Raises:
        TypeError: Not an int (a bool is not one either).
        ValueError: Zero or negative.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {value}")
    return value


def epoch(value: float | datetime) -> int:
    """Unix seconds from seconds or an aware datetime.

    Raises:
        ValueError: A naive datetime.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give charges() timezone-aware datetimes (or Unix seconds)")
        return int(value.timestamp())
    return int(value)


def expect_field(body: Any, key: str, kinds: type | tuple[type, ...]) -> Any:
    """``body[key]`` when ``body`` is an object holding a value of one of ``kinds`` there.

    Raises:
        ResponseValidationError: The key is missing or holds something else.
    """
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


def raise_if_unsuccessful(transport: Transport, body: Any, method: str, path: str) -> None:
    """Vast sometimes answers 200 with ``{"success": false, ...}``: raise it as an error.

    Raises:
        APIStatusError: The body says ``success: false``.
    """
    error = unsuccessful_error(transport, body, method, path)
    if error is not None:
        raise error


def unsuccessful_error(
    transport: Transport, body: Any, method: str, path: str
) -> APIStatusError | None:
    """The error a 200 ``{"success": false, ...}`` answer stands for; None for any other body."""
    if not (isinstance(body, dict) and body.get("success") is False):
        return None
    error = body.get("error") if isinstance(body.get("error"), str) else None
    raw_msg = body.get("msg") or body.get("message")
    msg = transport.redact(str(raw_msg)) if raw_msg else None
    response = httpx.Response(200, json=body, request=httpx.Request(method, transport.url(path)))
    parts = [f"{method} {path} -> 200 with success=false"]
    if error:
        parts.append(error)
    parts.append(msg or "(no detail message supplied)")
    return APIStatusError(": ".join(parts), response=response, body=body, error=error, msg=msg)


def all_pages(
    transport: Transport,
    path: str,
    params: dict[str, str | int | float],
    *,
    endpoint: str,
    key: str,
    cls: type[T],
    what: str,
) -> list[T]:
    """GET ``path`` page after page (``next_token`` -> ``after_token``); ``body[key]`` items.

    ``params`` gains ``after_token``.

    Raises:
        ResponseValidationError: A repeated or non-string token, or more than
            :data:`MAX_PAGES` pages (the message names ``what``); or an item of the wrong shape.
    """
    items: list[T] = []
    seen_tokens: set[str] = set()
    for _ in range(MAX_PAGES):
        body = transport.request("GET", path, endpoint=endpoint, params=params)
        page = expect_field(body, key, (list, type(None))) or []
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
        f"the {what} did not end", errors=[f"more than {MAX_PAGES} pages"]
    )

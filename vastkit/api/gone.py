"""Gone means gone: which answers of Vast's instance routes say that an instance does not exist.

Only Vast's own answers about the instance mean "gone":

* a JSON error body whose ``error`` is ``no_such_instance`` or ``invalid_id`` (404, or 200 with
  ``success: false``);
* ``{"instances": null}`` from show-instance (``GET /api/v0/instances/{id}/``).

Everything else with a 404 or 410 is about the *route*, not the instance, and is raised as
:class:`RouteNotFoundError`: an HTML page (a proxy's or a framework's "Not Found"), a body saying
"No such endpoint", a 410 ``deprecated_endpoint`` (how Vast retired the v0 instance list), or a
404 without Vast's JSON error shape. Reading those as "gone" would let a moved destroy route
report success while the instance bills on.

One code is in between: the reference documents destroy's gone answer as 404
``{"error": "not_found"}`` as well as ``no_such_instance``, but ``not_found`` is also the generic
code a server gives for a path it does not know. So a destroy answered ``not_found`` is only
called gone once show-instance confirms it (``{"instances": null}``); elsewhere ``not_found`` is
a route error. :func:`read_absence` is the pure decision; the client carries it out.

The create route has its own "gone": an offer that was taken or withdrawn is answered 404
``invalid_args`` or 410 with ``no_such_ask`` in the error or the message
(:func:`offer_gone`). Any other 404 or 410 from the create route is about the route.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from vastkit.errors import APIStatusError, RouteNotFoundError

__all__ = [
    "GONE_ERRORS",
    "Absence",
    "describe_answer",
    "offer_gone",
    "read_absence",
    "route_not_found",
]

GONE_ERRORS: Final = frozenset({"no_such_instance", "invalid_id"})
"""Vast's error codes that say the instance named in the path does not exist."""

UNCONFIRMED_ERRORS: Final = frozenset({"not_found"})
"""Codes that may mean a missing instance (documented for destroy) or a missing route."""

ROUTE_ERRORS: Final = frozenset({"deprecated_endpoint"})
"""Codes that say the route itself is gone."""


class Absence(enum.Enum):
    """What an error answer from an instance route says is missing."""

    INSTANCE = "instance"
    """Vast's handler said the instance does not exist: it is gone."""
    UNCONFIRMED = "unconfirmed"
    """404 ``not_found``: gone only if show-instance confirms it (see the module docstring)."""
    ROUTE = "route"
    """The route answered, not the instance handler: nothing is known about the instance."""


def read_absence(status: int, body: Any) -> Absence | None:
    """What a 404, a 410 or a ``success: false`` answer from an instance route says is missing.

    Args:
        status: The HTTP status.
        body: The decoded body (a mapping for JSON, else the text).

    Returns:
        The :class:`Absence`, or None when the answer is not about absence at all (another
        status, or a ``success: false`` body with some other error): raise it as it is.
    """
    if status not in (200, 404, 410):
        return None
    if not isinstance(body, Mapping):
        return None if status == 200 else Absence.ROUTE
    if status == 200 and body.get("success") is not False:
        return None
    raw_error = body.get("error")
    error = raw_error if isinstance(raw_error, str) else None
    text = " ".join(str(body.get(key) or "") for key in ("msg", "message", "detail")).lower()
    if error in ROUTE_ERRORS or "no such endpoint" in text or status == 410:
        return Absence.ROUTE
    if error in GONE_ERRORS:
        return Absence.INSTANCE
    if error in UNCONFIRMED_ERRORS:
        return Absence.UNCONFIRMED
    return None if status == 200 else Absence.ROUTE


def offer_gone(exc: APIStatusError) -> bool:
    """Whether a 404 or 410 answer to a create is Vast's "offer not available" (``no_such_ask``).

    Vast answers 404 ``{"error": "invalid_args", "msg": "error 404/3603: no_such_ask ..."}`` for
    an unknown or rented offer and 410 ``{"error": "no_such_ask", ...}`` when an offer cannot
    start now. An HTML page, "No such endpoint" or ``deprecated_endpoint`` is not.
    """
    if exc.status_code not in (404, 410) or not isinstance(exc.body, Mapping):
        return False
    return "no_such_ask" in f"{exc.error or ''} {exc.msg or ''}".lower()


def describe_answer(status: int, body: Any, content_type: str = "") -> str:
    """A short description of what came back, for messages (``an HTML page (404 Not Found)``).

    ``body`` should already be redacted; the description quotes at most 120 characters of it.
    """
    if isinstance(body, Mapping):
        raw_error = body.get("error")
        msg = next((str(body[k]) for k in ("msg", "message", "detail") if body.get(k)), "")
        if isinstance(raw_error, str) and raw_error:
            return f"JSON error {raw_error}" + (f" ({msg[:120]})" if msg else "")
        return f"JSON without Vast's error code ({json.dumps(body, default=str)[:120]})"
    text = str(body or "").strip()
    if not text:
        return "an empty body"
    if "html" in content_type.lower() or text.startswith("<"):
        return f"an HTML page ({_html_title(text)})"
    return f"text {text[:120]!r}"


def route_not_found(
    exc: APIStatusError,
    *,
    route: str,
    redact: Callable[[str], str],
    detail: str | None = None,
) -> RouteNotFoundError:
    """The route error for a status error the transport raised.

    Args:
        exc: The mapped error.
        route: The method and path asked.
        redact: Removes the API key from text (the transport's ``redact``).
        detail: What else was seen, appended to the message.
    """
    content_type = exc.response.headers.get("content-type", "")
    answer = redact(describe_answer(exc.status_code, exc.body, content_type))
    message = (
        f"{route} answered {exc.status_code} with {answer}: that is not Vast's answer for "
        "a missing instance (the route, not the instance, was not found), so the instance "
        "may still exist and bill"
    )
    if detail:
        message = f"{message} ({detail})"
    return RouteNotFoundError(
        message,
        response=exc.response,
        route=route,
        answer=answer,
        body=exc.body,
        error=exc.error,
        msg=exc.msg,
    )


def _html_title(text: str) -> str:
    lowered = text.lower()
    start = lowered.find("<title")
    if start >= 0:
        start = lowered.find(">", start) + 1
        end = lowered.find("</title>", start)
        if start > 0 and end > start:
            return " ".join(text[start:end].split())[:120]
    return "no title"

"""The emulator's HTTP vocabulary: one request, one response, the error answer, paging tokens.

Everything else in the emulator speaks these: the application turns a :class:`Request` into a
:class:`Response`, a handler that refuses raises :class:`ApiError` (built with :func:`error`),
and both the loopback server and the in-process transport translate to and from them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "ApiError",
    "Request",
    "Response",
    "decode_token",
    "encode_token",
    "error",
    "json_response",
    "parse_query_string",
    "presented_key",
    "text_response",
]


class ApiError(Exception):
    """An HTTP error answer: status code and JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error', '')}")
        self.status = status
        self.body = body


def error(status: int, code: str, msg: str, **extra: Any) -> ApiError:
    """Build the common ``{"success": false, "error", "msg"}`` error."""
    return ApiError(status, {"success": False, "error": code, "msg": msg, **extra})


@dataclass(frozen=True)
class Request:
    """One HTTP request as the application sees it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    base_url: str
    """``scheme://host[:port]`` the client used (for ``result_url``)."""
    client_ip: str = "127.0.0.1"

    def json_body(self) -> dict[str, Any]:
        """The JSON object in the body (``{}`` when the body is empty).

        Raises:
            ApiError: 400 when the body is not a JSON object.
        """
        if not self.body.strip():
            return {}
        try:
            payload = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise error(400, "invalid_args", "Invalid JSON body") from None
        if not isinstance(payload, dict):
            raise error(400, "invalid_args", "The body must be a JSON object")
        return payload

    def json_param(self, name: str, default: Any) -> Any:
        """The JSON value of query parameter ``name`` (``default`` when absent or empty).

        Raises:
            ApiError: 400 when the value is not JSON.
        """
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return json.loads(raw)
        except ValueError:
            raise error(
                400, "invalid_request", f"Error in query parameters: {name} is not valid JSON"
            ) from None


@dataclass
class Response:
    """One HTTP answer, or an instruction to misbehave (``drop``, ``delay_s``)."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False
    """Close the connection without answering."""
    delay_s: float = 0.0
    """Answer only after this many seconds of real time."""


def json_response(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A JSON answer, serialised the way the live API spaces it."""
    body = json.dumps(payload, separators=(", ", ": ")).encode()
    return Response(status, body, [("Content-Type", "application/json"), *(headers or [])])


def text_response(
    status: int, text: str, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    """A plain-text (or HTML, XML) answer."""
    return Response(status, text.encode(), [("Content-Type", content_type)])


def presented_key(request: Request) -> str | None:
    """The API key the request carries: ``Authorization: Bearer``, else ``?api_key=``."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("api_key")


def parse_query_string(raw: str) -> dict[str, str]:
    """Decode a URL query string (last value wins)."""
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def encode_token(value: Any) -> str:
    """An opaque ``after_token`` for ``value`` (unpadded URL-safe base64 of its JSON)."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_token(token: str) -> Any:
    """The value an ``after_token`` carries.

    Raises:
        ApiError: 400 ``invalid_token``.
    """
    try:
        padded = token + "=" * (-len(token) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        raise error(400, "invalid_token", "Invalid after_token") from None

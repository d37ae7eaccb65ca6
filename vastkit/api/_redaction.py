"""Keeping the API key out of everything vastkit shows: text, decoded bodies, exceptions.

A key can come back in many spellings: as sent, escaped by ``repr`` (a ``b'...'`` bytes form
included), escaped by JSON, or URL-encoded (``%2F`` or ``%2f``, ``+`` for a space). A
:class:`Redactor` knows every spelling of one key and replaces each with ``[redacted]``, in a
string, in a decoded JSON value (keys and values, at any depth) and in every field of an
exception and of the exceptions it was chained from.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any, Final

import httpx

__all__ = ["REDACTED", "Redactor", "request_without_key"]

REDACTED: Final = "[redacted]"
"""What a key is replaced with."""

_EXCEPTION_FIELDS: Final = ("message", "msg", "error", "body", "errors", "answer", "route")
"""The attributes of vastkit's API errors that hold text from the server."""

_MAX_WALK: Final = 200
"""The deepest value :meth:`Redactor.value` walks into; deeper parts are replaced whole (the
transport refuses bodies nested deeper than this long before)."""


def request_without_key(request: httpx.Request) -> httpx.Request:
    """A copy of ``request`` to attach to responses and errors: its ``Authorization`` header
    says ``Bearer [redacted]``. The request that was sent is left as it is."""
    headers = request.headers.copy()
    if "Authorization" in headers:
        headers["Authorization"] = f"Bearer {REDACTED}"
    return httpx.Request(request.method, request.url, headers=headers, content=request.content)


def _spellings(key: str) -> list[str]:
    forms = {
        key,
        repr(key)[1:-1],
        json.dumps(key)[1:-1],
        json.dumps(key, ensure_ascii=False)[1:-1],
        repr(key.encode("utf-8", "surrogateescape"))[2:-1],
        urllib.parse.quote(key, safe=""),
        urllib.parse.quote_plus(key, safe=""),
        urllib.parse.quote(key),
    }
    # longest first, so a spelling that contains another is replaced whole
    return sorted((form for form in forms if form), key=len, reverse=True)


class Redactor:
    """Replaces every spelling of one secret with :data:`REDACTED`.

    Args:
        secret: The API key (an empty one redacts nothing).
    """

    def __init__(self, secret: str) -> None:
        self._secret = secret
        forms = _spellings(secret) if secret else []
        self._pattern = (
            re.compile("|".join(re.escape(form) for form in forms), re.IGNORECASE)
            if forms
            else None
        )
        # The cheap test before a substitution: every spelling, lower-cased, as bytes.
        self._lowered = tuple({form.lower().encode("utf-8", "surrogateescape") for form in forms})

    def __repr__(self) -> str:
        return "Redactor()"

    def text(self, text: str) -> str:
        """``text`` with every spelling of the secret replaced."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def holds(self, raw: bytes) -> bool:
        """Whether ``raw`` holds a spelling of the secret (in any letter case)."""
        if not self._lowered:
            return False
        lowered = raw.lower()
        return any(form in lowered for form in self._lowered)

    def binary(self, raw: bytes) -> bytes:
        """``raw`` with every spelling of the secret replaced (decoded as UTF-8 leniently)."""
        if not self.holds(raw):
            return raw
        text = raw.decode("utf-8", "surrogateescape")
        return self.text(text).encode("utf-8", "surrogateescape")

    def decoded(self, raw: bytes, value: Any) -> Any:
        """``value``, decoded from the already redacted JSON bytes ``raw``, with the secret
        replaced where a JSON escape (``\\u0041``, ``\\/``) spelt it. Without a backslash in
        ``raw`` every decoded string is a piece of ``raw``, so there is nothing to walk."""
        if not self._lowered or b"\\" not in raw:
            return value
        return self.value(value)

    def value(self, value: Any, _depth: int = 0) -> Any:
        """A copy of a decoded JSON value with the secret replaced in every string (dict keys
        included); values that hold no string are returned as they are."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.binary(value)
        if _depth >= _MAX_WALK and isinstance(value, dict | list | tuple):
            return REDACTED
        if isinstance(value, dict):
            return {self.value(k, _depth + 1): self.value(v, _depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(item, _depth + 1) for item in value]
        if isinstance(value, tuple):
            return tuple(self.value(item, _depth + 1) for item in value)
        return value

    def exception(self, exc: BaseException) -> BaseException:
        """Scrub ``exc`` in place: its args, notes and the text fields of vastkit's API errors
        (``message``, ``msg``, ``error``, ``body``, ``errors``, ``answer``, ``route``), and the
        ``Authorization`` header of the request it carries (replaced by a copy), then the same
        for every exception it was chained from. Returns ``exc``."""
        for item in _chain(exc):
            self._scrub_one(item)
        return exc

    def _scrub_one(self, exc: BaseException) -> None:
        try:
            exc.args = tuple(self.value(arg) for arg in exc.args)
        except (TypeError, AttributeError):  # pragma: no cover - an exotic args property
            pass
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [self.text(note) if isinstance(note, str) else note for note in notes]
        for name in _EXCEPTION_FIELDS:
            if name in vars(exc):
                setattr(exc, name, self.value(vars(exc)[name]))
        for name in ("request", "_request"):  # vastkit's errors, then httpx's
            request = vars(exc).get(name)
            if isinstance(request, httpx.Request) and "Authorization" in request.headers:
                setattr(exc, name, request_without_key(request))


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        for linked in (item.__cause__, item.__context__):
            if linked is not None:
                pending.append(linked)

"""Checks for settings given from Python, and the error they raise.

Every field of the job's settings (:class:`~vastkit.jobs.Job`,
:class:`~vastkit.jobs.JobTimeouts`, :class:`~vastkit.rundir.CheckpointSettings`,
:class:`~vastkit.outbid.OutbidPolicy`, the run directory's ``job.json``) is checked where the
value is made, so nothing invalid reaches a rented machine. A bad value raises
:class:`ConfigValueError` (a :class:`~vastkit.errors.ConfigError` and a :class:`ValueError`),
a value of the wrong type :class:`ConfigTypeError` (also a :class:`TypeError`). Both name the
class and the field, say what is allowed and show a short form of the value given. A YAML loader
turns them into a :class:`~vastkit.errors.ConfigError` with the file, the line and the key
(:attr:`ConfigValueError.problem` is the part after the field's name).

Booleans are not numbers here: ``True`` is not a valid ``poll_interval``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn

import attrs

from vastkit.errors import ConfigTypeError, ConfigValueError

__all__ = [
    "MAX_SECONDS",
    "attrs_check",
    "check_bool",
    "check_choice",
    "check_command",
    "check_int",
    "check_json_options",
    "check_number",
    "check_seconds",
    "check_text",
    "check_text_map",
    "check_type",
    "fspath_or_none",
    "short_repr",
]

MAX_SECONDS = 366 * 86400.0
"""The longest duration a setting may hold (a year): longer waits overflow the clock's sleeps."""

_REPR_LIMIT = 60


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a readable length (a 400-digit number stays one line)."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ (or an int past Python's digit limit)
        text = f"<{type(value).__name__}>"
    if len(text) > _REPR_LIMIT:
        text = f"{text[: _REPR_LIMIT - 20]}...{text[-10:]} ({len(text)} characters)"
    return text


def _fail(
    owner: str, field: str, allowed: str, value: Any, *, wrong_type: bool, hide: bool = False
) -> NoReturn:
    cls = ConfigTypeError if wrong_type else ConfigValueError
    shown = f"a {type(value).__name__}" if hide else short_repr(value)
    raise cls.of(owner, field, f"must be {allowed} (got {shown})", allowed=allowed)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_number(
    owner: str,
    field: str,
    value: Any,
    *,
    minimum: float | None = None,
    above: bool = False,
    maximum: float | None = None,
    none_ok: bool = False,
    allowed: str | None = None,
) -> None:
    """Refuse anything but a finite number (optionally ``None``) within the bounds.

    Args:
        owner: The class, for the message.
        field: The field, for the message.
        value: The value given.
        minimum: The lowest value allowed (``above``: values must be greater).
        above: ``minimum`` itself is not allowed.
        maximum: The highest value allowed.
        none_ok: ``None`` is allowed (it means something documented, such as "no limit").
        allowed: What is allowed, in words (default: built from the bounds).

    Raises:
        ConfigTypeError: Not a number (a bool, a string...).
        ConfigValueError: NaN, infinite, too large for a float, or out of bounds.
    """
    if value is None and none_ok:
        return
    if allowed is None:
        parts = ["a finite number"]
        if minimum is not None:
            parts.append(f"{'greater than' if above else 'of at least'} {minimum:g}")
        if maximum is not None:
            parts.append(f"at most {maximum:g}")
        allowed = " ".join(parts[:1]) + (" " + " and ".join(parts[1:]) if parts[1:] else "")
        if none_ok:
            allowed += ", or null"
    if not _is_number(value):
        _fail(owner, field, allowed, value, wrong_type=True)
    try:
        number = float(value)
    except OverflowError:
        _fail(owner, field, allowed, value, wrong_type=False)
    if not math.isfinite(number):
        _fail(owner, field, allowed, value, wrong_type=False)
    if minimum is not None and (number <= minimum if above else number < minimum):
        _fail(owner, field, allowed, value, wrong_type=False)
    if maximum is not None and number > maximum:
        _fail(owner, field, allowed, value, wrong_type=False)


def check_seconds(owner: str, field: str, value: Any, *, none_means: str | None = None) -> None:
    """A duration: a finite number of seconds greater than 0 and at most :data:`MAX_SECONDS`.

    Args:
        owner: The class, for the message.
        field: The field, for the message.
        value: The value given.
        none_means: When given, ``None`` is allowed and means this (``"never"``).
    """
    allowed = f"a number of seconds greater than 0 and at most {MAX_SECONDS:.0f} (a year)"
    if none_means is not None:
        allowed += f", or null ({none_means})"
    check_number(
        owner,
        field,
        value,
        minimum=0.0,
        above=True,
        maximum=MAX_SECONDS,
        none_ok=none_means is not None,
        allowed=allowed,
    )


def check_int(
    owner: str,
    field: str,
    value: Any,
    *,
    minimum: int,
    none_ok: bool = False,
    allowed: str | None = None,
) -> None:
    """An integer (not a bool) of at least ``minimum`` (or ``None`` when ``none_ok``)."""
    if value is None and none_ok:
        return
    if allowed is None:
        allowed = f"an integer of {minimum} or more" + (", or null" if none_ok else "")
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(owner, field, allowed, value, wrong_type=True)
    if value < minimum:
        _fail(owner, field, allowed, value, wrong_type=False)


def check_bool(owner: str, field: str, value: Any) -> None:
    """``True`` or ``False`` (not ``"maybe"``, not 1)."""
    if not isinstance(value, bool):
        _fail(owner, field, "true or false", value, wrong_type=True)


def check_text(
    owner: str, field: str, value: Any, *, none_ok: bool = False, what: str = "text"
) -> None:
    """A non-empty string without NUL bytes (or ``None`` when ``none_ok``)."""
    if value is None and none_ok:
        return
    allowed = f"a non-empty {what}" + (", or null" if none_ok else "")
    if not isinstance(value, str):
        _fail(owner, field, allowed, value, wrong_type=True)
    if not value.strip() or "\x00" in value:
        _fail(owner, field, allowed, value, wrong_type=False)


def check_command(owner: str, value: Any, field: str = "command") -> None:
    """A command: non-empty text for ``/bin/sh -c``, or a non-empty argv of text (no NUL)."""
    allowed = "a non-empty string or a non-empty list of strings"
    if isinstance(value, str):
        if not value.strip() or "\x00" in value:
            _fail(owner, field, allowed, value, wrong_type=False)
        return
    if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
        _fail(owner, field, allowed, value, wrong_type=True)
    if not value or not value[0].strip() or any("\x00" in v for v in value):
        _fail(owner, field, allowed, value, wrong_type=False)


def check_type(owner: str, field: str, value: object, cls: type[Any], what: str = "") -> None:
    """An instance of ``cls`` (``what`` names it for people; default: the class name)."""
    if not isinstance(value, cls):
        allowed = what or f"a {cls.__name__}"
        _fail(owner, field, allowed, value, wrong_type=True)


def check_choice(owner: str, field: str, value: Any, choices: Collection[str]) -> None:
    """One of ``choices``."""
    allowed = "one of " + ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        _fail(owner, field, allowed, value, wrong_type=True)
    if value not in choices:
        _fail(owner, field, allowed, value, wrong_type=False)


def check_text_map(owner: str, field: str, value: Any, *, secret: bool = False) -> None:
    """A mapping of non-empty text keys to text values, without NUL bytes.

    Args:
        owner: The class, for the message.
        field: The field, for the message.
        value: The value given.
        secret: Never show a value in a message (only the key).
    """
    allowed = "a mapping of names to text"
    if not isinstance(value, Mapping):
        _fail(owner, field, allowed, value, wrong_type=True, hide=secret)
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\x00" in key:
            raise ConfigValueError.of(
                owner,
                field,
                f"must have names without '=' or NUL bytes (got the name {short_repr(key)})",
                allowed=allowed,
            )
        if not isinstance(item, str) or "\x00" in item:
            shown = f"a {type(item).__name__}" if secret else short_repr(item)
            cls = ConfigTypeError if not isinstance(item, str) else ConfigValueError
            problem = f"must be text without NUL bytes (got {shown})"
            raise cls.of(owner, f"{field}.{key}", problem, allowed=allowed)


def check_json_options(owner: str, field: str, value: Any) -> None:
    """A mapping with text keys whose values JSON can carry (no NaN); values are never shown."""
    allowed = "a mapping of option names to JSON values (text, numbers, booleans, lists, maps)"
    if not isinstance(value, Mapping):
        _fail(owner, field, allowed, value, wrong_type=True, hide=True)
    for key in value:
        if not isinstance(key, str) or not key:
            raise ConfigTypeError.of(
                owner,
                field,
                f"must have text option names (got {short_repr(key)})",
                allowed=allowed,
            )
    try:
        json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigTypeError.of(
            owner, field, f"must hold only JSON values ({type(exc).__name__})", allowed=allowed
        ) from None


def attrs_check(
    check: Callable[..., None], owner: str, **options: Any
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator calling ``check(owner, attribute.name, value, **options)``."""

    def validator(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        check(owner, attribute.name, value, **options)

    return validator


def fspath_or_none(value: Any) -> Any:
    """``os.fspath(value)`` for a path-like, else the value unchanged (checked afterwards)."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value

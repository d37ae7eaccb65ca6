"""The one converter for vastkit's own documents.

Run directory records (``job.json``, heartbeats, results), queue payloads, ledger rows and the
dataset and output listings are attrs classes turned into JSON-able values and back by the
converter built here; nothing else in vastkit serialises them. (The Vast API has its own converter
in :mod:`vastkit.api`, because the wire format renames fields and must tolerate garbage.)

Unknown keys are ignored when reading, so a newer writer's document still loads; a document
that does not fit its class raises the caller's error type with ``cattrs.transform_error``'s
readable paths (``$.checkpoint.keep_last``) and the class's own words for a value it refuses.

Documents that reach a rented machine (``job.json``) are read with ``strict=True``: a scalar
must already have its field's type (``"maybe"`` is not a bool, ``"3"`` not an int, ``true`` not
a number), where the plain converter would coerce it, so the worker sees the same values the
orchestrator checked.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

import cattrs
from cattrs.v import format_exception

from vastkit.errors import JobError, VastkitError

__all__ = [
    "converter",
    "decode_json",
    "encode_json",
    "make_document_converter",
    "strict_converter",
    "structure",
]

T = TypeVar("T")


def _strict_scalar(cls: type[Any]) -> Any:
    def hook(value: Any, _: Any) -> Any:
        fits = isinstance(value, cls) and not (isinstance(value, bool) and cls is not bool)
        if cls is float:
            fits = isinstance(value, int | float) and not isinstance(value, bool)
        if not fits:
            raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}")
        return float(value) if cls is float else value

    return hook


def make_document_converter(*, strict: bool = False) -> cattrs.Converter:
    """Build the document converter (unknown keys ignored, vastkit's union hooks registered).

    Args:
        strict: Scalars are not coerced: a bool, an int, a float or a str must already be one
            (an int is accepted where a float is expected).
    """
    conv = cattrs.Converter(forbid_extra_keys=False)
    if strict:
        for cls in (bool, int, float, str):
            conv.register_structure_hook(cls, _strict_scalar(cls))

    def structure_command(value: Any, _: Any) -> tuple[str, ...] | str:
        if isinstance(value, str):
            return value
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError(f"command must be a string or a list of strings, not {value!r}")

    def structure_every_steps(value: Any, _: Any) -> int | str | None:
        if value is None or value == "auto":
            return value  # type: ignore[no-any-return]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"every_steps must be a positive integer, 'auto' or null, not {value!r}")

    conv.register_structure_hook(tuple[str, ...] | str, structure_command)
    conv.register_structure_hook(int | Literal["auto"] | None, structure_every_steps)
    return conv


converter = make_document_converter()
"""The converter every internal document goes through."""
strict_converter = make_document_converter(strict=True)
"""The same converter without coercion of scalars, for documents a worker acts on."""


def _describe(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, VastkitError | ValueError | TypeError) and str(exc):
        return str(exc)
    return format_exception(exc, type_)


def structure(
    raw: Any,
    cls: type[T],
    where: str,
    *,
    error: type[VastkitError] = JobError,
    strict: bool = False,
) -> T:
    """``raw`` (JSON-able values) as a ``cls``, or ``error`` naming ``where`` and the bad path.

    Args:
        raw: The decoded JSON.
        cls: The class to build.
        where: What holds the document (a URL), for the message.
        error: The error to raise.
        strict: Refuse scalars of the wrong type instead of coercing them.
    """
    try:
        return (strict_converter if strict else converter).structure(raw, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        detail: object = exc
        if isinstance(exc, cattrs.BaseValidationError):
            detail = "; ".join(cattrs.transform_error(exc, path="$", format_exception=_describe))
        raise error(f"{where} does not hold a valid {cls.__name__}: {detail}") from exc


def encode_json(value: Any, *, indent: int | None = 1) -> bytes:
    """``value`` as sorted, indented JSON bytes with a final newline."""
    return json.dumps(converter.unstructure(value), indent=indent, sort_keys=True).encode() + b"\n"


def decode_json(
    data: bytes | str,
    cls: type[T],
    where: str,
    *,
    error: type[VastkitError] = JobError,
    strict: bool = False,
) -> T:
    """Parse a JSON object from ``data`` into a ``cls``; ``error`` names ``where`` otherwise."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise error(f"{where} should hold a JSON object, not {type(raw).__name__}")
    return structure(raw, cls, where, error=error, strict=strict)

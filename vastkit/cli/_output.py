"""Output of one ``vastkit`` invocation: data on stdout (tables or JSON), messages on stderr.

Also the outcome side: :class:`ExitCode` and :data:`EXIT_CODES` (one exit status per class of
failure), :func:`exit_code_for`, and :func:`error_message`, the one line a failure prints.
"""

from __future__ import annotations

import enum
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal

import attrs
from rich import box
from rich.console import Console
from rich.table import Table

from vastkit.errors import (
    APIConnectionError,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    DestroyFailedError,
    GoneError,
    NoOfferError,
    NotFoundError,
    PermissionDeniedError,
)

__all__ = [
    "EXIT_CODES",
    "EXIT_HELP",
    "ExitCode",
    "NoSuchId",
    "Out",
    "UsageError",
    "error_message",
    "exit_code_for",
    "format_age",
    "format_money",
    "jsonable",
    "one_line",
    "plain_table",
]


class ExitCode(enum.IntEnum):
    """The exit status of ``vastkit``, one per class of failure."""

    OK = 0
    """Success."""
    ERROR = 1
    """Any other vastkit error (an API error, a ledger or checkpoint error...)."""
    USAGE = 2
    """Bad command line, or bad configuration (:class:`~vastkit.errors.ConfigError`): a profiles,
    budgets or job file, a missing API key."""
    AUTH = 3
    """The API refused the key (401, 403)."""
    NO_OFFER = 4
    """No offer satisfies the profile."""
    BUDGET = 5
    """A budget forbids the spend (refused before renting, or the job ended ``budget_exceeded``)."""
    UNREACHABLE = 6
    """The API could not be reached (connection refused, DNS, timeout)."""
    JOB_FAILED = 7
    """The job ran but did not succeed (``failed``, ``timed_out``, ``cancelled``)."""
    DESTROY_FAILED = 8
    """An instance could not be confirmed destroyed: it may still be billing."""
    NOT_FOUND = 9
    """No such instance, run or job: the id is unknown, or the instance is already destroyed
    (``stop``, ``destroy``, ``start``, ``cancel``... all follow this one rule)."""
    INTERRUPTED = 130
    """Interrupted with Ctrl-C (SIGINT)."""


EXIT_CODES: Final[Mapping[int, str]] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "other vastkit error (API error, ledger, checkpoint...)",
    ExitCode.USAGE: "bad command line or configuration (profiles/budgets/job file, no API key)",
    ExitCode.AUTH: "the API key was refused (401/403)",
    ExitCode.NO_OFFER: "no offer satisfies the profile",
    ExitCode.BUDGET: "a budget forbids the spend",
    ExitCode.UNREACHABLE: "the API could not be reached",
    ExitCode.JOB_FAILED: "the job ended without success (failed, timed_out, cancelled)",
    ExitCode.DESTROY_FAILED: "an instance could not be confirmed destroyed (it may still bill)",
    ExitCode.NOT_FOUND: "no such instance, run or job (unknown id, or already destroyed)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}
"""Every exit status ``vastkit`` uses, with its meaning (also shown by ``vastkit --help``)."""

EXIT_HELP: Final = "exit codes:\n" + "\n".join(
    f"  {int(code):>3}  {text}" for code, text in EXIT_CODES.items()
)
"""The exit code table as it ends every ``--help``."""


class UsageError(Exception):
    """A command-line mistake found after parsing (exit 2)."""


class NoSuchId(Exception):
    """The instance, run or job that a command names does not exist (exit 9)."""


def exit_code_for(exc: BaseException) -> int:
    """The exit status for an exception (see :data:`EXIT_CODES`).

    Args:
        exc: What went wrong.

    Returns:
        The exit status.
    """
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, UsageError | ConfigError):
        return ExitCode.USAGE
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return ExitCode.AUTH
    if isinstance(exc, NoOfferError):
        return ExitCode.NO_OFFER
    if isinstance(exc, BudgetExceededError):
        return ExitCode.BUDGET
    if isinstance(exc, APIConnectionError):
        return ExitCode.UNREACHABLE
    if isinstance(exc, DestroyFailedError):
        return ExitCode.DESTROY_FAILED
    if isinstance(exc, NoSuchId | NotFoundError | GoneError):
        return ExitCode.NOT_FOUND
    return ExitCode.ERROR


def one_line(text: str) -> str:
    """``text`` with its lines joined by single spaces."""
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def error_message(exc: BaseException, options: Mapping[str, Any]) -> str:
    """The text after ``vastkit: error:`` for ``exc``, naming the key or URL it concerns.

    Args:
        exc: What went wrong.
        options: The global options that were given (``url``, ``api_key_file``, ``api_key_env``).

    Returns:
        One line.
    """
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, AuthenticationError):
        source = "the key"
        if options.get("api_key_file"):
            source = f"the key in {options['api_key_file']}"
        elif options.get("api_key_env"):
            source = f"the key in ${options['api_key_env']}"
        elif os.environ.get("VAST_API_KEY"):
            source = "the key in $VAST_API_KEY"
        text = f"the API refused {source}: {text}"
    elif isinstance(exc, APIConnectionError):
        url = options.get("url") or os.environ.get("VAST_URL") or "https://console.vast.ai"
        text = f"cannot reach the API at {url}: {text}"
    return text


def jsonable(value: Any) -> Any:
    """Turn attrs values, enums, mappings and tuples into plain JSON values."""
    if attrs.has(type(value)):
        return {
            field.name: jsonable(getattr(value, field.name))
            for field in attrs.fields(type(value))
            if field.repr is not False and not field.name.startswith("_")
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def format_money(value: float | None, digits: int = 4) -> str:
    """Dollars with ``digits`` decimals, ``-`` for None."""
    return "-" if value is None else f"{value:.{digits}f}"


def format_age(seconds: float | None) -> str:
    """A short age (``45s``, ``12m``, ``3.5h``, ``2.0d``), ``-`` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


class Out:
    """Where a command writes: stdout for data, stderr for messages; rich only in a terminal."""

    def __init__(self, stdout: IO[str], stderr: IO[str], *, json_mode: bool) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.json_mode = json_mode
        self.console = Console(file=stdout, highlight=False)
        self.err_console = Console(file=stderr, highlight=False)

    @property
    def terminal(self) -> bool:
        """Whether standard output is a terminal (tables and colours) or piped (plain text)."""
        return bool(self.console.is_terminal)

    def json(self, value: Any) -> None:
        """Write one JSON document on standard output."""
        self.stdout.write(json.dumps(jsonable(value), indent=2) + "\n")
        self.stdout.flush()

    def line(self, text: str = "") -> None:
        """Write one line of text on standard output."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def write(self, text: str) -> None:
        """Write ``text`` as it is on standard output."""
        self.stdout.write(text)
        self.stdout.flush()

    def note(self, text: str) -> None:
        """Write a message for people on standard error."""
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        title: str | None = None,
        right: Sequence[str] = (),
    ) -> None:
        """A rich table in a terminal; plain space-aligned columns when piped.

        Nothing is ever cut short or left out: a table wider than the terminal is written as
        the plain columns too (the terminal wraps the long lines), since rich would shorten
        cells with an ellipsis or drop whole columns to make it fit.
        """
        widths = [
            max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns)
        ]
        # a column costs its text, a space either side and one for the rule between columns
        fits = sum(widths) + 3 * len(columns) + 1 <= self.console.width
        if not (self.terminal and fits):
            self.line(plain_table(columns, rows, title=title, right=right))
            return
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
        for column, width in zip(columns, widths, strict=True):
            justify: Literal["left", "right"] = "right" if column in right else "left"
            table.add_column(column, justify=justify, no_wrap=True, min_width=width)
        for row in rows:
            table.add_row(*row)
        self.console.print(table)


def plain_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    right: Sequence[str] = (),
) -> str:
    """Space-aligned columns (right-aligned where named in ``right``), for piped output."""
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if col in right else cell.ljust(w)
            for cell, w, col in zip(cells, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt(columns), *(fmt(row) for row in rows)]
    if title:
        lines.insert(0, title)
    return "\n".join(lines)

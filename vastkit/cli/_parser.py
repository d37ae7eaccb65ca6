"""The argparse side of ``vastkit``: the parser class, the global options, and :class:`Commands`,
through which each command group adds its own subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NoReturn

from vastkit._version import __version__

from ._output import EXIT_HELP, UsageError

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["ENV_HELP", "Commands", "Handler", "Parser", "Register", "make_parser"]

Handler = Callable[["Context"], int]
"""What runs a command: it writes through the context and returns the exit status."""

ENV_HELP: Final = """environment:
  VAST_API_KEY      the API key (or --api-key-env NAME, --api-key-file PATH,
                    ~/.config/vastai/vast_api_key)
  VAST_URL          the API base URL (--url); point it at `vastkit emulator serve`
  VASTKIT_LEDGER    the ledger database (--ledger)"""
"""The environment section at the end of ``vastkit --help``."""

_FORMATTER: Final = argparse.RawDescriptionHelpFormatter


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors in vastkit's format and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class Commands:
    """Adds the subcommands of a parser (or the actions of a command group), each with the
    global options, vastkit's help layout and the exit code table.

    Args:
        subparsers: Where the subcommands go.
        common: The parent parser that holds the global options.
    """

    def __init__(self, subparsers: argparse._SubParsersAction[Parser], common: Parser) -> None:
        self._subparsers = subparsers
        self._common = common

    def add(
        self,
        name: str,
        help_text: str,
        description: str | None = None,
        *,
        handler: Handler | None = None,
    ) -> Parser:
        """Add the subcommand ``name``, run by ``handler``, and return its parser."""
        parser = self._subparsers.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            parents=[self._common],
            formatter_class=_FORMATTER,
            epilog=EXIT_HELP,
        )
        if handler is not None:
            parser.set_defaults(handler=handler)
        return parser

    def group(self, name: str, help_text: str, *, dest: str) -> Commands:
        """Add the command group ``name`` and return the :class:`Commands` for its actions."""
        parser = self.add(name, help_text)
        actions = parser.add_subparsers(
            dest=dest, metavar="ACTION", parser_class=Parser, required=True
        )
        return Commands(actions, self._common)


Register = Callable[[Commands], None]
"""A command group's function that adds its subcommands."""


def common_options() -> Parser:
    """Options accepted before or after the subcommand (``vastkit --json ps`` = ``ps --json``)."""
    common = Parser(add_help=False)
    s = argparse.SUPPRESS
    group = common.add_argument_group("global options")
    group.add_argument(
        "--url",
        default=s,
        metavar="URL",
        help="API base URL (default: $VAST_URL, else https://console.vast.ai); e.g. the "
        "emulator's http://127.0.0.1:8765",
    )
    group.add_argument(
        "--api-key-file",
        default=s,
        metavar="PATH",
        help="read the API key from this file (default: $VAST_API_KEY, then "
        "~/.config/vastai/vast_api_key, then ~/.vast_api_key)",
    )
    group.add_argument(
        "--api-key-env",
        default=s,
        metavar="NAME",
        help="read the API key from this environment variable (default VAST_API_KEY); the key "
        "itself is never taken on the command line",
    )
    group.add_argument(
        "--ledger",
        default=s,
        metavar="PATH|URL",
        help="the ledger: a SQLite file or a postgresql:// URL (default: $VASTKIT_LEDGER, else "
        "~/.local/state/vastkit/ledger.db)",
    )
    group.add_argument(
        "--log-level",
        default=s,
        choices=("debug", "info", "warning", "error"),
        help="log vastkit's messages at this level and above to stderr (default warning)",
    )
    group.add_argument(
        "--debug", action="store_true", default=s, help="print the traceback on failure"
    )
    group.add_argument(
        "--json", action="store_true", default=s, help="write the data as JSON on stdout"
    )
    group.add_argument(
        "--retries",
        type=int,
        default=s,
        metavar="N",
        help="retries of an idempotent API call after 429/5xx/connection errors (default 3)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=s,
        metavar="SECONDS",
        help="seconds per API request (default 60)",
    )
    return common


def make_parser(groups: Sequence[Register]) -> argparse.ArgumentParser:
    """The ``vastkit`` parser with the subcommands that ``groups`` add, in that order.

    Args:
        groups: Functions that each add subcommands.

    Returns:
        The parser.
    """
    common = common_options()
    parser = Parser(
        prog="vastkit",
        description="Run GPU work on Vast.ai reliably and cheaply: offers, jobs, instances, "
        "costs, and a local emulator.",
        epilog=f"{ENV_HELP}\n\n{EXIT_HELP}",
        formatter_class=_FORMATTER,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"vastkit {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=Parser, required=True
    )
    commands = Commands(sub, common)
    for register in groups:
        register(commands)
    return parser

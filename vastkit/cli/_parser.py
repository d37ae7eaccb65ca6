"""The argparse side of ``vastkit``: the parser class, the global options, and :class:`Commands`,
through which each command group adds its own subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NoReturn

from vastkit._version import __version__

from ._output import EXIT_HELP, UsageError

if TYPE_CHECKING:
    from ._context import Context

__all__ = [
    "ENV_HELP",
    "GLOBAL_HINT",
    "Commands",
    "Handler",
    "Parser",
    "Register",
    "make_parser",
]

Handler = Callable[["Context"], int]
"""What runs a command: it writes through the context and returns the exit status."""

ENV_HELP: Final = """environment:
  VAST_API_KEY      the API key (or --api-key-env NAME, --api-key-file PATH,
                    ~/.config/vastai/vast_api_key)
  VAST_URL          the API base URL (--url); point it at `vastkit emulator serve`
  VASTKIT_LEDGER    the ledger database (--ledger)"""
"""The environment section at the end of ``vastkit --help``."""

GLOBAL_HINT: Final = (
    "global options (--json, --url, --ledger, --log-level, --debug...) work here too;\n"
    "`vastkit --help` lists them and the exit codes."
)
"""The line that ends a subcommand's ``--help`` instead of the global options."""

_FORMATTER: Final = argparse.RawDescriptionHelpFormatter


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors in vastkit's format and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class Commands:
    """Adds the subcommands of a parser (or the actions of a command group). Each accepts the
    global options but its ``--help`` shows only its own options and a line pointing at
    ``vastkit --help`` for the global ones and the exit codes.

    Args:
        subparsers: Where the subcommands go.
        common: The parent parser that holds the global options, their help hidden.
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
        aliases: Sequence[str] = (),
    ) -> Parser:
        """Add the subcommand ``name`` (also called ``aliases``), run by ``handler``, and
        return its parser."""
        parser = self._subparsers.add_parser(
            name,
            aliases=list(aliases),
            help=help_text,
            description=description or help_text,
            parents=[self._common],
            formatter_class=_FORMATTER,
            epilog=GLOBAL_HINT,
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


def common_options(*, hidden: bool = False) -> Parser:
    """Options accepted before or after the subcommand (``vastkit --json ps`` = ``ps --json``).

    Args:
        hidden: Leave them out of ``--help`` (for the subcommands: only ``vastkit --help``
            lists them).
    """
    common = Parser(add_help=False)
    s = argparse.SUPPRESS
    group: Any = common.add_argument_group("global options")
    if hidden:
        group = _Hidden(group)
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


class _Hidden:
    """An argument group whose arguments are accepted but left out of ``--help``."""

    def __init__(self, group: Any) -> None:
        self._group = group

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        kwargs["help"] = argparse.SUPPRESS
        action: argparse.Action = self._group.add_argument(*names, **kwargs)
        return action


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
    commands = Commands(sub, common_options(hidden=True))
    for register in groups:
        register(commands)
    return parser

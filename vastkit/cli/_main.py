"""The entry point: the whole parser (each command group adds its own commands) and ``main``,
which runs one command and turns every failure into one line and an exit status."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import IO, Any, Final

from vastkit.errors import VastkitError

from . import _doctor, _emulator, _instances, _jobs, _money, _offers, _queue, _runs, _ssh
from ._context import Context
from ._output import (
    ExitCode,
    NoSuchId,
    Out,
    UsageError,
    error_message,
    exit_code_for,
    one_line,
)
from ._parser import Register, make_parser

__all__ = ["build_parser", "main"]

COMMANDS: Final[Sequence[Register]] = (
    _offers.register_offers,
    _jobs.register_launch,
    _instances.register_ps,
    _jobs.register_logs,
    _ssh.register_ssh,
    _ssh.register_exec,
    _ssh.register_copy,
    _ssh.register_start,
    _instances.register_stop,
    _instances.register_destroy,
    _instances.register_reap,
    _runs.register_runs,
    _runs.register_cancel,
    _queue.register_queue,
    _money.register_cost_report,
    _offers.register_profiles,
    _money.register_budgets,
    _emulator.register_emulator,
    _doctor.register_doctor,
    _emulator.register_demo,
)
"""The commands in the order ``vastkit --help`` lists them (the order of a working session)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``vastkit`` argument parser (exposed for the documentation and tests).

    Returns:
        The parser.
    """
    return make_parser(COMMANDS)


_RETRY_LOGGERS: Final = ("vastkit.api", "vastkit.retry")
"""The loggers that report a retry (``vastkit/api/_transport.py``, ``vastkit/retry.py``)."""


class _RetriesBelowWarning(logging.Filter):
    """Keeps retries off the terminal unless ``--log-level info`` or lower asks for them.

    A 429 or a 5xx that is retried is routine (an orchestrator sharing the key is enough); a
    retry that fails for good raises, and the command prints that error. The transport logs
    each retry at WARNING, so the CLI treats those records as INFO.
    """

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self._threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if self._threshold <= logging.INFO or record.levelno > logging.WARNING:
            return True
        return not (record.name in _RETRY_LOGGERS and "; retry " in str(record.msg))


class _EventsPrintedOnce(logging.Filter):
    """Drops the log record of each job event while ``vastkit launch`` prints the events.

    The orchestrator both logs an event (an outbid, an attempt's end: WARNING) and hands it to
    ``on_event``, which ``launch`` prints; without this filter each would appear twice. Such
    records carry ``vastkit_event`` (or, from an orchestrator that does not set it yet, are
    ``vastkit.jobs``'s ``"%s: %s"`` of run id and message).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "vastkit_event", None) is not None:
            return False
        return not (record.name == "vastkit.jobs" and record.msg == "%s: %s")


@contextlib.contextmanager
def _logging_to(stream: IO[str], level: str | None, *, narrated: bool) -> Iterator[None]:
    """Send vastkit's log records to ``stream`` for the duration of the command (less the job
    events' records when the command prints the events itself: ``narrated``)."""
    log = logging.getLogger("vastkit")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("vastkit: %(levelname)s: %(name)s: %(message)s"))
    handler.setLevel(getattr(logging, (level or "warning").upper()))
    handler.addFilter(_RetriesBelowWarning(handler.level))
    if narrated:
        handler.addFilter(_EventsPrintedOnce())
    old_level = log.level
    log.addHandler(handler)
    if level is not None:
        log.setLevel(handler.level)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def _run(ctx: Context, stderr: IO[str]) -> int:
    """Run the parsed command with vastkit's log records on ``stderr``."""
    level = ctx.opt("log_level")
    if level is None and ctx.args.command == "demo":
        level = "error"  # the demo narrates every event itself; warnings would repeat it
    narrated = ctx.args.command == "launch" and not ctx.opt("detach", False)
    with _logging_to(stderr, level, narrated=narrated):
        try:
            return int(ctx.args.handler(ctx))
        finally:
            ctx.close()


def _failure(exc: BaseException, options: dict[str, Any], stderr: IO[str], *, debug: bool) -> int:
    """Print the one line for an expected failure (the traceback too with ``--debug``)."""
    if debug:
        traceback.print_exc(file=stderr)
    code: int
    if isinstance(exc, ValueError | OSError) and not isinstance(exc, VastkitError):
        code = ExitCode.USAGE if isinstance(exc, ValueError) else ExitCode.ERROR
    else:
        code = exit_code_for(exc)
    stderr.write(f"vastkit: error: {error_message(exc, options)}\n")
    stderr.flush()
    return code


def _internal_error(exc: Exception, stderr: IO[str], *, debug: bool) -> int:
    """Print the one line for a bug (the traceback with ``--debug``)."""
    if debug:
        traceback.print_exc(file=stderr)
    hint = "" if debug else " (run with --debug for the traceback)"
    stderr.write(
        f"vastkit: error: internal error: {type(exc).__name__}: {one_line(str(exc))}{hint}\n"
    )
    stderr.flush()
    return ExitCode.ERROR


def _parse(parser: argparse.ArgumentParser, args_list: list[str]) -> argparse.Namespace:
    """Parse ``args_list``. A command that sets ``trailing`` (``ssh``, ``exec``) gets the words
    after the first ``--`` there, verbatim, whatever options come before them."""
    if "--" in args_list:
        cut = args_list.index("--")
        try:
            head = parser.parse_args(args_list[:cut])
        except UsageError:
            head = None
        if head is not None and getattr(head, "trailing", None) is not None:
            head.trailing = list(args_list[cut + 1 :])
            return head
    return parser.parse_args(args_list)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vastkit`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Args:
        argv: The arguments, without the program name.

    Returns:
        The exit status (see :data:`EXIT_CODES`); nothing is raised.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    stdout, stderr = sys.stdout, sys.stderr
    parser = build_parser()
    options: dict[str, Any] = {}
    debug = "--debug" in args_list
    try:
        try:
            args = _parse(parser, args_list)
        except SystemExit as exc:  # --help and --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else ExitCode.USAGE
        options = vars(args)
        debug = bool(getattr(args, "debug", False))
        out = Out(stdout, stderr, json_mode=bool(getattr(args, "json", False)))
        return _run(Context(args, out, args_list), stderr)
    except KeyboardInterrupt:
        stderr.write("vastkit: interrupted\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())
        return ExitCode.ERROR
    except (VastkitError, UsageError, NoSuchId, ValueError, OSError) as exc:
        return _failure(exc, options, stderr, debug=debug)
    except Exception as exc:  # a bug: still one line, the traceback with --debug
        return _internal_error(exc, stderr, debug=debug)

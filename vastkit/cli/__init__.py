"""The ``vastkit`` command: a thin shell over the public API.

Every subcommand works against the real Vast.ai API or, with ``--url``, against the emulator
(``vastkit emulator serve``). Data commands take ``--json``; tables are drawn with rich in a
terminal and written as plain aligned text when the output is piped. A failure prints one line,
``vastkit: error: ...``, on standard error and exits with the code of its class
(:data:`EXIT_CODES`); ``--debug`` adds the traceback.

Run ``vastkit --help`` or ``vastkit COMMAND --help`` for the options.

The package is laid out along its seams: ``_output`` (tables, JSON, exit codes, the error line),
``_context`` (options, client and ledger of one invocation), ``_parser`` (argparse and the global
options), one module per command group (``_offers``: offers, profiles; ``_jobs``: launch, logs;
``_instances``: ps, stop, destroy, reap; ``_money``: cost-report, budgets; ``_doctor``;
``_emulator``: emulator serve, demo), and ``_main`` (the whole parser and :func:`main`).
"""

from __future__ import annotations

from ._main import build_parser, main
from ._output import EXIT_CODES, ExitCode, exit_code_for

__all__ = ["EXIT_CODES", "ExitCode", "build_parser", "exit_code_for", "main"]

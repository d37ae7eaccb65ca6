"""The shared state of one ``vastkit`` invocation: its options, outputs, client and ledger."""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vastkit.errors import ConfigError

from ._output import Out

if TYPE_CHECKING:  # imported lazily at run time, so that ``vastkit --help`` stays fast
    from vastkit.api.client import Client
    from vastkit.ledger import Ledger

__all__ = ["Context"]


class Context:
    """The parsed options, the outputs, and the client and ledger made on first use.

    Args:
        args: The parsed command line.
        out: Where the command writes.
        argv: The arguments as given (``launch --detach`` passes them on).
    """

    def __init__(self, args: argparse.Namespace, out: Out, argv: Sequence[str]) -> None:
        self.args = args
        self.out = out
        self.argv = list(argv)
        self._stack = contextlib.ExitStack()
        self._client: Client | None = None
        self._ledger: Ledger | None = None

    def opt(self, name: str, default: Any = None) -> Any:
        """The option ``name``, or ``default`` when it was not given."""
        return getattr(self.args, name, default)

    def api_key(self) -> str | None:
        """The key from ``--api-key-file`` or ``--api-key-env``; None: the client's own search."""
        key_file = self.opt("api_key_file")
        key_env = self.opt("api_key_env")
        if key_file is not None:
            return self._key_from_file(Path(key_file).expanduser())
        if key_env is not None:
            text = os.environ.get(key_env, "").strip()
            if not text:
                raise ConfigError(
                    f"the environment variable {key_env} (from --api-key-env) is not set or empty"
                )
            return text
        return None

    def _key_from_file(self, path: Path) -> str:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the API key file: {exc.strerror or exc}", path=str(path)
            ) from exc
        if not text:
            raise ConfigError("the API key file is empty", path=str(path))
        with contextlib.suppress(OSError):
            if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
                self.out.note(
                    f"vastkit: warning: the API key file {path} is readable by other users; "
                    f"run `chmod 600 {path}`"
                )
        return text

    @property
    def client(self) -> Client:
        """The API client, made from the options on first use and closed with the context."""
        if self._client is None:
            from vastkit.api.client import Client

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                client = Client(
                    self.api_key(),
                    base_url=self.opt("url"),
                    max_retries=self.opt("retries", 3),
                    timeout=self.opt("timeout", 60.0),
                )
            for warning in caught:
                self.out.note(f"vastkit: warning: {warning.message}")
            self._client = self._stack.enter_context(client)
        return self._client

    def ledger_target(self) -> str:
        """``--ledger`` (a file, or a ``postgresql://`` URL), else the default ledger."""
        from vastkit._settings import is_database_url
        from vastkit.ledger import default_ledger

        given = self.opt("ledger")
        if not given:
            return default_ledger()
        return given.strip() if is_database_url(given) else str(Path(given).expanduser())

    def ledger_path(self) -> Path:
        """The ledger file: ``--ledger``, else the default path. With a PostgreSQL ledger, the
        local default file's path (its folder holds this machine's state, such as the
        orchestrators' logs)."""
        from vastkit._settings import is_database_url
        from vastkit.ledger import default_ledger_path

        target = self.ledger_target()
        return default_ledger_path() if is_database_url(target) else Path(target)

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened (and created if need be) on first use."""
        if self._ledger is None:
            from vastkit.ledger import Ledger

            self._ledger = self._stack.enter_context(Ledger(self.ledger_target()))
        return self._ledger

    def existing_ledger(self) -> Ledger | None:
        """The ledger when it exists (read-only commands never create a file; a PostgreSQL
        ledger is always opened)."""
        from vastkit._settings import is_database_url

        target = self.ledger_target()
        if self._ledger is None and not is_database_url(target) and not Path(target).exists():
            return None
        return self.ledger

    def close(self) -> None:
        """Close the client and the ledger, if they were made."""
        self._stack.close()

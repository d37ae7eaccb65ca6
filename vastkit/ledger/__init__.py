"""The ledger: a record of every run, attempt, cost and blocked machine.

By default one SQLite file (``$XDG_STATE_HOME/vastkit/ledger.db``, i.e.
``~/.local/state/vastkit/ledger.db``) shared by every vastkit process of a user. It is opened in
WAL mode with a busy timeout, every write is one transaction (``BEGIN IMMEDIATE``), and the
schema is versioned (``PRAGMA user_version``) with forward migrations, so several processes may
use it at once and a crash mid-write leaves it consistent.

A team shares one ledger on a PostgreSQL server instead (``VASTKIT_LEDGER=postgresql://...``,
``pip install "vastkit[postgres]"``): the same tables and migrations, and every write one
transaction under the ledger's lock, so drivers on several machines share one queue, one set of
budgets and one reconciliation (see ``_postgres``).

What it holds:

* **runs**: one row per job run (``run_id``, name, project, team, profile, status);
* **attempts**: one row per instance tried for a run: offer, machine, rental type, bid,
  ``dph_total``, storage price, a timestamp per phase, the end reason, instance id and label;
* **cost samples**: what each attempt accrued between polls (the spend the budgets read);
* **blocked machines**: machines not to rent again until an expiry;
* **create intents**: written *before* a create request is sent, so an orchestrator that dies
  mid-create can reconcile by label on its next start.
* **ledger meta** (schema 3): the ledger's identity, :attr:`Ledger.ledger_id`;
* **queue jobs**: the jobs of :class:`vastkit.JobQueue` (schema 2): the serialised job, its
  priority and status, and the lease (token, owner, expiry) of the process that drives it. A
  claim is one conditional ``UPDATE`` inside a ``BEGIN IMMEDIATE`` transaction, so two processes
  never claim the same job.

Use one :class:`Ledger` per process (it is safe to share between threads of that process).

How the package is laid out: ``_schema`` holds the SQL schema and its migrations, ``_db`` the
one class that talks to the database driver (connection, transactions, errors), ``_records``
the records rows read back as, and one module per table holds that table's methods, which
:class:`Ledger` combines.
"""

from __future__ import annotations

import os
from pathlib import Path

from vastkit._settings import is_database_url, redact_url
from vastkit.clock import Clock, SystemClock
from vastkit.errors import ConfigError
from vastkit.ledger._attempts import AttemptsTable
from vastkit.ledger._blocks import BlocksTable
from vastkit.ledger._db import Database, SqliteDatabase
from vastkit.ledger._fence import Fence, LeaseLost
from vastkit.ledger._intents import IntentsTable
from vastkit.ledger._queue_table import QueueTable
from vastkit.ledger._records import (
    ATTEMPT_PHASES,
    QUEUE_TERMINAL,
    AttemptRecord,
    BlockedMachine,
    CostSample,
    CreateIntent,
    QueueEntry,
    RunRecord,
)
from vastkit.ledger._runs import RunsTable
from vastkit.ledger._schema import SCHEMA_VERSION

__all__ = [
    "ATTEMPT_PHASES",
    "QUEUE_TERMINAL",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "BlockedMachine",
    "CostSample",
    "CreateIntent",
    "Fence",
    "LeaseLost",
    "Ledger",
    "QueueEntry",
    "RunRecord",
    "default_ledger",
    "default_ledger_path",
]


def default_ledger_path() -> Path:
    """``$XDG_STATE_HOME/vastkit/ledger.db``, or ``~/.local/state/vastkit/ledger.db``.

    ``VASTKIT_LEDGER`` overrides both when it names a file; when it names a PostgreSQL server
    (see :func:`default_ledger`) this is still the local file's path (the folder holds this
    machine's state, such as the orchestrators' logs).
    """
    override = os.environ.get("VASTKIT_LEDGER")
    if override and not is_database_url(override):
        return Path(override).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser() / "vastkit" / "ledger.db"


def default_ledger() -> str:
    """The ledger to open when none is given: ``VASTKIT_LEDGER`` when it is a
    ``postgresql://`` (or ``postgres://``) URL, else :func:`default_ledger_path`."""
    override = os.environ.get("VASTKIT_LEDGER", "").strip()
    return override if is_database_url(override) else str(default_ledger_path())


def _open_database(target: str | os.PathLike[str], *, busy_timeout_s: float = 30.0) -> Database:
    """The backend for ``target``: PostgreSQL for a ``postgresql://`` URL, else a SQLite file.

    Raises:
        ConfigError: A PostgreSQL URL, and psycopg is not installed; another URL.
        LedgerError: The database cannot be opened.
    """
    if is_database_url(target):
        from vastkit.ledger._postgres import PostgresDatabase

        return PostgresDatabase(str(target).strip(), busy_timeout_s=busy_timeout_s)
    if isinstance(target, str) and "://" in target:
        raise ConfigError(
            f"the ledger {redact_url(target)!r} is neither a file path nor a postgresql:// URL"
        )
    return SqliteDatabase(str(target), busy_timeout_s=busy_timeout_s)


class Ledger(QueueTable, BlocksTable, AttemptsTable, IntentsTable, RunsTable):
    """The ledger: a SQLite file (the default) or a PostgreSQL database shared by many machines.

    Its methods come by table: runs (:meth:`record_run`, :meth:`get_run`...), create intents
    (:meth:`begin_intent`...), attempts and their costs (:meth:`record_attempt`,
    :meth:`add_cost_sample`, :meth:`spend`...), blocked machines (:meth:`block_machine`...) and
    the job queue (:meth:`enqueue`, :meth:`claim_queued`...).

    Args:
        path: The database file, or a ``postgresql://user:password@host/db`` URL (needs
            ``pip install "vastkit[postgres]"``); default :func:`default_ledger`.
            ``":memory:"`` gives a private in-memory SQLite ledger (tests).
        clock: The clock used when a method is not given a time.
        busy_timeout_s: How long to wait for another process's write lock.

    Raises:
        ConfigError: A PostgreSQL URL, and psycopg is not installed; another kind of URL.
        LedgerError: The file (or server) cannot be opened or created, or was written by a
            newer vastkit.

    Example::

        with Ledger() as ledger:
            ledger.record_run("r1", project="vision", team="ml", profile="dev-test")
            intent = ledger.begin_intent("r1", 1, offer_id=123, label="vastkit/r1/1")
            ...  # send the create
            ledger.complete_intent(intent, instance_id=456)
            attempt = ledger.record_attempt("r1", 1, offer_id=123, machine_id=9, ...)
            ledger.add_cost_sample(attempt, state="running", rate_dph=0.31)
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self._clock = clock or SystemClock()
        self._db = _open_database(
            default_ledger() if path is None else path, busy_timeout_s=busy_timeout_s
        )
        self.path = self._db.path
        """The database file, or the PostgreSQL URL without its password."""

    @property
    def schema_version(self) -> int:
        """The schema version of the open file."""
        return self._db.schema_version

    @property
    def ledger_id(self) -> str:
        """This ledger's identity: 8 lowercase hex digits, created once with its schema and the
        same for every process that opens it (instance labels carry it, so reconciliation
        tells this ledger's instances from another's)."""
        return self._db.ledger_id

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.path!r})"

"""The one place that talks to the database drivers: open, migrate, transact, read.

Every statement of the ledger runs through a :class:`Database`: inside :meth:`Database.write`
(one transaction, a :class:`Transaction`, isolated from every other writer) or as
:meth:`Database.read`. Rows come back as plain dicts and the driver's errors as
:class:`~vastkit.errors.LedgerError` (:class:`RowConflict` when a write breaks a constraint), so
the table modules never see a driver. There are two backends: :class:`SqliteDatabase` here (the
default: a file) and ``PostgresDatabase`` in ``_postgres`` (a shared server, psycopg 3).

The statements of the table modules are written in SQL that SQLite and PostgreSQL both accept
(``ON CONFLICT`` upserts, ``CASE`` rather than two-argument ``MAX``), with ``?`` placeholders;
what differs (placeholders, the new row's id, how the schema version is stored, the schema's
column types) stays in the backends.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from vastkit.clock import Clock, SystemClock
from vastkit.errors import LedgerError
from vastkit.ledger._fence import Fence, check_fence
from vastkit.ledger._schema import MIGRATIONS, SCHEMA_VERSION, new_ledger_id
from vastkit.retry import RetryPolicy, retry_call

__all__ = [
    "Database",
    "Row",
    "RowConflict",
    "SqliteDatabase",
    "Tables",
    "Transaction",
    "equal",
    "where",
]

logger = logging.getLogger("vastkit.ledger")

Row = dict[str, Any]
"""One result row: column name to value."""


class RowConflict(LedgerError):
    """A write broke a constraint: a unique key taken, a referenced row missing."""


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


def _locked(exc: Exception) -> bool:
    """Whether SQLite refused because another connection holds the file for now."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class Transaction(ABC):
    """The statements of one write transaction (see :meth:`Database.write`).

    Statements use ``?`` placeholders; a backend translates them to its driver's.
    """

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; returns how many rows it changed."""
        raise NotImplementedError

    @abstractmethod
    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an ``INSERT`` into a table with an ``id`` column; returns the new row's id."""
        raise NotImplementedError

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        rows = self.all(sql, params)
        return rows[0] if rows else None

    @abstractmethod
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""
        raise NotImplementedError


class Database(ABC):
    """One ledger database, migrated to :data:`~vastkit.ledger.SCHEMA_VERSION`: what the table
    modules use. :class:`SqliteDatabase` is the default; ``vastkit.ledger._postgres`` holds the
    PostgreSQL one.

    Attributes:
        path: Where the database is, safe to show (a PostgreSQL URL without its password).
    """

    path: str

    def __init__(self) -> None:
        self._ledger_id: str | None = None

    # -- what a backend provides ---------------------------------------------------------------

    @abstractmethod
    def write(self) -> AbstractContextManager[Transaction]:
        """One write transaction, atomic and isolated from every other writer of the database
        (in this process or another): committed when the block ends, rolled back when it raises.

        Raises:
            LedgerError: The transaction could not begin or commit (or a statement failed).
        """
        raise NotImplementedError

    @abstractmethod
    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of one query (outside any write transaction).

        Raises:
            LedgerError: The query failed, or the database is closed.
        """
        raise NotImplementedError

    @abstractmethod
    def close(self) -> None:
        """Close the connection (idempotent)."""
        raise NotImplementedError

    _version_query: str
    """A query whose one row's ``user_version`` is the stored schema version."""

    def _stored_version(self, tx: Transaction) -> int:
        """The schema version the database holds (0: none yet)."""
        row = tx.one(self._version_query)
        return int(row["user_version"]) if row is not None else 0

    @abstractmethod
    def _store_version(self, tx: Transaction, version: int) -> None:
        raise NotImplementedError

    def _ddl(self, statement: str) -> str:
        """A schema statement (written for SQLite) in this backend's dialect."""
        return statement

    # -- shared -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        try:  # up to date (the common case): no write lock taken to open
            if self.schema_version == SCHEMA_VERSION:
                return
        except LedgerError:
            pass  # no schema yet, or not a database: the write below says which
        with self.write() as tx:
            version = self._stored_version(tx)
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"the ledger at {self.path} has schema version {version}, newer than this "
                    f"vastkit understands ({SCHEMA_VERSION}); upgrade vastkit"
                )
            for number in range(version, SCHEMA_VERSION):
                logger.info("migrating ledger %s to schema %d", self.path, number + 1)
                for statement in MIGRATIONS[number].split(";"):
                    if ":ledger_id" in statement:
                        tx.execute(statement.replace(":ledger_id", "?"), (new_ledger_id(),))
                    elif statement.strip():
                        tx.execute(self._ddl(statement))
                self._store_version(tx, number + 1)

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        rows = self.read(self._version_query)
        return int(rows[0]["user_version"]) if rows else 0

    @property
    def ledger_id(self) -> str:
        """The ledger's identity, written once by the migration that created ``ledger_meta``."""
        if self._ledger_id is None:
            rows = self.read("SELECT value FROM ledger_meta WHERE key = 'ledger_id'")
            if not rows:
                raise LedgerError(f"the ledger at {self.path} has no ledger_id")
            self._ledger_id = str(rows[0]["value"])
        return self._ledger_id


class _SqliteTransaction(Transaction):
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._path = path

    def _cursor(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise RowConflict(str(exc)) from exc
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the ledger at {self._path}: {exc}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._cursor(sql, params).rowcount

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self._cursor(sql, params).lastrowid or 0)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._cursor(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._cursor(sql, params).fetchall()


class SqliteDatabase(Database):
    """One SQLite file, opened in WAL mode with a busy timeout; a write is one ``BEGIN
    IMMEDIATE`` transaction (one writer at a time). Safe to share between threads.

    Args:
        path: The file, or ``":memory:"``.
        busy_timeout_s: How long to wait for another process's write lock.

    Raises:
        LedgerError: The file cannot be opened or used, or was written by a newer vastkit.
    """

    def __init__(self, path: str, *, busy_timeout_s: float) -> None:
        super().__init__()
        self.path = path
        self._lock = threading.RLock()
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the ledger at {path}: {exc}") from exc
        conn.row_factory = _dict_row
        self._conn: sqlite3.Connection | None = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if path != ":memory:":
                # Switching to WAL needs the file to itself and answers "database is locked" at
                # once (no busy handler) while another process creates the same ledger: wait.
                retry_call(
                    lambda: conn.execute("PRAGMA journal_mode = WAL"),
                    policy=RetryPolicy(
                        attempts=None, initial_delay=0.01, max_delay=0.25, deadline=busy_timeout_s
                    ),
                    clock=SystemClock(),
                    retry_if=_locked,
                    what=f"opening the ledger at {path}",
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise LedgerError(f"cannot use the ledger at {path}: {exc}") from exc
        except LedgerError:
            self.close()
            raise

    _version_query = "PRAGMA user_version"

    def _store_version(self, tx: Transaction, version: int) -> None:
        tx.execute(f"PRAGMA user_version = {int(version)}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"the ledger at {self.path} is closed")
        return self._conn

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot write the ledger at {self.path}: {exc}") from exc
            try:
                yield _SqliteTransaction(conn, self.path)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise LedgerError(f"cannot write the ledger at {self.path}: {exc}") from exc

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot read the ledger at {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class Tables:
    """What every table's methods of :class:`~vastkit.ledger.Ledger` rely on: the database and
    the clock (the table classes are mixed into ``Ledger``)."""

    _db: Database
    _clock: Clock

    def _now(self, at: float | None) -> float:
        return self._clock.now() if at is None else float(at)

    def _update(
        self,
        table: str,
        key_column: str,
        key: object,
        fields: Mapping[str, Any],
        *,
        missing: str,
        fence: Fence | None = None,
    ) -> None:
        """Set ``fields`` on the row of ``table`` whose ``key_column`` is ``key``.

        Nothing happens when ``fields`` is empty; ``ValueError(missing)`` when there is no row;
        :class:`~vastkit.ledger.LeaseLost` (nothing written) when ``fence`` no longer holds.
        """
        if not fields:
            return
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._db.write() as tx:
            check_fence(tx, fence)
            changed = tx.execute(
                f"UPDATE {table} SET {columns} WHERE {key_column} = ?", (*fields.values(), key)
            )
        if changed == 0:
            raise ValueError(missing)


def where(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A ``WHERE`` clause (or "") joining with AND each ``(clause, value)`` whose value is set."""
    given = [(clause, value) for clause, value in conditions if value is not None]
    clause = f"WHERE {' AND '.join(clause for clause, _ in given)}" if given else ""
    return clause, [value for _, value in given]


def equal(**values: Any) -> tuple[str, list[Any]]:
    """A ``WHERE`` clause matching each given column (``None`` values are left out)."""
    return where(*((f"{name} = ?", value) for name, value in values.items()))

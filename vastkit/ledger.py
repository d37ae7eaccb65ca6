"""The ledger: a local SQLite record of every run, attempt, cost and blocked machine.

One file (default ``$XDG_STATE_HOME/vastkit/ledger.db``, i.e. ``~/.local/state/vastkit/ledger.db``)
shared by every vastkit process of a user. It is opened in WAL mode with a busy timeout, every
write is one transaction (``BEGIN IMMEDIATE``), and the schema is versioned (``PRAGMA
user_version``) with forward migrations, so several processes may use it at once and a crash
mid-write leaves it consistent.

What it holds:

* **runs**: one row per job run (``run_id``, name, project, team, profile, status);
* **attempts**: one row per instance tried for a run: offer, machine, rental type, bid,
  ``dph_total``, storage price, a timestamp per phase, the end reason, instance id and label;
* **cost samples**: what each attempt accrued between polls (the spend the budgets read);
* **blocked machines**: machines not to rent again until an expiry;
* **create intents**: written *before* a create request is sent, so an orchestrator that dies
  mid-create can reconcile by label on its next start.
* **queue jobs**: the jobs of :class:`vastkit.JobQueue` (schema 2): the serialised job, its
  priority and status, and the lease (token, owner, expiry) of the process that drives it. A
  claim is one conditional ``UPDATE`` inside a ``BEGIN IMMEDIATE`` transaction, so two processes
  never claim the same job.

Use one :class:`Ledger` per process (it is safe to share between threads of that process).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import attrs

from vastkit.clock import Clock, SystemClock
from vastkit.errors import LedgerError

__all__ = [
    "ATTEMPT_PHASES",
    "QUEUE_TERMINAL",
    "SCHEMA_VERSION",
    "AttemptRecord",
    "BlockedMachine",
    "CostSample",
    "CreateIntent",
    "Ledger",
    "QueueEntry",
    "RunRecord",
    "default_ledger_path",
]

logger = logging.getLogger("vastkit.ledger")

ATTEMPT_PHASES: Final[tuple[str, ...]] = (
    "intent_at",
    "created_at",
    "loading_at",
    "running_at",
    "ready_at",
    "ended_at",
    "destroyed_at",
)
"""The per-phase timestamp columns of an attempt, in order."""

_MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the initial schema
    """
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        name        TEXT,
        project     TEXT,
        team        TEXT,
        profile     TEXT,
        status      TEXT NOT NULL DEFAULT 'pending',
        created_at  REAL NOT NULL,
        ended_at    REAL,
        metadata    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX runs_project ON runs(project);
    CREATE INDEX runs_team ON runs(team);
    CREATE TABLE attempts (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id        TEXT NOT NULL REFERENCES runs(run_id),
        attempt       INTEGER NOT NULL,
        offer_id      INTEGER,
        machine_id    INTEGER,
        instance_id   INTEGER,
        label         TEXT,
        rental        TEXT NOT NULL DEFAULT 'on-demand',
        bid           REAL,
        gpu_name      TEXT,
        num_gpus      INTEGER,
        disk_gb       REAL,
        dph_base      REAL,
        dph_total     REAL,
        storage_cost  REAL,
        storage_dph   REAL,
        intent_at     REAL,
        created_at    REAL,
        loading_at    REAL,
        running_at    REAL,
        ready_at      REAL,
        ended_at      REAL,
        destroyed_at  REAL,
        end_reason    TEXT,
        UNIQUE (run_id, attempt)
    );
    CREATE INDEX attempts_instance ON attempts(instance_id);
    CREATE INDEX attempts_machine ON attempts(machine_id);
    CREATE TABLE cost_samples (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        attempt_id  INTEGER NOT NULL REFERENCES attempts(id),
        at          REAL NOT NULL,
        state       TEXT,
        rate_dph    REAL NOT NULL,
        cost_usd    REAL NOT NULL
    );
    CREATE INDEX cost_samples_attempt ON cost_samples(attempt_id, at);
    CREATE INDEX cost_samples_at ON cost_samples(at);
    CREATE TABLE blocked_machines (
        machine_id  INTEGER PRIMARY KEY,
        reason      TEXT NOT NULL,
        blocked_at  REAL NOT NULL,
        expires_at  REAL NOT NULL,
        count       INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE create_intents (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id        TEXT NOT NULL,
        attempt       INTEGER NOT NULL,
        offer_id      INTEGER NOT NULL,
        label         TEXT NOT NULL UNIQUE,
        status        TEXT NOT NULL DEFAULT 'pending',
        instance_id   INTEGER,
        error         TEXT,
        created_at    REAL NOT NULL,
        completed_at  REAL
    );
    """,
    # 2: the job queue (vastkit.queue): one row per submitted job, with its lease
    """
    CREATE TABLE queue_jobs (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id            TEXT NOT NULL UNIQUE,
        name              TEXT NOT NULL,
        project           TEXT,
        team              TEXT,
        priority          INTEGER NOT NULL DEFAULT 0,
        status            TEXT NOT NULL DEFAULT 'queued',
        spec              TEXT NOT NULL,
        submitted_at      REAL NOT NULL,
        started_at        REAL,
        ended_at          REAL,
        claims            INTEGER NOT NULL DEFAULT 0,
        lease_token       TEXT,
        lease_owner       TEXT,
        lease_expires_at  REAL,
        cancel_requested  INTEGER NOT NULL DEFAULT 0,
        reason            TEXT,
        result            TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX queue_jobs_pick ON queue_jobs(status, priority, seq);
    CREATE INDEX queue_jobs_project ON queue_jobs(project, status);
    """,
)

SCHEMA_VERSION: Final[int] = len(_MIGRATIONS)
"""The schema version this vastkit writes (``PRAGMA user_version``)."""


def default_ledger_path() -> Path:
    """``$XDG_STATE_HOME/vastkit/ledger.db``, or ``~/.local/state/vastkit/ledger.db``.

    ``VASTKIT_LEDGER`` overrides both.
    """
    override = os.environ.get("VASTKIT_LEDGER")
    if override:
        return Path(override).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser() / "vastkit" / "ledger.db"


@attrs.frozen(kw_only=True)
class RunRecord:
    """One job run."""

    run_id: str
    """The run id."""
    name: str | None
    """The job's name."""
    project: str | None
    """Its project."""
    team: str | None
    """Its team."""
    profile: str | None
    """The profile name."""
    status: str
    """``pending``, ``running``, ``succeeded``, ``failed``, ``budget_exceeded``, ... (free text)."""
    created_at: float
    """When it was recorded."""
    ended_at: float | None
    """When it ended."""
    metadata: Mapping[str, Any]
    """Anything else (JSON)."""


@attrs.frozen(kw_only=True)
class AttemptRecord:
    """One instance tried for a run."""

    id: int
    """The ledger's attempt id."""
    run_id: str
    """The run."""
    attempt: int
    """The attempt number within the run (1, 2, ...)."""
    offer_id: int | None
    """The offer rented."""
    machine_id: int | None
    """Its machine."""
    instance_id: int | None
    """The instance id once created."""
    label: str | None
    """The instance label."""
    rental: str
    """``on-demand`` or ``interruptible``."""
    bid: float | None
    """The bid in $/h (interruptible)."""
    gpu_name: str | None
    """The GPU model."""
    num_gpus: int | None
    """GPUs rented."""
    disk_gb: float | None
    """Disk rented."""
    dph_base: float | None
    """GPU rate of the contract in $/h (the bid for interruptible)."""
    dph_total: float | None
    """GPU plus storage in $/h."""
    storage_cost: float | None
    """Storage price in $/GB/month."""
    storage_dph: float | None
    """Storage rate in $/h."""
    intent_at: float | None
    """Intent written."""
    created_at: float | None
    """Instance created."""
    loading_at: float | None
    """Container loading."""
    running_at: float | None
    """Container running."""
    ready_at: float | None
    """Worker ready (first heartbeat)."""
    ended_at: float | None
    """Attempt ended."""
    destroyed_at: float | None
    """Instance destroyed."""
    end_reason: str | None
    """Why it ended (``succeeded``, ``outbid``, ``host_lost``, ``phase_deadline``, ...)."""
    cost_usd: float = 0.0
    """What its cost samples add up to."""


@attrs.frozen(kw_only=True)
class CostSample:
    """One accrual step of an attempt."""

    attempt_id: int
    """The attempt."""
    at: float
    """When the sample was taken."""
    state: str | None
    """The instance state from this sample on."""
    rate_dph: float
    """The rate from this sample on, in $/h."""
    cost_usd: float
    """What accrued since the attempt's previous sample (plus any extra, e.g. bandwidth)."""


@attrs.frozen(kw_only=True)
class BlockedMachine:
    """A machine not to rent until ``expires_at``."""

    machine_id: int
    """The machine."""
    reason: str
    """Why it was blocked (the latest reason)."""
    blocked_at: float
    """When it was (last) blocked."""
    expires_at: float
    """When the block ends."""
    count: int
    """How many times it was blocked."""


@attrs.frozen(kw_only=True)
class CreateIntent:
    """A create request about to be (or that was) sent."""

    id: int
    """The intent id."""
    run_id: str
    """The run."""
    attempt: int
    """The attempt number."""
    offer_id: int
    """The offer."""
    label: str
    """The instance label sent with the create (how to find the instance if we die)."""
    status: str
    """``pending``, ``completed`` or ``failed``."""
    instance_id: int | None
    """The instance created, once known."""
    error: str | None
    """Why it failed."""
    created_at: float
    """When the intent was written."""
    completed_at: float | None
    """When it was completed or failed."""


QUEUE_TERMINAL: Final[frozenset[str]] = frozenset(
    {"succeeded", "failed", "budget_exceeded", "timed_out", "cancelled"}
)
"""Queue statuses that end a job (besides these there are ``queued`` and ``running``)."""


@attrs.frozen(kw_only=True)
class QueueEntry:
    """One row of the job queue as stored (see :class:`vastkit.queue.QueuedJob` for the view
    with the job itself)."""

    seq: int
    """Submission order (ties of priority run in this order)."""
    job_id: str
    """The job id (also the run id of the job's run)."""
    name: str
    """The job's name."""
    project: str | None
    """The job's project (per-project concurrency caps count by it)."""
    team: str | None
    """The job's team."""
    priority: int
    """Higher runs first."""
    status: str
    """``queued``, ``running``, or one of :data:`QUEUE_TERMINAL`."""
    spec: Mapping[str, Any]
    """The serialised job (JSON)."""
    submitted_at: float
    """When it was submitted."""
    started_at: float | None
    """When it was first claimed."""
    ended_at: float | None
    """When it ended."""
    claims: int
    """How many times a driver claimed it (more than one after a restart or a lost lease)."""
    lease_token: str | None
    """The token of the current lease (None when nobody holds one)."""
    lease_owner: str | None
    """Who holds the lease (``host:pid``)."""
    lease_expires_at: float | None
    """When the lease ends unless renewed."""
    cancel_requested: bool
    """Whether :meth:`vastkit.JobQueue.cancel` asked its driver to stop it."""
    reason: str | None
    """Why it ended (or why it went back to the queue), in words."""
    result: Mapping[str, Any]
    """A summary of the job's result (JSON): cost, attempts, run directory..."""


_ATTEMPT_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "offer_id",
        "machine_id",
        "instance_id",
        "label",
        "rental",
        "bid",
        "gpu_name",
        "num_gpus",
        "disk_gb",
        "dph_base",
        "dph_total",
        "storage_cost",
        "storage_dph",
        "end_reason",
        *ATTEMPT_PHASES,
    }
)
_RUN_FIELDS: Final[frozenset[str]] = frozenset(
    {"name", "project", "team", "profile", "status", "ended_at", "metadata"}
)


class Ledger:
    """The SQLite ledger.

    Args:
        path: The database file; default :func:`default_ledger_path`. ``":memory:"`` gives a
            private in-memory ledger (tests).
        clock: The clock used when a method is not given a time.
        busy_timeout_s: How long to wait for another process's write lock.

    Raises:
        LedgerError: The file cannot be opened or created, or was written by a newer vastkit.

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
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.RLock()
        target = default_ledger_path() if path is None else path
        self.path = str(target)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the ledger at {self.path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise LedgerError(f"cannot use the ledger at {self.path}: {exc}") from exc
        except LedgerError:
            self._conn.close()
            raise

    # -- plumbing ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._write() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"the ledger at {self.path} has schema version {version}, newer than this "
                    f"vastkit understands ({SCHEMA_VERSION}); upgrade vastkit"
                )
            for number in range(version, SCHEMA_VERSION):
                logger.info("migrating ledger %s to schema %d", self.path, number + 1)
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot write the ledger at {self.path}: {exc}") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise LedgerError(f"cannot write the ledger at {self.path}: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot read the ledger at {self.path}: {exc}") from exc

    def _update(
        self, table: str, key_column: str, key: object, fields: Mapping[str, Any], *, missing: str
    ) -> None:
        """Set ``fields`` on the row of ``table`` whose ``key_column`` is ``key``.

        Nothing happens when ``fields`` is empty; ``ValueError(missing)`` when there is no row.
        """
        if not fields:
            return
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE {table} SET {columns} WHERE {key_column} = ?", (*fields.values(), key)
            )
            if cursor.rowcount == 0:
                raise ValueError(missing)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self, "_conn", None)
        if conn is None:
            raise LedgerError(f"the ledger at {self.path} is closed")
        return conn

    def _now(self, at: float | None) -> float:
        return self._clock.now() if at is None else float(at)

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            conn = getattr(self, "_conn", None)
            if conn is not None:
                conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.path!r})"

    @property
    def schema_version(self) -> int:
        """The schema version of the open file."""
        return int(self._read("PRAGMA user_version")[0][0])

    # -- runs ----------------------------------------------------------------------------------

    def record_run(
        self,
        run_id: str,
        *,
        name: str | None = None,
        project: str | None = None,
        team: str | None = None,
        profile: str | None = None,
        status: str = "pending",
        metadata: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> RunRecord:
        """Record a new run, or return it unchanged if ``run_id`` is already recorded.

        Args:
            run_id: The run id (non-empty).
            name: The job's name.
            project: Its project (budgets and reports group by it).
            team: Its team.
            profile: The profile name.
            status: The initial status.
            metadata: Extra JSON-serialisable facts.
            at: The time; default now.

        Returns:
            The run as stored.

        Raises:
            ValueError: An empty ``run_id``.
            LedgerError: The write failed.
        """
        if not run_id:
            raise ValueError("run_id must not be empty")
        meta = json.dumps(dict(metadata or {}), sort_keys=True)
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO runs (run_id, name, project, team, profile, status, "
                "created_at, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, name, project, team, profile, status, self._now(at), meta),
            )
        run = self.get_run(run_id)
        assert run is not None
        return run

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Change fields of a run (``status``, ``ended_at``, ``metadata``, ...).

        Raises:
            ValueError: An unknown field, or no such run.
            LedgerError: The write failed.
        """
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise ValueError(f"unknown run field(s): {', '.join(sorted(unknown))}")
        if "metadata" in fields:
            fields["metadata"] = json.dumps(dict(fields["metadata"] or {}), sort_keys=True)
        self._update("runs", "run_id", run_id, fields, missing=f"no run '{run_id}' in the ledger")

    def end_run(self, run_id: str, status: str, *, at: float | None = None) -> None:
        """Mark a run ended with ``status`` (``succeeded``, ``failed``, ``budget_exceeded``...)."""
        self.update_run(run_id, status=status, ended_at=self._now(at))

    def get_run(self, run_id: str) -> RunRecord | None:
        """Return a run, or None."""
        rows = self._read("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def runs(
        self, *, project: str | None = None, team: str | None = None, status: str | None = None
    ) -> list[RunRecord]:
        """Runs matching every given filter, oldest first."""
        where, params = _filters(project=project, team=team, status=status)
        rows = self._read(f"SELECT * FROM runs {where} ORDER BY created_at, run_id", params)
        return [_run(row) for row in rows]

    # -- create intents ------------------------------------------------------------------------

    def begin_intent(
        self, run_id: str, attempt: int, *, offer_id: int, label: str, at: float | None = None
    ) -> int:
        """Write a create intent before sending ``PUT /asks/{offer_id}/``.

        Args:
            run_id: The run.
            attempt: The attempt number.
            offer_id: The offer about to be rented.
            label: The label the instance will carry (unique).
            at: The time; default now.

        Returns:
            The intent id, for :meth:`complete_intent`.

        Raises:
            LedgerError: The write failed, or an intent with that label exists.
        """
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT INTO create_intents (run_id, attempt, offer_id, label, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (run_id, attempt, offer_id, label, self._now(at)),
                )
                return int(cursor.lastrowid or 0)
        except sqlite3.IntegrityError as exc:
            raise LedgerError(f"a create intent with label '{label}' already exists") from exc

    def complete_intent(
        self,
        intent_id: int,
        *,
        instance_id: int | None = None,
        error: str | None = None,
        at: float | None = None,
    ) -> None:
        """Close an intent: ``completed`` with the instance id, or ``failed`` with an error.

        Raises:
            ValueError: No such intent.
            LedgerError: The write failed.
        """
        status = "failed" if error is not None and instance_id is None else "completed"
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE create_intents SET status = ?, instance_id = ?, error = ?, "
                "completed_at = ? WHERE id = ?",
                (status, instance_id, error, self._now(at), intent_id),
            )
            if cursor.rowcount == 0:
                raise ValueError(f"no create intent {intent_id} in the ledger")

    def pending_intents(self) -> list[CreateIntent]:
        """Intents never completed: a create that may or may not have happened (reconcile these
        by label)."""
        rows = self._read("SELECT * FROM create_intents WHERE status = 'pending' ORDER BY id")
        return [_intent(row) for row in rows]

    def intents(self, run_id: str | None = None) -> list[CreateIntent]:
        """Every intent (of ``run_id``), oldest first."""
        where, params = _filters(run_id=run_id)
        return [
            _intent(row)
            for row in self._read(f"SELECT * FROM create_intents {where} ORDER BY id", params)
        ]

    # -- attempts ------------------------------------------------------------------------------

    def record_attempt(self, run_id: str, attempt: int, **fields: Any) -> int:
        """Record an attempt of a run (the run must be recorded first).

        Args:
            run_id: The run.
            attempt: The attempt number (unique within the run).
            **fields: Any of ``offer_id``, ``machine_id``, ``instance_id``, ``label``,
                ``rental``, ``bid``, ``gpu_name``, ``num_gpus``, ``disk_gb``, ``dph_base``,
                ``dph_total``, ``storage_cost``, ``storage_dph``, ``end_reason`` and the phase
                timestamps in :data:`ATTEMPT_PHASES`.

        Returns:
            The attempt id.

        Raises:
            ValueError: An unknown field.
            LedgerError: No such run, the attempt number is taken, or the write failed.
        """
        _check_attempt_fields(fields)
        columns = ["run_id", "attempt", *fields]
        placeholders = ", ".join("?" for _ in columns)
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    f"INSERT INTO attempts ({', '.join(columns)}) VALUES ({placeholders})",
                    (run_id, attempt, *fields.values()),
                )
                return int(cursor.lastrowid or 0)
        except sqlite3.IntegrityError as exc:
            raise LedgerError(
                f"cannot record attempt {attempt} of run '{run_id}': {exc} "
                "(record the run first; attempt numbers are unique per run)"
            ) from exc

    def update_attempt(self, attempt_id: int, **fields: Any) -> None:
        """Change fields of an attempt (a phase timestamp, ``instance_id``, ``end_reason``...).

        Raises:
            ValueError: An unknown field, or no such attempt.
            LedgerError: The write failed.
        """
        _check_attempt_fields(fields)
        self._update(
            "attempts", "id", attempt_id, fields, missing=f"no attempt {attempt_id} in the ledger"
        )

    def mark_phase(self, attempt_id: int, phase: str, *, at: float | None = None) -> None:
        """Set one phase timestamp (``"running_at"`` or just ``"running"``) to ``at`` (now)."""
        column = phase if phase.endswith("_at") else f"{phase}_at"
        if column not in ATTEMPT_PHASES:
            raise ValueError(f"unknown phase '{phase}'; phases: {', '.join(ATTEMPT_PHASES)}")
        self.update_attempt(attempt_id, **{column: self._now(at)})

    def get_attempt(self, attempt_id: int) -> AttemptRecord | None:
        """Return one attempt with its cost so far, or None."""
        rows = self._read(f"{_ATTEMPT_SELECT} WHERE a.id = ? GROUP BY a.id", (attempt_id,))
        return _attempt(rows[0]) if rows else None

    def attempts(
        self, run_id: str | None = None, *, instance_id: int | None = None
    ) -> list[AttemptRecord]:
        """Attempts (of ``run_id``, or of ``instance_id``) with their costs, in order."""
        where, params = _where(("a.run_id = ?", run_id), ("a.instance_id = ?", instance_id))
        rows = self._read(f"{_ATTEMPT_SELECT} {where} GROUP BY a.id ORDER BY a.id", params)
        return [_attempt(row) for row in rows]

    # -- costs ---------------------------------------------------------------------------------

    def add_cost_sample(
        self,
        attempt_id: int,
        *,
        state: str | None,
        rate_dph: float,
        at: float | None = None,
        extra_usd: float = 0.0,
    ) -> float:
        """Accrue an attempt's cost up to ``at`` and record the rate from then on.

        The time since the attempt's previous sample is charged at the previous sample's rate
        (the rate that was in force), plus ``extra_usd`` (bandwidth, say). The first sample of an
        attempt accrues only ``extra_usd``: take it when the instance is created.

        Args:
            attempt_id: The attempt.
            state: The instance state from now on (``"running"``, ``"stopped"``...); None or
                ``"destroyed"`` when it no longer exists.
            rate_dph: The rate from now on in $/h (see :func:`vastkit.budget.hourly_rate`).
            at: The time; default now. Must not be before the previous sample.
            extra_usd: A one-off amount to add.

        Returns:
            The dollars accrued by this sample.

        Raises:
            ValueError: A negative rate or amount, or ``at`` before the previous sample.
            LedgerError: No such attempt, or the write failed.
        """
        if rate_dph < 0 or extra_usd < 0:
            raise ValueError("rate_dph and extra_usd cannot be negative")
        now = self._now(at)
        with self._write() as conn:
            if (
                conn.execute("SELECT 1 FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
                is None
            ):
                raise LedgerError(f"no attempt {attempt_id} in the ledger")
            previous = conn.execute(
                "SELECT at, rate_dph FROM cost_samples WHERE attempt_id = ? "
                "ORDER BY at DESC, id DESC LIMIT 1",
                (attempt_id,),
            ).fetchone()
            cost = extra_usd
            if previous is not None:
                if now < previous["at"]:
                    raise ValueError(
                        f"cost sample at {now} is before the previous one at {previous['at']}"
                    )
                cost += previous["rate_dph"] * (now - previous["at"]) / 3600.0
            conn.execute(
                "INSERT INTO cost_samples (attempt_id, at, state, rate_dph, cost_usd) "
                "VALUES (?, ?, ?, ?, ?)",
                (attempt_id, now, state, rate_dph, cost),
            )
        return cost

    def cost_samples(self, attempt_id: int) -> list[CostSample]:
        """The cost samples of an attempt, in time order."""
        rows = self._read(
            "SELECT * FROM cost_samples WHERE attempt_id = ? ORDER BY at, id", (attempt_id,)
        )
        return [
            CostSample(
                attempt_id=row["attempt_id"],
                at=row["at"],
                state=row["state"],
                rate_dph=row["rate_dph"],
                cost_usd=row["cost_usd"],
            )
            for row in rows
        ]

    def spend(
        self,
        *,
        project: str | None = None,
        team: str | None = None,
        run_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> float:
        """Dollars accrued by runs matching every given filter, by samples in ``[since, until)``.

        Args:
            project: Only runs of this project.
            team: Only runs of this team.
            run_id: Only this run.
            since: Only samples taken at or after this time.
            until: Only samples taken before this time.

        Returns:
            Dollars (0.0 when nothing matches).
        """
        clauses, params = _cost_filters(project, team, run_id, since, until)
        rows = self._read(
            "SELECT COALESCE(SUM(c.cost_usd), 0) FROM cost_samples c "
            "JOIN attempts a ON a.id = c.attempt_id JOIN runs r ON r.run_id = a.run_id "
            f"{clauses}",
            params,
        )
        return float(rows[0][0])

    def cost_rows(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Every cost sample in ``[since, until)`` joined with its attempt and run (for reports).

        Returns:
            Dicts with ``at``, ``cost_usd``, ``run_id``, ``name``, ``project``, ``team``,
            ``gpu_name``, ``num_gpus``, ``attempt_id``, ``instance_id``.
        """
        clauses, params = _cost_filters(None, None, None, since, until)
        rows = self._read(
            "SELECT c.at, c.cost_usd, r.run_id, r.name, r.project, r.team, a.gpu_name, "
            "a.num_gpus, a.id AS attempt_id, a.instance_id FROM cost_samples c "
            "JOIN attempts a ON a.id = c.attempt_id JOIN runs r ON r.run_id = a.run_id "
            f"{clauses} ORDER BY c.at, c.id",
            params,
        )
        return [dict(row) for row in rows]

    # -- blocked machines ----------------------------------------------------------------------

    def block_machine(
        self,
        machine_id: int,
        *,
        reason: str,
        for_s: float = 6 * 3600.0,
        at: float | None = None,
    ) -> BlockedMachine:
        """Block a machine for ``for_s`` seconds (extending an existing block, never shortening).

        Args:
            machine_id: The machine.
            reason: Why (``"image pull failed"``, ``"host lost"``...).
            for_s: How long.
            at: The time; default now.

        Returns:
            The block as stored.

        Raises:
            ValueError: A non-positive duration.
            LedgerError: The write failed.
        """
        if for_s <= 0:
            raise ValueError(f"for_s must be positive (got {for_s})")
        now = self._now(at)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO blocked_machines (machine_id, reason, blocked_at, expires_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(machine_id) DO UPDATE SET "
                "reason = excluded.reason, blocked_at = excluded.blocked_at, "
                "expires_at = MAX(expires_at, excluded.expires_at), count = count + 1",
                (machine_id, reason, now, now + for_s),
            )
            row = conn.execute(
                "SELECT * FROM blocked_machines WHERE machine_id = ?", (machine_id,)
            ).fetchone()
        return _blocked(row)

    def unblock_machine(self, machine_id: int) -> None:
        """Lift a block (no error when there is none)."""
        with self._write() as conn:
            conn.execute("DELETE FROM blocked_machines WHERE machine_id = ?", (machine_id,))

    def blocked_machines(self, now: float | None = None) -> frozenset[int]:
        """Machine ids blocked at ``now`` (default: the clock's now): pass to the selector."""
        moment = self._now(now)
        rows = self._read("SELECT machine_id FROM blocked_machines WHERE expires_at > ?", (moment,))
        return frozenset(int(row[0]) for row in rows)

    def blocks(self, now: float | None = None) -> list[BlockedMachine]:
        """The active blocks at ``now`` with their reasons, soonest expiry first."""
        rows = self._read(
            "SELECT * FROM blocked_machines WHERE expires_at > ? ORDER BY expires_at, machine_id",
            (self._now(now),),
        )
        return [_blocked(row) for row in rows]

    # -- the job queue -------------------------------------------------------------------------

    def enqueue(
        self,
        job_id: str,
        *,
        name: str,
        spec: Mapping[str, Any],
        project: str | None = None,
        team: str | None = None,
        priority: int = 0,
        at: float | None = None,
    ) -> QueueEntry:
        """Add a job to the queue with status ``queued``.

        Raises:
            LedgerError: The job id is taken, or the write failed.
        """
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO queue_jobs (job_id, name, project, team, priority, spec, "
                    "submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        name,
                        project,
                        team,
                        int(priority),
                        json.dumps(dict(spec)),
                        self._now(at),
                    ),
                )
                row = conn.execute("SELECT * FROM queue_jobs WHERE job_id = ?", (job_id,))
                return _queue_entry(row.fetchone())
        except sqlite3.IntegrityError as exc:
            raise LedgerError(f"cannot queue job '{job_id}': {exc}") from exc

    def queue_entry(self, job_id: str) -> QueueEntry | None:
        """One queue row, or None."""
        rows = self._read("SELECT * FROM queue_jobs WHERE job_id = ?", (job_id,))
        return _queue_entry(rows[0]) if rows else None

    def queue_entries(self, status: str | None = None) -> list[QueueEntry]:
        """Queue rows (with ``status``), in submission order."""
        where, params = _filters(status=status)
        rows = self._read(f"SELECT * FROM queue_jobs {where} ORDER BY seq", params)
        return [_queue_entry(row) for row in rows]

    def queue_counts(self) -> dict[str, int]:
        """How many queue jobs are in each status."""
        rows = self._read("SELECT status, COUNT(*) FROM queue_jobs GROUP BY status")
        return {str(row[0]): int(row[1]) for row in rows}

    def claim_queued(
        self,
        *,
        owner: str,
        token: str,
        ttl_s: float,
        at: float | None = None,
        exclude: Sequence[str] = (),
        project_caps: Mapping[str, int] | None = None,
        only: str | None = None,
    ) -> QueueEntry | None:
        """Atomically take the next job to drive and give it a lease.

        Candidates are ``queued`` jobs and ``running`` jobs whose lease expired (their driver
        died: the new driver adopts their instance). Expired ones come first, then higher
        priority, then submission order. A project at its cap (jobs of it with a live lease)
        is skipped. The pick and a conditional ``UPDATE`` run in one ``BEGIN IMMEDIATE``
        transaction, so two processes never claim the same job.

        Args:
            owner: Who claims (``host:pid``), stored with the lease.
            token: A fresh random token; renewing and finishing need it.
            ttl_s: How long the lease lasts unless renewed.
            at: The time; default now.
            exclude: Job ids never to claim (the caller drives them already).
            project_caps: The most jobs with a live lease per project.
            only: Claim this job or nothing (caps do not apply).

        Returns:
            The claimed row, or None when nothing can be claimed now.
        """
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive (got {ttl_s})")
        now = self._now(at)
        caps = dict(project_caps or {})
        with self._write() as conn:
            rows = conn.execute(
                "SELECT * FROM queue_jobs WHERE status = 'queued' OR (status = 'running' "
                "AND (lease_expires_at IS NULL OR lease_expires_at < ?)) "
                "ORDER BY (status = 'running') DESC, priority DESC, seq",
                (now,),
            ).fetchall()
            skip = set(exclude)
            for row in rows:
                if row["job_id"] in skip or (only is not None and row["job_id"] != only):
                    continue
                project = row["project"]
                if project is not None and project in caps and only is None:
                    held = conn.execute(
                        "SELECT COUNT(*) FROM queue_jobs WHERE project = ? AND status = "
                        "'running' AND lease_expires_at >= ?",
                        (project, now),
                    ).fetchone()[0]
                    if int(held) >= caps[project]:
                        continue
                cursor = conn.execute(
                    "UPDATE queue_jobs SET status = 'running', lease_token = ?, lease_owner = ?, "
                    "lease_expires_at = ?, claims = claims + 1, "
                    "started_at = COALESCE(started_at, ?) WHERE job_id = ? AND "
                    "(status = 'queued' OR (status = 'running' AND (lease_expires_at IS NULL "
                    "OR lease_expires_at < ?)))",
                    (token, owner, now + ttl_s, now, row["job_id"], now),
                )
                if cursor.rowcount == 1:
                    fresh = conn.execute(
                        "SELECT * FROM queue_jobs WHERE job_id = ?", (row["job_id"],)
                    ).fetchone()
                    return _queue_entry(fresh)
        return None

    def renew_lease(
        self, job_id: str, token: str, *, ttl_s: float, at: float | None = None
    ) -> bool:
        """Extend a lease held with ``token`` to ``at + ttl_s``.

        Returns:
            False when the lease is no longer ours (another driver claimed the job after it
            expired, or the job ended): the caller must stop driving it.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE queue_jobs SET lease_expires_at = ? WHERE job_id = ? AND "
                "lease_token = ? AND status = 'running'",
                (self._now(at) + ttl_s, job_id, token),
            )
            return cursor.rowcount == 1

    def finish_queued(
        self,
        job_id: str,
        token: str | None,
        *,
        status: str,
        reason: str,
        result: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> bool:
        """End a job (``status`` in :data:`QUEUE_TERMINAL`) or put it back (``queued``).

        With a ``token``, only while that lease is held; with None, only a ``queued`` job.

        Returns:
            Whether the row changed.
        """
        if status not in QUEUE_TERMINAL and status != "queued":
            raise ValueError(f"cannot finish a queued job as {status!r}")
        ended = None if status == "queued" else self._now(at)
        guard = "lease_token = ?" if token is not None else "status = 'queued'"
        params: list[Any] = [status, reason, json.dumps(dict(result or {})), ended, job_id]
        if token is not None:
            params.append(token)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE queue_jobs SET status = ?, reason = ?, result = ?, ended_at = ?, "
                "lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL "
                f"WHERE job_id = ? AND {guard}",
                params,
            )
            return cursor.rowcount == 1

    def request_cancel(self, job_id: str) -> bool:
        """Flag a job for cancellation (its driver stops it at its next poll).

        Returns:
            False when there is no such job or it already ended.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE queue_jobs SET cancel_requested = 1 WHERE job_id = ? AND status IN "
                "('queued', 'running')",
                (job_id,),
            )
            return cursor.rowcount == 1


_ATTEMPT_SELECT: Final = (
    "SELECT a.*, COALESCE(SUM(c.cost_usd), 0) AS cost_usd FROM attempts a "
    "LEFT JOIN cost_samples c ON c.attempt_id = a.id"
)


def _check_attempt_fields(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - _ATTEMPT_FIELDS
    if unknown:
        raise ValueError(
            f"unknown attempt field(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_ATTEMPT_FIELDS))}"
        )
    rental = fields.get("rental")
    if rental is not None and rental not in ("on-demand", "interruptible"):
        raise ValueError(f"rental must be 'on-demand' or 'interruptible' (got {rental!r})")


def _where(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A ``WHERE`` clause (or "") joining with AND each ``(clause, value)`` whose value is set."""
    given = [(clause, value) for clause, value in conditions if value is not None]
    where = f"WHERE {' AND '.join(clause for clause, _ in given)}" if given else ""
    return where, [value for _, value in given]


def _filters(**values: Any) -> tuple[str, list[Any]]:
    return _where(*((f"{name} = ?", value) for name, value in values.items()))


def _cost_filters(
    project: str | None,
    team: str | None,
    run_id: str | None,
    since: float | None,
    until: float | None,
) -> tuple[str, list[Any]]:
    return _where(
        ("r.project = ?", project),
        ("r.team = ?", team),
        ("r.run_id = ?", run_id),
        ("c.at >= ?", since),
        ("c.at < ?", until),
    )


def _run(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        name=row["name"],
        project=row["project"],
        team=row["team"],
        profile=row["profile"],
        status=row["status"],
        created_at=row["created_at"],
        ended_at=row["ended_at"],
        metadata=json.loads(row["metadata"] or "{}"),
    )


def _attempt(row: sqlite3.Row) -> AttemptRecord:
    names = {field.name for field in attrs.fields(AttemptRecord)}
    return AttemptRecord(**{key: row[key] for key in row.keys() if key in names})  # noqa: SIM118


def _blocked(row: sqlite3.Row) -> BlockedMachine:
    return BlockedMachine(
        machine_id=row["machine_id"],
        reason=row["reason"],
        blocked_at=row["blocked_at"],
        expires_at=row["expires_at"],
        count=row["count"],
    )


def _intent(row: sqlite3.Row) -> CreateIntent:
    return CreateIntent(
        id=row["id"],
        run_id=row["run_id"],
        attempt=row["attempt"],
        offer_id=row["offer_id"],
        label=row["label"],
        status=row["status"],
        instance_id=row["instance_id"],
        error=row["error"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


def _queue_entry(row: sqlite3.Row) -> QueueEntry:
    return QueueEntry(
        seq=row["seq"],
        job_id=row["job_id"],
        name=row["name"],
        project=row["project"],
        team=row["team"],
        priority=row["priority"],
        status=row["status"],
        spec=json.loads(row["spec"]),
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        claims=row["claims"],
        lease_token=row["lease_token"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        cancel_requested=bool(row["cancel_requested"]),
        reason=row["reason"],
        result=json.loads(row["result"] or "{}"),
    )

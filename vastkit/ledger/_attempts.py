"""The attempts and cost samples tables: every instance tried for a run, and what it accrued."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from vastkit.errors import LedgerError
from vastkit.ledger._db import Row, RowConflict, Tables, Transaction, where
from vastkit.ledger._fence import Fence, check_fence
from vastkit.ledger._records import ATTEMPT_PHASES, AttemptRecord, CostSample, from_row

__all__ = ["AttemptsTable"]

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

_ATTEMPT_SELECT: Final = (
    "SELECT a.*, COALESCE(SUM(c.cost_usd), 0) AS cost_usd FROM attempts a "
    "LEFT JOIN cost_samples c ON c.attempt_id = a.id"
)

_COST_JOIN: Final = (
    "FROM cost_samples c JOIN attempts a ON a.id = c.attempt_id JOIN runs r ON r.run_id = a.run_id"
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


def _cost_filters(
    project: str | None,
    team: str | None,
    run_id: str | None,
    since: float | None,
    until: float | None,
) -> tuple[str, list[Any]]:
    return where(
        ("r.project = ?", project),
        ("r.team = ?", team),
        ("r.run_id = ?", run_id),
        ("c.at >= ?", since),
        ("c.at < ?", until),
    )


def _attempt(row: Row) -> AttemptRecord:
    return from_row(row, AttemptRecord)


def _accrue(
    tx: Transaction,
    attempt_id: int,
    *,
    state: str | None,
    rate_dph: float,
    now: float,
    extra: float = 0.0,
) -> float:
    """Insert a cost sample in ``tx`` (see :meth:`AttemptsTable.add_cost_sample`)."""
    if rate_dph < 0 or extra < 0:
        raise ValueError("rate_dph and extra_usd cannot be negative")
    if tx.one("SELECT 1 FROM attempts WHERE id = ?", (attempt_id,)) is None:
        raise LedgerError(f"no attempt {attempt_id} in the ledger")
    previous = tx.one(
        "SELECT at, rate_dph FROM cost_samples WHERE attempt_id = ? "
        "ORDER BY at DESC, id DESC LIMIT 1",
        (attempt_id,),
    )
    cost = extra
    if previous is not None:
        if now < previous["at"]:
            raise ValueError(f"cost sample at {now} is before the previous one at {previous['at']}")
        cost += previous["rate_dph"] * (now - previous["at"]) / 3600.0
    tx.execute(
        "INSERT INTO cost_samples (attempt_id, at, state, rate_dph, cost_usd) "
        "VALUES (?, ?, ?, ?, ?)",
        (attempt_id, now, state, rate_dph, cost),
    )
    return cost


def _backdate(
    tx: Transaction, attempt_id: int, *, state: str | None, rate_dph: float, at: float
) -> float:
    """Insert a change at ``at`` between two samples (see :meth:`AttemptsTable.backdate_change`)."""
    if tx.one("SELECT 1 FROM attempts WHERE id = ?", (attempt_id,)) is None:
        raise LedgerError(f"no attempt {attempt_id} in the ledger")
    before = tx.one(
        "SELECT at, rate_dph FROM cost_samples WHERE attempt_id = ? AND at <= ? "
        "ORDER BY at DESC, id DESC LIMIT 1",
        (attempt_id, at),
    )
    if before is None:
        raise ValueError(
            f"a change at {at} is before the first cost sample of attempt {attempt_id}"
        )
    after = tx.one(
        "SELECT id, at, cost_usd FROM cost_samples WHERE attempt_id = ? AND at > ? "
        "ORDER BY at, id LIMIT 1",
        (attempt_id, at),
    )
    old_rate, since = float(before["rate_dph"]), float(before["at"])
    cost = old_rate * (at - since) / 3600.0
    tx.execute(
        "INSERT INTO cost_samples (attempt_id, at, state, rate_dph, cost_usd) "
        "VALUES (?, ?, ?, ?, ?)",
        (attempt_id, at, state, rate_dph, cost),
    )
    if after is None:
        return cost
    next_at = float(after["at"])
    span = (next_at - at) / 3600.0
    # The next sample charged the old rate from ``before`` on; from ``at`` the new rate applies.
    recounted = float(after["cost_usd"]) - old_rate * (next_at - since) / 3600.0
    recounted = max(recounted + rate_dph * span, 0.0)
    tx.execute("UPDATE cost_samples SET cost_usd = ? WHERE id = ?", (recounted, after["id"]))
    return (rate_dph - old_rate) * span


def _set(tx: Transaction, table: str, row_id: int, fields: Mapping[str, Any]) -> None:
    assignments = ", ".join(f"{column} = ?" for column in fields)
    tx.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*fields.values(), row_id))


class AttemptsTable(Tables):
    """Attempts and their cost samples: record, update, accrue, sum."""

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
            with self._db.write() as tx:
                return tx.insert(
                    f"INSERT INTO attempts ({', '.join(columns)}) VALUES ({placeholders})",
                    (run_id, attempt, *fields.values()),
                )
        except RowConflict as exc:
            raise LedgerError(
                f"cannot record attempt {attempt} of run '{run_id}': {exc} "
                "(record the run first; attempt numbers are unique per run)"
            ) from exc

    def update_attempt(self, attempt_id: int, *, fence: Fence | None = None, **fields: Any) -> None:
        """Change fields of an attempt (a phase timestamp, ``instance_id``, ``end_reason``...).

        Args:
            attempt_id: The attempt.
            fence: A queue driver's fencing token: write only while it holds the job.
            **fields: The columns to set.

        Raises:
            ValueError: An unknown field, or no such attempt.
            LedgerError: The write failed.
            LeaseLost: ``fence`` no longer holds its job (nothing was written).
        """
        _check_attempt_fields(fields)
        self._update(
            "attempts",
            "id",
            attempt_id,
            fields,
            missing=f"no attempt {attempt_id} in the ledger",
            fence=fence,
        )

    def mark_phase(
        self, attempt_id: int, phase: str, *, at: float | None = None, fence: Fence | None = None
    ) -> None:
        """Set one phase timestamp (``"running_at"`` or just ``"running"``) to ``at`` (now).

        Raises:
            LeaseLost: ``fence`` no longer holds its job (nothing was written).
        """
        column = phase if phase.endswith("_at") else f"{phase}_at"
        if column not in ATTEMPT_PHASES:
            raise ValueError(f"unknown phase '{phase}'; phases: {', '.join(ATTEMPT_PHASES)}")
        self.update_attempt(attempt_id, fence=fence, **{column: self._now(at)})

    def get_attempt(self, attempt_id: int) -> AttemptRecord | None:
        """Return one attempt with its cost so far, or None."""
        rows = self._db.read(f"{_ATTEMPT_SELECT} WHERE a.id = ? GROUP BY a.id", (attempt_id,))
        return _attempt(rows[0]) if rows else None

    def attempts(
        self, run_id: str | None = None, *, instance_id: int | None = None
    ) -> list[AttemptRecord]:
        """Attempts (of ``run_id``, or of ``instance_id``) with their costs, in order."""
        clause, params = where(("a.run_id = ?", run_id), ("a.instance_id = ?", instance_id))
        rows = self._db.read(f"{_ATTEMPT_SELECT} {clause} GROUP BY a.id ORDER BY a.id", params)
        return [_attempt(row) for row in rows]

    def add_cost_sample(
        self,
        attempt_id: int,
        *,
        state: str | None,
        rate_dph: float,
        at: float | None = None,
        extra_usd: float = 0.0,
        fence: Fence | None = None,
    ) -> float:
        """Accrue an attempt's cost up to ``at`` and record the rate from then on.

        The time since the attempt's previous sample is charged at the previous sample's rate
        (the rate that was in force), plus ``extra_usd`` (bandwidth, say). The first sample of an
        attempt accrues only ``extra_usd``: take it when the instance is created.

        Args:
            attempt_id: The attempt.
            state: The instance state from now on (``"running"``, ``"stopped"``...); None or
                ``"destroyed"`` when it no longer exists.
            rate_dph: The rate from now on in $/h (see :func:`vastkit.money.hourly_rate`).
            at: The time; default now. Must not be before the previous sample.
            extra_usd: A one-off amount to add.
            fence: A queue driver's fencing token: write only while it holds the job.

        Returns:
            The dollars accrued by this sample.

        Raises:
            ValueError: A negative rate or amount, or ``at`` before the previous sample.
            LedgerError: No such attempt, or the write failed.
            LeaseLost: ``fence`` no longer holds its job (nothing was written).
        """
        if rate_dph < 0 or extra_usd < 0:
            raise ValueError("rate_dph and extra_usd cannot be negative")
        now = self._now(at)
        with self._db.write() as tx:
            check_fence(tx, fence)
            return _accrue(tx, attempt_id, state=state, rate_dph=rate_dph, now=now, extra=extra_usd)

    def backdate_change(
        self,
        attempt_id: int,
        *,
        state: str | None,
        rate_dph: float,
        at: float,
        fence: Fence | None = None,
    ) -> float:
        """Record a change of rate at ``at``, earlier than samples already taken after it.

        A poll sees a change only after it happened, and its sample charges the old rate up to
        the poll. When better evidence arrives later (the worker's own record of the stop signal,
        say), the change is put where it belongs: the sample before ``at`` accrues up to ``at``,
        the new rate applies from ``at`` to the next sample, and that sample's cost is counted
        again (samples after it saw the new state themselves and stay as they are).

        Args:
            attempt_id: The attempt.
            state: The instance state from ``at`` on.
            rate_dph: The rate from ``at`` on in $/h.
            at: When the change happened; not before the attempt's first sample.
            fence: A queue driver's fencing token: write only while it holds the job.

        Returns:
            What the change adds to the attempt's recorded cost, in dollars (negative when
            the rate went down: the ledger had counted the old rate for too long).

        Raises:
            ValueError: A negative rate, or ``at`` before the attempt's first sample.
            LedgerError: No such attempt, or the write failed.
            LeaseLost: ``fence`` no longer holds its job (nothing was written).
        """
        if rate_dph < 0:
            raise ValueError("rate_dph cannot be negative")
        with self._db.write() as tx:
            check_fence(tx, fence)
            return _backdate(tx, attempt_id, state=state, rate_dph=rate_dph, at=float(at))

    # -- an attempt's create and end, fenced --------------------------------------------------

    def begin_attempt(
        self,
        run_id: str,
        attempt: int,
        *,
        offer_id: int,
        label: str,
        at: float | None = None,
        fence: Fence | None = None,
        **fields: Any,
    ) -> tuple[int, int]:
        """Write a create intent and its attempt row in one transaction, before the create.

        Args:
            run_id: The run.
            attempt: The attempt number (unique within the run).
            offer_id: The offer about to be rented.
            label: The label the instance will carry (unique).
            at: The time (the intent's and the attempt's ``intent_at``); default now.
            fence: A queue driver's fencing token: write only while it holds the job.
            **fields: Further attempt fields (see :meth:`record_attempt`).

        Returns:
            ``(intent_id, attempt_id)``.

        Raises:
            ValueError: An unknown field.
            LeaseLost: ``fence`` no longer holds its job (nothing was written).
            LedgerError: No such run, the label or attempt number is taken, or the write failed.
        """
        _check_attempt_fields(fields)
        now = self._now(at)
        columns = ["run_id", "attempt", "offer_id", "label", "intent_at", *fields]
        values = (run_id, attempt, offer_id, label, now, *fields.values())
        try:
            with self._db.write() as tx:
                check_fence(tx, fence)
                intent_id = tx.insert(
                    "INSERT INTO create_intents (run_id, attempt, offer_id, label, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (run_id, attempt, offer_id, label, now),
                )
                attempt_id = tx.insert(
                    f"INSERT INTO attempts ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})",
                    values,
                )
        except RowConflict as exc:
            raise LedgerError(
                f"cannot begin attempt {attempt} of run '{run_id}' (label '{label}'): {exc}"
            ) from exc
        return intent_id, attempt_id

    def record_created(
        self,
        intent_id: int,
        attempt_id: int,
        *,
        instance_id: int,
        storage_dph: float,
        at: float | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Record in one transaction that an attempt's instance exists (it bills storage).

        Raises:
            LeaseLost: ``fence`` no longer holds its job (nothing was written: the caller
                created for a job another driver took over, see :meth:`record_superseded`).
            LedgerError: The write failed.
        """
        now = self._now(at)
        with self._db.write() as tx:
            check_fence(tx, fence)
            _set(
                tx,
                "create_intents",
                intent_id,
                {"status": "completed", "instance_id": instance_id, "completed_at": now},
            )
            _set(tx, "attempts", attempt_id, {"instance_id": instance_id, "created_at": now})
            _accrue(tx, attempt_id, state="provisioning", rate_dph=storage_dph, now=now)

    def settle_attempt(
        self,
        attempt_id: int,
        *,
        reason: str,
        at: float | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Record in one transaction that an attempt's instance is confirmed gone at ``at``.

        Raises:
            LeaseLost: ``fence`` no longer holds its job (nothing was written).
            LedgerError: No such attempt, or the write failed.
        """
        now = self._now(at)
        with self._db.write() as tx:
            check_fence(tx, fence)
            _accrue(tx, attempt_id, state="destroyed", rate_dph=0.0, now=now)
            _set(
                tx,
                "attempts",
                attempt_id,
                {"end_reason": reason, "ended_at": now, "destroyed_at": now},
            )

    def attempt_adopted(self, attempt_id: int, instance_id: int) -> bool:
        """Whether the attempt is open with ``instance_id`` on the books (a new driver adopted
        the instance of a create that raced its takeover)."""
        rows = self._db.read(
            "SELECT 1 AS adopted FROM attempts WHERE id = ? AND instance_id = ? "
            "AND ended_at IS NULL",
            (attempt_id, instance_id),
        )
        return bool(rows)

    def record_superseded(
        self,
        intent_id: int,
        attempt_id: int,
        *,
        instance_id: int,
        created_at: float,
        gone_at: float,
        storage_dph: float,
        reason: str = "superseded",
    ) -> None:
        """Record a create that raced a takeover, already destroyed: its instance, the storage
        it billed from ``created_at`` to ``gone_at``, and the attempt's end (the old epoch's
        attempt; the new driver never used it). Not fenced: it writes only that attempt."""
        with self._db.write() as tx:
            _set(
                tx,
                "create_intents",
                intent_id,
                {"status": "completed", "instance_id": instance_id, "completed_at": created_at},
            )
            if tx.one("SELECT 1 AS n FROM cost_samples WHERE attempt_id = ?", (attempt_id,)):
                return  # someone recorded this attempt's instance already
            _set(
                tx,
                "attempts",
                attempt_id,
                {
                    "instance_id": instance_id,
                    "created_at": created_at,
                    "end_reason": reason,
                    "ended_at": gone_at,
                    "destroyed_at": gone_at,
                },
            )
            _accrue(tx, attempt_id, state="provisioning", rate_dph=storage_dph, now=created_at)
            _accrue(tx, attempt_id, state="destroyed", rate_dph=0.0, now=max(gone_at, created_at))

    def cost_samples(self, attempt_id: int) -> list[CostSample]:
        """The cost samples of an attempt, in time order."""
        rows = self._db.read(
            "SELECT * FROM cost_samples WHERE attempt_id = ? ORDER BY at, id", (attempt_id,)
        )
        return [from_row(row, CostSample) for row in rows]

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
        clause, params = _cost_filters(project, team, run_id, since, until)
        rows = self._db.read(
            f"SELECT COALESCE(SUM(c.cost_usd), 0) AS spent {_COST_JOIN} {clause}", params
        )
        return float(rows[0]["spent"])

    def running(
        self,
        *,
        project: str | None = None,
        team: str | None = None,
        run_id: str | None = None,
        exclude_run: str | None = None,
        now: float | None = None,
    ) -> tuple[float, float]:
        """What the matching attempts that still exist accrue between their last sample and now.

        Every process that watches an instance samples it on each poll, so this is the spend no
        sample holds yet, of every driver on this ledger: a budget guard adds it to
        :meth:`spend` and projects the summed rate one poll ahead.

        Args:
            project: Only runs of this project.
            team: Only runs of this team.
            run_id: Only this run.
            exclude_run: Leave this run out (the caller counts its own attempt itself).
            now: The time (default: the ledger's clock).

        Returns:
            ``(dollars accrued since the last samples, summed rate in $/h)``.
        """
        at = self._now(now)
        clause, params = where(
            ("r.project = ?", project),
            ("r.team = ?", team),
            ("r.run_id = ?", run_id),
            ("r.run_id <> ?", exclude_run),
        )
        glue = "AND" if clause else "WHERE"
        rows = self._db.read(
            "SELECT c.at, c.rate_dph FROM cost_samples c "
            "JOIN attempts a ON a.id = c.attempt_id JOIN runs r ON r.run_id = a.run_id "
            f"{clause} {glue} a.destroyed_at IS NULL AND c.id = ("
            "SELECT c2.id FROM cost_samples c2 WHERE c2.attempt_id = a.id "
            "ORDER BY c2.at DESC, c2.id DESC LIMIT 1)",
            params,
        )
        accrued = sum(r["rate_dph"] * max(at - r["at"], 0.0) / 3600.0 for r in rows)
        return accrued, sum(float(r["rate_dph"]) for r in rows)

    def cost_rows(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Every cost sample in ``[since, until)`` joined with its attempt and run (for reports).

        Returns:
            Dicts with ``at``, ``cost_usd``, ``run_id``, ``name``, ``project``, ``team``,
            ``gpu_name``, ``num_gpus``, ``attempt_id``, ``instance_id``.
        """
        clause, params = _cost_filters(None, None, None, since, until)
        return self._db.read(
            "SELECT c.at, c.cost_usd, r.run_id, r.name, r.project, r.team, a.gpu_name, "
            f"a.num_gpus, a.id AS attempt_id, a.instance_id {_COST_JOIN} {clause} "
            "ORDER BY c.at, c.id",
            params,
        )

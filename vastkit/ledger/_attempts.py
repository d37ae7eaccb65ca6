"""The attempts and cost samples tables: every instance tried for a run, and what it accrued."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from vastkit.errors import LedgerError
from vastkit.ledger._db import Row, RowConflict, Tables, where
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

        Returns:
            The dollars accrued by this sample.

        Raises:
            ValueError: A negative rate or amount, or ``at`` before the previous sample.
            LedgerError: No such attempt, or the write failed.
        """
        if rate_dph < 0 or extra_usd < 0:
            raise ValueError("rate_dph and extra_usd cannot be negative")
        now = self._now(at)
        with self._db.write() as tx:
            if tx.one("SELECT 1 FROM attempts WHERE id = ?", (attempt_id,)) is None:
                raise LedgerError(f"no attempt {attempt_id} in the ledger")
            previous = tx.one(
                "SELECT at, rate_dph FROM cost_samples WHERE attempt_id = ? "
                "ORDER BY at DESC, id DESC LIMIT 1",
                (attempt_id,),
            )
            cost = extra_usd
            if previous is not None:
                if now < previous["at"]:
                    raise ValueError(
                        f"cost sample at {now} is before the previous one at {previous['at']}"
                    )
                cost += previous["rate_dph"] * (now - previous["at"]) / 3600.0
            tx.execute(
                "INSERT INTO cost_samples (attempt_id, at, state, rate_dph, cost_usd) "
                "VALUES (?, ?, ?, ?, ?)",
                (attempt_id, now, state, rate_dph, cost),
            )
        return cost

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

"""The create intents table: written before a create request is sent, closed after."""

from __future__ import annotations

from vastkit.errors import LedgerError
from vastkit.ledger._db import RowConflict, Tables, equal
from vastkit.ledger._fence import Fence
from vastkit.ledger._records import CreateIntent, from_row

__all__ = ["IntentsTable"]


class IntentsTable(Tables):
    """Create intents: begin before ``PUT /asks/``, complete after, list the pending ones."""

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
            with self._db.write() as tx:
                return tx.insert(
                    "INSERT INTO create_intents (run_id, attempt, offer_id, label, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (run_id, attempt, offer_id, label, self._now(at)),
                )
        except RowConflict as exc:
            raise LedgerError(f"a create intent with label '{label}' already exists") from exc

    def complete_intent(
        self,
        intent_id: int,
        *,
        instance_id: int | None = None,
        error: str | None = None,
        at: float | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Close an intent: ``completed`` with the instance id, or ``failed`` with an error.

        Raises:
            ValueError: No such intent.
            LedgerError: The write failed.
        """
        status = "failed" if error is not None and instance_id is None else "completed"
        self._update(
            "create_intents",
            "id",
            intent_id,
            {
                "status": status,
                "instance_id": instance_id,
                "error": error,
                "completed_at": self._now(at),
            },
            missing=f"no create intent {intent_id} in the ledger",
            fence=fence,
        )

    def pending_intents(self) -> list[CreateIntent]:
        """Intents never completed: a create that may or may not have happened (reconcile these
        by label)."""
        rows = self._db.read("SELECT * FROM create_intents WHERE status = 'pending' ORDER BY id")
        return [from_row(row, CreateIntent) for row in rows]

    def intents(self, run_id: str | None = None) -> list[CreateIntent]:
        """Every intent (of ``run_id``), oldest first."""
        clause, params = equal(run_id=run_id)
        rows = self._db.read(f"SELECT * FROM create_intents {clause} ORDER BY id", params)
        return [from_row(row, CreateIntent) for row in rows]

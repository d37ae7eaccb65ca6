"""The blocked machines table: machines not to rent again until an expiry."""

from __future__ import annotations

from vastkit.ledger._db import Tables
from vastkit.ledger._fence import Fence, check_fence
from vastkit.ledger._records import BlockedMachine, from_row

__all__ = ["BlocksTable"]


class BlocksTable(Tables):
    """Blocked machines: block (extending, never shortening), unblock, list."""

    def block_machine(
        self,
        machine_id: int,
        *,
        reason: str,
        for_s: float = 6 * 3600.0,
        at: float | None = None,
        fence: Fence | None = None,
    ) -> BlockedMachine:
        """Block a machine for ``for_s`` seconds (extending an existing block, never shortening).

        Args:
            machine_id: The machine.
            reason: Why (``"image pull failed"``, ``"host lost"``...).
            for_s: How long.
            at: The time; default now.
            fence: A queue driver's fencing token: write only while it holds its job.

        Returns:
            The block as stored.

        Raises:
            ValueError: A non-positive duration.
            LedgerError: The write failed.
            LeaseLost: ``fence`` no longer holds its job (nothing was written).
        """
        if for_s <= 0:
            raise ValueError(f"for_s must be positive (got {for_s})")
        now = self._now(at)
        with self._db.write() as tx:
            check_fence(tx, fence)
            tx.execute(
                "INSERT INTO blocked_machines (machine_id, reason, blocked_at, expires_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (machine_id) DO UPDATE SET "
                "reason = excluded.reason, blocked_at = excluded.blocked_at, "
                "expires_at = CASE WHEN excluded.expires_at > blocked_machines.expires_at "
                "THEN excluded.expires_at ELSE blocked_machines.expires_at END, "
                "count = blocked_machines.count + 1",
                (machine_id, reason, now, now + for_s),
            )
            row = tx.one("SELECT * FROM blocked_machines WHERE machine_id = ?", (machine_id,))
        assert row is not None
        return from_row(row, BlockedMachine)

    def unblock_machine(self, machine_id: int) -> None:
        """Lift a block (no error when there is none)."""
        with self._db.write() as tx:
            tx.execute("DELETE FROM blocked_machines WHERE machine_id = ?", (machine_id,))

    def blocked_machines(self, now: float | None = None) -> frozenset[int]:
        """Machine ids blocked at ``now`` (default: the clock's now): pass to the selector."""
        rows = self._db.read(
            "SELECT machine_id FROM blocked_machines WHERE expires_at > ?", (self._now(now),)
        )
        return frozenset(int(row["machine_id"]) for row in rows)

    def blocks(self, now: float | None = None) -> list[BlockedMachine]:
        """The active blocks at ``now`` with their reasons, soonest expiry first."""
        rows = self._db.read(
            "SELECT * FROM blocked_machines WHERE expires_at > ? ORDER BY expires_at, machine_id",
            (self._now(now),),
        )
        return [from_row(row, BlockedMachine) for row in rows]

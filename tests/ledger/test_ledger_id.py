"""The ledger's identity: created once with its schema, the same for every opener."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from vastkit.ledger import SCHEMA_VERSION, Ledger
from vastkit.ledger._schema import MIGRATIONS


def test_a_new_ledger_has_a_short_hex_id_that_every_opener_sees(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as first:
        ledger_id = first.ledger_id
        with Ledger(tmp_path / "ledger.db") as second:
            assert second.ledger_id == ledger_id
    assert re.fullmatch(r"[0-9a-f]{8}", ledger_id)
    with Ledger(tmp_path / "ledger.db") as reopened:
        assert reopened.ledger_id == ledger_id


def test_two_ledgers_have_different_ids(tmp_path: Path) -> None:
    with Ledger(tmp_path / "a.db") as a, Ledger(tmp_path / "b.db") as b:
        assert a.ledger_id != b.ledger_id


def test_an_old_ledger_gains_an_id_by_migration(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + ";" + MIGRATIONS[1])
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with Ledger(path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        ledger_id = ledger.ledger_id
    assert re.fullmatch(r"[0-9a-f]{8}", ledger_id)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM ledger_meta WHERE key = 'ledger_id'").fetchall() == [
        (ledger_id,)
    ]
    conn.close()

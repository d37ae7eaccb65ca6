"""The ledger's schema: one SQL script per version, applied in order (``PRAGMA user_version``).

A script may name ``:ledger_id``: the migration binds it to a fresh :func:`new_ledger_id`.

The scripts are SQLite's dialect and run on PostgreSQL too, with the column types translated
(``INTEGER PRIMARY KEY AUTOINCREMENT``, ``INTEGER``, ``REAL``: see ``_postgres``). Keep a new
script to what both accept: ``CREATE TABLE``/``CREATE INDEX``, ``ALTER TABLE ... ADD COLUMN``,
``INSERT``/``UPDATE`` of plain values.
"""

from __future__ import annotations

import secrets
from typing import Final

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "new_ledger_id"]

MIGRATIONS: Final[tuple[str, ...]] = (
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
    # 3: the ledger's own facts (its identity: ``ledger_id``, written with this migration)
    """
    CREATE TABLE ledger_meta (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    INSERT INTO ledger_meta (key, value) VALUES ('ledger_id', :ledger_id);
    """,
)
"""The schema, one script per version: ``MIGRATIONS[n]`` takes a file from version ``n`` to
``n + 1``. Append to it; never edit a script that has shipped."""

SCHEMA_VERSION: Final[int] = len(MIGRATIONS)
"""The schema version this vastkit writes (``PRAGMA user_version``)."""


def new_ledger_id() -> str:
    """A fresh ledger identity: 8 lowercase hex digits (short enough for instance labels)."""
    return secrets.token_hex(4)

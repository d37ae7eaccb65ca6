"""A real PostgreSQL server for the ledger tests, and a ledger fixture over both backends.

``postgres_server`` (session scope) runs ``initdb`` into a temporary folder and starts the server
with ``pg_ctl`` on a free loopback port, its unix socket in that folder, durability off (fsync)
for speed; it stops the server (``pg_ctl stop -m immediate``) and removes the folder at the end.
Running as root (a container), the server runs as the ``postgres`` user (PostgreSQL refuses
root). The tests that need it skip, saying why, only where no PostgreSQL binaries exist (or
psycopg is not installed).

``postgres_url`` gives each test a fresh, empty ledger: its own schema on that server, named in
the URL (``options=-csearch_path=...``). ``ledger_target`` is parametrized over ``sqlite`` and
``postgresql``; ``ledger`` opens it with a manual clock.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests._support.processes import HANG_S
from vastkit.clock import ManualClock
from vastkit.ledger import Ledger

NOW = 1_767_225_600.0  # 2026-01-01 UTC, ManualClock's default start
PG_USER = "vastkit"


def _pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: PATH, else the Debian/Ubuntu layout."""
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "pg_ctl").exists():
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.frozen
class PostgresServer:
    """A running server: where to reach it, and how to make a fresh ledger on it."""

    host: str
    port: int
    dbname: str

    @property
    def url(self) -> str:
        """The URL of the server's database (its ``public`` schema)."""
        return f"postgresql://{PG_USER}@{self.host}:{self.port}/{self.dbname}"

    def fresh_url(self) -> str:
        """The URL of a new, empty schema of its own (a separate ledger)."""
        import psycopg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.url}?options=-csearch_path%3D{schema}"


def _run_as(user: pwd.struct_passwd | None, args: list[str]) -> None:
    kwargs = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid}
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=HANG_S, check=False, **kwargs
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql")
    pytest.importorskip("psycopg", reason='psycopg is not installed: pip install "vastkit[dev]"')
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    root = Path(tempfile.mkdtemp(prefix="vastkit-pg-"))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    data = root / "data"
    port = _free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust"]
    _run_as(user, [*initdb, "-E", "UTF8", "--no-sync", "--no-instructions"])
    options = (
        f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off -c max_connections=200"
    )
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        _run_as(user, [*pg_ctl, "-l", str(root / "server.log"), "-o", options, "-w", "start"])
        yield PostgresServer(host="127.0.0.1", port=port, dbname="postgres")
    finally:
        with contextlib.suppress(Exception):
            _run_as(user, [*pg_ctl, "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL ledger's URL."""
    return postgres_server.fresh_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger of each backend: a SQLite file, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def ledger(ledger_target: str) -> Iterator[Ledger]:
    with Ledger(ledger_target, clock=ManualClock(NOW)) as opened:
        yield opened

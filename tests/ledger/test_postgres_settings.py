"""A PostgreSQL ledger from every place a ledger is named, and its password kept out of sight."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from vastkit._settings import is_database_url, redact_url
from vastkit.config import load_config
from vastkit.errors import ConfigError, LedgerError
from vastkit.ledger import Ledger, default_ledger, default_ledger_path

from .conftest import PostgresServer


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:s3cr3t@db.example:5432/vk", "postgresql://bob:***@db.example:5432/vk"),
        ("postgres://bob@db/vk", "postgres://bob@db/vk"),
        ("postgresql://u:p@ss@db/vk", "postgresql://u:***@db/vk"),
        (
            "postgresql://db/vk?user=u&password=zz&sslmode=require",
            "postgresql://db/vk?user=u&password=***&sslmode=require",
        ),
        ("/home/me/ledger.db", "/home/me/ledger.db"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_what_names_a_database() -> None:
    assert is_database_url("postgresql://h/db")
    assert is_database_url("postgres://h/db")
    assert not is_database_url("/tmp/postgresql/ledger.db")
    assert not is_database_url(Path("postgresql://h/db"))


def test_the_environment_and_the_config_file_accept_a_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "postgresql://bob:s3cr3t@db.example:5432/vk"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("VASTKIT_LEDGER", url)
    monkeypatch.delenv("VASTKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_ledger() == url
    assert default_ledger_path() == tmp_path / "state" / "vastkit" / "ledger.db"  # local state
    settings = load_config()
    assert settings.ledger_path == url
    assert "s3cr3t" not in repr(settings)
    assert settings.to_dict()["ledger_path"] == "postgresql://bob:***@db.example:5432/vk"
    monkeypatch.delenv("VASTKIT_LEDGER")
    config = tmp_path / "vastkit.yaml"
    config.write_text(f"ledger_path: {url}\n")
    assert load_config(config).ledger_path == url
    config.write_text("ledger_path: ledgers/team.db\n")
    assert load_config(config).ledger_path == str(tmp_path / "ledgers" / "team.db")


def test_a_missing_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg fails
    monkeypatch.delitem(sys.modules, "vastkit.ledger._postgres", raising=False)
    with pytest.raises(ConfigError, match=r'pip install "vastkit\[postgres\]"'):
        Ledger("postgresql://u:pw@127.0.0.1:1/db")


def test_the_password_is_in_no_repr_log_or_error(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vastkit")
    url = postgres_server.fresh_url().replace("vastkit@", "vastkit:hunter2@")  # trust: any works
    with Ledger(url) as ledger:
        assert "hunter2" not in repr(ledger)
        assert "hunter2" not in ledger.path
        assert ledger.path.startswith("postgresql://vastkit:***@127.0.0.1:")
        with pytest.raises(LedgerError) as info, ledger._db.write() as tx:
            tx.execute("SELECT * FROM nowhere")
        assert "hunter2" not in str(info.value)
    assert "hunter2" not in caplog.text
    assert "migrating ledger postgresql://vastkit:***@" in caplog.text
    unreachable = f"postgresql://vastkit:hunter2@127.0.0.1:{_closed_port()}/db"
    with pytest.raises(
        LedgerError, match=r"cannot open the ledger at postgresql://vastkit:\*\*\*@"
    ) as info:
        Ledger(unreachable, busy_timeout_s=2)
    assert "hunter2" not in str(info.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_another_url_is_refused_not_taken_for_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"neither a file path nor a postgresql:// URL"):
        Ledger("postgresql+psycopg://u:secret@h/db")
    with pytest.raises(ConfigError, match=r"u:\*\*\*@h"):
        Ledger("mysql://u:secret@h/db")
    config = tmp_path / "vastkit.yaml"
    config.write_text("ledger_path: sqlite:///x.db\n")
    assert load_config(config).ledger_path == "sqlite:///x.db"  # kept whole, refused on open
    assert list(tmp_path.iterdir()) == [config]

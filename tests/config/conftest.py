"""Fixtures for the configuration and health-check tests: an isolated environment and home."""

from __future__ import annotations

from pathlib import Path

import pytest

_VARS = (
    "VAST_API_KEY",
    "VAST_URL",
    "VASTKIT_CONFIG",
    "VASTKIT_ENV",
    "VASTKIT_STORE_URL",
    "VASTKIT_PROFILES",
    "VASTKIT_BUDGETS",
    "VASTKIT_LEDGER",
    "VASTKIT_PROJECT",
    "VASTKIT_TEAM",
    "VASTKIT_POLL_INTERVAL",
    "XDG_STATE_HOME",
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test sees the developer's keys, config files or ledger; the cwd is an empty folder."""
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work

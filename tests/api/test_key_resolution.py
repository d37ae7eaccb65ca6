"""Where the client finds its API key, and what it says when there is none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vastkit.api import Client
from vastkit.api.client import resolve_api_key
from vastkit.errors import ConfigError


def _write_key(path: Path, key: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    os.chmod(path, mode)
    return path


@pytest.fixture
def xdg_file() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "vastai" / "vast_api_key"


@pytest.fixture
def legacy_file() -> Path:
    return Path(os.environ["HOME"]) / ".vast_api_key"


def test_the_argument_wins(
    monkeypatch: pytest.MonkeyPatch, xdg_file: Path, legacy_file: Path
) -> None:
    monkeypatch.setenv("VAST_API_KEY", "from-env")
    _write_key(xdg_file, "from-xdg")
    _write_key(legacy_file, "from-legacy")
    assert resolve_api_key("  from-arg ") == "from-arg"


def test_then_the_environment(
    monkeypatch: pytest.MonkeyPatch, xdg_file: Path, legacy_file: Path
) -> None:
    monkeypatch.setenv("VAST_API_KEY", "from-env")
    _write_key(xdg_file, "from-xdg")
    assert resolve_api_key() == "from-env"


def test_then_the_xdg_file(xdg_file: Path, legacy_file: Path) -> None:
    _write_key(xdg_file, "from-xdg")
    _write_key(legacy_file, "from-legacy")
    assert resolve_api_key() == "from-xdg"


def test_xdg_defaults_to_dot_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    _write_key(Path(os.environ["HOME"]) / ".config" / "vastai" / "vast_api_key", "from-config")
    assert resolve_api_key() == "from-config"


def test_then_the_legacy_file(legacy_file: Path) -> None:
    _write_key(legacy_file, "from-legacy")
    assert resolve_api_key() == "from-legacy"


def test_an_empty_file_is_skipped(xdg_file: Path, legacy_file: Path) -> None:
    _write_key(xdg_file, "")
    _write_key(legacy_file, "from-legacy")
    assert resolve_api_key() == "from-legacy"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_file_others_can_read_warns(xdg_file: Path, mode: int) -> None:
    _write_key(xdg_file, "from-xdg", mode)
    with pytest.warns(UserWarning, match="readable by other users") as record:
        assert resolve_api_key() == "from-xdg"
    assert "from-xdg" not in str(record[0].message)


def test_a_private_key_file_does_not_warn(xdg_file: Path) -> None:
    _write_key(xdg_file, "from-xdg", 0o600)
    assert resolve_api_key() == "from-xdg"  # filterwarnings=error would fail on a warning


def test_no_key_is_a_config_error_in_the_constructor() -> None:
    with pytest.raises(ConfigError, match="no Vast API key") as info:
        Client()
    assert info.value.key == "api_key"
    assert "VAST_API_KEY" in str(info.value)


def test_an_empty_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        Client("   ")


def test_the_client_uses_the_resolved_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_API_KEY", "from-env-1234567890")
    with Client(base_url="https://vast.test") as client:
        assert client._transport._api_key == "from-env-1234567890"
        assert "from-env" not in repr(client)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="http"):
        Client("k", base_url="ftp://vast")
    with pytest.raises(ValueError, match="max_retries"):
        Client("k", max_retries=-1)

"""What the access tests share: an empty home folder and well-formed SSH public keys."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

ACCESS_VARIABLES = (
    "VASTKIT_SSH_KEY",
    "VASTKIT_CONFIG",
    "VASTKIT_REGISTRY",
    "VASTKIT_REGISTRY_USER",
    "VASTKIT_REGISTRY_TOKEN",
)
"""The settings that would otherwise leak in from the developer's environment."""


def make_key(comment: str = "me@laptop", *, first_byte: int = 0) -> str:
    """An ed25519 public key line (its 32 key bytes count up from ``first_byte``)."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(
        range(first_byte, first_byte + 32)
    )
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home folder, no config file and no access variables."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder / ".config"))
    monkeypatch.chdir(tmp_path)
    for var in ACCESS_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    return folder

"""``vastkit doctor``: the health checks through the real entry point, against the emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vastkit.emulator import Emulator

from .conftest import Result

Cli = Callable[..., Result]


def _config(tmp_path: Path, emu: Emulator, *, budgets: str | None = None) -> Path:
    lines = [
        "default: dev",
        "environments:",
        "  dev:",
        f"    base_url: {emu.url}",
        "    api_key_env: VAST_API_KEY",
        f"    store_url: {tmp_path / 'runs'}",
        f"    ledger_path: {tmp_path / 'doctor-ledger.db'}",
    ]
    if budgets is not None:
        path = tmp_path / "budgets.yaml"
        path.write_text(budgets, encoding="utf-8")
        lines.append(f"    budgets_file: {path}")
    config = tmp_path / "vastkit.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def test_doctor_is_green_against_the_emulator_and_a_local_store(
    cli: Cli, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VASTKIT_CONFIG", str(_config(tmp_path, emu)))
    result = cli("doctor", "--json", "--no-worker-probe", url=False)
    report = result.json()
    failed = [item for item in report["items"] if item["status"] == "fail"]
    assert result.code == 0, failed
    assert report["ok"] is True
    assert report["env"] == "dev"
    names = " ".join(item["name"] for item in report["items"]).lower()
    assert "key" in names
    assert "store" in names
    assert "ledger" in names
    # the probe object was removed again
    assert not any((tmp_path / "runs").rglob("*probe*"))


def test_doctor_fails_with_the_broken_file_and_line(
    cli: Cli, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, emu, budgets="projects:\n  vision:\n    limit_usd: -5\n")
    monkeypatch.setenv("VASTKIT_CONFIG", str(config))
    result = cli("doctor", "--json", "--no-worker-probe", url=False)
    assert result.code == 1
    report = result.json()
    failed = [item for item in report["items"] if item["status"] == "fail"]
    assert len(failed) == 1, failed
    assert "budgets.yaml:3" in failed[0]["detail"]
    assert failed[0]["fix"]

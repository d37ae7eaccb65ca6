"""``vastkit doctor``: the health checks through the real entry point, against the emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vastkit.emulator import Emulator

from .conftest import Result

Cli = Callable[..., Result]


def _config(
    tmp_path: Path, emu: Emulator, *, budgets: str | None = None, profiles: str | None = None
) -> Path:
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
    if profiles is not None:
        path = tmp_path / "gpu_profiles.yaml"
        path.write_text(profiles, encoding="utf-8")
        lines.append(f"    profiles_file: {path}")
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


PROFILES = """\
profiles:
  cheap-4090:
    gpu_name: RTX_4090
    max_dph: 0.60
    max_duration_hours: 2
  impossible:
    gpu_name: RTX_4090
    max_dph: 0.002
    max_duration_hours: 2
"""


@pytest.fixture
def no_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home (no SSH key) and no access variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("VASTKIT_SSH_KEY", "VASTKIT_REGISTRY_USER", "VASTKIT_REGISTRY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return home


def _items(result: Result) -> dict[str, dict[str, str]]:
    return {item["name"]: item for item in result.json()["items"]}


def test_live_searches_each_profile_and_fails_the_one_without_offers(
    cli: Cli, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_home: Path
) -> None:
    monkeypatch.setenv("VASTKIT_CONFIG", str(_config(tmp_path, emu, profiles=PROFILES)))
    result = cli("doctor", "--live", "--json", "--no-worker-probe", url=False)
    items = _items(result)
    assert result.code == 1
    assert items["api key"]["status"] == "ok"
    assert "credit $" in items["api key"]["detail"]
    assert items["offers: cheap-4090"]["status"] == "ok"
    assert "cheapest RTX" in items["offers: cheap-4090"]["detail"]
    assert items["offers: impossible"]["status"] == "fail"
    assert "no offer qualifies" in items["offers: impossible"]["detail"]
    assert "max_dph" in items["offers: impossible"]["fix"]
    assert [i for i in items.values() if i["status"] == "fail"] == [items["offers: impossible"]]
    # read-only: searches and reads, no create, destroy or change
    methods = {method for method, _, _ in emu.requests}
    assert methods <= {"GET", "POST"}, emu.requests
    assert not any(name in ("create", "destroy") for _, name, _ in emu.requests)
    assert emu.instances == []


def test_without_live_no_offer_search_or_access_check_is_made(
    cli: Cli, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_home: Path
) -> None:
    monkeypatch.setenv("VASTKIT_CONFIG", str(_config(tmp_path, emu, profiles=PROFILES)))
    result = cli("doctor", "--json", "--no-worker-probe", url=False)
    assert result.code == 0
    names = set(_items(result))
    assert not any(name.startswith("offers") for name in names)
    assert not names & {"ssh key", "registry"}
    assert not any(name == "search" for _, name, _ in emu.requests)


def test_live_with_a_bad_key_fails_clearly_and_searches_nothing(
    cli: Cli, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_home: Path
) -> None:
    monkeypatch.setenv("VASTKIT_CONFIG", str(_config(tmp_path, emu, profiles=PROFILES)))
    bad = "f" * 64
    monkeypatch.setenv("VAST_API_KEY", bad)
    result = cli("doctor", "--live", "--no-worker-probe", url=False)
    assert result.code == 1
    lines = result.out.splitlines()
    failed = [line for line in lines if "api key" in line and "FAIL" in line]
    assert failed, result.out
    assert "the key was rejected" in failed[0]
    assert "not checked: needs a working API key" in result.out
    assert bad not in result.out + result.err
    assert not any(name == "search" for _, name, _ in emu.requests)


def test_the_ssh_key_and_registry_login_are_reported(
    cli: Cli, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_home: Path
) -> None:
    monkeypatch.setenv("VASTKIT_CONFIG", str(_config(tmp_path, emu)))
    result = cli("doctor", "--live", "--json", "--no-worker-probe", url=False)
    items = _items(result)
    assert items["ssh key"]["status"] == "warn"
    assert "ssh-keygen -t ed25519" in items["ssh key"]["detail"]
    assert items["registry"]["status"] == "ok"

    token = "ghp_doctorTOKEN42"
    monkeypatch.setenv("VASTKIT_REGISTRY_TOKEN", token)
    result = cli("doctor", "--live", "--json", "--no-worker-probe", url=False)
    items = _items(result)
    assert result.code == 1
    assert items["registry"]["status"] == "fail"
    assert "registry_user is not set" in items["registry"]["detail"]
    assert token not in result.out


def test_doctor_piped_prints_plain_lines_not_a_box_table(
    cli: Cli, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VASTKIT_CONFIG", str(_config(tmp_path, emu)))
    result = cli("doctor", "--no-worker-probe", url=False)
    assert result.code == 0, result.out
    assert result.out.startswith("vastkit check (environment 'dev'")
    assert not any(ch in result.out for ch in "┏┃━│─╭╰")
    items = result.out.splitlines()[1:]
    assert items
    assert all(line.startswith("  ") for line in items)

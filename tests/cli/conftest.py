"""Fixtures for the CLI tests: an emulator on loopback and a runner for ``vastkit.cli.main``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from vastkit.api.client import Client
from vastkit.cli import main
from vastkit.emulator import Emulator, serve


@attrs.frozen
class Result:
    """What one ``vastkit`` invocation did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with serve(seed=0, offers=300, rate_limits=False) as emulator:
        yield emulator


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def cli(
    emu: Emulator,
    ledger_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., Result]:
    """Run ``vastkit --url <emulator> --ledger <tmp> ARGS`` in-process with the key in the env."""
    monkeypatch.setenv("VAST_API_KEY", emu.api_key)
    monkeypatch.delenv("VAST_URL", raising=False)

    def run(*args: str, url: bool = True) -> Result:
        capsys.readouterr()
        prefix = ["--url", emu.url, "--ledger", str(ledger_path)] if url else []
        code = main([*prefix, *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def client(emu: Emulator) -> Iterator[Client]:
    with Client(emu.api_key, base_url=emu.url, max_retries=0, min_intervals={}) as c:
        yield c

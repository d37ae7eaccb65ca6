"""The CLI on a PostgreSQL ledger: ``--ledger URL`` and ``VASTKIT_LEDGER=URL``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vastkit.cli import main
from vastkit.ledger import Ledger

from .conftest import NOW


def _spend(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.record_run("v1", project="vision", team="ml", at=NOW)
        attempt = ledger.record_attempt("v1", 1, gpu_name="RTX 4090", num_gpus=1, instance_id=7)
        ledger.add_cost_sample(attempt, state="running", rate_dph=0.9, at=NOW)
        ledger.add_cost_sample(attempt, state="destroyed", rate_dph=0, at=NOW + 4 * 3600)


def test_cost_report_reads_a_postgresql_ledger(
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("VASTKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    _spend(postgres_url)
    assert main(["--ledger", postgres_url, "cost-report", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_usd"] == pytest.approx(3.6)
    monkeypatch.setenv("VASTKIT_LEDGER", postgres_url)
    assert main(["cost-report", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_usd"] == pytest.approx(3.6)
    assert not (tmp_path / "state" / "vastkit" / "ledger.db").exists()  # no local file made

"""The cost report: grouping, rendering, and the comparison with Vast's charges."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from vastkit.api.models import Charge, ChargeItem
from vastkit.clock import ManualClock
from vastkit.cost_report import cost_report
from vastkit.ledger import Ledger

from .conftest import NOW

DAY = 86400.0


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """Two projects over two days: vision ($3.60 on day 1, $1.20 on day 2), nlp ($2.00)."""
    ledger = Ledger(tmp_path / "ledger.db", clock=ManualClock(NOW))
    ledger.record_run("v1", project="vision", team="ml")
    ledger.record_run("v2", project="vision", team="ml")
    ledger.record_run("n1", project="nlp", team="research")
    a = ledger.record_attempt("v1", 1, gpu_name="RTX 4090", num_gpus=1, instance_id=101)
    b = ledger.record_attempt("v2", 1, gpu_name="RTX 4090", num_gpus=1, instance_id=102)
    c = ledger.record_attempt("n1", 1, gpu_name="H100 SXM", num_gpus=4, instance_id=103)
    ledger.add_cost_sample(a, state="running", rate_dph=0.9, at=NOW)
    ledger.add_cost_sample(a, state="destroyed", rate_dph=0, at=NOW + 4 * 3600)  # 3.60
    ledger.add_cost_sample(b, state="running", rate_dph=0.4, at=NOW + DAY)
    ledger.add_cost_sample(b, state="destroyed", rate_dph=0, at=NOW + DAY + 3 * 3600)  # 1.20
    ledger.add_cost_sample(c, state="running", rate_dph=8.0, at=NOW + DAY)
    ledger.add_cost_sample(c, state="destroyed", rate_dph=0, at=NOW + DAY + 900)  # 2.00
    yield ledger
    ledger.close()


def test_by_project(ledger: Ledger) -> None:
    report = cost_report(ledger, by="project")
    assert [(r.key, round(r.cost_usd, 6), r.runs, r.attempts) for r in report.rows] == [
        ("vision", 4.8, 2, 2),
        ("nlp", 2.0, 1, 1),
    ]
    assert report.total_usd == pytest.approx(6.8)


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("team", [("ml", 4.8), ("research", 2.0)]),
        ("job", [("v1", 3.6), ("n1", 2.0), ("v2", 1.2)]),
        ("gpu", [("1x RTX 4090", 4.8), ("4x H100 SXM", 2.0)]),
        ("day", [("2026-01-01", 3.6), ("2026-01-02", 3.2)]),
    ],
)
def test_groupings(ledger: Ledger, by: str, expected: list[tuple[str, float]]) -> None:
    report = cost_report(ledger, by=by)
    assert [(r.key, round(r.cost_usd, 6)) for r in report.rows] == expected


def test_window(ledger: Ledger) -> None:
    report = cost_report(ledger, by="project", since=NOW + DAY, until=NOW + 2 * DAY)
    assert [(r.key, round(r.cost_usd, 6)) for r in report.rows] == [("nlp", 2.0), ("vision", 1.2)]


def test_unknown_grouping(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="cannot group a cost report by 'week'; use one of"):
        cost_report(ledger, by="week")


def test_csv_json_and_table(ledger: Ledger) -> None:
    report = cost_report(ledger, by="team")
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert rows == [
        {"team": "ml", "cost_usd": "4.8", "runs": "2", "attempts": "2"},
        {"team": "research", "cost_usd": "2.0", "runs": "1", "attempts": "1"},
    ]
    data = json.loads(report.to_json())
    assert data["total_usd"] == 6.8
    assert data["rows"][0] == {"team": "ml", "cost_usd": 4.8, "runs": 2, "attempts": 2}
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(report.to_table())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Spend by team" in text
    assert "ml" in text
    assert "4.80" in text
    assert "6.80" in text  # the total row
    assert "4.80" in str(report)


def test_compare_with_vast_charges(ledger: Ledger) -> None:
    charges = [
        Charge(
            source="instance-101",
            amount=3.70,
            start=NOW,
            items=(ChargeItem(type="gpu", amount=3.6),),
        ),
        Charge(source="instance-102", amount=1.20, start=NOW + DAY),
        Charge(source="instance-103", amount=2.00, start=NOW + DAY),
        Charge(source="instance-999", amount=0.50, start=NOW),
    ]
    report = cost_report(ledger, by="project", charges=charges)
    got = {r.key: (round(r.cost_usd, 4), r.vast_usd, r.difference_usd) for r in report.rows}
    assert got["vision"][1] == pytest.approx(4.9)
    assert got["vision"][2] == pytest.approx(0.1)
    assert got["nlp"][2] == pytest.approx(0.0)
    assert got["(not in ledger)"][:2] == (0.0, 0.5)
    console = Console(width=100, file=io.StringIO(), color_system=None)
    console.print(report.to_table())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Vast $" in text
    assert "+0.10" in text
    assert "(not in ledger)" in text
    assert json.loads(report.to_json())["rows"][0]["difference_usd"] == pytest.approx(0.1)


def test_png_chart(ledger: Ledger, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = cost_report(ledger, by="project").to_png(tmp_path / "spend.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_matplotlib_says_what_to_install(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    hint = r'pip install "vastkit\[plot\]" \(from a clone: pip install -e "\.\[plot\]"\)'
    with pytest.raises(ImportError, match=hint):
        cost_report(ledger).to_png(tmp_path / "x.png")


def test_a_run_of_a_tenth_of_a_cent_is_not_shown_as_zero(tmp_path: Path) -> None:
    with Ledger(tmp_path / "small.db", clock=ManualClock(NOW)) as ledger:
        ledger.record_run("tiny", project="demo")
        attempt = ledger.record_attempt("tiny", 1, gpu_name="RTX 3090", num_gpus=1)
        ledger.add_cost_sample(attempt, state="running", rate_dph=0.08, at=NOW)
        ledger.add_cost_sample(attempt, state="destroyed", rate_dph=0, at=NOW + 45)  # $0.001
        text = str(cost_report(ledger, by="project"))
    assert "0.0010" in text
    assert "0.00 " not in text

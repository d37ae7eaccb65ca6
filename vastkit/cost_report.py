"""What was spent, grouped the way you ask, from the ledger; optionally checked against Vast.

:func:`cost_report` reads the ledger's cost samples and groups them by project, team, job (run
id), GPU or UTC day. The :class:`CostReport` renders as a rich table, CSV, JSON, or a PNG chart of
spend over time (needs matplotlib: ``pip install 'vastkit[plot]'``). Given Vast's own charges
(``GET /api/v0/charges/`` as :class:`~vastkit.api.models.Charge` values), each row also shows what
Vast billed and the difference.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
from rich.table import Table

from vastkit.api.models import Charge
from vastkit.errors import install_hint
from vastkit.ledger import Ledger

__all__ = ["GROUPINGS", "CostReport", "CostRow", "cost_report", "rounded_parts"]

GroupBy = Literal["project", "team", "job", "gpu", "day"]
GROUPINGS: tuple[str, ...] = ("project", "team", "job", "gpu", "day")
"""The ways :func:`cost_report` can group."""
NONE_KEY = "(none)"
"""The group of runs without a project (or team)."""
NOT_IN_LEDGER = "(not in ledger)"
"""The group of Vast charges for instances the ledger does not know."""


_DIGITS = 4
"""Decimals of the dollar amounts in the table and the text."""


def rounded_parts(parts: Sequence[float], digits: int = _DIGITS) -> tuple[list[float], float]:
    """Round ``parts`` to ``digits`` decimals so that they add up to their rounded sum.

    Each part is rounded down, then the units still missing go to the parts that lost the most
    (the largest remainder method), so a line such as "total 0.0010 = 0.0009 + 0.0001" holds.

    Args:
        parts: Non-negative amounts.
        digits: Decimals to keep.

    Returns:
        The rounded parts, in order, and their sum (the rounded total).
    """
    scale = 10**digits
    scaled = [part * scale for part in parts]
    total_units = round(sum(scaled))
    floors = [math.floor(x) for x in scaled]
    missing = total_units - sum(floors)
    order = sorted(range(len(parts)), key=lambda i: floors[i] - scaled[i])
    for i in order[: max(missing, 0)]:
        floors[i] += 1
    return [units / scale for units in floors], total_units / scale


def _day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m-%d")


@attrs.frozen(kw_only=True)
class CostRow:
    """One group of a cost report.

    Attributes:
        key: The group (a project, team, run id, ``"1x RTX 4090"`` or ``"2026-01-01"``).
        cost_usd: What the ledger recorded.
        runs: Distinct runs in the group.
        attempts: Distinct attempts (instances) in the group.
        vast_usd: What Vast charged for the same instances, when charges were given.
        difference_usd: ``vast_usd - cost_usd``, when charges were given.
    """

    key: str
    cost_usd: float
    runs: int = 0
    attempts: int = 0
    vast_usd: float | None = None
    difference_usd: float | None = None


@attrs.frozen(kw_only=True)
class CostReport:
    """The result of :func:`cost_report`.

    Attributes:
        by: The grouping.
        since: Start of the window (Unix seconds), if any.
        until: End of the window, if any.
        rows: One row per group, most expensive first (by day: in date order).
        daily: ``(day, group, dollars)`` triples, for the chart.
    """

    by: str
    since: float | None
    until: float | None
    rows: tuple[CostRow, ...]
    daily: tuple[tuple[str, str, float], ...] = ()

    @property
    def total_usd(self) -> float:
        """The ledger's total over all rows."""
        return sum(row.cost_usd for row in self.rows)

    @property
    def compared(self) -> bool:
        """Whether Vast charges were given."""
        return any(row.vast_usd is not None for row in self.rows)

    def _columns(self) -> list[str]:
        columns = [self.by, "cost_usd", "runs", "attempts"]
        if self.compared:
            columns += ["vast_usd", "difference_usd"]
        return columns

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as dicts (the JSON and CSV shape)."""
        records = []
        for row in self.rows:
            record: dict[str, Any] = {
                self.by: row.key,
                "cost_usd": round(row.cost_usd, 6),
                "runs": row.runs,
                "attempts": row.attempts,
            }
            if self.compared:
                record["vast_usd"] = None if row.vast_usd is None else round(row.vast_usd, 6)
                record["difference_usd"] = (
                    None if row.difference_usd is None else round(row.difference_usd, 6)
                )
            records.append(record)
        return records

    def to_csv(self) -> str:
        """The report as CSV text with a header row."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self._columns(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.to_records())
        return buffer.getvalue()

    def to_json(self) -> str:
        """The report as JSON: ``{"by", "since", "until", "total_usd", "rows": [...]}``."""
        return json.dumps(
            {
                "by": self.by,
                "since": self.since,
                "until": self.until,
                "total_usd": round(self.total_usd, 6),
                "rows": self.to_records(),
            },
            indent=2,
        )

    def cells(self) -> tuple[str, list[str], list[list[str]]]:
        """The title, the column headers and the rows (a ``total`` row last) as text.

        Dollars have four decimals, rounded so that the rows add up to the total shown
        (:func:`rounded_parts`).
        """
        window = " to ".join(_day(t) if t is not None else "..." for t in (self.since, self.until))
        title = f"Spend by {self.by}" + (f" ({window})" if self.since or self.until else "")
        columns = [self.by, "cost $", "runs", "attempts"]
        costs, total = rounded_parts([row.cost_usd for row in self.rows])
        rows = [
            [row.key, f"{cost:.{_DIGITS}f}", str(row.runs), str(row.attempts)]
            for row, cost in zip(self.rows, costs, strict=True)
        ]
        last = ["total", f"{total:.{_DIGITS}f}", "", ""]
        if self.compared:
            columns += ["Vast $", "difference $"]
            vast, vast_total = rounded_parts([row.vast_usd or 0.0 for row in self.rows])
            for cells, row, billed, cost in zip(rows, self.rows, vast, costs, strict=True):
                known = row.vast_usd is not None
                cells.append(f"{billed:.{_DIGITS}f}" if known else "-")
                cells.append(f"{billed - cost:+.{_DIGITS}f}" if known else "-")
            last += [f"{vast_total:.{_DIGITS}f}", f"{vast_total - total:+.{_DIGITS}f}"]
        return title, columns, [*rows, last]

    def to_table(self) -> Table:
        """The report as a :class:`rich.table.Table` (print it with a rich console). Group
        names are never cut: a narrow terminal wraps the other columns first."""
        title, columns, rows = self.cells()
        table = Table(title=title)
        for i, column in enumerate(columns):
            if i == 0:
                width = max(len(column), *(len(r[0]) for r in rows))
                table.add_column(column, no_wrap=True, min_width=width)
            else:
                table.add_column(column, justify="right")
        for cells in rows[:-1]:
            table.add_row(*cells)
        table.add_section()
        table.add_row(*rows[-1])
        return table

    def to_text(self) -> str:
        """The report as plain text: a title line, then space-aligned columns (no box
        characters), for pipes, files and logs."""
        title, columns, rows = self.cells()
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

        def line(cells: list[str]) -> str:
            parts = [
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        return "\n".join([title, line(columns), *(line(r) for r in rows)]) + "\n"

    def __str__(self) -> str:
        return self.to_text()

    def to_png(self, path: str | os.PathLike[str]) -> Path:
        """Draw cumulative spend over time per group (one line per group) into a PNG file.

        Args:
            path: Where to write the PNG.

        Returns:
            The path written.

        Raises:
            ImportError: matplotlib is not installed (``pip install 'vastkit[plot]'``).
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(f"the cost chart needs matplotlib: {install_hint('plot')}") from exc
        days = sorted({day for day, _, _ in self.daily})
        per_group: dict[str, dict[str, float]] = defaultdict(dict)
        for day, group, cost in self.daily:
            per_group[group][day] = per_group[group].get(day, 0.0) + cost
        figure = Figure(figsize=(8, 4.5), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        # matplotlib plots datetimes natively; its stubs only admit arrays, hence the Any.
        x: Any = [dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC) for day in days]
        for group in sorted(per_group):
            running = 0.0
            ys = []
            for day in days:
                running += per_group[group].get(day, 0.0)
                ys.append(running)
            axes.plot(x, ys, marker="o", label=group)
        axes.set_title(f"Cumulative spend by {self.by} (USD)")
        axes.set_ylabel("USD")
        axes.grid(True, alpha=0.3)
        if per_group:
            axes.legend(loc="upper left", fontsize="small")
        figure.autofmt_xdate()
        target = Path(path)
        figure.savefig(target, format="png")
        return target


def _group_key(by: str, row: Mapping[str, Any]) -> str:
    if by == "project":
        return str(row["project"] or NONE_KEY)
    if by == "team":
        return str(row["team"] or NONE_KEY)
    if by == "job":
        return str(row["run_id"])
    if by == "gpu":
        name = row["gpu_name"] or "unknown GPU"
        return f"{row['num_gpus']}x {name}" if row["num_gpus"] else str(name)
    return _day(float(row["at"]))


def cost_report(
    ledger: Ledger,
    by: GroupBy | str = "project",
    *,
    since: float | None = None,
    until: float | None = None,
    charges: Iterable[Charge] | None = None,
) -> CostReport:
    """Group the ledger's spend in ``[since, until)``.

    Args:
        ledger: The ledger.
        by: ``project``, ``team``, ``job`` (run id), ``gpu`` (``"1x RTX 4090"``) or ``day`` (UTC).
        since: Start of the window (Unix seconds); None for the beginning.
        until: End of the window; None for now.
        charges: Vast's charges for the same window (``GET /api/v0/charges/``); each is matched
            to the ledger's attempts by instance id. Charges for instances the ledger does not
            know form a row of their own, ``(not in ledger)``.

    Returns:
        The report.

    Raises:
        ValueError: An unknown ``by``.
    """
    if by not in GROUPINGS:
        raise ValueError(f"cannot group a cost report by {by!r}; use one of {', '.join(GROUPINGS)}")
    samples = ledger.cost_rows(since=since, until=until)
    cost: dict[str, float] = defaultdict(float)
    runs: dict[str, set[str]] = defaultdict(set)
    attempts: dict[str, set[int]] = defaultdict(set)
    daily: dict[tuple[str, str], float] = defaultdict(float)
    for sample in samples:
        key = _group_key(by, sample)
        cost[key] += sample["cost_usd"]
        runs[key].add(sample["run_id"])
        attempts[key].add(sample["attempt_id"])
        daily[(_day(sample["at"]), key)] += sample["cost_usd"]
    vast: dict[str, float] | None = None
    if charges is not None:
        vast = _charges_by_key(ledger, by, charges)
        for key in vast:
            cost.setdefault(key, 0.0)
    rows = []
    for key, total in cost.items():
        vast_usd = None if vast is None else vast.get(key, 0.0)
        rows.append(
            CostRow(
                key=key,
                cost_usd=total,
                runs=len(runs[key]),
                attempts=len(attempts[key]),
                vast_usd=vast_usd,
                difference_usd=None if vast_usd is None else vast_usd - total,
            )
        )
    if by == "day":
        rows.sort(key=lambda row: row.key)
    else:
        rows.sort(key=lambda row: (-row.cost_usd, row.key))
    return CostReport(
        by=by,
        since=since,
        until=until,
        rows=tuple(rows),
        daily=tuple((day, key, value) for (day, key), value in sorted(daily.items())),
    )


def _charges_by_key(ledger: Ledger, by: str, charges: Iterable[Charge]) -> dict[str, float]:
    """Vast's charges grouped like the ledger's spend, matched to attempts by instance id."""
    vast: dict[str, float] = defaultdict(float)
    for charge in charges:
        key = NOT_IN_LEDGER
        instance = charge.instance_id
        known = ledger.attempts(instance_id=instance) if instance is not None else []
        if known:
            run = ledger.get_run(known[0].run_id)
            when = charge.start if charge.start is not None else charge.end
            key = _group_key(
                by,
                {
                    "project": run.project if run else None,
                    "team": run.team if run else None,
                    "run_id": known[0].run_id,
                    "gpu_name": known[0].gpu_name,
                    "num_gpus": known[0].num_gpus,
                    "at": when if when is not None else 0.0,
                },
            )
        vast[key] += charge.amount
    return vast

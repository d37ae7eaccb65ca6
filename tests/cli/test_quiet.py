"""A quiet, honest CLI (issue 18): one rule for unknown ids, plain text when piped, names never
cut, retries below WARNING, one summary per command, totals that add up, and
``vastkit status`` / ``vastkit queue status``."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest
from vastkit.cli._main import _logging_to
from vastkit.cli._output import Out
from vastkit.cost_report import rounded_parts
from vastkit.emulator import Emulator
from vastkit.jobs import Job
from vastkit.ledger import Ledger
from vastkit.queue import JobQueue

from .conftest import Result

Cli = Callable[..., Result]

BOX = set("┏┓┗┛┃━│─┌┐└┘╇┡┩╭╮╰╯")
NOT_FOUND = 9
NOW = 1767225600.0  # 2026-01-01T00:00:00Z


def _rent(client: Client, label: str) -> int:
    offer = client.search_offers("gpu_name=RTX_4090", order="dph+", limit=5)[0]
    return client.create_instance(offer.id, CreateInstanceRequest(image="img", label=label)).id


# -- one rule for unknown ids ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["stop", "destroy", "start", "logs"])
def test_an_unknown_instance_id_is_the_same_error_everywhere(cli: Cli, command: str) -> None:
    result = cli(command, "99999999")
    assert result.code == NOT_FOUND
    assert result.out == ""
    assert result.err == (
        "vastkit: error: no instance 99999999 on this account (unknown id, or already "
        "destroyed; `vastkit ps` lists the instances)\n"
    )


def test_destroying_twice_is_an_error_the_second_time(cli: Cli, client: Client) -> None:
    instance = _rent(client, "x")
    assert cli("destroy", str(instance)).out == f"destroyed instance {instance}\n"
    again = cli("destroy", str(instance), "--json")
    assert again.code == NOT_FOUND
    assert again.out == ""  # no JSON document for a failure, like every other error


def test_the_exit_code_table_names_unknown_ids(cli: Cli) -> None:
    result = cli("--help")
    assert "    9  no such instance, run or job (unknown id, or already destroyed)\n" in result.out


# -- plain when piped, names never cut ---------------------------------------------------------


def _spend(ledger_path: Path, *costs: float) -> None:
    """One run per cost, each of one attempt that billed ``cost`` over one hour."""
    with Ledger(ledger_path) as ledger:
        for i, cost in enumerate(costs):
            ledger.record_run(f"r{i}", project=f"project-{i}", at=NOW)
            a = ledger.record_attempt(f"r{i}", 1, gpu_name="RTX 4090", num_gpus=1, instance_id=i)
            ledger.add_cost_sample(a, state="running", rate_dph=cost, at=NOW)
            ledger.add_cost_sample(a, state="destroyed", rate_dph=0, at=NOW + 3600)


def test_cost_report_piped_is_plain_text_whose_rows_add_up(cli: Cli, ledger_path: Path) -> None:
    _spend(ledger_path, 0.00088, 0.00006, 0.00002)  # 0.00096: naive rounding shows 0.0011
    result = cli("cost-report")
    assert result.code == 0, result.err
    assert not BOX & set(result.out)
    assert result.out == (
        "Spend by project\n"
        "project    cost $  runs  attempts\n"
        "project-0  0.0009     1         1\n"
        "project-1  0.0001     1         1\n"
        "project-2  0.0000     1         1\n"
        "total      0.0010\n"
    )


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), max_size=20))
def test_rounded_parts_add_up_to_the_rounded_total(parts: list[float]) -> None:
    rounded, total = rounded_parts(parts)
    assert round(sum(rounded) * 10_000) == round(total * 10_000)
    assert total == pytest.approx(round(sum(parts), 4), abs=1e-4)
    for part, shown in zip(parts, rounded, strict=True):
        assert abs(part - shown) < 1e-4 + 1e-9 * part


def _terminal_out(width: int) -> tuple[Out, io.StringIO]:
    buffer = io.StringIO()
    out = Out(buffer, io.StringIO(), json_mode=False)
    out.console = Console(
        file=buffer, force_terminal=True, width=width, color_system=None, highlight=False
    )
    return out, buffer


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_a_terminal_table_never_cuts_a_name_or_drops_a_column(width: int) -> None:
    out, buffer = _terminal_out(width)
    columns = ["name", "gpu", "gpus", "max $/h", "rental", "reliab", "max hours", "disk GB"]
    rows = [
        ["training-distributed", "H100 SXM", "4", "4", "on-demand", "0.98", "48", "100"],
        [
            "training-standard",
            "RTX 4090, RTX 5090, A100 PCIE",
            "1",
            "1",
            "on-demand",
            "1",
            "24",
            "50",
        ],
    ]
    out.table(columns, rows, right=("gpus",))
    text = buffer.getvalue()
    assert "…" not in text
    for row in rows:
        for cell in row:
            assert cell in text  # every cell whole, on one line
    for column in columns:
        assert column in text


def test_profiles_list_piped_keeps_every_name_whole(cli: Cli) -> None:
    result = cli("profiles", "list")
    assert result.code == 0, result.err
    assert not BOX & set(result.out)
    names = [line.split()[0] for line in result.out.splitlines()[2:]]
    assert "training-distributed" in names
    assert "training-standard" in names


# -- quiet retries, one summary ----------------------------------------------------------------


def test_a_retried_429_prints_nothing_unless_asked(cli: Cli, emu: Emulator) -> None:
    emu.inject("rate_limit", "*", count=1)
    quiet = cli("ps")
    assert quiet.code == 0, quiet.err
    assert quiet.err == "vastkit: no instances\n"
    emu.inject("rate_limit", "*", count=1)
    told = cli("ps", "--log-level", "info")
    assert told.code == 0
    assert "429" in told.err
    assert "retry 1" in told.err


def test_a_429_that_never_clears_is_one_error_line(cli: Cli, emu: Emulator) -> None:
    emu.inject("rate_limit", "*", count=None)
    result = cli("--retries", "1", "ps")
    assert result.code == 1
    lines = result.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vastkit: error: ")
    assert "429" in lines[0]


def test_reap_prints_its_summary_once(
    cli: Cli, client: Client, emu: Emulator, ledger_path: Path
) -> None:
    with Ledger(ledger_path) as ledger:
        orphan = _rent(client, f"vastkit/{ledger.ledger_id}/gone-run/1")
    result = cli("reap")
    assert result.code == 0, result.err
    summary = [line for line in result.out.splitlines() if "destroyed 1" in line]
    assert len(summary) == 1
    assert result.err == ""
    assert f"destroyed: instance {orphan}" in result.out


# -- vastkit status and vastkit queue status ---------------------------------------------------


def _job(name: str, project: str = "sweeps") -> Job:
    return Job(
        name=name, command="true", profile="dev-test", store_url="memory://runs", project=project
    )


def test_status_is_runs_and_counts_the_queue(cli: Cli, ledger_path: Path) -> None:
    _spend(ledger_path, 0.5)
    with Ledger(ledger_path) as ledger:
        ledger.update_run("r0", status="running")
        with JobQueue(ledger) as queue:
            queue.submit(_job("waiting"))
    status = cli("status")
    runs = cli("runs")
    assert status == runs
    assert status.code == 0, status.err
    assert "r0" in status.out
    assert status.out.splitlines()[-1] == (
        "1 running of 1 shown; spent $0.5000 so far; 1 queued job(s) (vastkit queue status)"
    )


def test_queue_status_shows_running_then_queued_with_what_they_cost(
    cli: Cli, ledger_path: Path
) -> None:
    with Ledger(ledger_path) as ledger:
        with JobQueue(ledger) as queue:
            low = queue.submit(_job("low"))
            high = queue.submit(_job("high"), priority=5)
            busy = queue.submit(_job("busy"))
        assert ledger.claim_queued(owner="host:1", token="t", ttl_s=600) is not None
        # the claim takes the highest priority first
        ledger.record_run(high, project="sweeps", at=NOW)
        a = ledger.record_attempt(high, 1, gpu_name="RTX 4090", num_gpus=1, instance_id=7)
        ledger.add_cost_sample(a, state="running", rate_dph=0.3, at=NOW)
        ledger.add_cost_sample(a, state="destroyed", rate_dph=0, at=NOW + 1800)
    result = cli("queue", "status")
    assert result.code == 0, result.err
    assert not BOX & set(result.out)
    lines = result.out.splitlines()
    assert lines[0].split()[:4] == ["job", "name", "project", "status"]
    assert [(line.split()[0], line.split()[3]) for line in lines[1:4]] == [
        (high, "running"),
        (low, "queued"),
        (busy, "queued"),
    ]
    assert "0.1500" in lines[1]
    assert lines[-1] == (
        "1 running, 2 queued; spent $0.1500 so far (vastkit queue status --all adds the ended jobs)"
    )
    doc = cli("queue", "status", "--json").json()
    assert (doc["running"], doc["queued"]) == (1, 2)
    assert doc["spent_usd"] == pytest.approx(0.15)
    assert [j["job_id"] for j in doc["jobs"]] == [high, low, busy]


def test_queue_status_without_a_ledger_creates_none(cli: Cli, ledger_path: Path) -> None:
    result = cli("queue", "status")
    assert result.code == 0, result.err
    assert result.out.startswith("0 running, 0 queued; spent $0.0000 so far")
    assert not ledger_path.exists()


def test_launch_prints_each_job_event_once() -> None:
    """``launch`` prints the job's events itself; the orchestrator's log record of the same
    event (an outbid is a WARNING) is not printed a second time, other warnings still are."""
    jobs, other = logging.getLogger("vastkit.jobs"), logging.getLogger("vastkit.jobs.watch")
    for narrated in (True, False):
        stream = io.StringIO()
        with _logging_to(stream, None, narrated=narrated):
            jobs.warning("%s: %s", "run-1", "instance 7 on machine 9 was outbid")
            other.warning("could not read the heartbeat: %s", "timeout")
        lines = stream.getvalue().splitlines()
        assert (
            lines[-1]
            == "vastkit: WARNING: vastkit.jobs.watch: could not read the heartbeat: timeout"
        )
        assert len(lines) == (1 if narrated else 2)

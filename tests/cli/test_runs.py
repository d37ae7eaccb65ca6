"""``vastkit runs`` and ``vastkit cancel`` against the emulator (issue 15)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from vastkit._owner import owner_metadata
from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest
from vastkit.jobs.cancel import cancel_requested
from vastkit.labels import make_label
from vastkit.ledger import Ledger

from .conftest import Result


def _live_run(ledger_path: Path, client: Client, run_id: str, owner: dict[str, object]) -> int:
    """A run with one live instance, recorded as a driver records it."""
    offer = client.search_offers("gpu_name=RTX_4090", order="dph+", limit=5)[0]
    with Ledger(ledger_path) as ledger:
        label = make_label(run_id, 1, ledger_id=ledger.ledger_id)
        ledger.record_run(
            run_id, name="train", project="nlp", status="running", metadata={"owner": owner}
        )
        attempt = ledger.record_attempt(run_id, 1, label=label)
        instance_id = client.create_instance(
            offer.id, CreateInstanceRequest(image="img", label=label)
        ).id
        ledger.update_attempt(attempt, instance_id=instance_id)
        ledger.add_cost_sample(attempt, state="running", rate_dph=0.5)
    return instance_id


def test_runs_lists_the_running_runs_with_spend_and_owner(cli, client, emu, ledger_path) -> None:  # type: ignore[no-untyped-def]
    _live_run(ledger_path, client, "run-a", owner_metadata())
    result: Result = cli("runs", "--json")
    assert result.code == 0, result.err
    (row,) = result.json()
    assert (row["run_id"], row["status"], row["attempts"], row["project"]) == (
        "run-a",
        "running",
        1,
        "nlp",
    )
    assert row["owner"] == f"{socket.gethostname()}:{os.getpid()}"
    assert row["owner_alive"] is True
    plain = cli("runs")
    assert "run-a" in plain.out
    assert "nlp" in plain.out
    assert "no running runs" in cli("runs", "--project", "other").out


def test_cancel_with_a_live_owner_only_requests(cli, client, emu, ledger_path) -> None:  # type: ignore[no-untyped-def]
    instance_id = _live_run(ledger_path, client, "run-b", owner_metadata())
    result = cli("cancel", "run-b", "--json")
    assert result.code == 0, result.err
    assert result.json()["outcome"] == "requested"
    assert instance_id in {v.id for v in emu.instances}  # the owner destroys it at its next poll
    with Ledger(ledger_path) as ledger:
        assert cancel_requested(ledger, "run-b") == "cancelled by the user"


def test_cancel_with_a_dead_owner_destroys_the_instance(cli, client, emu, ledger_path) -> None:  # type: ignore[no-untyped-def]
    dead = {"host": socket.gethostname(), "pid": 2**22 + 12345, "started": None}
    instance_id = _live_run(ledger_path, client, "run-c", dead)
    result = cli("cancel", "run-c")
    assert result.code == 0, result.err
    assert "destroyed here" in result.out
    assert instance_id not in {v.id for v in emu.instances}
    with Ledger(ledger_path) as ledger:
        run = ledger.get_run("run-c")
        assert run is not None
        assert run.status == "cancelled"
        (attempt,) = ledger.attempts("run-c")
        assert attempt.end_reason == "cancelled"
        assert attempt.destroyed_at is not None
    again = cli("cancel", "run-c")
    assert again.code == 0
    assert "already ended" in again.out


def test_cancel_of_an_unknown_run_is_an_error(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("cancel", "no-such-run")
    assert result.code == 9  # no such run: the exit code of every unknown id
    assert "no run 'no-such-run'" in result.err

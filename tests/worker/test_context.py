"""vastkit.worker.context() for training code: locally, and bound to a worker's environment."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest

from tests._support.processes import REPO_ROOT, ProcessGroups
from vastkit.clock import ManualClock
from vastkit.errors import JobError
from vastkit.rundir import CheckpointSettings, JobSpec, RunDir
from vastkit.worker import WorkerContext


def test_outside_a_worker_the_context_uses_a_local_folder(tmp_path: Path) -> None:
    clock = ManualClock()
    ctx = WorkerContext(
        {"VASTKIT_LOCAL_RUN": str(tmp_path / "local")}, clock=clock, install_signal_handler=False
    )
    assert ctx.local
    assert ctx.attempt == 0
    assert ctx.run_url == (tmp_path / "local").as_posix()
    assert ctx.checkpoint_url == ctx.run_url
    assert ctx.spec is None
    assert not ctx.should_stop()
    ctx.log_metrics(1, loss=0.5, acc=1)
    ctx.log_metrics(2, loss=0.25)
    lines = (tmp_path / "local" / "status" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["values"] for line in lines] == [
        {"loss": 0.5, "acc": 1.0},
        {"loss": 0.25},
    ]
    with pytest.raises(TypeError, match="metric 'loss' must be a number, not str"):
        ctx.log_metrics(3, loss="low")  # type: ignore[arg-type]


def test_report_is_throttled_but_checkpoint_changes_go_at_once(tmp_path: Path) -> None:
    clock = ManualClock()
    status = tmp_path / "status"
    ctx = WorkerContext(
        {
            "VASTKIT_RUN_URL": (tmp_path / "run").as_uri(),
            "VASTKIT_STATUS_DIR": str(status),
            "VASTKIT_ATTEMPT": "3",
        },
        clock=clock,
        install_signal_handler=False,
    )
    assert not ctx.local
    assert ctx.attempt == 3

    def read() -> dict[str, object]:
        return dict(json.loads((status / "status.json").read_text()))

    ctx.report(1)
    assert read()["step"] == 1
    ctx.report(2)
    assert read()["step"] == 1  # within a second: not rewritten
    ctx.report(3, checkpoint_step=3)
    assert (read()["step"], read()["checkpoint_step"]) == (3, 3)
    clock.advance(1.0)
    ctx.report(4)
    assert (read()["step"], read()["checkpoint_step"]) == (4, 3)


def test_the_workers_stop_file_makes_should_stop_true(tmp_path: Path) -> None:
    status = tmp_path / "status"
    ctx = WorkerContext(
        {"VASTKIT_RUN_URL": (tmp_path / "run").as_uri(), "VASTKIT_STATUS_DIR": str(status)},
        install_signal_handler=False,
    )
    assert not ctx.should_stop()
    (status / "stop").touch()
    assert ctx.should_stop()


def test_the_context_reads_the_job_and_builds_its_checkpoint_manager(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run = RunDir((tmp_path / "run").as_uri())
    run.write_job(
        JobSpec(
            run_id="run",
            command="true",
            checkpoint=CheckpointSettings(every_steps=5, keep_last=1, async_save=False),
        )
    )
    ctx = WorkerContext(
        {"VASTKIT_RUN_URL": run.url, "VASTKIT_STATUS_DIR": str(tmp_path / "s")},
        install_signal_handler=False,
    )
    assert ctx.spec is not None
    assert ctx.spec.checkpoint.every_steps == 5
    manager = ctx.checkpoints
    assert ctx.checkpoints is manager
    assert manager.interval_steps == 5
    assert not manager.save(3, {"x": 1})
    assert manager.save(5, {"x": 1})
    assert manager.save(10, {"x": 2})
    ctx.close()
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert steps == ["step-000000000010"]  # keep_last=1 from the job pruned step 5


def test_the_job_can_ask_for_the_young_daly_interval(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run = RunDir((tmp_path / "run").as_uri())
    run.write_job(
        JobSpec(
            run_id="run",
            command="true",
            checkpoint=CheckpointSettings(every_steps="auto", mtbf_seconds=1800.0),
        )
    )
    assert run.read_job().checkpoint.every_steps == "auto"  # survives job.json
    ctx = WorkerContext(
        {"VASTKIT_RUN_URL": run.url, "VASTKIT_STATUS_DIR": str(tmp_path / "s")},
        install_signal_handler=False,
    )
    manager = ctx.checkpoints
    assert manager._schedule.every_steps == "auto"
    assert manager._schedule.mtbf_seconds == 1800.0
    assert manager.save(0, {"x": 1})  # "auto" saves the first step to measure the stall
    ctx.close()


def test_bad_environment_is_a_job_error(tmp_path: Path) -> None:
    base = {"VASTKIT_RUN_URL": (tmp_path / "r").as_uri(), "VASTKIT_STATUS_DIR": str(tmp_path)}
    with pytest.raises(JobError, match="VASTKIT_ATTEMPT"):
        WorkerContext({**base, "VASTKIT_ATTEMPT": "x"}, install_signal_handler=False)
    with pytest.raises(JobError, match="VASTKIT_STORAGE_OPTIONS"):
        WorkerContext({**base, "VASTKIT_STORAGE_OPTIONS": "{"}, install_signal_handler=False)


def test_sigterm_makes_should_stop_true_in_a_real_process(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    code = (
        "import os, signal\n"
        "from vastkit import worker\n"
        "print(worker.should_stop())\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print(worker.should_stop(), worker.context().local)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VASTKIT_")}
    env["VASTKIT_LOCAL_RUN"] = str(tmp_path / "local")
    done = processes.run([sys.executable, "-c", code], env=env, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]


def test_the_worker_never_imports_the_account_client() -> None:
    files = [
        REPO_ROOT / "vastkit" / "rundir.py",
        *sorted((REPO_ROOT / "vastkit" / "worker").glob("*.py")),
    ]
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("vastkit.api", "vastkit.jobs", "vastkit.instance")), (
                    path.name,
                    name,
                )

"""The launcher's pure parts: ``Job.launcher``, the launch plan, the GPU count, rank fields."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vastkit.errors import ConfigError, ConfigTypeError, ConfigValueError, JobError
from vastkit.jobs import Job
from vastkit.jobs import spec as job_spec
from vastkit.worker import WorkerContext
from vastkit.worker import _protocol as protocol
from vastkit.worker._launch import count_gpus, plan_launch, read_rank_failure
from vastkit.worker._torchrun import exit_status, rank_log_folder, tail_lines

BASE: dict[str, Any] = {
    "name": "ddp",
    "command": ["python", "train.py"],
    "profile": "training-distributed",
    "store_url": "/tmp/runs",
}


# -- Job ---------------------------------------------------------------------------------------


def test_a_job_runs_its_command_once_unless_it_names_a_launcher() -> None:
    assert Job(**BASE).launcher is None
    assert Job(**BASE).launcher_env() == {}
    job = Job(**BASE, launcher="torchrun")
    assert job.launcher_env() == {"VASTKIT_LAUNCHER": "torchrun"}
    job = Job(**BASE, launcher="torchrun", nproc_per_node=2)
    assert job.launcher_env() == {"VASTKIT_LAUNCHER": "torchrun", "VASTKIT_NPROC_PER_NODE": "2"}


def test_the_job_and_the_worker_agree_on_the_variable_names() -> None:
    assert job_spec.ENV_LAUNCHER == protocol.ENV_LAUNCHER
    assert job_spec.ENV_NPROC_PER_NODE == protocol.ENV_NPROC_PER_NODE


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"launcher": "deepspeed"}, ConfigValueError, "Job.launcher must be one of 'torchrun'"),
        ({"launcher": "deepspeed"}, ConfigValueError, "(got 'deepspeed')"),
        ({"launcher": 3}, ConfigTypeError, "(got 3)"),
        ({"launcher": "torchrun", "nproc_per_node": 0}, ConfigValueError, "(got 0)"),
        ({"launcher": "torchrun", "nproc_per_node": "2"}, ConfigTypeError, "(got '2')"),
        ({"nproc_per_node": 2}, ConfigValueError, "needs a launcher (got 2 with launcher null)"),
    ],
)
def test_a_bad_launcher_setting_is_a_typed_error_naming_the_value(
    fields: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as info:
        Job(**BASE, **fields)
    assert words in str(info.value)


def test_a_job_file_takes_the_launcher_and_names_the_line_of_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "name: ddp\ncommand: python train.py\nprofile: training-distributed\n"
        "store_url: /tmp/runs\nlauncher: torchrun\nnproc_per_node: 2\n"
    )
    job = Job.from_yaml(good)
    assert (job.launcher, job.nproc_per_node) == ("torchrun", 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: ddp\ncommand: python train.py\nprofile: training-distributed\n"
        "store_url: /tmp/runs\nlauncher: torchrunn\n"
    )
    with pytest.raises(ConfigError) as info:
        Job.from_yaml(bad)
    assert info.value.line == 5
    assert "torchrunn" in str(info.value)
    assert "bad.yaml" in str(info.value)


# -- the launch plan ---------------------------------------------------------------------------


def _plan(spec_env: dict[str, str], environ: dict[str, str] | None = None, **kw: Any) -> Any:
    kw.setdefault("has_torch", lambda: True)
    kw.setdefault("gpus", lambda env: None)
    return plan_launch(
        ("python", "train.py", "--lr", "0.1"),
        spec_env,
        environ or {},
        Path("/status"),
        python="/py",
        **kw,
    )


def test_without_a_launcher_the_command_runs_as_it_is() -> None:
    assert _plan({}) is None


def test_torchrun_runs_the_command_with_one_process_per_gpu() -> None:
    plan = _plan({"VASTKIT_LAUNCHER": "torchrun"}, gpus=lambda env: (4, "GPU_COUNT=4"))
    assert plan.nproc == 4
    assert plan.nproc_from == "GPU_COUNT=4"
    assert plan.argv == (
        "/py",
        "-m",
        "vastkit.worker._torchrun",
        "--standalone",
        "--nproc-per-node",
        "4",
        "--log-dir",
        "/status/launcher-logs",
        "--tee",
        "3",
        "--no-python",
        "python",
        "train.py",
        "--lr",
        "0.1",
    )


def test_the_process_count_can_be_fixed_and_a_string_command_runs_in_a_shell() -> None:
    plan = plan_launch(
        "python train.py && echo done",
        {"VASTKIT_LAUNCHER": "torchrun", "VASTKIT_NPROC_PER_NODE": "2"},
        {"GPU_COUNT": "8"},
        Path("/status"),
        python="/py",
        has_torch=lambda: True,
    )
    assert plan is not None
    assert (plan.nproc, plan.nproc_from) == (2, "VASTKIT_NPROC_PER_NODE=2")
    assert plan.argv[-3:] == ("/bin/sh", "-c", "python train.py && echo done")


def test_no_gpu_found_means_one_process() -> None:
    plan = _plan({"VASTKIT_LAUNCHER": "torchrun"})
    assert (plan.nproc, plan.nproc_from) == (1, "no GPU found")


@pytest.mark.parametrize(
    ("spec_env", "has_torch", "words"),
    [
        ({"VASTKIT_LAUNCHER": "mpirun"}, True, "VASTKIT_LAUNCHER='mpirun' is not a launcher"),
        (
            {"VASTKIT_LAUNCHER": "torchrun", "VASTKIT_NPROC_PER_NODE": "zero"},
            True,
            "VASTKIT_NPROC_PER_NODE='zero' is not a whole number of at least 1",
        ),
        (
            {"VASTKIT_LAUNCHER": "torchrun", "VASTKIT_NPROC_PER_NODE": "0"},
            True,
            "VASTKIT_NPROC_PER_NODE='0'",
        ),
        ({"VASTKIT_LAUNCHER": "torchrun"}, False, "launcher 'torchrun' needs PyTorch in /py"),
    ],
)
def test_a_plan_that_cannot_run_says_why(
    spec_env: dict[str, str], has_torch: bool, words: str
) -> None:
    with pytest.raises(JobError) as info:
        _plan(spec_env, has_torch=lambda: has_torch)
    assert words in str(info.value)


def test_the_gpu_count_comes_from_gpu_count_then_nvidia_smi(tmp_path: Path) -> None:
    assert count_gpus({"GPU_COUNT": "4"}) == (4, "GPU_COUNT=4")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    calls: list[list[str]] = []

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        out = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)\n"
        return subprocess.CompletedProcess(argv, 0, stdout=out, stderr="")

    path = {"PATH": str(tmp_path)}
    assert count_gpus({**path, "GPU_COUNT": "bogus"}, run=run) == (2, "nvidia-smi -L lists 2")
    assert calls == [["nvidia-smi", "-L"]]
    assert count_gpus({"PATH": str(tmp_path / "none"), "GPU_COUNT": "0"}, run=run) is None


# -- what the launcher wrapper leaves ----------------------------------------------------------


def test_a_failed_rank_record_is_read_back_and_described(tmp_path: Path) -> None:
    assert read_rank_failure(tmp_path) is None
    (tmp_path / "rank_failure.json").write_text(
        json.dumps(
            {
                "rank": 3,
                "local_rank": 1,
                "exit_code": -9,
                "signal": "SIGKILL",
                "message": "",
                "log_tail": ["a", "b"],
            }
        )
    )
    failure = read_rank_failure(tmp_path)
    assert failure is not None
    assert failure.describe() == "rank 3 (local rank 1) exited with signal SIGKILL"
    assert failure.log_tail == ("a", "b")
    (tmp_path / "rank_failure.json").write_text("{garbled")
    assert read_rank_failure(tmp_path) is None


def test_exit_status_and_log_tails(tmp_path: Path) -> None:
    assert [exit_status(c) for c in (7, -9, 300)] == [7, 137, 1]
    folder = tmp_path / "run_x" / "attempt_0" / "1"
    folder.mkdir(parents=True)
    (folder / "stdout.log").write_text("".join(f"line {i}\n" for i in range(30)))
    (folder / "stderr.log").write_text("Traceback\nValueError: boom\n")
    assert rank_log_folder(str(tmp_path), 1) == folder
    assert rank_log_folder(str(tmp_path), 0) is None
    tail = tail_lines([folder / "stdout.log", folder / "stderr.log"], lines=3)
    assert tail == ["line 29", "Traceback", "ValueError: boom"]


# -- the rank-aware context --------------------------------------------------------------------


def _ctx(tmp_path: Path, **env: str) -> WorkerContext:
    environ = {"VASTKIT_LOCAL_RUN": str(tmp_path / "local"), **env}
    return WorkerContext(environ, install_signal_handler=False)


def test_outside_a_launcher_the_context_is_rank_0_of_1(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.is_main) == (0, 0, 1, True)


def test_the_context_reads_the_ranks_the_launcher_set(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, RANK="5", LOCAL_RANK="1", WORLD_SIZE="8")
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.is_main) == (5, 1, 8, False)
    assert "rank=5/8" in repr(ctx)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"RANK": "-1"}, "RANK must be an integer >= 0 (the launcher sets it), not '-1'"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be an integer >= 1"),
        (
            {"LOCAL_RANK": "x"},
            "LOCAL_RANK must be an integer >= 0 (the launcher sets it), not 'x'",
        ),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
    ],
)
def test_a_garbled_rank_variable_is_an_error(
    tmp_path: Path, env: dict[str, str], words: str
) -> None:
    with pytest.raises(JobError) as info:
        _ctx(tmp_path, **env)
    assert words in str(info.value)


def _metrics(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "local" / "status" / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_and_progress_come_from_the_main_rank_only(tmp_path: Path) -> None:
    other = _ctx(tmp_path, RANK="1", WORLD_SIZE="2")
    other.log_metrics(3, loss=0.5)
    other.report(3, checkpoint_step=3)
    assert _metrics(tmp_path) == []
    assert not (tmp_path / "local" / "status" / "status.json").exists()
    other.log_metrics(3, all_ranks=True, loss=0.5)
    main = _ctx(tmp_path, RANK="0", WORLD_SIZE="2")
    main.log_metrics(3, loss=0.25)
    main.log_metrics(3, all_ranks=True, loss=0.75)
    main.report(3, checkpoint_step=3)
    assert [m["values"] for m in _metrics(tmp_path)] == [
        {"loss/rank1": 0.5},
        {"loss": 0.25},
        {"loss/rank0": 0.75},
    ]
    status = json.loads((tmp_path / "local" / "status" / "status.json").read_text())
    assert (status["step"], status["checkpoint_step"]) == (3, 3)


def test_alone_all_ranks_changes_nothing(tmp_path: Path) -> None:
    _ctx(tmp_path).log_metrics(1, all_ranks=True, loss=1.0)
    assert [m["values"] for m in _metrics(tmp_path)] == [{"loss": 1.0}]


def test_every_rank_sees_the_stop_file(tmp_path: Path) -> None:
    status = tmp_path / "status"
    ranks = [
        _ctx(tmp_path, RANK=str(r), WORLD_SIZE="3", VASTKIT_STATUS_DIR=str(status))
        for r in range(3)
    ]
    assert [c.should_stop() for c in ranks] == [False, False, False]
    (status / "stop").touch()  # what the worker writes before it signals
    assert [c.should_stop() for c in ranks] == [True, True, True]


def test_any_rank_without_a_process_group_is_this_ranks_own_answer(tmp_path: Path) -> None:
    status = tmp_path / "status"
    ctx = _ctx(tmp_path, VASTKIT_STATUS_DIR=str(status))
    assert ctx.should_stop(any_rank=True) is False
    (status / "stop").touch()
    assert ctx.should_stop(any_rank=True) is True

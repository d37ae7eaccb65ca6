"""DDP jobs (gloo, CPU ranks) under ``launcher=torchrun``, through the real worker subprocess.

The job is ``_ddp_train.py``: rank 0 saves the replicated state, every rank restores it. The
losses the resumed run logs must equal those of a run that never stopped (computed in this
process from the same seeds and batches).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from vastkit.checkpoint import CheckpointReader
from vastkit.rundir import JobSpec, ResultStatus, RunDir

pytestmark = pytest.mark.slow

pytest.importorskip("torch")

SCRIPT = Path(__file__).with_name("_ddp_train.py")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_ddp_train_reference", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ddp_spec(tools: Any, nproc: int, **env: str) -> JobSpec:
    return JobSpec(
        run_id="run1",
        command=(sys.executable, str(SCRIPT)),
        env={"VASTKIT_LAUNCHER": "torchrun", "VASTKIT_NPROC_PER_NODE": str(nproc), **env},
        attempt=tools.fast_settings(grace_period=30.0),
    )


def logged_losses(run_dir: RunDir, attempt: int) -> dict[int, float]:
    return {
        r.step: r.values["loss"]
        for r in run_dir.read_metrics(attempt)
        if r.source == "log" and "loss" in r.values
    }


@pytest.mark.parametrize(
    ("nproc", "sharded"),
    [(2, False), (4, False), (2, True)],
    ids=["2-ranks-replicated", "4-ranks-replicated", "2-ranks-sharded-dcp"],
)
def test_ddp_preempted_and_resumed_matches_an_uninterrupted_run(
    run_dir: RunDir, tools: Any, tmp_path: Path, nproc: int, sharded: bool
) -> None:
    """Replicated: rank 0 saves, every rank restores. Sharded: every rank saves its DCP state
    dicts into one step folder that rank 0 commits, and every rank loads its part back."""
    total = 12
    marks = tmp_path / "marks"
    marks.mkdir()
    ready = tmp_path / "ready"
    # rank 1 ignores SIGTERM: only the worker's stop file tells it to stop
    env = {"TOTAL": str(total), "EVERY": "3", "MARKS": str(marks), "DEAF_RANK": "1"}
    if sharded:
        env["SHARDED"] = "1"
    run_dir.write_job(
        ddp_spec(tools, nproc, READY_FILE=str(ready), READY_STEP="1", STEP_SECONDS="0.3", **env)
    )
    proc = tools.start_worker(run_dir.url, 1)
    tools.wait_for(ready.exists)
    proc.send_signal(signal.SIGTERM)
    code, _, err = tools.finish(proc)
    assert code == 0, err
    first = run_dir.read_attempt_result(1)
    assert first is not None
    assert first.status is ResultStatus.PREEMPTED, run_dir.read_log(1).decode()[-3000:]
    assert first.exit_code == 0  # every rank saved (rank 0) and exited
    stopped = first.checkpoint_step
    assert stopped is not None
    assert 1 <= stopped < total - 1
    log1 = run_dir.read_log(1).decode()
    assert f"launcher torchrun: {nproc} process(es) (VASTKIT_NPROC_PER_NODE={nproc})" in log1
    # should_stop() was true on every rank, also the one that ignored the signal
    assert {p.name: p.read_text() for p in marks.glob("stop-rank*")} == {
        f"stop-rank{r}": "True" for r in range(nproc)
    }
    # each rank's context knew its place
    for rank in range(nproc):
        fields = json.loads((marks / f"ctx-rank{rank}").read_text())
        assert fields == {
            "rank": rank,
            "local_rank": rank,
            "world_size": nproc,
            "is_main": rank == 0,
        }

    # attempt 2, on "another machine": every rank resumes at the step after the save
    run_dir.write_job(ddp_spec(tools, nproc, **env))
    code, _, err = tools.finish(tools.start_worker(run_dir.url, 2))
    assert code == 0, err
    second = run_dir.read_attempt_result(2)
    assert second is not None
    assert second.status is ResultStatus.SUCCEEDED, run_dir.read_log(2).decode()[-3000:]
    log2 = run_dir.read_log(2).decode()
    everyone = [stopped + 1] * nproc
    for rank in range(nproc):
        assert f"rank {rank} resumed at step {stopped + 1} (all ranks: {everyone})" in log2

    reference = _script().reference_losses(nproc, total)
    before, after = logged_losses(run_dir, 1), logged_losses(run_dir, 2)
    assert sorted(after) == list(range(stopped + 1, total))
    assert set(before) >= set(range(stopped + 1))
    for step, loss in {**before, **after}.items():
        assert loss == pytest.approx(reference[step], rel=1e-12, abs=0), step
    # the checkpoints are what the mode says: DCP step folders, or one rank-0 payload
    latest = CheckpointReader(run_dir.checkpoint_url()).latest()
    assert latest is not None
    assert (latest.step, latest.sharded) == (total - 1, sharded)
    # metrics are logged once (by rank 0), per-rank values only when asked for
    names = set(second.metrics)
    assert names == {"loss"} | {f"local_loss/rank{r}" for r in range(nproc)}


def test_a_rank_that_dies_ends_the_attempt_with_its_exit_code_and_output(
    run_dir: RunDir, tools: Any
) -> None:
    run_dir.write_job(ddp_spec(tools, 2, DIE_RANK="1", DIE_AT="1", DIE_CODE="7", TOTAL="30"))
    code, _, err = tools.finish(tools.start_worker(run_dir.url, 1))
    assert code == 1, err
    result = run_dir.read_result()
    assert result is not None
    assert (result.status, result.exit_code) == (ResultStatus.FAILED, 7)
    assert result.reason is not None
    assert result.reason.startswith("rank 1 (local rank 1) exited with exit code 7")
    assert "rank 1 about to fail at step 1" in result.reason  # the rank's last lines
    log = run_dir.read_log(1).decode()
    assert "its last lines:\n  rank 1 resumed at step 0" in log
    assert "attempt 1 ended: failed (rank 1 (local rank 1) exited with exit code 7" in log


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] != b"Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_ranks_end_when_the_worker_is_killed(
    run_dir: RunDir, tools: Any, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    ready = tmp_path / "ready"
    env = {"TOTAL": "1000", "STEP_SECONDS": "0.2", "MARKS": str(marks), "READY_STEP": "0"}
    run_dir.write_job(ddp_spec(tools, 2, READY_FILE=str(ready), **env))
    proc = tools.start_worker(run_dir.url, 1)
    tools.wait_for(ready.exists)
    ranks = [int((marks / f"pid-rank{r}").read_text()) for r in range(2)]
    beat = run_dir.read_heartbeat(1)
    assert beat is not None
    assert beat.child_pid is not None
    assert all(_alive(pid) for pid in [beat.child_pid, *ranks])
    group = [beat.child_pid, *ranks]
    try:
        proc.kill()  # the worker alone, as a host that stops its container with no grace period
        proc.wait()
        tools.wait_for(lambda: not any(_alive(pid) for pid in group))
    finally:  # a failure leaves no rank behind
        for pid in group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    # torchrun stopped the ranks with SIGTERM: rank 0 saved where they stopped
    assert sorted(p.name for p in marks.glob("stop-rank*")) == ["stop-rank0", "stop-rank1"]

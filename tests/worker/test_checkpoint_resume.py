"""Preempt a real PyTorch job under the worker and resume it from its checkpoint."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from vastkit.rundir import CheckpointSettings, JobSpec, ResultStatus, RunDir

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def test_preempted_attempt_resumes_from_its_last_checkpoint(
    run_dir: RunDir, tools: Any, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    run_dir.write_job(
        JobSpec(
            run_id="run1",
            command=(sys.executable, str(Path(__file__).with_name("_train_ckpt.py"))),
            env={"READY_FILE": str(ready)},
            checkpoint=CheckpointSettings(every_steps=2, keep_last=2, async_save=True),
            attempt=tools.fast_settings(grace_period=20.0),
        )
    )
    first = tools.start_worker(run_dir.url, 1)
    tools.wait_for(ready.exists, timeout=60)
    first.send_signal(signal.SIGTERM)
    code, _, err = tools.finish(first)
    assert code == 0, err
    one = run_dir.read_attempt_result(1)
    assert one is not None
    assert one.status is ResultStatus.PREEMPTED
    saved = re.search(r"saved step (\d+) on SIGTERM", run_dir.read_log(1).decode())
    assert saved is not None, run_dir.read_log(1).decode()
    saved_step = int(saved.group(1))
    assert one.checkpoint_step == saved_step
    assert run_dir.read_result() is None
    ready.unlink()

    code, _, err = tools.finish(tools.start_worker(run_dir.url, 2))
    assert code == 0, err
    log = run_dir.read_log(2).decode()
    assert f"attempt 2 resumed_from={saved_step}" in log
    assert f"finished at step {saved_step + 6}" in log
    result = run_dir.read_result()
    assert result is not None
    assert (result.status, result.attempt) == (ResultStatus.SUCCEEDED, 2)
    assert "loss" in result.metrics
    steps = [r.step for r in run_dir.read_metrics(2)]
    assert steps[0] == saved_step + 1

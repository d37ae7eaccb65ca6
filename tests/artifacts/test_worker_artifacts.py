"""The worker's side: inputs fetched before the command, outputs uploaded after it, metrics in
the run directory, and an attempt whose container restarted keeping every log chunk."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path

from vastkit.artifacts import read_outputs, upload_dataset
from vastkit.rundir import AttemptSettings, CheckpointSettings, JobSpec, ResultStatus, RunDir
from vastkit.worker._runtime import Worker

FAST = AttemptSettings(
    heartbeat_interval=0.1,
    grace_period=10.0,
    orchestrator_timeout=None,
    log_flush_seconds=0.1,
)

TRAIN = """
import os, sys
from pathlib import Path
from vastkit import worker

ctx = worker.context()
vocab = Path(os.environ["VASTKIT_INPUT_VOCAB"])
words = Path(os.environ["VASTKIT_INPUT_WORDS"])
print("vocab files:", sorted(p.name for p in vocab.iterdir()), flush=True)
Path("outputs").mkdir(exist_ok=True)
Path("outputs/summary.txt").write_text(words.read_text().upper())
Path("scratch.tmp").write_text("not an output")
for step in range(3):
    worker.log_metrics(step, loss=1.0 / (step + 1))
if os.environ.get("WITH_CHECKPOINT"):
    import torch
    ctx.checkpoints.save(3, {"w": torch.zeros(2)}, metrics={"acc": 0.75}, force=True)
    ctx.report(3, checkpoint_step=3)
"""

RESTARTED = """
import sys, time
from pathlib import Path
from vastkit import worker

ctx = worker.context()
Path("outputs").mkdir(exist_ok=True)
if Path("outputs/first.txt").exists():
    print("second start: finishing", flush=True)
    Path("outputs/second.txt").write_text("2")
    worker.log_metrics(2, loss=0.2)
    sys.exit(0)
Path("outputs/first.txt").write_text("1")
worker.log_metrics(1, loss=0.5)
for i in range(40):
    print(f"first start line {i}", flush=True)
Path(sys.argv[1]).touch()
while not worker.should_stop():
    time.sleep(0.02)
print("first start: stopping", flush=True)
sys.exit(0)
"""


def command_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


def test_inputs_outputs_and_metrics_of_one_attempt(tmp_path: Path) -> None:
    store = tmp_path / "store"
    source = tmp_path / "vocab"
    source.mkdir()
    (source / "a.txt").write_text("alpha")
    (source / "words.txt").write_text("hello")
    up = upload_dataset(source, (store / "datasets").as_uri())
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    run_url = (store / "runs" / "run1").as_uri()
    RunDir(run_url).write_job(
        JobSpec(
            run_id="run1",
            command=(sys.executable, str(script)),
            env={"WITH_CHECKPOINT": "1"},
            inputs={"vocab": up.url, "words": f"{up.url}/words.txt"},
            outputs=("outputs/",),
            checkpoint=CheckpointSettings(async_save=False),
            attempt=FAST,
        )
    )
    echo = io.BytesIO()
    worker = Worker(
        run_url,
        1,
        workdir=tmp_path / "work",
        environ=command_env(),
        echo=echo,
        tick=0.02,
        inputs_dir=tmp_path / "inputs",
    )
    assert worker.run() == 0, echo.getvalue().decode()
    rundir = RunDir(run_url)
    result = rundir.read_result()
    assert result is not None
    assert result.status is ResultStatus.SUCCEEDED
    log = rundir.read_log(1).decode()
    assert "vocab files: ['a.txt', 'words.txt']" in log
    # outputs: only what was named, with sizes, in <run>/outputs/
    outputs = read_outputs(run_url)
    assert [(o.path, o.size) for o in outputs] == [("outputs/summary.txt", 5)]
    assert (store / "runs" / "run1" / "outputs" / "outputs" / "summary.txt").read_text() == "HELLO"
    # metrics: JSON lines in the run directory, log_metrics and the checkpoint's
    chunks = sorted((store / "runs" / "run1" / "attempts" / "1" / "metrics").iterdir())
    assert chunks
    assert all(line.startswith("{") for c in chunks for line in c.read_text().splitlines())
    records = rundir.read_metrics()
    logged = [(r.step, r.values) for r in records if r.source == "log"]
    assert logged == [(0, {"loss": 1.0}), (1, {"loss": 0.5}), (2, {"loss": 1.0 / 3})]
    from_ckpt = [(r.step, r.values) for r in records if r.source == "checkpoint"]
    assert from_ckpt == [(3, {"acc": 0.75})]
    assert result.metrics == {"loss": 1.0 / 3, "acc": 0.75}


def test_a_restarted_container_continues_the_attempt_without_losing_logs(tmp_path: Path) -> None:
    """An outbid instance that wins its machine back restarts with the same attempt number."""
    store = tmp_path / "store"
    script = tmp_path / "job.py"
    script.write_text(RESTARTED)
    ready = tmp_path / "ready"
    run_url = (store / "run1").as_uri()
    RunDir(run_url).write_job(
        JobSpec(
            run_id="run1",
            command=(sys.executable, str(script), str(ready)),
            outputs=("outputs",),
            attempt=FAST,
        )
    )

    def start() -> Worker:
        return Worker(
            run_url,
            1,
            workdir=tmp_path / "container-disk",  # kept across a container restart
            environ=command_env(),
            echo=io.BytesIO(),
            tick=0.02,
            inputs_dir=tmp_path / "inputs",
        )

    first = start()

    def stop_when_ready() -> None:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        first.request_stop("SIGTERM")

    stopper = threading.Thread(target=stop_when_ready)
    stopper.start()
    assert first.run() == 0
    stopper.join()
    rundir = RunDir(run_url)
    preempted = rundir.read_attempt_result(1)
    assert preempted is not None
    assert (preempted.status, preempted.start) == (ResultStatus.PREEMPTED, 0)
    # outputs were uploaded after SIGTERM, once the command had stopped
    assert [o.path for o in read_outputs(run_url)] == ["outputs/first.txt"]
    chunks_first = sorted(p.name for p in (store / "run1" / "attempts" / "1" / "log").iterdir())
    log_first = rundir.read_log(1)

    assert start().run() == 0  # the container restarted: same attempt number
    log = rundir.read_log(1)
    assert log.startswith(log_first)  # nothing of the first start was overwritten
    text = log.decode()
    assert "first start line 39" in text
    assert "first start: stopping" in text
    assert "the container restarted: start 1 of attempt 1" in text
    assert "second start: finishing" in text
    chunks = sorted(p.name for p in (store / "run1" / "attempts" / "1" / "log").iterdir())
    assert chunks[: len(chunks_first)] == chunks_first
    assert chunks == [f"{i:08d}" for i in range(len(chunks))]  # gapless
    final = rundir.read_attempt_result(1)
    assert final is not None
    assert (final.status, final.start) == (ResultStatus.SUCCEEDED, 1)
    assert [(r.status, r.start) for r in rundir.read_start_results(1)] == [
        (ResultStatus.PREEMPTED, 0)
    ]
    assert [(r.step, r.values["loss"]) for r in rundir.read_metrics(1)] == [(1, 0.5), (2, 0.2)]
    assert [o.path for o in read_outputs(run_url)] == ["outputs/first.txt", "outputs/second.txt"]

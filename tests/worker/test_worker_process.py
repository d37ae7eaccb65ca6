"""``python -m vastkit.worker`` end to end, as a real subprocess on a file:// run directory."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests._support.processes import ProcessGroups
from vastkit.rundir import (
    AttemptLimits,
    JobSpec,
    OrchestratorBeat,
    Phase,
    ResultStatus,
    RunDir,
    make_bundle,
)

pytestmark = pytest.mark.slow


def test_a_successful_run_writes_logs_heartbeats_metrics_and_the_result(
    run_dir: RunDir, tools: Any
) -> None:
    run_dir.write_job(tools.train_spec())
    code, out, err = tools.finish(tools.start_worker(run_dir.url, 1))
    assert code == 0, err
    result = run_dir.read_result()
    assert result is not None
    assert (result.status, result.exit_code, result.attempt) == (ResultStatus.SUCCEEDED, 0, 1)
    assert result.metrics == {"loss": pytest.approx(1 / 3), "lr": 0.1}
    assert (result.step, result.checkpoint_step) == (2, 2)
    assert run_dir.read_attempt_result(1) == result
    log = run_dir.read_log(1).decode()
    # stdout and stderr both arrive, in order, between the worker's own notes
    assert log.index("[vastkit worker] started attempt 1") < log.index("attempt=1 run=")
    assert log.index("to stderr") < log.index("step 0") < log.index("step 2")
    assert log.rstrip().endswith("ended: succeeded (the command exited 0)")
    assert f"checkpoint_url={run_dir.url}\n" in log
    assert "step 1" in out  # also echoed on the worker's own stdout
    beat = run_dir.read_heartbeat(1)
    assert beat is not None
    assert beat.phase is Phase.FINISHED
    assert (beat.step, beat.checkpoint_step) == (2, 2)
    assert [r.step for r in run_dir.read_metrics(1)] == [0, 1, 2]


def test_a_failing_command_ends_the_job_as_failed(run_dir: RunDir, tools: Any) -> None:
    run_dir.write_job(tools.train_spec(mode="fail"))
    code, _, _ = tools.finish(tools.start_worker(run_dir.url, 2))
    assert code == 1
    result = run_dir.read_result()
    assert result is not None
    assert (result.status, result.exit_code) == (ResultStatus.FAILED, 3)
    assert result.reason == "the command exited with exit code 3"
    assert "about to fail" in run_dir.read_log(2).decode()


def test_sigterm_is_forwarded_and_the_attempt_ends_preempted(
    run_dir: RunDir, tools: Any, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    run_dir.write_job(tools.train_spec(mode="loop", env={"READY_FILE": str(ready)}))
    proc = tools.start_worker(run_dir.url, 1)
    tools.wait_for(ready.exists)
    proc.send_signal(signal.SIGTERM)
    code, _, err = tools.finish(proc)
    assert code == 0, err
    assert run_dir.read_result() is None  # preemption does not end the job
    result = run_dir.read_attempt_result(1)
    assert result is not None
    assert result.status is ResultStatus.PREEMPTED
    assert result.exit_code == 0  # the command saved and exited by itself
    assert result.reason == "SIGTERM received"
    assert result.checkpoint_step == result.step
    log = run_dir.read_log(1).decode()
    assert "should_stop at step" in log
    assert "stopping the command (SIGTERM received): SIGTERM, 5 s grace period" in log


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace_period(
    run_dir: RunDir, tools: Any, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    spec = tools.train_spec(
        mode="ignore",
        env={"READY_FILE": str(ready)},
        attempt=tools.fast_settings(grace_period=0.5),
    )
    run_dir.write_job(spec)
    proc = tools.start_worker(run_dir.url, 1)
    tools.wait_for(ready.exists)
    proc.send_signal(signal.SIGTERM)
    code, _, _ = tools.finish(proc)  # a worker that waited forever would hit the hang guard
    assert code == 0
    result = run_dir.read_attempt_result(1)
    assert result is not None
    assert (result.status, result.exit_code) == (ResultStatus.PREEMPTED, -signal.SIGKILL)
    assert "did not exit within the 0.5 s grace period: killing it" in run_dir.read_log(1).decode()


def test_cancel_request_stops_the_command_and_ends_the_job(
    run_dir: RunDir, tools: Any, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    run_dir.write_job(tools.train_spec(mode="loop", env={"READY_FILE": str(ready)}))
    proc = tools.start_worker(run_dir.url, 1)
    tools.wait_for(ready.exists)
    run_dir.request_cancel("not needed any more")
    code, _, _ = tools.finish(proc)
    assert code == 0
    result = run_dir.read_result()
    assert result is not None
    assert result.status is ResultStatus.CANCELLED
    assert result.reason == "cancelled by the orchestrator: not needed any more"


def test_backstop_destroys_the_instance_when_the_orchestrator_goes_silent(
    run_dir: RunDir, tools: Any, fake_vast: Any
) -> None:
    secret = "per-instance-secret-key-123"
    spec = tools.train_spec(
        mode="loop",
        attempt=tools.fast_settings(orchestrator_timeout=1.0, api_base_url=fake_vast.url),
    )
    run_dir.write_job(spec)
    run_dir.write_orchestrator(OrchestratorBeat(time=1.0, seq=1))  # written once, then silence
    proc = tools.start_worker(
        run_dir.url, 1, env={"CONTAINER_ID": "4242", "CONTAINER_API_KEY": secret}
    )
    code, out, err = tools.finish(proc)
    assert code == 0, err
    assert fake_vast.requests == [("DELETE", "/api/v0/instances/4242/", f"Bearer {secret}")]
    result = run_dir.read_attempt_result(1)
    assert result is not None
    assert result.status is ResultStatus.ABANDONED
    assert result.reason is not None
    assert result.reason.startswith("no sign of the orchestrator for")
    assert run_dir.read_result() is None  # not terminal: a live orchestrator may relaunch
    log = run_dir.read_log(1).decode()
    assert "BACKSTOP: destroying this instance" in log
    assert "self-destroy of instance 4242 accepted (HTTP 200)" in err
    for text in (log, out, err):
        assert secret not in text


def test_a_silent_orchestrator_is_outlasted_and_the_cost_cap_ends_the_attempt(
    run_dir: RunDir, tools: Any, fake_vast: Any
) -> None:
    # The orchestrator wrote once and went silent (a laptop asleep) with a 0.2 s timeout: the
    # worker runs on within the job's limits until its cost ($1/s here) nears its $10 cap
    # (minus 5.2 s of margin: the grace period and a heartbeat interval).
    spec = tools.train_spec(
        mode="loop",
        attempt=tools.fast_settings(
            orchestrator_timeout=0.2, deadline=time.time() + 3600, api_base_url=fake_vast.url
        ),
    )
    run_dir.write_job(spec)
    run_dir.write_orchestrator(OrchestratorBeat(time=1.0, seq=1))
    limits = AttemptLimits(rate_dph=3600.0, billed_since=time.time(), max_cost_usd=10.0)
    proc = tools.start_worker(
        run_dir.url, 1, env={"CONTAINER_ID": "55", "CONTAINER_API_KEY": "k", **limits.environ()}
    )
    code, _, err = tools.finish(proc)
    assert code == 0, err
    result = run_dir.read_result()
    assert result is not None
    assert result.status is ResultStatus.BUDGET_EXCEEDED
    assert result.reason is not None
    assert "it may spend $10.0000" in result.reason
    assert [r[1] for r in fake_vast.requests] == ["/api/v0/instances/55/"]
    log = run_dir.read_log(1).decode()
    assert "backstop: deadline in 3" in log
    assert "cost cap $10.0000 at 3600 $/h" in log
    assert "running on within the job's limits until it is back" in log


def test_backstop_keeps_quiet_while_the_orchestrator_refreshes(
    run_dir: RunDir, tools: Any, tmp_path: Path, fake_vast: Any
) -> None:
    ready = tmp_path / "ready"
    spec = tools.train_spec(
        mode="loop",
        env={"READY_FILE": str(ready)},
        attempt=tools.fast_settings(orchestrator_timeout=1.0, api_base_url=fake_vast.url),
    )
    run_dir.write_job(spec)
    stop = threading.Event()

    def orchestrate() -> None:  # what run_job does on every poll, from before the launch
        seq = 0
        while not stop.is_set():
            seq += 1
            run_dir.write_orchestrator(OrchestratorBeat(time=float(seq), seq=seq))
            stop.wait(0.1)

    refresher = threading.Thread(target=orchestrate)
    refresher.start()
    try:
        proc = tools.start_worker(
            run_dir.url, 1, env={"CONTAINER_ID": "1", "CONTAINER_API_KEY": "k"}
        )
        tools.wait_for(ready.exists)
        ready_at = time.time()

        def lived_through_the_timeouts() -> bool:
            assert proc.poll() is None, "the worker ended while the orchestrator refreshed"
            beat = run_dir.read_heartbeat(1)
            return beat is not None and beat.time >= ready_at + 2.5

        # The worker's own heartbeats span 2.5 backstop timeouts, each full of signs of life.
        tools.wait_for(lived_through_the_timeouts)
        proc.send_signal(signal.SIGTERM)
        code, _, _ = tools.finish(proc)
    finally:
        stop.set()
        refresher.join()
    assert code == 0
    result = run_dir.read_attempt_result(1)
    assert result is not None
    assert result.status is ResultStatus.PREEMPTED
    assert fake_vast.requests == []


def test_max_duration_deadline_ends_the_job_timed_out_and_destroys(
    run_dir: RunDir, tools: Any, fake_vast: Any
) -> None:
    spec = tools.train_spec(
        mode="loop",
        attempt=tools.fast_settings(deadline=time.time() + 1.0, api_base_url=fake_vast.url),
    )
    run_dir.write_job(spec)
    proc = tools.start_worker(run_dir.url, 1, env={"CONTAINER_ID": "77", "CONTAINER_API_KEY": "k"})
    code, _, _ = tools.finish(proc)
    assert code == 0
    result = run_dir.read_result()
    assert result is not None
    assert result.status is ResultStatus.TIMED_OUT
    assert [r[1] for r in fake_vast.requests] == ["/api/v0/instances/77/"]


def test_the_code_bundle_is_unpacked_and_run(run_dir: RunDir, tools: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "helper.py").write_text("VALUE = 'from the bundle'\n")
    (src / "main.py").write_text(
        "import os, sys\nsys.path.insert(0, 'lib')\nimport helper\n"
        "print(helper.VALUE, os.environ['VASTKIT_ATTEMPT'], os.environ['GREETING'])\n"
    )
    run_dir.write_bundle(make_bundle(src))
    run_dir.write_job(
        JobSpec(
            run_id="run1",
            command=f"{sys.executable} main.py",
            env={"GREETING": "hello"},
            has_code_bundle=True,
            attempt=tools.fast_settings(),
        )
    )
    code, _, err = tools.finish(tools.start_worker(run_dir.url, 5, cwd=tmp_path))
    assert code == 0, err
    assert "from the bundle 5 hello" in run_dir.read_log(5).decode()


def test_a_missing_job_is_reported_in_the_result(run_dir: RunDir, tools: Any) -> None:
    code, _, _ = tools.finish(tools.start_worker(run_dir.url, 1))
    assert code == 2
    result = run_dir.read_result()
    assert result is not None
    assert result.status is ResultStatus.FAILED
    assert result.reason is not None
    assert "job.json does not exist" in result.reason


def test_storage_options_and_run_url_come_from_the_environment(
    run_dir: RunDir, tools: Any, processes: ProcessGroups
) -> None:
    run_dir.write_job(tools.train_spec())
    env = {k: v for k, v in os.environ.items() if not k.startswith("VASTKIT_")}
    env.update(
        VASTKIT_RUN_URL=run_dir.url,
        VASTKIT_ATTEMPT="4",
        VASTKIT_STORAGE_OPTIONS='{"auto_mkdir": true}',
    )
    done = processes.run([sys.executable, "-m", "vastkit.worker", "--tick", "0.05"], env=env)
    assert done.returncode == 0, done.stderr.decode()
    result = run_dir.read_result()
    assert result is not None
    assert result.attempt == 4

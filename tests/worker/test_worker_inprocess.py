"""The Worker class driven in-process with a virtual clock and a memory:// run directory."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest

from vastkit._documents import converter as document_converter
from vastkit.clock import ManualClock
from vastkit.rundir import JobSpec, ResultStatus, RunDir
from vastkit.worker._runtime import EXIT_WORKER_ERROR, Worker


def memory_url() -> str:
    return f"memory://worker-{uuid.uuid4().hex[:8]}/run1"


def test_store_errors_reading_the_job_are_retried(
    tools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = memory_url()
    RunDir(url).write_job(JobSpec(run_id="run1", command=("true",), attempt=tools.fast_settings()))
    clock = ManualClock()
    echo = io.BytesIO()
    worker = Worker(url, 1, clock=clock, echo=echo, environ={"PATH": "/usr/bin:/bin"})
    real = worker.rundir.read_job
    failures = iter([ConnectionError("reset"), TimeoutError("slow")])

    def flaky() -> JobSpec | None:
        for exc in failures:
            raise exc
        return real()

    monkeypatch.setattr(worker.rundir, "read_job", flaky)
    assert worker.run() == 0
    first, second = clock.slept[:2]  # backoff of 1 s then 2 s, jittered to 50-100 %
    assert 0.5 <= first <= 1.0
    assert 1.0 <= second <= 2.0
    result = RunDir(url).read_result()
    assert result is not None
    assert result.status is ResultStatus.SUCCEEDED
    assert b"ended: succeeded" in echo.getvalue()


def test_a_command_that_cannot_start_fails_the_job(tools: Any) -> None:
    url = memory_url()
    RunDir(url).write_job(
        JobSpec(run_id="run1", command=("/nonexistent/binary",), attempt=tools.fast_settings())
    )
    worker = Worker(url, 1, clock=ManualClock(), echo=io.BytesIO(), environ={})
    assert worker.run() == 1
    result = RunDir(url).read_result()
    assert result is not None
    assert (result.status, result.exit_code) == (ResultStatus.FAILED, 127)
    assert result.reason is not None
    assert "could not start the command" in result.reason
    assert "could not start the command" in RunDir(url).read_log(1).decode()


@pytest.mark.parametrize(
    ("section", "values", "named"),
    [
        pytest.param(
            "checkpoint", {"keep_last": 0}, "CheckpointSettings.keep_last", id="keep_last"
        ),
        pytest.param(
            "attempt",
            {"orchestrator_timeout": -5},
            "AttemptSettings.orchestrator_timeout",
            id="orchestrator_timeout",
        ),
        pytest.param("checkpoint", {"async_save": "maybe"}, "$.checkpoint.async_save", id="bool"),
        pytest.param(
            "attempt", {"heartbeat_interval": True}, "$.attempt.heartbeat_interval", id="t"
        ),
    ],
)
def test_a_bad_value_in_job_json_fails_the_attempt_naming_the_field(
    tools: Any, section: str, values: dict[str, Any], named: str
) -> None:
    """job.json written by hand or by an older orchestrator is checked by the same classes: the
    worker ends the attempt with a result that names the field, and never starts the command."""
    url = memory_url()
    raw = document_converter.unstructure(
        JobSpec(run_id="run1", command=("true",), attempt=tools.fast_settings())
    )
    raw[section].update(values)
    RunDir(url).write_bytes("job.json", json.dumps(raw).encode())
    echo = io.BytesIO()
    worker = Worker(url, 1, clock=ManualClock(), echo=echo, environ={"PATH": "/usr/bin:/bin"})

    assert worker.run() == EXIT_WORKER_ERROR

    result = RunDir(url).read_result()
    assert result is not None
    assert (result.status, result.exit_code) == (ResultStatus.FAILED, None)
    assert result.reason is not None
    assert "could not prepare the job" in result.reason
    assert named in result.reason
    assert named in RunDir(url).read_log(1).decode()

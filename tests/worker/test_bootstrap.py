"""The onstart script: short enough for Vast, installs only when needed, starts the worker."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

import vastkit
from tests._support.processes import ProcessGroups, child_env
from vastkit._bootstrap import ONSTART_LIMIT, build_onstart
from vastkit.errors import JobError
from vastkit.rundir import ResultStatus, RunDir


def test_a_realistic_script_stays_well_under_the_limit() -> None:
    script = build_onstart(
        run_url="s3://my-bucket/vastkit/runs/2026-11-27-abcdef123456",
        attempt=12,
        env={
            "AWS_ACCESS_KEY_ID": "A" * 20,
            "AWS_SECRET_ACCESS_KEY": "s" * 40,
            "AWS_SESSION_TOKEN": "t" * 1000,  # STS tokens are long
        },
        storage_options={"client_kwargs": {"endpoint_url": "https://minio.example:9000"}},
    )
    assert len(script) < ONSTART_LIMIT <= 4096
    assert script.startswith("#!/bin/bash\n")
    assert "export VASTKIT_ATTEMPT=12\n" in script
    assert script.rstrip().endswith('exec "$PY" -m vastkit.worker')
    assert f"vastkit[s3]=={vastkit.__version__}" in script


def test_too_long_scripts_are_refused_without_showing_the_values() -> None:
    with pytest.raises(
        JobError, match=r"would be \d+ characters; Vast accepts at most 4048"
    ) as info:
        build_onstart(run_url="s3://b/r", attempt=1, env={"SECRET": "x" * 5000})
    assert "xxxx" not in str(info.value)
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        build_onstart(run_url="s3://b/r", attempt=1, env={"BAD-NAME": "1"})


def fake_python(tmp_path: Path, record: Path, check_rc: int = 2) -> Path:
    """A 'python' that records its arguments: the check exits ``check_rc`` (2: vastkit is
    missing or another version), pip succeeds."""
    shim = tmp_path / "fakepy"
    shim.write_text(
        f'#!/bin/sh\necho "$@" >> {record}\nif [ "$1" = "-c" ]; then exit {check_rc}; fi\nexit 0\n'
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return shim


def run_script(
    processes: ProcessGroups, script: str, tmp_path: Path, extra: dict[str, str] | None = None
) -> Any:
    """Run ``script`` with bash in its own process group (killed whole when it returns)."""
    path = tmp_path / "onstart.sh"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VASTKIT_")}
    env.update(extra or {})
    return processes.run(["bash", str(path)], env=env, text=True)


def test_vastkit_is_installed_when_the_image_lacks_the_version(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    record = tmp_path / "calls"
    script = build_onstart(
        run_url="file:///x/run",
        attempt=1,
        python=str(fake_python(tmp_path, record)),
        version="9.9.9",
        requirement="vastkit[s3] @ https://example/vastkit.whl",
    )
    done = run_script(processes, script, tmp_path)
    assert done.returncode == 0, done.stderr
    calls = record.read_text().splitlines()
    assert calls[0].startswith('-c import sys,importlib.util as u;u.find_spec("vastkit")')
    assert '"9.9.9"' in calls[0]
    assert calls[1] == "-m pip install -q --no-cache-dir vastkit[s3] @ https://example/vastkit.whl"
    assert calls[2] == "-m vastkit.worker"


def test_a_vastkit_that_does_not_import_is_reported_not_reinstalled(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    """The right version is there but does not import (a broken edit, a missing dependency):
    installing over it would hide the error, and on the emulator replace the orchestrator's own
    vastkit; the worker's start shows the traceback instead."""
    record = tmp_path / "calls"
    script = build_onstart(
        run_url="file:///x/run",
        attempt=1,
        python=str(fake_python(tmp_path, record, check_rc=1)),
        version="9.9.9",
    )
    done = run_script(processes, script, tmp_path)
    calls = record.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["-c", "-m"]
    assert calls[1] == "-m vastkit.worker"
    assert "is installed but does not import; not replacing it" in done.stderr


def test_the_script_runs_the_worker_end_to_end(
    tmp_path: Path, tools: Any, processes: ProcessGroups
) -> None:
    run = RunDir((tmp_path / "store" / "run1").as_uri())
    run.write_job(tools.train_spec())
    script = build_onstart(
        run_url=run.url,
        attempt=7,
        env=child_env({}),  # the worker finds this repository's vastkit
        python=sys.executable,
        workdir=str(tmp_path / "work"),
    )
    done = run_script(processes, script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pip install" not in done.stderr  # the right version is already there
    result = run.read_result()
    assert result is not None
    assert (result.status, result.attempt) == (ResultStatus.SUCCEEDED, 7)
    assert f"cwd={tmp_path / 'work'}" in run.read_log(7).decode()

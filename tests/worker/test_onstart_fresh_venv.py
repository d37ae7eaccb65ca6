"""A host with no vastkit: the onstart installs the wheel the orchestrator shipped, and the job
succeeds.

``run_job`` runs against the emulator, whose process runner starts each instance's onstart with
bash and only the environment a Vast container gets (the create request's env included). Its
``python3`` is a fresh virtual environment without vastkit, whose pip reaches only this machine's
local package index (``/etc/pip.conf``, ``PIP_*``): no network. The store is S3 (moto), so the
wheel comes from a presigned URL.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import vastkit
from tests._support.processes import ProcessGroups
from tests._support.world import ON_DEMAND
from vastkit.api.client import Client
from vastkit.emulator import Emulator, ProcessRunner, Timings, serve
from vastkit.jobs import Job, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.rundir import RunDir

pytestmark = [pytest.mark.slow, pytest.mark.s3]

TIMEOUTS = JobTimeouts(
    poll_interval=0.5,
    provisioning=30,
    loading=30,
    running=60,
    worker_ready=150,  # the onstart's pip install comes first
    heartbeat_stale=60,
    host_lost_grace=5,
    stop_grace=15,
    heartbeat_interval=0.5,
    worker_grace=10,
    orchestrator_timeout=300,
    log_flush_seconds=0.5,
    relaunch_delay=0.5,
    destroy=30,
)

PROBE = (
    "import sys, vastkit, s3fs; "
    "print('host vastkit', vastkit.__version__, 'from', vastkit.__file__, 'python', sys.prefix)"
)


@pytest.fixture
def bare_venv(tmp_path: Path, processes: ProcessGroups) -> Path:
    """A fresh virtual environment without vastkit (its pip reads the machine's config)."""
    venv = tmp_path / "host-venv"
    done = processes.run([sys.executable, "-m", "venv", str(venv)], text=True)
    assert done.returncode == 0, done.stderr
    probe = processes.run(
        ["env", "-u", "PYTHONPATH", str(venv / "bin" / "python"), "-c", "import vastkit"],
        cwd=tmp_path,
        text=True,
    )
    assert probe.returncode == 1, "the fresh venv must not see vastkit"
    assert "No module named 'vastkit'" in probe.stderr
    return venv


@pytest.fixture
def host(tmp_path: Path, bare_venv: Path) -> Iterator[Emulator]:
    """The emulator, whose containers run with the bare venv's python3 first on PATH."""
    host_env = {
        "PATH": os.pathsep.join((str(bare_venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin")),
        # the host's package index: this machine's local one, as pip is configured here
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
        "PIP_USER": "0",  # this host's pip installs into its own (venv) python
    }
    runner = ProcessRunner(tmp_path / "containers", grace_s=10.0, extra_env=host_env)
    with serve(
        seed=0,
        offers=200,
        runner=runner,
        rate_limits=False,
        timings=Timings(provision_s=0.5, loading_s=0.5),
    ) as emulator:
        yield emulator


def test_a_host_without_vastkit_installs_the_shipped_wheel_and_the_job_succeeds(
    host: Emulator,
    bare_venv: Path,
    s3_bucket: tuple[str, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VASTKIT_CACHE_DIR", str(tmp_path / "cache"))
    bucket, options = s3_bucket
    job = Job(
        name="fresh-host",
        command=("python3", "-c", PROBE),
        profile=ON_DEMAND,
        store_url=f"{bucket}/runs",
        storage_options=options,
        timeouts=TIMEOUTS,
        max_attempts=1,
    )
    started = time.perf_counter()
    with (
        Client(host.api_key, base_url=host.url, min_intervals={}) as client,
        Ledger(tmp_path / "ledger.db") as ledger,
    ):
        result = run_job(job, client=client, ledger=ledger, progress=False)
    elapsed = time.perf_counter() - started
    rundir = RunDir(result.run_url, options)
    log = rundir.read_log(1).decode("utf-8", errors="replace")
    assert result.status == "succeeded", (result.summary(), log)
    assert result.exit_code == 0
    assert len(result.attempts) == 1
    # the command ran on the venv's python, with the vastkit pip put there
    site = bare_venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"host vastkit {vastkit.__version__} from {site}/site-packages/vastkit/" in log
    assert f"python {bare_venv}" in log
    # pip installed it from the presigned URL of the wheel in the run directory
    installed = next((site / "site-packages").glob("vastkit-*.dist-info"))
    direct = (installed / "direct_url.json").read_text()
    assert f"/runs/{result.run_id}/worker/" in direct
    assert "X-Amz-Signature=" in direct
    shipped = rundir.store.find(rundir.path_of("worker"))
    assert [p.rsplit("/", 1)[1] for p in shipped] == [
        f"vastkit-{vastkit.__version__}-py3-none-any.whl"
    ]
    print(f"fresh host: job succeeded in {elapsed:.1f} s (venv ready before)")

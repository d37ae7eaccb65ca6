"""The account API key never reaches a rented host; storage credentials stay out of job.json."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vastkit.api.client import Client
from vastkit.emulator import Emulator, ProcessRunner, Timings, serve
from vastkit.jobs import Job, run_job
from vastkit.ledger import Ledger
from vastkit.rundir import RunDir

from .conftest import ON_DEMAND
from .test_end_to_end import REAL

_DUMP_ENV = "import json, os; print('ENV=' + json.dumps(dict(os.environ)))"


@pytest.fixture
def live_emu(tmp_path: Path) -> Iterator[Emulator]:
    runner = ProcessRunner(tmp_path / "containers", grace_s=5.0)
    with serve(
        seed=0,
        offers=400,
        runner=runner,
        rate_limits=False,
        timings=Timings(provision_s=0.2, loading_s=0.2),
    ) as emulator:
        yield emulator


def test_the_worker_environment_has_no_account_key_and_job_json_no_secrets(
    live_emu: Emulator, tmp_path: Path
) -> None:
    emu = live_emu
    secret = "s3cr3t-storage-credential"
    job = Job(
        name="env-dump",
        command=(sys.executable, "-c", _DUMP_ENV),
        profile=ON_DEMAND,
        store_url=(tmp_path / "store").as_uri(),
        storage_options={"auto_mkdir": True, "note": secret},
        env={"VISIBLE": "yes"},
        timeouts=REAL,
    )
    with (
        Client(emu.api_key, base_url=emu.url, min_intervals={}) as client,
        Ledger(tmp_path / "ledger.db") as ledger,
    ):
        result = run_job(job, client=client, ledger=ledger, progress=False)
    assert result.status == "succeeded", result.summary()
    rundir = RunDir(result.run_url)
    log = rundir.read_log(1).decode()
    line = next(part for part in log.splitlines() if part.startswith("ENV="))
    env = json.loads(line.removeprefix("ENV="))
    # what a Vast container gets, and the job's own variables
    assert env["VISIBLE"] == "yes"
    assert env["CONTAINER_API_KEY"]
    assert env["VASTKIT_ATTEMPT"] == "1"
    # never the account key, under any name
    assert emu.api_key not in json.dumps(env)
    assert "VAST_API_KEY" not in env
    # storage credentials travel in the environment of the create request, not in job.json
    assert secret in env["VASTKIT_STORAGE_OPTIONS"]
    job_json = (tmp_path / "store" / result.run_id / "job.json").read_text()
    assert secret not in job_json
    assert emu.api_key not in job_json
    assert emu.instances == []

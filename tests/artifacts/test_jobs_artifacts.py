"""run_job with inputs, outputs and metrics, on the emulator (virtual time and real processes)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from vastkit.api.client import Client
from vastkit.emulator import Emulator
from vastkit.errors import ConfigError
from vastkit.jobs import Job, JobEvent, run_job
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.rundir import RunDir

from .conftest import BID_PROFILE, REAL, World


def test_a_local_input_is_uploaded_once_and_reused_by_a_second_job(
    world: World, tmp_path: Path
) -> None:
    folder = tmp_path / "vocab"
    folder.mkdir()
    (folder / "words.txt").write_text("alpha\nbeta\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "ids.bin").write_bytes(bytes(range(200)))
    remote = "s3://bucket/datasets/imagenet-mini"
    first = world.run(
        world.job(inputs={"vocab": str(folder), "data": remote}, outputs=["outputs/"])
    )
    assert first.ok, first.summary()
    spec = RunDir(first.run_url).read_job()
    assert spec is not None
    cache = (tmp_path / "store" / "datasets").as_uri()
    assert spec.inputs["data"] == remote
    assert spec.inputs["vocab"].startswith(cache + "/")
    assert spec.outputs == ("outputs/",)
    assert spec.version == 2
    assert world.workers.specs[0] == spec  # what the worker reads
    assert [e.kind for e in world.events].count("input_uploaded") == 1
    digest_dir = Path(spec.inputs["vocab"].removeprefix("file://")).parent
    manifest = json.loads((digest_dir / "manifest.json").read_text())
    # Mark the cached copy (same size, other bytes): an upload would overwrite the mark.
    cached = digest_dir / "data" / "words.txt"
    cached.write_text("MARKED\nMAR\n")

    copy = tmp_path / "elsewhere" / "vocab-copy"
    shutil.copytree(folder, copy)
    world.events.clear()
    second = world.run(world.job(name="again", inputs={"vocab": str(copy)}))
    assert second.ok, second.summary()
    spec2 = RunDir(second.run_url).read_job()
    assert spec2 is not None
    assert spec2.inputs["vocab"] == spec.inputs["vocab"]
    kinds = [e.kind for e in world.events]
    assert "input_reused" in kinds
    assert "input_uploaded" not in kinds
    assert cached.read_text() == "MARKED\nMAR\n"  # the second job uploaded nothing
    assert json.loads((digest_dir / "manifest.json").read_text()) == manifest


def test_a_job_without_inputs_keeps_the_version_1_spec(world: World) -> None:
    result = world.run(world.job())
    spec = RunDir(result.run_url).read_job()
    assert spec is not None
    assert (spec.version, spec.inputs, spec.outputs) == (1, {}, ())
    assert result.outputs == ()


@pytest.mark.s3
def test_a_store_that_does_not_exist_fails_before_any_instance(
    world: World, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    _, options = s3_bucket
    job = world.job(store_url="s3://no-such-bucket-4711/runs", storage_options=options)
    with pytest.raises(ConfigError, match="NoSuchBucket") as info:
        world.run(job)
    assert "s3://no-such-bucket-4711/runs/" in str(info.value)
    assert world.creates() == 0
    assert world.emu.instances == []
    assert world.events == []  # the job never started


@pytest.mark.s3
def test_credentials_the_store_refuses_fail_before_any_instance(
    world: World, s3_bucket: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys
    bucket, options = s3_bucket
    wrong = {**options, "key": "AKIAWRONG", "secret": "s3cr3t-value"}
    job = world.job(store_url=f"{bucket}/runs", storage_options=wrong)
    with pytest.raises(ConfigError, match="InvalidAccessKeyId") as info:
        world.run(job)
    assert "cannot write a probe object" in str(info.value)
    assert "s3cr3t-value" not in str(info.value)
    assert world.creates() == 0
    assert world.emu.instances == []


TRAIN = """
import sys, time
from pathlib import Path
from vastkit import worker

ctx = worker.context()
n = ctx.attempt
Path("outputs").mkdir(exist_ok=True)
Path(f"outputs/attempt-{n}.txt").write_text("x" * (10 * n))
Path("not-an-output.txt").write_text("-")
worker.log_metrics(n, loss=1.0 / n)
if n == 1:
    while not worker.should_stop():
        time.sleep(0.05)
print(f"attempt {n} done", flush=True)
"""


def test_outputs_survive_a_preemption_and_a_normal_end(live_emu: Emulator, tmp_path: Path) -> None:
    emu = live_emu
    events: list[JobEvent] = []
    preempted: list[int] = []

    def on_event(event: JobEvent) -> None:
        events.append(event)
        ready = event.kind == "progress" and event.attempt == 1
        if ready and event.instance_id is not None and not preempted:
            preempted.append(event.instance_id)
            emu.preempt(event.instance_id, price=5.0)

    job = Job(
        name="outputs",
        command=(sys.executable, "-c", TRAIN),
        profile=BID_PROFILE,
        store_url=(tmp_path / "store").as_uri(),
        outputs=["outputs"],
        outbid=OutbidPolicy.give_up(),
        timeouts=REAL,
    )
    with (
        Client(emu.api_key, base_url=emu.url, min_intervals={}) as client,
        Ledger(tmp_path / "ledger.db") as ledger,
    ):
        result = run_job(job, client=client, ledger=ledger, on_event=on_event, progress=False)
    assert result.status == "succeeded", result.summary()
    assert [a.end_reason for a in result.attempts] == ["outbid", "succeeded"]
    # attempt 1's file can only have been uploaded when its worker got SIGTERM
    assert [(o.path, o.size, o.attempt) for o in result.outputs] == [
        ("outputs/attempt-1.txt", 10, 1),
        ("outputs/attempt-2.txt", 20, 2),
    ]
    run = tmp_path / "store" / result.run_id
    assert (run / "outputs" / "outputs" / "attempt-1.txt").read_text() == "x" * 10
    assert not (run / "outputs" / "not-an-output.txt").exists()
    records = result.read_metrics()
    assert [(r.step, r.values) for r in records] == [(1, {"loss": 1.0}), (2, {"loss": 0.5})]
    assert result.metrics == {"loss": 0.5}
    plot = result.plot_metrics(tmp_path / "metrics.png")
    assert Path(plot).stat().st_size > 0
    assert emu.instances == []

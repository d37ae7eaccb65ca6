"""Type-checked, never run: the job, queue, checkpoint, config and health signatures."""

from __future__ import annotations

import vastkit
import vastkit.checkpoint
import vastkit.health
import vastkit.outbid
from vastkit import worker
from vastkit.rundir import CheckpointSettings

job = vastkit.Job(
    name="resnet",
    command=["python", "train.py"],
    profile="training-standard",
    store_url="s3://bucket/runs",
    checkpoint=CheckpointSettings(every_steps="auto", mtbf_seconds=7200.0),
    inputs={"data": "s3://bucket/datasets/x"},
    outputs=["outputs/"],
    project="vision",
    max_cost_usd=20.0,
    outbid=vastkit.OutbidPolicy.raise_bid(then_wait_s=60.0),
)
from_file: vastkit.Job = vastkit.Job.from_yaml("job.yaml")
# the default outbid policy is the price-aware one; the fixed ones stay named options
default_outbid: vastkit.OutbidPolicy = from_file.outbid
rules: tuple[vastkit.outbid.OutbidRule, ...] = vastkit.outbid.OUTBID_RULES
longest_wait: float = vastkit.outbid.MAX_WAIT_S
patient = vastkit.OutbidPolicy.cheapest_expected(max_wait_s=1800.0, time_value_dph=0.5)
hasty = vastkit.OutbidPolicy.give_up()


def on_event(event: vastkit.JobEvent) -> None:
    print(event.kind, event.message, event.attempt)


result: vastkit.JobResult = vastkit.run_job(job, on_event=on_event, budgets="budgets.yaml")
ok: bool = result.ok
total: float = result.total_cost_usd
summary: str = result.summary()
for attempt in result.attempts:
    reason: str | None = attempt.end_reason
for output in result.outputs:
    size: int = output.size

queue = vastkit.JobQueue("ledger.db", concurrency=3, project_caps={"vision": 2})
job_id: str = queue.submit(job, priority=5)
record: vastkit.QueuedJob | None = queue.get(job_id)
records: list[vastkit.QueuedJob] = queue.list()
done: list[vastkit.QueuedJob] = queue.run(until="empty")
waited: vastkit.QueuedJob = queue.wait(job_id, timeout=60.0)
cancelled: vastkit.QueuedJob = queue.cancel(job_id)

with vastkit.CheckpointManager("s3://bucket/ckpt", every_steps=100, keep_last=2) as manager:
    saved: bool = manager.save(100, {"step": 100}, metrics={"loss": 0.5})
    latest: vastkit.CheckpointInfo | None = manager.latest()
    restored: vastkit.CheckpointInfo | None = manager.restore()
    state = manager.load()

settings: vastkit.Settings = vastkit.load_config(env="prod")
report: vastkit.HealthReport = vastkit.health_check("prod", worker_probe=False)
healthy: bool = report.ok
vastkit.health.check_store_writable("s3://bucket/runs", {"anon": False}, run_id="probe")

ctx = worker.context()
should: bool = ctx.should_stop()
worker.log_metrics(10, loss=0.25)

# multi-GPU: a launcher, ranks, a stop every rank agrees on, checkpoints from many ranks
ddp_job = vastkit.Job(
    name="ddp",
    command=["python", "train.py"],
    profile="training-distributed",
    store_url="s3://bucket/runs",
    launcher="torchrun",
    nproc_per_node=2,
    outbid=vastkit.OutbidPolicy.cheapest_expected(max_bid=8.0),
)
rank: int = ctx.rank
local_rank: int = ctx.local_rank
world_size: int = ctx.world_size
is_main: bool = ctx.is_main
agreed: bool = ctx.should_stop(any_rank=True)
ctx.log_metrics(10, all_ranks=True, loss=0.25)
with vastkit.CheckpointManager("s3://bucket/ckpt", save_rank=0, collective_timeout=600.0) as mgr:
    committed: bool = mgr.save_sharded(100, {"model": {}}, metrics={"loss": 0.5}, force=True)
    sharded: vastkit.CheckpointInfo | None = mgr.load_sharded({"model": {}}, step=100)
    is_sharded: bool = sharded.sharded if sharded is not None else False
reader = vastkit.checkpoint.CheckpointReader("s3://bucket/ckpt")
newest: vastkit.CheckpointInfo | None = reader.latest()

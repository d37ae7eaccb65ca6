"""The job both orchestrators of the restart test run (the dead one and the one that adopts)."""

from __future__ import annotations

from vastkit.jobs import Job, JobTimeouts
from vastkit.profiles import GpuProfile

PROFILE = GpuProfile(
    name="restart-4090", gpu_name="RTX_4090", max_dph=0.40, max_duration_hours=1, disk_gb=16
)


def make_job(store_url: str) -> Job:
    """A short on-demand job with sub-second polling."""
    return Job(
        name="restart",
        command="python train.py",
        profile=PROFILE,
        store_url=store_url,
        timeouts=JobTimeouts(
            poll_interval=0.2,
            provisioning=20,
            loading=20,
            running=30,
            worker_ready=20,
            heartbeat_stale=20,
            stop_grace=2,
            destroy=20,
        ),
    )

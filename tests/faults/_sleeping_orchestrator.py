"""An orchestrator for the laptop-asleep test: runs one job, announcing when its worker runs.

Usage: python _sleeping_orchestrator.py EMULATOR_URL API_KEY LEDGER_PATH STORE_URL RELEASE_FILE

It prints ``READY <run id> <attempt>`` (flushed) on the job's ``worker_ready`` event, so the test
can SIGSTOP it (the laptop's lid closes) and later SIGCONT it; at the end it prints
``RESULT <status> <attempts>``. The job's command waits for RELEASE_FILE, then exits 0.
"""

from __future__ import annotations

import sys

from vastkit.api.client import Client
from vastkit.jobs import Job, JobEvent, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile

ORCHESTRATOR_TIMEOUT = 2.0
"""The old rule destroyed the instance after this much silence (900 s by default, scaled down)."""

WAIT = (
    "import os,sys,time\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.1)\n"
    "print('released', flush=True)\n"
)


def on_event(event: JobEvent) -> None:
    if event.kind == "worker_ready":
        print(f"READY {event.run_id} {event.attempt}", flush=True)


def make_job(store_url: str, release: str) -> Job:
    """The job: wait for ``release``, then exit 0."""
    profile = GpuProfile(name="asleep", gpu_name="RTX_4090", max_dph=0.4, max_duration_hours=1)
    return Job(
        name="asleep",
        command=(sys.executable, "-c", WAIT, release),
        profile=profile,
        store_url=store_url,
        timeouts=JobTimeouts(
            poll_interval=0.5,
            provisioning=60,
            loading=60,
            running=120,
            worker_ready=90,
            heartbeat_stale=600,
            host_lost_grace=10,
            stop_grace=5,
            heartbeat_interval=0.5,
            worker_grace=5,
            orchestrator_timeout=ORCHESTRATOR_TIMEOUT,
            log_flush_seconds=0.5,
            relaunch_delay=0.5,
            destroy=60,
        ),
    )


def main() -> None:
    url, key, ledger_path, store_url, release = sys.argv[1:6]
    job = make_job(store_url, release)
    with Client(key, base_url=url) as client, Ledger(ledger_path) as ledger:
        result = run_job(job, client=client, ledger=ledger, on_event=on_event, progress=False)
    print(f"RESULT {result.status} {len(result.attempts)}", flush=True)


if __name__ == "__main__":
    main()

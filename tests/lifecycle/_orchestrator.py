"""An orchestrator process for the kill tests: rents one instance and stops at a chosen point.

Usage: python _orchestrator.py URL API_KEY LEDGER_PATH POINT

It prints ``PAUSED <point>`` (flushed) when it reaches POINT and then sleeps, so the test can
kill it there. POINT is one of:

- ``before_create``: the intent is written, the create not sent;
- ``after_create``: the create succeeded, the ledger does not know the instance yet;
- ``waiting``: the instance is provisioning;
- ``running``: inside the ``with`` block;
- ``destroying_before``: leaving the block, the destroy not sent yet;
- ``destroying_after``: the destroy was sent and succeeded, the ledger not updated.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

from vastkit.api.client import Client
from vastkit.api.models import CreatedInstance, CreateInstanceRequest
from vastkit.instance import Instance, InstanceEvent, InstanceTimeouts
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile

URL, KEY, LEDGER, POINT = sys.argv[1:5]


def pause() -> None:
    print(f"PAUSED {POINT}", flush=True)
    while True:
        time.sleep(60)


class PausingClient(Client):
    def create_instance(self, offer_id: int, request: CreateInstanceRequest) -> CreatedInstance:
        if POINT == "before_create":
            pause()
        created = super().create_instance(offer_id, request)
        if POINT == "after_create":
            pause()
        return created

    def destroy_instance(self, instance_id: int) -> bool:
        gone = super().destroy_instance(instance_id)
        if POINT == "destroying_after":
            pause()
        return gone


def on_event(event: InstanceEvent) -> None:
    print(f"EVENT {event.kind} {event.instance_id}", flush=True)
    if POINT == "waiting" and event.kind == "phase":
        pause()
    if POINT == "destroying_before" and event.kind == "destroying":
        pause()


def main() -> None:
    # A shell that starts a job in the background ignores Ctrl-C for it, and a child inherits
    # that: Python then never turns SIGINT into KeyboardInterrupt. Undo it, as a terminal would.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    profile = GpuProfile(name="kill-test", gpu_name="RTX_4090", max_dph=0.4, max_duration_hours=4)
    timeouts = InstanceTimeouts(provisioning=30, loading=30, running=60, poll_interval=0.05)
    options: dict[str, Any] = {
        "client": PausingClient(KEY, base_url=URL, min_intervals={}, max_retries=1),
        "ledger": Ledger(LEDGER),
        "timeouts": timeouts,
        "progress": False,
        "on_event": on_event,
        "image": "pytorch/pytorch:latest",
    }
    with Instance(profile, **options) as inst:
        print(f"RUNNING {inst.id}", flush=True)
        if POINT in ("running", "signal"):
            pause()
    print("LEFT", flush=True)


if __name__ == "__main__":
    main()

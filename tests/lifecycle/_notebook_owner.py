"""A notebook-like owner for the backstop test: rents one Instance with a keepalive, then idles.

Usage: python _notebook_owner.py URL API_KEY LEDGER_PATH KEEPALIVE_DIR KEEPALIVE_S

It prints ``RUNNING <instance id>`` (flushed) once the instance runs, then sleeps until it is
killed: the test SIGKILLs it, so no ``with`` exit, no atexit hook and no reap ever run.
"""

from __future__ import annotations

import sys
import time

from vastkit.api.client import Client
from vastkit.instance import Instance, InstanceTimeouts
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile

URL, KEY, LEDGER, KEEPALIVE_DIR, KEEPALIVE_S = sys.argv[1:6]


def main() -> None:
    profile = GpuProfile(name="nb", gpu_name="RTX_4090", max_dph=0.4, max_duration_hours=4)
    inst = Instance.launch(
        profile,
        client=Client(KEY, base_url=URL, min_intervals={}, max_retries=1),
        ledger=Ledger(LEDGER),
        timeouts=InstanceTimeouts(provisioning=30, loading=30, running=60, poll_interval=0.05),
        progress=False,
        reconcile_on_enter=False,
        keepalive_s=float(KEEPALIVE_S),
        keepalive_url=KEEPALIVE_DIR,
    )
    print(f"RUNNING {inst.id}", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()

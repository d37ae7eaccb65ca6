"""A driver process that runs a shared queue until it is empty.

Usage: python _driver_process.py EMULATOR_URL API_KEY LEDGER CONCURRENCY LEASE_TTL CAPS_JSON
(``CAPS_JSON``: the project caps, ``{"vision": 2}``). Prints ``done <n>`` (the jobs it drove to
their end) before exiting 0.
"""

from __future__ import annotations

import json
import sys

from vastkit.api.client import Client
from vastkit.queue import JobQueue


def main() -> None:
    url, key, ledger, concurrency, ttl, caps = sys.argv[1:7]
    with (
        Client(key, base_url=url, min_intervals={}) as client,
        JobQueue(
            ledger,
            client=client,
            concurrency=int(concurrency),
            lease_ttl=float(ttl),
            claim_interval=0.2,
            project_caps=json.loads(caps),
        ) as queue,
    ):
        finished = queue.run()
    print(f"done {len(finished)}", flush=True)


if __name__ == "__main__":
    main()

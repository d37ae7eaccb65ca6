"""An orchestrator process that runs a queue file until it is empty (or is killed).

Usage: python _queue_process.py EMULATOR_URL API_KEY LEDGER_PATH CONCURRENCY LEASE_TTL [BUDGETS]
(BUDGETS: a ``budgets.yaml`` path). Prints ``done <n>`` (the jobs it drove to their end) before
exiting 0.
"""

from __future__ import annotations

import sys

from vastkit.api.client import Client
from vastkit.queue import JobQueue


def main() -> None:
    url, key, ledger_path, concurrency, ttl = sys.argv[1:6]
    budgets = sys.argv[6] if len(sys.argv) > 6 else None
    with (
        Client(key, base_url=url, min_intervals={}) as client,
        JobQueue(
            ledger_path,
            client=client,
            concurrency=int(concurrency),
            lease_ttl=float(ttl),
            claim_interval=0.2,
            budgets=budgets,
        ) as queue,
    ):
        finished = queue.run()
    print(f"done {len(finished)}", flush=True)


if __name__ == "__main__":
    main()

"""An orchestrator that dies (``os._exit``) once its instance runs: no cleanup at all.

Usage: python _crashing_orchestrator.py EMULATOR_URL API_KEY STORE_URL LEDGER_PATH
Prints the run id on the first line of stdout before dying.
"""

from __future__ import annotations

import os
import sys

from tests.jobs._restart_job import make_job
from vastkit.api.client import Client
from vastkit.jobs import JobEvent, run_job
from vastkit.ledger import Ledger


def main() -> None:
    url, key, store, ledger_path = sys.argv[1:5]

    def on_event(event: JobEvent) -> None:
        if event.kind == "running":
            print(event.run_id, flush=True)
            os._exit(3)  # the orchestrator is killed: no destroy, no ledger update

    with Client(key, base_url=url, min_intervals={}) as client, Ledger(ledger_path) as ledger:
        run_job(make_job(store), client=client, ledger=ledger, on_event=on_event, progress=False)
    sys.exit(1)  # the job should never end here


if __name__ == "__main__":
    main()

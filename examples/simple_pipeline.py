"""Search a profile, provision, run a command, save its artifacts, destroy.

By default everything runs locally: a Vast emulator (its instances run as local processes) and a
local folder as the store. Against the real Vast.ai, set both:

    VAST_API_KEY=...                       your Vast.ai API key
    VASTKIT_STORE_URL=s3://bucket/runs     where run directories go (AWS_ACCESS_KEY_ID and
                                           AWS_SECRET_ACCESS_KEY reach the worker)

    python examples/simple_pipeline.py

The script exits non-zero when the job does not succeed or its artifact is missing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec

import vastkit
from vastkit.api.client import Client
from vastkit.jobs import Job, JobEvent, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.profiles import get_profile
from vastkit.selector import build_query, explain_offers

# The command the worker runs: it writes one artifact into the run directory, next to the logs.
COMMAND = """
import json, os, platform, fsspec
options = json.loads(os.environ.get("VASTKIT_STORAGE_OPTIONS") or "{}")
url = os.environ["VASTKIT_RUN_URL"] + "/artifacts/report.json"
report = {"host": platform.node(), "attempt": os.environ["VASTKIT_ATTEMPT"], "answer": 6 * 7}
with fsspec.open(url, "w", **options) as fh:
    json.dump(report, fh)
print("wrote", url)
"""


@contextlib.contextmanager
def marketplace() -> Iterator[tuple[Client, str, dict[str, Any], Ledger]]:
    """The real Vast.ai when configured, else the emulator and a local folder."""
    store = os.environ.get("VASTKIT_STORE_URL")
    if os.environ.get("VAST_API_KEY") and store:
        options: dict[str, Any] = {}
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            options = {
                "key": os.environ["AWS_ACCESS_KEY_ID"],
                "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            }
        with Client() as client, Ledger() as ledger:
            yield client, store, options, ledger
        return
    from vastkit.emulator import ProcessRunner, Timings, serve

    with (
        tempfile.TemporaryDirectory(prefix="vastkit-example-") as tmp,
        serve(
            seed=0,
            offers=400,
            runner=ProcessRunner(Path(tmp) / "containers"),
            timings=Timings(provision_s=1, loading_s=2),
        ) as emu,
        Client(emu.api_key, base_url=emu.url) as client,
        Ledger(Path(tmp) / "ledger.db") as ledger,
    ):
        print(f"using the Vast emulator at {emu.url} and a local store in {tmp}")
        yield client, (Path(tmp) / "store").as_uri(), {}, ledger
        print(f"emulator: {len(emu.instances)} instance(s) left running")
        if emu.instances:
            raise SystemExit("an instance was left running")


def main() -> int:
    # On Vast the image's python runs the command; locally, the interpreter running this script.
    python = "python3" if os.environ.get("VAST_API_KEY") else sys.executable
    profile = get_profile("training-standard")
    with marketplace() as (client, store, options, ledger):
        # 1. search: what the profile would rent, and why other offers were rejected
        offers = client.search_offers(build_query(profile))
        found = explain_offers(profile, offers, now=client.clock.now())
        print(found.summary())
        best = found.candidates[0]
        print(
            f"best offer: {best.offer.id} ({best.offer.gpu_name}) at {best.effective_dph:.3f} $/h"
        )

        # 2-4. provision, run, collect: run_job rents, waits, runs the worker, destroys
        job = Job(
            name="simple-pipeline",
            command=(python, "-c", COMMAND),
            profile=profile,
            store_url=store,
            storage_options=options,
            timeouts=JobTimeouts(
                poll_interval=1.0, heartbeat_interval=1.0, log_flush_seconds=1.0, stop_grace=10
            ),
        )

        def show(event: JobEvent) -> None:
            if event.kind in ("offer_chosen", "running", "worker_ready", "destroyed", "finished"):
                print(f"  {event.kind}: {event.message}")

        result = run_job(job, client=client, ledger=ledger, on_event=show, progress=False)
        print(result.summary())

        # 5. the artifact is in the store, the instance is gone
        with fsspec.open(f"{result.run_url}/artifacts/report.json", "r", **options) as fh:
            report = fh.read()
        print(f"artifact: {report}")
        ok = result.ok and '"answer": 42' in report
    print(f"vastkit {vastkit.__version__}: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

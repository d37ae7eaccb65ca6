"""The job's inputs and outputs, as the worker moves them (through :mod:`vastkit.artifacts`).

Inputs are fetched once per host: a marker beside each one remembers the URL it came from, so a
container that restarts finds what it fetched before. Outputs are uploaded after the command
ends; after a stop, only within what is left of the grace period.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vastkit.clock import Clock
from vastkit.rundir import JobSpec
from vastkit.worker._protocol import read_status, write_json_atomic

__all__ = ["Note", "fetch_inputs", "upload_job_outputs"]

Note = Callable[..., None]
"""The worker's ``note(message, level=...)``: a line in the log and in the attempt's output."""


def fetch_inputs(
    spec: JobSpec,
    inputs_dir: Path,
    storage_options: Mapping[str, Any],
    *,
    clock: Clock,
    note: Note,
) -> dict[str, str]:
    """Fetch every input (once per host).

    Returns:
        ``VASTKIT_INPUT_<NAME>`` -> the local path, for every input.
    """
    from vastkit.artifacts import fetch_artifact, input_env_name

    env: dict[str, str] = {}
    for name, url in sorted(spec.inputs.items()):
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        dest = inputs_dir / spec.run_id / f"{safe}-{key}"
        marker = inputs_dir / spec.run_id / f"{safe}-{key}.done.json"
        local: Path | None = None
        done = read_status(marker)
        if done.get("url") == url and Path(str(done.get("path"))).exists():
            local = Path(str(done["path"]))
            note(f"input {name!r} already fetched to {local}")
        if local is None:
            note(f"fetching input {name!r} from {url}")
            local = fetch_artifact(url, dest, storage_options, clock=clock)
            write_json_atomic(marker, {"url": url, "path": str(local)})
            note(f"input {name!r} is at {local}")
        env[input_env_name(name)] = str(local)
    return env


def upload_job_outputs(
    spec: JobSpec,
    cwd: Path,
    run_url: str,
    storage_options: Mapping[str, Any],
    *,
    attempt: int,
    deadline: float | None,
    clock: Clock,
    note: Note,
) -> None:
    """Upload the job's outputs (none after ``deadline``), noting what was done."""
    if not spec.outputs:
        return
    from vastkit.artifacts import upload_outputs

    try:
        uploaded, skipped = upload_outputs(
            cwd,
            spec.outputs,
            run_url,
            storage_options,
            attempt=attempt,
            deadline=deadline,
            clock=clock,
        )
    except Exception as exc:
        note(f"could not upload the outputs: {exc}", level=logging.ERROR)
        return
    size = sum(o.size for o in uploaded)
    note(f"uploaded {len(uploaded)} output file(s), {size} bytes, to {run_url}/outputs/")
    if skipped:
        note(
            f"{len(skipped)} output file(s) not uploaded (grace period over or errors): "
            + ", ".join(skipped[:5]),
            level=logging.WARNING,
        )

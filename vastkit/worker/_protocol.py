"""What the worker and the training code it runs agree on: environment names and local files.

The worker starts the command with these environment variables and a private local *status
directory*. The training code (through :func:`vastkit.worker.context`) writes its progress there
and the worker turns it into heartbeats and metric chunks in the run directory, so the training
loop never waits on the store:

- ``status.json``: ``{"step": ..., "checkpoint_step": ..., "time": ...}``, replaced whole.
- ``metrics.jsonl``: one metric record per line, appended.
- ``stop``: created by the worker just before it sends SIGTERM, so ``should_stop()`` turns true
  even where no signal handler could be installed.
- ``job.json``: a copy of the job spec, so the training code need not read the store for it.
- ``rank_failure.json``: under a launcher, how the first rank that failed ended (its rank, exit
  code and last output lines), written by the launcher wrapper for the worker's result.
- ``launcher-logs/``: under a launcher, each rank's output, one folder per local rank.

Under a launcher (``VASTKIT_LAUNCHER=torchrun`` in the job spec's env) every rank shares the one
status directory: only the main rank writes ``status.json`` and (unless asked) metrics, and the
``stop`` file reaches every rank.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_ATTEMPT",
    "ENV_CHECKPOINT_URL",
    "ENV_GPU_COUNT",
    "ENV_INPUTS_DIR",
    "ENV_INPUT_PREFIX",
    "ENV_LAUNCHER",
    "ENV_NPROC_PER_NODE",
    "ENV_RUN_URL",
    "ENV_STATUS_DIR",
    "ENV_STORAGE_OPTIONS",
    "ENV_WORKER_PID",
    "JOB_FILE",
    "LAUNCHER_LOG_DIR",
    "METRICS_FILE",
    "RANK_FAILURE_FILE",
    "STATUS_FILE",
    "STOP_FILE",
    "read_status",
    "write_json_atomic",
]

ENV_RUN_URL = "VASTKIT_RUN_URL"
"""The run directory URL."""
ENV_ATTEMPT = "VASTKIT_ATTEMPT"
"""The attempt number."""
ENV_CHECKPOINT_URL = "VASTKIT_CHECKPOINT_URL"
"""The URL to give ``CheckpointManager`` (checkpoints land in ``<it>/checkpoints/``)."""
ENV_STORAGE_OPTIONS = "VASTKIT_STORAGE_OPTIONS"
"""fsspec storage options as JSON (may be absent: credentials then come from the usual
variables such as ``AWS_ACCESS_KEY_ID``)."""
ENV_STATUS_DIR = "VASTKIT_STATUS_DIR"
"""The local status directory shared by the worker and the command."""
ENV_INPUTS_DIR = "VASTKIT_INPUTS_DIR"
"""Where the worker fetches the job's inputs (default: ``vastkit-inputs`` in the temporary
directory)."""
ENV_INPUT_PREFIX = "VASTKIT_INPUT_"
"""Each input's local path is in ``VASTKIT_INPUT_<NAME>`` (see
:func:`vastkit.artifacts.input_env_name`)."""

ENV_LAUNCHER = "VASTKIT_LAUNCHER"
"""In the job spec's env: how to start the command (``torchrun``; absent: run it once). The
orchestrator sets it from ``Job.launcher``."""
ENV_NPROC_PER_NODE = "VASTKIT_NPROC_PER_NODE"
"""In the job spec's env: how many processes the launcher starts (default: one per GPU)."""
ENV_WORKER_PID = "VASTKIT_WORKER_PID"
"""Under a launcher: the worker's pid, so the launcher can end when the worker dies."""
ENV_GPU_COUNT = "GPU_COUNT"
"""The number of GPUs of the rental, which Vast (and the emulator) set in every container."""

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
STOP_FILE = "stop"
JOB_FILE = "job.json"
RANK_FAILURE_FILE = "rank_failure.json"
LAUNCHER_LOG_DIR = "launcher-logs"


def write_json_atomic(path: Path, value: Any) -> None:
    """Replace a small local JSON file whole (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any]:
    """Read ``status.json`` (an empty dict when missing or unreadable)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}

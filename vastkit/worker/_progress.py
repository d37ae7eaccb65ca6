"""What the command reports to the worker: progress, metrics, and its checkpoints' metrics.

The command (through :mod:`vastkit.worker`'s context) writes ``status.json`` and appends to
``metrics.jsonl`` in the status directory; its checkpoints carry metrics in their manifests.
:class:`ProgressReader` reads all three between heartbeats and keeps the metric records that
still have to be uploaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vastkit._documents import converter as document_converter
from vastkit.checkpoint.naming import CHECKPOINTS_DIR, MANIFEST_NAME, Manifest, step_dirname
from vastkit.clock import Clock
from vastkit.rundir import MetricRecord, RunDir
from vastkit.worker._protocol import METRICS_FILE, STATUS_FILE, read_status

__all__ = ["ProgressReader"]

logger = logging.getLogger("vastkit.worker")


class ProgressReader:
    """Reads the status directory and the newest checkpoint's manifest.

    Args:
        storage_options: fsspec options for the checkpoints' store.
        clock: The clock for the waits between store retries.
    """

    def __init__(self, storage_options: Mapping[str, Any], clock: Clock) -> None:
        self.status_dir: Path | None = None
        """The status directory (set once it exists)."""
        self.checkpoint_url: str | None = None
        """Where the job's checkpoints are (set once the job spec is read)."""
        self.status: dict[str, Any] = {}
        """The last ``status.json`` the command wrote."""
        self.pending: list[MetricRecord] = []
        """Metric records read but not uploaded yet."""
        self.last_metrics: dict[str, float] = {}
        """The newest value of every metric (by step)."""
        self._storage_options = dict(storage_options)
        self._clock = clock
        self._offset = 0
        self._metric_steps: dict[str, int] = {}
        self._checkpoints: RunDir | None = None
        self._checkpoint_step: int | None = None

    def int_status(self, key: str) -> int | None:
        """An integer field of the status (``step``, ``checkpoint_step``), else ``None``."""
        value = self.status.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def read(self) -> None:
        """Take in what the command reported since the last call."""
        if self.status_dir is None:
            return
        status = read_status(self.status_dir / STATUS_FILE)
        if status:
            self.status = status
        self._read_metrics_file(self.status_dir / METRICS_FILE)
        self._checkpoint_metrics()

    def _read_metrics_file(self, path: Path) -> None:
        try:
            with open(path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for line in data[: end + 1].splitlines():
            try:
                record = document_converter.structure(json.loads(line), MetricRecord)
            except Exception:
                logger.warning("ignoring a malformed metrics line: %r", line[:200])
                continue
            self._add(record)

    def _add(self, record: MetricRecord) -> None:
        self.pending.append(record)
        for name, value in record.values.items():
            if record.step >= self._metric_steps.get(name, record.step):
                self.last_metrics[name] = value
                self._metric_steps[name] = record.step

    def _checkpoint_metrics(self) -> None:
        """Turn the metrics of the newest reported checkpoint into a metric record (once)."""
        step = self.int_status("checkpoint_step")
        if step is None or step == self._checkpoint_step or self.checkpoint_url is None:
            return
        if self._checkpoints is None:
            self._checkpoints = RunDir(
                self.checkpoint_url, self._storage_options, clock=self._clock
            )
        rel = f"{CHECKPOINTS_DIR}/{step_dirname(step)}/{MANIFEST_NAME}"
        try:
            data = self._checkpoints.read_bytes(rel)
            if data is None:
                return  # not committed yet (an async save): look again at the next heartbeat
            manifest = Manifest.from_json(data)
        except Exception as exc:
            logger.warning("could not read the manifest of checkpoint %d: %s", step, exc)
            self._checkpoint_step = step
            return
        self._checkpoint_step = step
        if manifest.metrics:
            values = {str(k): float(v) for k, v in manifest.metrics.items()}
            self._add(
                MetricRecord(
                    step=manifest.step, time=manifest.time, values=values, source="checkpoint"
                )
            )

"""Checkpoint naming, manifests, retention and intervals: now :mod:`vastkit.checkpoint.naming`.

Kept so that code importing from here goes on working; new code imports
:mod:`vastkit.checkpoint.naming` (and :class:`vastkit.retry.RetryPolicy` for retries).
"""

from __future__ import annotations

from vastkit.checkpoint.naming import (
    CHECKPOINTS_DIR,
    FORMAT_VERSION,
    LATEST_HINT,
    MANIFEST_NAME,
    STEP_WIDTH,
    Manifest,
    ManifestError,
    PayloadEntry,
    auto_interval_steps,
    is_due,
    parse_step_dirname,
    select_retained,
    step_dirname,
    young_daly_seconds,
)
from vastkit.retry import RetryPolicy

__all__ = [
    "CHECKPOINTS_DIR",
    "FORMAT_VERSION",
    "LATEST_HINT",
    "MANIFEST_NAME",
    "STEP_WIDTH",
    "Manifest",
    "ManifestError",
    "PayloadEntry",
    "RetryPolicy",
    "auto_interval_steps",
    "is_due",
    "parse_step_dirname",
    "select_retained",
    "step_dirname",
    "young_daly_seconds",
]

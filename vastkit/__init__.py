"""vastkit: run GPU work on Vast.ai from Python, reliably and cheaply.

The public surface is what this module exports in ``__all__`` (kept sorted and complete by
``tests/test_exported_members.py``): the names a user writes on the main paths (renting an
instance, running a job, checkpointing, money, settings) and the errors worth catching. Wire
records and policy internals stay importable from their modules (``vastkit.api``,
``vastkit.selector``, ``vastkit.budget``, ``vastkit.errors``, ...). ``vastkit.Instance`` is the
lifecycle context manager that rents an instance; the API's record of an instance is
``vastkit.InstanceInfo`` (``vastkit.api.InstanceInfo``). Subpackages with their own surface:
``vastkit.emulator`` (the local Vast), ``vastkit.worker`` (the GPU host), ``vastkit.cli``.
See ``docs/architecture.md`` for the map of the package.
"""

from __future__ import annotations

from vastkit._version import __version__
from vastkit.api.client import Client
from vastkit.api.models import InstanceInfo, InstanceState, Offer
from vastkit.api.query import OfferQuery
from vastkit.artifacts import fetch_artifact, plot_metrics, upload_dataset
from vastkit.budget import Budget, BudgetGuard, Budgets, load_budgets
from vastkit.checkpoint import CheckpointInfo, CheckpointManager
from vastkit.clock import Clock, ManualClock
from vastkit.config import Settings, load_config
from vastkit.cost_report import CostReport, cost_report
from vastkit.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    BudgetExceededError,
    CheckpointError,
    ConfigError,
    DestroyFailedError,
    JobError,
    LedgerError,
    NoOfferError,
    ProvisioningError,
    RateLimitError,
    VastkitError,
)
from vastkit.health import HealthReport, health_check
from vastkit.instance import Instance, InstanceEvent, InstanceTimeouts
from vastkit.jobs import Job, JobEvent, JobResult, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile, builtin_profiles, get_profile, load_profiles
from vastkit.queue import JobQueue, QueuedJob
from vastkit.reconcile import reconcile
from vastkit.selector import explain_offers

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "AuthenticationError",
    "Budget",
    "BudgetExceededError",
    "BudgetGuard",
    "Budgets",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointManager",
    "Client",
    "Clock",
    "ConfigError",
    "CostReport",
    "DestroyFailedError",
    "GpuProfile",
    "HealthReport",
    "Instance",
    "InstanceEvent",
    "InstanceInfo",
    "InstanceState",
    "InstanceTimeouts",
    "Job",
    "JobError",
    "JobEvent",
    "JobQueue",
    "JobResult",
    "JobTimeouts",
    "Ledger",
    "LedgerError",
    "ManualClock",
    "NoOfferError",
    "Offer",
    "OfferQuery",
    "OutbidPolicy",
    "ProvisioningError",
    "QueuedJob",
    "RateLimitError",
    "Settings",
    "VastkitError",
    "__version__",
    "builtin_profiles",
    "cost_report",
    "explain_offers",
    "fetch_artifact",
    "get_profile",
    "health_check",
    "load_budgets",
    "load_config",
    "load_profiles",
    "plot_metrics",
    "reconcile",
    "run_job",
    "upload_dataset",
]

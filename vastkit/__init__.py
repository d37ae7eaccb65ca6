"""vastkit: run GPU work on Vast.ai from Python, reliably and cheaply.

The public surface is what this module exports in ``__all__`` (kept sorted and complete by
``tests/test_exported_members.py``). The API model of an instance is ``vastkit.api.Instance``;
``vastkit.Instance`` is the lifecycle context manager that rents one. Subpackages with their own
surface: ``vastkit.emulator`` (the local Vast), ``vastkit.worker`` (the GPU host), ``vastkit.cli``.
"""

from __future__ import annotations

from vastkit._version import __version__
from vastkit.api.client import (
    Client,
)
from vastkit.api.models import (
    Charge,
    ChargeItem,
    CreatedInstance,
    CreateInstanceRequest,
    InstanceState,
    Offer,
    PortBinding,
    User,
)
from vastkit.api.query import (
    OfferQuery,
    parse_order,
    parse_query,
)
from vastkit.artifacts import (
    OutputFile,
    fetch,
    plot_metrics,
    upload_dataset,
)
from vastkit.budget import (
    Budget,
    BudgetAction,
    BudgetDecision,
    BudgetGuard,
    Budgets,
    load_budgets,
)
from vastkit.checkpoint import (
    CheckpointInfo,
    CheckpointManager,
    CheckpointWarning,
)
from vastkit.clock import (
    Clock,
    ManualClock,
    SystemClock,
)
from vastkit.config import (
    Settings,
    load_config,
)
from vastkit.cost_report import (
    CostReport,
    CostRow,
    cost_report,
)
from vastkit.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    CheckpointCorruptError,
    CheckpointError,
    ConfigError,
    DestroyFailedError,
    GoneError,
    JobError,
    LedgerError,
    NoOfferError,
    NotFoundError,
    PermissionDeniedError,
    ProvisioningError,
    RateLimitError,
    ResponseValidationError,
    SearchQuotaExceededError,
    ServerError,
    VastkitError,
)
from vastkit.health import (
    CheckItem,
    CheckStatus,
    HealthReport,
    check,
    check_store_writable,
)
from vastkit.instance import (
    Instance,
    InstanceEvent,
    InstanceTimeouts,
    OutbidPolicy,
)
from vastkit.jobs import (
    AttemptSummary,
    CostBreakdown,
    Job,
    JobEvent,
    JobResult,
    JobTimeouts,
    run_job,
)
from vastkit.ledger import (
    Ledger,
)
from vastkit.profiles import (
    GpuProfile,
    builtin_profiles,
    get_profile,
    load_profiles,
)
from vastkit.queue import (
    JobQueue,
    QueuedJob,
)
from vastkit.reconcile import (
    ReconcileReport,
    reconcile,
)
from vastkit.rundir import (
    JobSpec,
    RunDir,
)
from vastkit.selector import (
    Candidate,
    Explanation,
    build_query,
    effective_price,
    explain,
    select_offers,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AttemptSummary",
    "AuthenticationError",
    "BadRequestError",
    "Budget",
    "BudgetAction",
    "BudgetDecision",
    "BudgetExceededError",
    "BudgetGuard",
    "Budgets",
    "Candidate",
    "Charge",
    "ChargeItem",
    "CheckItem",
    "CheckStatus",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointWarning",
    "Client",
    "Clock",
    "ConfigError",
    "CostBreakdown",
    "CostReport",
    "CostRow",
    "CreateInstanceRequest",
    "CreatedInstance",
    "DestroyFailedError",
    "Explanation",
    "GoneError",
    "GpuProfile",
    "HealthReport",
    "Instance",
    "InstanceEvent",
    "InstanceState",
    "InstanceTimeouts",
    "Job",
    "JobError",
    "JobEvent",
    "JobQueue",
    "JobResult",
    "JobSpec",
    "JobTimeouts",
    "Ledger",
    "LedgerError",
    "ManualClock",
    "NoOfferError",
    "NotFoundError",
    "Offer",
    "OfferQuery",
    "OutbidPolicy",
    "OutputFile",
    "PermissionDeniedError",
    "PortBinding",
    "ProvisioningError",
    "QueuedJob",
    "RateLimitError",
    "ReconcileReport",
    "ResponseValidationError",
    "RunDir",
    "SearchQuotaExceededError",
    "ServerError",
    "Settings",
    "SystemClock",
    "User",
    "VastkitError",
    "__version__",
    "build_query",
    "builtin_profiles",
    "check",
    "check_store_writable",
    "cost_report",
    "effective_price",
    "explain",
    "fetch",
    "get_profile",
    "load_budgets",
    "load_config",
    "load_profiles",
    "parse_order",
    "parse_query",
    "plot_metrics",
    "reconcile",
    "run_job",
    "select_offers",
    "upload_dataset",
]

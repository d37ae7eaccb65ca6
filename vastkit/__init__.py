"""vastkit: run GPU work on Vast.ai from Python, reliably and cheaply.

The public surface is what this module exports in ``__all__``.
"""

from __future__ import annotations

from vastkit._version import __version__
from vastkit.api.models import (
    Charge,
    ChargeItem,
    CreatedInstance,
    CreateInstanceRequest,
    InstanceState,
    Offer,
    User,
)
from vastkit.clock import Clock, ManualClock, SystemClock
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

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "Charge",
    "ChargeItem",
    "CheckpointCorruptError",
    "CheckpointError",
    "Clock",
    "ConfigError",
    "CreateInstanceRequest",
    "CreatedInstance",
    "GoneError",
    "InstanceState",
    "JobError",
    "LedgerError",
    "ManualClock",
    "NoOfferError",
    "NotFoundError",
    "Offer",
    "PermissionDeniedError",
    "ProvisioningError",
    "RateLimitError",
    "ResponseValidationError",
    "SearchQuotaExceededError",
    "ServerError",
    "SystemClock",
    "User",
    "VastkitError",
    "__version__",
]

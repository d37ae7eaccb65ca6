"""What a job reports: :class:`JobResult`, :class:`AttemptSummary`, :class:`JobEvent`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from vastkit.api.models import Offer
from vastkit.artifacts import (
    OutputFile,
    plot_metrics,
)
from vastkit.checkpoint import CheckpointInfo
from vastkit.jobs.spec import JobStatus
from vastkit.ledger import AttemptRecord
from vastkit.money import ContractPrice
from vastkit.rundir import (
    MetricRecord,
    RunDir,
)

logger = logging.getLogger("vastkit.jobs")

__all__ = [
    "AttemptSummary",
    "CostBreakdown",
    "JobEvent",
    "JobResult",
    "failed_create_summary",
    "summary_from_record",
]


@attrs.frozen(kw_only=True)
class AttemptSummary:
    """One instance the job rented (or tried to rent)."""

    attempt: int
    """The attempt number (the last part of the label)."""
    instance_id: int | None
    """The Vast instance (None when the create failed)."""
    offer_id: int | None
    """The offer rented."""
    machine_id: int | None
    """The machine."""
    gpu_name: str | None
    """The GPU model."""
    rental: str
    """``on-demand`` or ``interruptible``."""
    bid: float | None
    """The (last) bid in $/h for an interruptible rental."""
    dph_total: float | None
    """What it cost per hour while running (GPU or bid, plus storage)."""
    created_at: float | None
    """When the instance was created."""
    loading_at: float | None
    """When its container started loading."""
    running_at: float | None
    """When its container ran."""
    ready_at: float | None
    """When the worker's first heartbeat was seen."""
    ended_at: float | None
    """When the attempt ended."""
    end_reason: str | None
    """Why: ``succeeded``, ``failed``, ``outbid``, ``host_lost``, ``heartbeat_stale``,
    ``loading_deadline``, ``budget_exceeded``, ``timed_out``..."""
    cost_usd: float
    """What it cost, from the contract's prices and the observed states."""
    last_step: int | None = None
    """The last training step its heartbeat reported."""
    checkpoint_step: int | None = None
    """The last committed checkpoint it reported."""


@attrs.frozen(kw_only=True)
class CostBreakdown:
    """Where a job's money went."""

    gpu_usd: float
    """GPU (or bid) time while containers ran."""
    storage_usd: float
    """Disk, from create to destroy."""
    by_attempt: Mapping[int, float] = attrs.field(factory=dict)
    """Dollars per attempt number."""

    @property
    def total_usd(self) -> float:
        """GPU plus storage."""
        return self.gpu_usd + self.storage_usd


@attrs.frozen(kw_only=True)
class JobResult:
    """How a job ended (what :func:`run_job` returns)."""

    run_id: str
    """The run id (the run directory is ``<store_url>/<run_id>``)."""
    name: str
    """The job's name."""
    status: JobStatus
    """``succeeded``, ``failed``, ``budget_exceeded``, ``timed_out`` or ``cancelled``."""
    reason: str
    """Why, in words."""
    attempts: tuple[AttemptSummary, ...]
    """Every instance rented or tried, in order."""
    cost: CostBreakdown
    """What the job cost."""
    checkpoints: tuple[CheckpointInfo, ...]
    """The committed checkpoints left in the store, oldest step first."""
    run_url: str
    """The run directory."""
    exit_code: int | None = None
    """The command's exit code in the final attempt (None when it never ended by itself)."""
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    """The last value of every metric the command logged."""
    step: int | None = None
    """The last training step reported."""
    started_at: float = 0.0
    """When the job started (clock time)."""
    ended_at: float = 0.0
    """When it ended."""
    outputs: tuple[OutputFile, ...] = ()
    """The outputs uploaded to ``<run>/outputs/``, with their sizes (from ``outputs.json``)."""
    storage_options: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
    """The fsspec options :meth:`read_metrics` reads the run directory with (never shown)."""

    def read_metrics(self, attempt: int | None = None) -> list[MetricRecord]:
        """The metric history from the run directory: every ``log_metrics`` call and every
        checkpoint's metrics, attempt after attempt (``metrics`` holds only the last values).

        Args:
            attempt: One attempt only (default: all).

        Returns:
            The records in the order they were written.
        """
        return RunDir(self.run_url, self.storage_options).read_metrics(attempt)

    def plot_metrics(
        self, path: str | os.PathLike[str], *, names: Sequence[str] | None = None
    ) -> os.PathLike[str]:
        """Plot the metric history to an image (needs matplotlib; see
        :func:`vastkit.artifacts.plot_metrics`).

        Returns:
            The path written.
        """
        return plot_metrics(self.read_metrics(), path, names=names, title=self.name)

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.status == "succeeded"

    @property
    def total_cost_usd(self) -> float:
        """Everything the job cost, in dollars."""
        return self.cost.total_usd

    @property
    def log_url(self) -> str:
        """Where the last attempt's output is (``<run>/attempts/<n>/log/``)."""
        last = self.attempts[-1].attempt if self.attempts else 1
        return f"{self.run_url}/attempts/{last}/log/"

    @property
    def preemptions(self) -> int:
        """How many attempts ended because the machine went away (outbid, host lost...)."""
        lost = {"outbid", "host_lost", "heartbeat_stale", "preempted", "vanished", "stopped"}
        return sum(1 for a in self.attempts if a.end_reason in lost)

    def summary(self) -> str:
        """A few lines for people."""
        from vastkit.cost_report import rounded_parts

        other = max(self.total_cost_usd - self.cost.total_usd, 0.0)  # billed traffic
        (gpu, storage, traffic), total = rounded_parts(
            [self.cost.gpu_usd, self.cost.storage_usd, other]
        )
        parts = f"GPU ${gpu:.4f}, storage ${storage:.4f}" + (
            f", traffic ${traffic:.4f}" if traffic else ""
        )
        lines = [
            f"job {self.name!r} ({self.run_id}): {self.status} - {self.reason}",
            f"  cost ${total:.4f} ({parts}) over {len(self.attempts)} attempt(s)",
        ]
        for a in self.attempts:
            where = f"machine {a.machine_id}" if a.machine_id is not None else "no machine"
            step = f", last step {a.last_step}" if a.last_step is not None else ""
            lines.append(
                f"  #{a.attempt} {where} instance {a.instance_id}: {a.end_reason} "
                f"(${a.cost_usd:.4f}{step})"
            )
        if self.checkpoints:
            lines.append(f"  latest checkpoint: step {self.checkpoints[-1].step}")
        lines.append(f"  logs: {self.log_url}")
        return "\n".join(lines)


@attrs.frozen(kw_only=True)
class JobEvent:
    """Something that happened to a job, passed to ``on_event`` (and logged).

    Kinds: ``started``, ``adopted``, ``searching``, ``offer_chosen``, ``created``, ``phase``,
    ``running``, ``worker_ready``, ``progress``, ``checkpoint``, ``outbid``, ``bid_raised``,
    ``outbid_waiting``, ``outbid_recovered``, ``host_lost``, ``heartbeat_stale``,
    ``offer_failed``, ``attempt_ended``, ``relaunching``, ``budget_warning``, ``budget_stop``,
    ``timed_out``, ``stopping``, ``destroyed``, ``finished``; ``input_uploaded`` and
    ``input_reused`` when a local input went to (or was found in) the dataset cache.
    """

    kind: str
    """What happened (see above)."""
    message: str
    """One line for people."""
    time: float
    """When (clock time)."""
    run_id: str
    """The run."""
    attempt: int | None = None
    """The attempt number, when it concerns one."""
    instance_id: int | None = None
    """The instance, when it concerns one."""
    machine_id: int | None = None
    """The machine, when it concerns one."""
    step: int | None = None
    """The training step (``progress``, ``checkpoint``, ``worker_ready``)."""


def failed_create_summary(
    number: int,
    *,
    offer: Offer,
    bid: float | None,
    price: ContractPrice,
    instance_id: int | None,
    now: float,
    reason: str,
) -> AttemptSummary:
    return AttemptSummary(
        attempt=number,
        instance_id=instance_id,
        offer_id=offer.id,
        machine_id=offer.machine_id,
        gpu_name=offer.gpu_name,
        rental="interruptible" if bid is not None else "on-demand",
        bid=bid,
        dph_total=price.dph_total,
        created_at=None,
        loading_at=None,
        running_at=None,
        ready_at=None,
        ended_at=now,
        end_reason=reason,
        cost_usd=0.0,
    )


def summary_from_record(rec: AttemptRecord) -> AttemptSummary:
    return AttemptSummary(
        attempt=rec.attempt,
        instance_id=rec.instance_id,
        offer_id=rec.offer_id,
        machine_id=rec.machine_id,
        gpu_name=rec.gpu_name,
        rental=rec.rental,
        bid=rec.bid,
        dph_total=rec.dph_total,
        created_at=rec.created_at,
        loading_at=rec.loading_at,
        running_at=rec.running_at,
        ready_at=rec.ready_at,
        ended_at=rec.ended_at,
        end_reason=rec.end_reason,
        cost_usd=rec.cost_usd,
    )

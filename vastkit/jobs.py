"""Jobs: run a command on rented GPUs until it finishes, surviving preemption.

:func:`run_job` is the orchestrator of the reference architecture. It runs in the user's own
process (a script, a notebook, CI) and never needs a server::

    job = vastkit.Job(
        name="mnist",
        command="python train.py",
        profile="training-standard",
        workdir=".",
        store_url="s3://my-bucket/runs",
    )
    result = vastkit.run_job(job)
    print(result.status, result.total_cost_usd)

The flow (see the design notes, "How a job flows"): check the budget's worst case, write the run
directory (``job.json``, the code bundle), rent the best offer with the label
``vastkit/<run_id>/<attempt>`` and an onstart that starts ``python -m vastkit.worker``, wait
through each phase with its own deadline, then watch the attempt with one paged
``GET /api/v1/instances/`` per poll plus the worker's heartbeat in the store. Each failure class
has its own reaction:

=====================  ==============================================  ==========================
what happened          how it is seen                                  reaction
=====================  ==============================================  ==========================
outbid                 bid instance with the stopped triple            outbid policy: raise the
                                                                       bid up to the cap, wait,
                                                                       else destroy and move
host lost              ``offline``/``unknown`` past a grace period     destroy, block machine,
                                                                       relaunch, resume
stale heartbeat        the heartbeat stopped changing                  same as host lost
stuck phase            a phase deadline, or no worker after running    destroy, block, next offer
user code failed       ``result.json`` with a non-zero exit            terminal unless restarts
                                                                       on errors are allowed
budget                 the budget guard, every poll                    save if possible, destroy,
                                                                       ``budget_exceeded``
max duration           the clock                                       save if possible, destroy,
                                                                       ``timed_out``
orchestrator restart   ``run_job(job, run_id=...)`` again              adopt the run's live
                                                                       instance, never a second
=====================  ==============================================  ==========================

A relaunched attempt runs on another machine; the worker resumes the command from the latest
committed checkpoint, so the work lost is at most one checkpoint interval plus the time to notice.
At most one attempt runs at any time: an attempt's instance is confirmed destroyed before the next
create.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import IO, Any, Literal

import attrs

from vastkit._bootstrap import build_onstart
from vastkit._yaml import Document, did_you_mean, load_document, read_source
from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest, InstanceState, Offer
from vastkit.api.models import Instance as ApiInstance
from vastkit.artifacts import (
    OutputFile,
    check_inputs,
    check_outputs,
    plot_metrics,
    read_outputs,
    resolve_inputs,
)
from vastkit.budget import (
    BudgetAction,
    BudgetGuard,
    Budgets,
    ContractPrice,
    hourly_rate,
    load_budgets,
)
from vastkit.checkpoint import CheckpointInfo, CheckpointManager
from vastkit.clock import Clock, SystemClock
from vastkit.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    GoneError,
    JobError,
    NoOfferError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
)
from vastkit.instance import (
    DEFAULT_IMAGE,
    DestroyFailedError,
    InstanceTimeouts,
    OutbidPolicy,
    PhaseWaiter,
    Progress,
    SignalGuard,
    _record_create_intent,
    destroy_confirmed,
    make_label,
    new_run_id,
    owner_metadata,
    parse_label,
)
from vastkit.ledger import AttemptRecord, Ledger
from vastkit.profiles import GpuProfile, get_profile, load_profiles
from vastkit.rundir import (
    AttemptResult,
    AttemptSettings,
    CheckpointSettings,
    Heartbeat,
    JobSpec,
    MetricRecord,
    OrchestratorBeat,
    ResultStatus,
    RunDir,
    make_bundle,
)
from vastkit.selector import Candidate, build_query, select_offers

__all__ = [
    "AttemptSummary",
    "CostBreakdown",
    "Job",
    "JobEvent",
    "JobResult",
    "JobStatus",
    "JobTimeouts",
    "run_job",
]

logger = logging.getLogger("vastkit.jobs")

JobStatus = Literal["succeeded", "failed", "budget_exceeded", "timed_out", "cancelled"]
"""How a job ended."""

_STATUSES: tuple[str, ...] = ("succeeded", "failed", "budget_exceeded", "timed_out", "cancelled")
_MACHINE_FAILURES = frozenset(
    {
        "provisioning_deadline",
        "loading_deadline",
        "running_deadline",
        "exited",
        "failed",
        "host_lost",
        "heartbeat_stale",
        "worker_never_started",
        "worker_crashed",
    }
)


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, int | float) and value > 0):
        raise ValueError(f"{attribute.name} must be greater than 0 (got {value!r})")


def _optional_positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(instance, attribute, value)


# --------------------------------------------------------------------------------------------
# Settings and the job


@attrs.frozen(kw_only=True)
class JobTimeouts:
    """Deadlines and pacing of a job, in seconds of the orchestrator's clock."""

    poll_interval: float = attrs.field(default=15.0, validator=_positive)
    """Time between two looks at the job (one instance list, one heartbeat read)."""
    provisioning: float = attrs.field(default=600.0, validator=_positive)
    """Longest an instance may wait for its container, per offer tried."""
    loading: float = attrs.field(default=1200.0, validator=_positive)
    """Longest the image pull and container start may take, per offer tried."""
    running: float = attrs.field(default=1800.0, validator=_positive)
    """Longest from create to ``running``, per offer tried."""
    worker_ready: float = attrs.field(default=900.0, validator=_positive)
    """Longest from ``running`` to the worker's first heartbeat (installing vastkit included)."""
    heartbeat_stale: float = attrs.field(default=300.0, validator=_positive)
    """A running attempt whose heartbeat has not changed for this long counts as lost."""
    host_lost_grace: float = attrs.field(default=120.0, validator=_positive)
    """How long ``offline``/``unknown`` is tolerated before the host counts as lost."""
    stop_grace: float = attrs.field(default=60.0, validator=_positive)
    """How long to wait for the worker to save and report after a stop, before destroying."""
    destroy: float = attrs.field(default=900.0, validator=_positive)
    """How long a destroy keeps retrying before it raises."""
    machine_block: float = attrs.field(default=6 * 3600.0, validator=_positive)
    """How long a machine that failed the job stays blocked (in the ledger)."""
    relaunch_delay: float = attrs.field(default=5.0, validator=_positive)
    """Pause before looking for offers again when none qualified or every one failed."""
    no_offer_wait: float = attrs.field(default=900.0, validator=_positive)
    """How long a relaunch keeps looking for a qualifying offer before the job fails."""
    max_duration: float | None = attrs.field(default=None, validator=_optional_positive)
    """The job's wall-clock limit (default: the profile's ``max_duration_hours``)."""
    heartbeat_interval: float = attrs.field(default=10.0, validator=_positive)
    """How often the worker writes its heartbeat."""
    worker_grace: float = attrs.field(default=30.0, validator=_positive)
    """How long the command gets to save after SIGTERM before the worker kills it."""
    orchestrator_timeout: float | None = attrs.field(default=900.0)
    """Silence of the orchestrator after which the worker destroys its own instance."""
    log_flush_seconds: float = attrs.field(default=5.0, validator=_positive)
    """How often the worker uploads the command's output."""

    def instance_timeouts(self) -> InstanceTimeouts:
        """The per-phase deadlines as the lifecycle layer takes them."""
        return InstanceTimeouts(
            provisioning=self.provisioning,
            loading=self.loading,
            running=self.running,
            host_lost_grace=self.host_lost_grace,
            poll_interval=self.poll_interval,
            destroy=self.destroy,
            machine_block=self.machine_block,
        )


def _command(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError(f"command must be a string or a list of strings (got {value!r})")


def _check_command(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (isinstance(value, str) and not value.strip()) or not value:
        raise ValueError("command must not be empty")


def _str_map(value: Any) -> Mapping[str, str]:
    return {str(k): str(v) for k, v in dict(value or {}).items()}


def _paths(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str | os.PathLike):
        return (os.fspath(value),)
    return tuple(os.fspath(v) for v in value)


@attrs.frozen(kw_only=True)
class Job:
    """What to run, where, and within which limits.

    Example::

        job = vastkit.Job(
            name="resnet",
            command=["python", "train.py", "--epochs", "10"],
            profile="training-standard",
            workdir="./src",
            store_url="s3://my-bucket/runs",
            checkpoint=CheckpointSettings(every_steps=500),
            max_cost_usd=20.0,
        )
    """

    name: str = attrs.field()
    """A human name (shown in events, the ledger and the cost report)."""
    command: str | tuple[str, ...] = attrs.field(converter=_command, validator=_check_command)
    """The command the worker runs: an argv list, or a string run by ``/bin/sh -c``."""
    profile: str | GpuProfile
    """A profile name (built-in, or from ``run_job(profiles=...)``) or a
    :class:`~vastkit.profiles.GpuProfile`."""
    store_url: str = attrs.field()
    """Where run directories go (``s3://bucket/runs``, ``gs://...``, a local folder). The run
    directory is ``<store_url>/<run_id>``."""
    image: str | None = None
    """The Docker image (default: the profile's image, else Vast's base image)."""
    workdir: str | None = None
    """A local directory to bundle and run the command in on the worker (None: no bundle)."""
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map)
    """Environment variables for the command (written to ``job.json``; not for secrets)."""
    storage_options: Mapping[str, Any] = attrs.field(factory=dict)
    """fsspec options for the store (credentials, endpoint). They reach the worker as the
    ``VASTKIT_STORAGE_OPTIONS`` variable of the create request, never in ``job.json``."""
    checkpoint: CheckpointSettings = attrs.field(factory=CheckpointSettings)
    """How the worker's :class:`~vastkit.checkpoint.CheckpointManager` is set up."""
    project: str | None = None
    """The project (budgets and cost reports group by it)."""
    team: str | None = None
    """The team (default: the project's team in ``budgets.yaml``)."""
    restarts_on_error: int = 0
    """How many times a command that exits non-zero is started again (from its checkpoint)."""
    max_attempts: int = 20
    """The most instances the job may create in all (offers that failed to start included)."""
    outbid: OutbidPolicy = attrs.field(factory=OutbidPolicy.give_up)
    """What to do when an interruptible instance is outbid. The default moves at once to the
    cheapest other offer: the worker resumes from its checkpoint either way (an outbid container
    is stopped), and a raised bid would be paid for the rest of the attempt (measured in
    ``benchmarks/``: 1.09x the no-preemption cost at one preemption per 2 h when moving, 1.29x
    when raising to the cap). ``OutbidPolicy.raise_bid(...)`` keeps the machine and its disk."""
    timeouts: JobTimeouts = attrs.field(factory=JobTimeouts)
    """Deadlines and pacing."""
    max_cost_usd: float | None = None
    """A cap on this job's spend in dollars (on top of ``budgets.yaml``)."""
    disk_gb: float | None = None
    """Disk in GB (default: the profile's ``disk_gb``)."""
    max_offers: int = 5
    """Offers tried per search before searching again."""
    worker_requirement: str | None = None
    """What the onstart pip-installs when the image lacks this vastkit version (default
    ``vastkit[s3]==<version>``; a wheel URL works too)."""
    inputs: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map)
    """Name to location: a URL the worker fetches, or a local folder (or file) that is uploaded
    once into the content-addressed dataset cache. The worker fetches each before the command
    starts and sets ``VASTKIT_INPUT_<NAME>`` to its local path (see :mod:`vastkit.artifacts`)."""
    outputs: tuple[str, ...] = attrs.field(factory=tuple, converter=_paths)
    """Paths (folders, files, glob patterns) relative to the command's working directory,
    uploaded to ``<run>/outputs/`` when the command ends or is stopped."""
    dataset_cache_url: str | None = None
    """Where local inputs are cached (default: a ``datasets`` folder beside ``store_url``)."""

    @name.validator
    def _check_name(self, attribute: attrs.Attribute[Any], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("name must be a non-empty string")

    @store_url.validator
    def _check_store(self, attribute: attrs.Attribute[Any], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("store_url must be a non-empty string")

    def __attrs_post_init__(self) -> None:
        for field in ("restarts_on_error",):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{field} must be an integer >= 0 (got {value!r})")
        for field in ("max_attempts", "max_offers"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an integer >= 1 (got {value!r})")
        if self.max_cost_usd is not None and not self.max_cost_usd >= 0:
            raise ValueError(f"max_cost_usd must be 0 or more (got {self.max_cost_usd!r})")
        if not isinstance(self.profile, str | GpuProfile):
            raise TypeError("profile must be a profile name or a GpuProfile")
        check_inputs(self.inputs)
        check_outputs(self.outputs)

    def __repr__(self) -> str:
        # storage_options may hold credentials: never shown.
        profile = self.profile if isinstance(self.profile, str) else self.profile.name
        return (
            f"Job(name={self.name!r}, command={self.command!r}, profile={profile!r}, "
            f"store_url={self.store_url!r})"
        )

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> Job:
        """Load a job from a YAML file (or YAML text).

        The keys are the field names of :class:`Job`; ``checkpoint`` and ``timeouts`` are
        mappings of :class:`~vastkit.rundir.CheckpointSettings` and :class:`JobTimeouts` fields,
        ``outbid`` is ``raise``, ``give_up`` or ``{action: wait, wait_s: 300}``, and ``profile``
        may be a name or an inline profile mapping::

            name: mnist
            command: python train.py --epochs 3
            profile: training-standard
            store_url: s3://my-bucket/runs
            workdir: .
            checkpoint: {every_steps: 200, keep_last: 2}
            timeouts: {poll_interval: 20}
            max_cost_usd: 5

        Raises:
            ConfigError: The file is missing, not valid YAML, has an unknown key (the message
                suggests the nearest) or a wrong value; it names the file, line and key.
        """
        text, name = read_source(source, what="job")
        doc = load_document(text, name)
        return _job_from_document(doc)


_JOB_KEYS = tuple(a.name for a in attrs.fields(Job))
_REQUIRED_KEYS = ("name", "command", "profile", "store_url")


def _sub(doc: Document, key: str, cls: type[Any], value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise doc.error(f"'{key}' must be a mapping (got {type(value).__name__})", key)
    names = [a.name for a in attrs.fields(cls)]
    for sub in value:
        if sub not in names:
            raise doc.error(
                f"unknown key '{sub}' in '{key}'{did_you_mean(str(sub), names)}", key, sub
            )
    try:
        return cls(**dict(value))
    except (TypeError, ValueError) as exc:
        raise doc.error(f"'{key}': {exc}", key) from None


def _outbid_from(doc: Document, value: Any) -> OutbidPolicy:
    if isinstance(value, str):
        value = {"action": value}
    if not isinstance(value, Mapping):
        raise doc.error("'outbid' must be raise, wait, give_up or a mapping", "outbid")
    names = ("action", "step", "max_bid", "wait_s")
    for sub in value:
        if sub not in names:
            raise doc.error(
                f"unknown key '{sub}' in 'outbid'{did_you_mean(str(sub), names)}", "outbid", sub
            )
    try:
        return OutbidPolicy(**dict(value))
    except (TypeError, ValueError) as exc:
        raise doc.error(f"'outbid': {exc}", "outbid") from None


def _job_from_document(doc: Document) -> Job:
    data = doc.data
    if not isinstance(data, Mapping):
        raise doc.error("a job file must be a mapping with name, command, profile and store_url")
    for key in data:
        if key not in _JOB_KEYS:
            raise doc.error(f"unknown key '{key}'{did_you_mean(str(key), _JOB_KEYS)}", key)
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise doc.error("missing required key(s): " + ", ".join(f"'{k}'" for k in missing))
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "checkpoint":
            kwargs[key] = _sub(doc, key, CheckpointSettings, value)
        elif key == "timeouts":
            kwargs[key] = _sub(doc, key, JobTimeouts, value)
        elif key == "outbid":
            kwargs[key] = _outbid_from(doc, value)
        elif key == "profile" and isinstance(value, Mapping):
            pname = str(data.get("name", "job")).strip() or "job"
            kwargs[key] = load_profiles({"profiles": {pname: dict(value)}})[pname]
        else:
            kwargs[key] = value
    try:
        return Job(**kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        key = next((k for k in _JOB_KEYS if k in message and k in data), None)
        raise doc.error(f"invalid job: {message}", *((key,) if key else ())) from None


# --------------------------------------------------------------------------------------------
# Results and events


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
        lines = [
            f"job {self.name!r} ({self.run_id}): {self.status} - {self.reason}",
            f"  cost ${self.total_cost_usd:.4f} (GPU ${self.cost.gpu_usd:.4f}, storage "
            f"${self.cost.storage_usd:.4f}) over {len(self.attempts)} attempt(s)",
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


# --------------------------------------------------------------------------------------------
# The orchestrator


class _End(Exception):
    """Ends the job with a status (internal control flow)."""

    def __init__(self, status: JobStatus, reason: str) -> None:
        super().__init__(reason)
        self.status: JobStatus = status
        self.reason = reason


@attrs.define
class _Live:
    """One attempt the orchestrator watches."""

    number: int
    instance_id: int
    offer_id: int | None
    machine_id: int | None
    gpu_name: str | None
    bid: float | None
    bid_cap: float | None
    price: ContractPrice
    ledger_id: int
    created_at: float
    state: InstanceState = InstanceState.PROVISIONING
    last_time: float = 0.0
    gpu_usd: float = 0.0
    storage_usd: float = 0.0
    recorded_at: float = 0.0
    running_at: float | None = None
    ready_at: float | None = None
    beat_key: tuple[Any, ...] | None = None
    beat_changed: float = 0.0
    last_step: int | None = None
    checkpoint_step: int | None = None
    outbid_since: float | None = None
    raised_for_outbid: bool = False
    lost_since: float | None = None
    loading_since: float | None = None
    stopped_since: float | None = None
    resumed_from: int | None = None
    closed: bool = False
    view: ApiInstance | None = None

    def accrue(self, now: float) -> None:
        if self.closed or now <= self.last_time:
            return
        hours = (now - self.last_time) / 3600.0
        rate = hourly_rate(self.price, self.state)
        if rate > 0:
            storage = self.price.storage_dph * hours
            self.storage_usd += storage
            self.gpu_usd += rate * hours - storage
        self.last_time = now

    @property
    def cost(self) -> float:
        return self.gpu_usd + self.storage_usd


class _AttemptOver(Exception):
    """The watched attempt ended (internal control flow)."""

    def __init__(self, reason: str, detail: str = "", *, blame: bool = False) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail
        self.blame = blame


def _resolve_profile(
    profile: str | GpuProfile,
    profiles: str | os.PathLike[str] | Mapping[str, GpuProfile] | None,
) -> GpuProfile:
    if isinstance(profile, GpuProfile):
        return profile
    if profiles is None:
        return get_profile(profile)
    if isinstance(profiles, Mapping):
        if profile in profiles:
            found = profiles[profile]
            if isinstance(found, GpuProfile):
                return found
        raise ConfigError(
            f"unknown profile '{profile}'; known profiles: {', '.join(profiles)}"
            f"{did_you_mean(profile, profiles)}"
        )
    return get_profile(profile, profiles)


class JobRunner:
    """One job driven to its end: launch attempts, watch them, react, settle costs."""

    def __init__(
        self,
        job: Job,
        *,
        client: Client | None,
        ledger: Ledger | None,
        clock: Clock | None,
        on_event: Callable[[JobEvent], None] | None,
        budgets: Budgets | str | os.PathLike[str] | None,
        profiles: str | os.PathLike[str] | Mapping[str, GpuProfile] | None,
        run_id: str | None,
        progress: bool | None,
        progress_file: IO[str] | None,
        instance_source: Callable[[float], Sequence[ApiInstance]] | None = None,
        cancel_check: Callable[[], str | None] | None = None,
        reconcile_first: bool = True,
        launch_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.job = job
        # JobQueue hooks: a shared instance list (one paged call per poll for many runners),
        # a cancel check run on every poll, and no reconcile (the queue's leases decide).
        self.instance_source = instance_source
        self.cancel_check = cancel_check
        self.reconcile_first = reconcile_first
        self.launch_lock = launch_lock
        self.detached = False
        """Set by JobQueue when another driver took the job over: unwind, touching nothing."""
        self.profile = _resolve_profile(job.profile, profiles)
        self.t = job.timeouts
        self._owns_client = client is None
        self.client = client if client is not None else Client()
        client_clock = getattr(self.client, "clock", None)
        self.clock: Clock = clock or (
            client_clock if isinstance(client_clock, Clock) else SystemClock()
        )
        self._owns_ledger = ledger is None
        self.ledger = ledger if ledger is not None else Ledger(clock=self.clock)
        self._on_event = on_event
        self.adopting = run_id is not None and self.ledger.get_run(run_id) is not None
        self.run_id = run_id or new_run_id(self.clock)
        make_label(self.run_id, 1)  # validates the run id
        self.run_url = f"{job.store_url.rstrip('/')}/{self.run_id}"
        self.rundir = RunDir(self.run_url, job.storage_options, clock=self.clock)
        if isinstance(budgets, str | os.PathLike):
            budgets = load_budgets(budgets)
        self.guard = BudgetGuard(
            budgets or Budgets(),
            self.ledger,
            project=job.project,
            team=job.team,
            run_id=self.run_id,
            job_limit_usd=job.max_cost_usd,
            poll_interval_s=self.t.poll_interval,
            clock=self.clock,
        )
        self.max_duration = (
            self.t.max_duration
            if self.t.max_duration is not None
            else self.profile.max_duration_hours * 3600.0
        )
        self.disk_gb = float(job.disk_gb if job.disk_gb is not None else self.profile.disk_gb)
        self.image = job.image or self.profile.image or DEFAULT_IMAGE
        self.progress = Progress(progress, file=progress_file)
        self.started_at = self.clock.now()
        self.attempt_no = 0
        self.summaries: dict[int, AttemptSummary] = {}
        self.live: _Live | None = None
        self.avoid: dict[int, float] = {}
        """Machines this job stays off (outbid there, offer gone) until the time given."""
        self.user_errors = 0
        self.beat_seq = 0
        self.final: AttemptResult | None = None
        self.last_step: int | None = None
        self._last_line = ""

    # -- plumbing ------------------------------------------------------------------------------

    def emit(
        self,
        kind: str,
        message: str,
        *,
        live: _Live | None = None,
        step: int | None = None,
        level: int = logging.INFO,
    ) -> None:
        event = JobEvent(
            kind=kind,
            message=message,
            time=self.clock.now(),
            run_id=self.run_id,
            attempt=live.number if live is not None else None,
            instance_id=live.instance_id if live is not None else None,
            machine_id=live.machine_id if live is not None else None,
            step=step,
        )
        logger.log(level, "%s: %s", self.run_id, message)
        self.progress.update(message)
        if self._on_event is not None:
            self._on_event(event)

    def beat(self) -> None:
        """Refresh ``orchestrator.json`` (the worker's backstop watches it)."""
        self.beat_seq += 1
        try:
            self.rundir.write_orchestrator(
                OrchestratorBeat(
                    time=self.clock.now(),
                    seq=self.beat_seq,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                )
            )
        except Exception as exc:  # a store hiccup must not kill the orchestrator
            logger.warning("could not refresh orchestrator.json: %s", exc)

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> JobResult:
        status: JobStatus = "failed"
        reason = ""
        signals = SignalGuard()  # SIGTERM unwinds like Ctrl-C, so the instance is destroyed
        signals.install()
        try:
            try:
                self.start()
                status, reason = self.loop()
            except _End as end:
                status, reason = end.status, end.reason
            except BaseException as exc:
                if self.detached:
                    raise
                with signals.deferring():
                    self.cleanup(reason=f"orchestrator: {type(exc).__name__}")
                    interrupted = isinstance(exc, KeyboardInterrupt | SystemExit)
                    self.end_run("cancelled" if interrupted else "failed")
                self.progress.close()
                raise
            with signals.deferring():
                self.cleanup(reason=status)
        finally:
            signals.uninstall()
        self.end_run(status)
        result = self.result(status, reason)
        self.emit("finished", f"job {self.job.name!r} {status}: {reason}")
        self.progress.close(
            f"job {self.job.name!r} {status} after {len(result.attempts)} attempt(s); "
            f"cost ${result.total_cost_usd:.4f}"
        )
        return result

    def start(self) -> None:
        job = self.job
        metadata = {"kind": "job", "owner": owner_metadata(), "run_url": self.run_url}
        if self.adopting:
            self.ledger.update_run(self.run_id, status="running", ended_at=None, metadata=metadata)
            prior = self.ledger.attempts(self.run_id)
            self.attempt_no = max((a.attempt for a in prior), default=0)
            for a in prior:
                self.summaries[a.attempt] = _summary_from_record(a)
            first = self.ledger.get_run(self.run_id)
            if first is not None:
                self.started_at = first.created_at
        else:
            # A store the worker cannot write to would fail only after money was spent: probe
            # it first, with the options exactly as the worker receives them.
            from vastkit.health import check_store_writable

            check_store_writable(job.store_url, job.storage_options, run_id=self.run_id)
            try:
                self.guard.preflight(self._remaining_profile())
            except BudgetExceededError:
                raise
            self.ledger.record_run(
                self.run_id,
                name=job.name,
                project=job.project,
                team=self.guard.team,
                profile=self.profile.name,
                status="running",
                metadata=metadata,
                at=self.started_at,
            )
        self.emit(
            "started",
            f"job {job.name!r}: run {self.run_id} on profile {self.profile.name!r}, "
            f"run directory {self.run_url}",
        )
        if not self.adopting or self.rundir.read_job() is None:
            self.write_run_directory()
        self.beat()
        from vastkit.reconcile import reconcile

        if self.reconcile_first:
            try:
                report = reconcile(self.client, self.ledger, clock=self.clock)
            except APIError as exc:
                logger.warning("reconcile before the job failed: %s", exc)
            else:
                for action in report.destroyed:
                    logger.warning("reconcile: %s", action)
        if self.adopting:
            self.adopt()

    def write_run_directory(self) -> None:
        job = self.job
        has_bundle = False
        if job.workdir is not None:
            data = make_bundle(job.workdir)
            self.rundir.write_bundle(data)
            has_bundle = True
            logger.info("uploaded the code bundle (%d bytes)", len(data))
        inputs: dict[str, str] = {}
        if job.inputs:
            inputs, uploads = resolve_inputs(
                job.inputs,
                store_url=job.store_url,
                storage_options=job.storage_options,
                cache_url=job.dataset_cache_url,
                progress=None if self.progress._enabled else False,
                clock=self.clock,
            )
            for name, up in uploads.items():
                done = "uploaded" if up.uploaded else "found in the dataset cache (not uploaded)"
                self.emit(
                    "input_uploaded" if up.uploaded else "input_reused",
                    f"input {name!r}: {up.files} file(s), {up.total_bytes} bytes, {done}: {up.url}",
                )
        deadline = time.time() + self.max_duration + 2 * self.t.poll_interval
        spec = JobSpec(
            run_id=self.run_id,
            command=job.command,
            env=dict(job.env),
            checkpoint=job.checkpoint,
            attempt=AttemptSettings(
                heartbeat_interval=self.t.heartbeat_interval,
                grace_period=self.t.worker_grace,
                deadline=deadline,
                orchestrator_timeout=self.t.orchestrator_timeout,
                api_base_url=self.client.base_url,
                log_flush_seconds=self.t.log_flush_seconds,
            ),
            has_code_bundle=has_bundle,
            inputs=inputs,
            outputs=tuple(job.outputs),
            name=job.name,
            created_at=time.time(),
        )
        self.rundir.write_job(spec)

    def adopt(self) -> None:
        """After an orchestrator restart: adopt the run's live instance, destroy the others."""
        ours = [(inst, number) for inst, number in self.list_ours()]
        records = {a.attempt: a for a in self.ledger.attempts(self.run_id)}
        ours.sort(key=lambda pair: pair[1])
        keep: tuple[ApiInstance, int] | None = None
        for inst, number in reversed(ours):
            rec = records.get(number)
            if rec is not None and rec.ended_at is None and keep is None:
                keep = (inst, number)
        for inst, number in ours:
            if keep is not None and inst.id == keep[0].id:
                continue
            logger.warning("destroying instance %s of attempt %s (not adoptable)", inst.id, number)
            destroy_confirmed(self.client, inst.id, clock=self.clock, deadline=self.t.destroy)
            rec = records.get(number)
            if rec is not None and rec.ended_at is None:
                now = self.clock.now()
                self.ledger.add_cost_sample(rec.id, state="destroyed", rate_dph=0.0, at=now)
                self.ledger.update_attempt(
                    rec.id, end_reason="orphaned", ended_at=now, destroyed_at=now
                )
        for number, rec in records.items():
            if rec.ended_at is None and (keep is None or number != keep[1]):
                now = self.clock.now()
                self.ledger.update_attempt(rec.id, end_reason="vanished", ended_at=now)
        # The previous orchestrator may have died between its create and the ledger write: its
        # intents are closed here, with the instance the list found for their label (if any).
        by_label = {inst.label: inst.id for inst, _ in ours if inst.label}
        for intent in self.ledger.pending_intents():
            if intent.run_id != self.run_id:
                continue
            found = by_label.get(intent.label)
            self.ledger.complete_intent(
                intent.id,
                instance_id=found,
                error=None if found is not None else "no instance found after a restart",
                at=self.clock.now(),
            )
        if keep is None:
            return
        inst, number = keep
        rec = records[number]
        if rec.instance_id is None:
            self.ledger.update_attempt(rec.id, instance_id=inst.id)
        price = ContractPrice(
            gpu_dph=(rec.bid if rec.bid is not None else rec.dph_base) or 0.0,
            storage_dph=rec.storage_dph or 0.0,
        )
        now = self.clock.now()
        live = _Live(
            number=number,
            instance_id=inst.id,
            offer_id=rec.offer_id,
            machine_id=rec.machine_id,
            gpu_name=rec.gpu_name,
            bid=rec.bid,
            bid_cap=self._bid_cap_from(rec.storage_dph or 0.0) if rec.bid is not None else None,
            price=price,
            ledger_id=rec.id,
            created_at=rec.created_at or now,
            state=inst.state,
            last_time=now,
            recorded_at=now,
            running_at=rec.running_at,
            ready_at=rec.ready_at,
            beat_changed=now,
        )
        self.ledger.add_cost_sample(
            rec.id, state=inst.state.value, rate_dph=hourly_rate(price, inst.state), at=now
        )
        self.live = live
        self.emit(
            "adopted",
            f"adopted instance {inst.id} (attempt {number}) left by the previous orchestrator",
            live=live,
        )

    def ended_while_away(self) -> tuple[JobStatus, str] | None:
        """After a restart with no instance to adopt: the end the run's result already says.

        The previous orchestrator may have died after destroying the finished attempt's instance
        but before recording the end; ``result.json`` then still tells how the job ended.
        """
        if not self.adopting or self.attempt_no == 0:
            return None
        try:
            final = self.rundir.read_result()
        except (JobError, OSError):
            return None
        if final is None or final.attempt != self.attempt_no:
            return None
        self.final = final
        return self.end_from_result(final)

    def loop(self) -> tuple[JobStatus, str]:
        ended = self.ended_while_away() if self.live is None else None
        if ended is not None:
            return ended
        while True:
            try:
                if self.live is None:
                    self.launch()
                live = self.live
                assert live is not None
                try:
                    if live.running_at is None or live.state is not InstanceState.RUNNING:
                        self.wait_running(live)
                    self.watch(live)
                except _AttemptOver as over:
                    outcome = self.finish_attempt(live, over)
                    if outcome is not None:
                        return outcome
            except _End as end:
                if self.live is not None:
                    self.stop_attempt(self.live, end.status)
                raise

    # -- limits --------------------------------------------------------------------------------

    def _remaining_profile(self) -> GpuProfile:
        left = self.max_duration - (self.clock.now() - self.started_at)
        hours = max(left, 60.0) / 3600.0
        return attrs.evolve(self.profile, max_duration_hours=hours)

    def check_limits(self, live: _Live | None) -> None:
        if self.cancel_check is not None:
            why = self.cancel_check()
            if why is not None:
                raise _End("cancelled", why)
        now = self.clock.now()
        if now - self.started_at >= self.max_duration:
            raise _End(
                "timed_out",
                f"the job ran for {now - self.started_at:.0f} s, its limit is "
                f"{self.max_duration:.0f} s",
            )
        rate = 0.0
        unrecorded = 0.0
        if live is not None:
            live.accrue(now)
            rate = hourly_rate(live.price, live.state)
            unrecorded = hourly_rate(live.price, live.state) * max(now - live.recorded_at, 0.0)
            unrecorded /= 3600.0
        decision = self.guard.check(rate, unrecorded_usd=unrecorded)
        if decision.action is BudgetAction.STOP:
            self.emit("budget_stop", decision.message, live=live, level=logging.WARNING)
            raise _End("budget_exceeded", decision.message)
        if decision.action is BudgetAction.WARN:
            self.emit("budget_warning", decision.message, live=live, level=logging.WARNING)

    # -- instances -----------------------------------------------------------------------------

    def list_ours(self, fresh_after: float = -math.inf) -> list[tuple[ApiInstance, int]]:
        """One paged list call: every instance labelled for this run, with its attempt number.

        With a shared ``instance_source`` the list may be another runner's, taken after
        ``fresh_after`` (so an instance created since is never read as vanished).
        """
        found = []
        listed = (
            self.instance_source(fresh_after)
            if self.instance_source is not None
            else self.client.list_instances()
        )
        for inst in listed:
            parsed = parse_label(inst.label)
            if parsed is not None and parsed[0] == self.run_id:
                found.append((inst, parsed[1]))
        return found

    def poll(self, live: _Live) -> ApiInstance | None:
        """The current view of ``live``'s instance; strays of this run are destroyed."""
        view: ApiInstance | None = None
        for inst, number in self.list_ours(live.created_at):
            if inst.id == live.instance_id:
                view = inst
            elif number != live.number:
                logger.warning(
                    "instance %s (attempt %s) of this run is not the live attempt: destroying it",
                    inst.id,
                    number,
                )
                destroy_confirmed(self.client, inst.id, clock=self.clock, deadline=self.t.destroy)
        return view

    def observe(self, live: _Live, view: ApiInstance) -> None:
        live.view = view
        live.accrue(self.clock.now())
        state = view.state
        if state is not live.state:
            live.state = state
            self.sample(live)

    def sample(self, live: _Live, *, destroyed_at: float | None = None) -> None:
        """Settle the attempt's cost in the ledger up to now and record its rate from now on."""
        now = max(destroyed_at if destroyed_at is not None else self.clock.now(), live.recorded_at)
        if destroyed_at is not None:
            self.ledger.add_cost_sample(live.ledger_id, state="destroyed", rate_dph=0.0, at=now)
        else:
            self.ledger.add_cost_sample(
                live.ledger_id,
                state=live.state.value,
                rate_dph=hourly_rate(live.price, live.state),
                at=now,
            )
        live.recorded_at = now

    def stay_off(self, machine_id: int | None) -> None:
        """Do not rent ``machine_id`` again in this job for ``machine_block`` seconds."""
        if machine_id is not None:
            self.avoid[machine_id] = self.clock.now() + self.t.machine_block

    def _bid_cap_from(self, storage_dph: float) -> float:
        cap = self.profile.max_dph - storage_dph
        if self.profile.max_bid is not None:
            cap = min(cap, self.profile.max_bid)
        # OutbidPolicy rounds bids to 6 decimals: a cap with more digits would never be
        # "reached" and the policy would raise to the same bid forever.
        return math.floor(self.job.outbid.cap(cap) * 1e6) / 1e6

    def launch(self) -> None:
        """Rent the next attempt: search, rank, create; the first one that is created wins."""
        looked_since = self.clock.now()
        first = not self.summaries
        while True:
            self.check_limits(None)
            try:
                self.guard.preflight(self._remaining_profile())
            except BudgetExceededError as exc:
                raise _End("budget_exceeded", str(exc)) from None
            self.beat()
            self.emit("searching", f"searching offers for profile {self.profile.name!r}")
            # Under JobQueue, drivers of one process search and rent one at a time, so two of
            # them never race for the same offer.
            with self.launch_lock if self.launch_lock is not None else contextlib.nullcontext():
                now = self.clock.now()
                blocked = self.ledger.blocked_machines(now=now) | {
                    m for m, until in self.avoid.items() if until > now
                }
                try:
                    offers = self.client.search_offers(build_query(self.profile))
                    candidates = select_offers(self.profile, offers, now=now, blocked=blocked)
                except NoOfferError as exc:
                    if first and not blocked:
                        raise
                    if self.clock.now() - looked_since >= self.t.no_offer_wait:
                        raise _End("failed", f"no offer to relaunch on: {exc}") from None
                    self.emit("searching", f"no offer qualifies yet ({exc}); waiting")
                    self.clock.sleep(self.t.relaunch_delay)
                    continue
                except (AuthenticationError, PermissionDeniedError):
                    raise
                except APIError as exc:
                    logger.warning("offer search failed: %s; retrying", exc)
                    self.clock.sleep(self.t.relaunch_delay)
                    continue
                for candidate in candidates[: self.job.max_offers]:
                    if self.try_offer(candidate):
                        return
            self.emit("relaunching", "every offer tried failed to start; searching again")
            self.clock.sleep(self.t.relaunch_delay)

    def try_offer(self, candidate: Candidate) -> bool:
        """One create on ``candidate``; True when an instance exists (self.live is set)."""
        if self.attempt_no >= self.job.max_attempts:
            raise _End("failed", f"gave up after {self.attempt_no} attempts (max_attempts)")
        offer = candidate.offer
        self.attempt_no += 1
        number = self.attempt_no
        label = make_label(self.run_id, number)
        bid = candidate.bid
        price = ContractPrice.from_offer(offer, disk_gb=self.disk_gb, bid=bid)
        env: dict[str, str] = {}
        if self.job.storage_options:
            import json

            env["VASTKIT_STORAGE_OPTIONS"] = json.dumps(
                dict(self.job.storage_options), separators=(",", ":")
            )
        onstart = build_onstart(
            run_url=self.run_url, attempt=number, requirement=self.job.worker_requirement
        )
        request = CreateInstanceRequest(
            image=self.image,
            disk_gb=self.disk_gb,
            env=env,
            onstart=onstart,
            label=label,
            price=bid,
        )
        intent, ledger_id = _record_create_intent(
            self.ledger,
            self.run_id,
            number,
            offer=offer,
            label=label,
            bid=bid,
            price=price,
            disk_gb=self.disk_gb,
            at=self.clock.now(),
        )
        self.emit(
            "offer_chosen",
            f"attempt {number}: renting offer {offer.id} on machine {offer.machine_id} "
            f"({offer.gpu_name}, {price.dph_total:.3f} $/h"
            f"{f', bid {bid:.3f}' if bid is not None else ''})",
        )
        created = self._create(offer, request, label, number)
        now = self.clock.now()
        if isinstance(created, str):
            self.ledger.complete_intent(intent, error=created, at=now)
            self.ledger.update_attempt(ledger_id, end_reason=created.split(":")[0], ended_at=now)
            self.summaries[number] = _summary(
                number, offer=offer, bid=bid, price=price, instance_id=None, now=now, reason=created
            )
            self.emit("offer_failed", f"attempt {number}: {created}")
            return False
        self.ledger.complete_intent(intent, instance_id=created, at=now)
        self.ledger.update_attempt(ledger_id, instance_id=created, created_at=now)
        self.ledger.add_cost_sample(
            ledger_id, state=InstanceState.PROVISIONING.value, rate_dph=price.storage_dph, at=now
        )
        self.live = _Live(
            number=number,
            instance_id=created,
            offer_id=offer.id,
            machine_id=offer.machine_id,
            gpu_name=offer.gpu_name,
            bid=bid,
            bid_cap=self._bid_cap_from(price.storage_dph) if bid is not None else None,
            price=price,
            ledger_id=ledger_id,
            created_at=now,
            last_time=now,
            recorded_at=now,
            beat_changed=now,
        )
        self.emit("created", f"attempt {number}: instance {created} created", live=self.live)
        return True

    def _create(
        self, offer: Offer, request: CreateInstanceRequest, label: str, number: int
    ) -> int | str:
        """Create, never leaving two instances for one attempt: a create that may have been
        sent is retried only after listing by label proved it rented nothing."""
        last: Exception | None = None
        for try_no in range(3):
            if try_no:
                found = self._by_label(label)
                if found:
                    for extra in found[1:]:
                        destroy_confirmed(
                            self.client, extra, clock=self.clock, deadline=self.t.destroy
                        )
                    return found[0]
                self.clock.sleep(2.0 * try_no)
            try:
                return self.client.create_instance(offer.id, request).id
            except APIStatusError as exc:
                contract = exc.new_contract
                if contract is not None:
                    destroy_confirmed(
                        self.client, contract, clock=self.clock, deadline=self.t.destroy
                    )
                    outcome = "bid_too_low" if request.price is not None else "create_failed"
                    return f"{outcome}: {exc.msg or exc} (instance {contract} destroyed)"
                if isinstance(exc, NotFoundError | GoneError):
                    self.stay_off(offer.machine_id)
                    return f"offer_gone: {exc.msg or exc}"
                if isinstance(exc, ServerError | RateLimitError):
                    last = exc
                    continue
                if isinstance(exc, AuthenticationError | PermissionDeniedError):
                    raise
                self.stay_off(offer.machine_id)
                return f"create_failed: {exc.msg or exc}"
            except (APIConnectionError, ResponseValidationError) as exc:
                # no answer, or a garbled one: the create may have gone through
                last = exc
                continue
        found = self._by_label(label)
        if found:
            for extra in found[1:]:
                destroy_confirmed(self.client, extra, clock=self.clock, deadline=self.t.destroy)
            return found[0]
        return f"create_failed: {last}"

    def _by_label(self, label: str) -> list[int]:
        """The ids of the instances carrying ``label``, listed until the API answers.

        A create whose answer was lost may have rented: until a list proves otherwise, no other
        create may be sent. The list is retried (beyond the client's own retries) for up to
        ``timeouts.destroy`` seconds; after that the last error is raised, and the create intent
        left open in the ledger makes the next reconcile clean up.
        """
        deadline = self.clock.now() + self.t.destroy
        while True:
            try:
                return sorted(i.id for i in self.client.list_instances(label=label))
            except (AuthenticationError, PermissionDeniedError):
                raise
            except APIError as exc:
                if self.clock.now() >= deadline:
                    raise
                logger.warning("listing instances by label failed (%s); trying again", exc)
                self.clock.sleep(self.t.poll_interval)

    # -- waiting and watching ------------------------------------------------------------------

    def wait_running(self, live: _Live) -> None:
        """Wait through provisioning and loading with a deadline per phase."""
        seen_phase: list[str] = [""]

        def on_state(view: ApiInstance, phase: str, in_phase: float) -> None:
            self.observe(live, view)
            now = self.clock.now()
            if phase != seen_phase[0]:
                seen_phase[0] = phase
                if phase == "loading":
                    self.ledger.mark_phase(live.ledger_id, "loading", at=now)
                self.emit("phase", f"instance {live.instance_id}: {phase}", live=live)
            self.check_limits(live)
            self.beat()

        waiter = PhaseWaiter(
            lambda: self.poll(live),
            clock=self.clock,
            timeouts=self.t.instance_timeouts(),
            on_state=on_state,
            expect_bid_stop=live.bid is not None,
        )
        outcome = waiter.wait()
        if not outcome.ok:
            if outcome.reason == "outbid":
                self.stay_off(live.machine_id)
            raise _AttemptOver(outcome.reason, outcome.detail, blame=outcome.blame_machine)
        now = self.clock.now()
        if outcome.instance is not None:
            self.observe(live, outcome.instance)
        live.running_at = now
        live.beat_changed = now
        self.ledger.mark_phase(live.ledger_id, "running", at=now)
        self.emit(
            "running",
            f"instance {live.instance_id} is running; waiting for the worker",
            live=live,
        )

    def watch(self, live: _Live) -> None:
        """Watch a running attempt until it ends (raises :class:`_AttemptOver`)."""
        while True:
            self.beat()
            try:
                view = self.poll(live)
            except (AuthenticationError, PermissionDeniedError):
                raise
            except APIError as exc:
                logger.warning("listing instances failed (%s); looking again later", exc)
                view = live.view
                if view is None:
                    self.check_limits(live)
                    self.clock.sleep(self.t.poll_interval)
                    continue
            now = self.clock.now()
            if view is not None:
                self.observe(live, view)
            # a result committed before the cap or the deadline ends the job as it says
            self.read_worker(live, now)
            self.check_limits(live)
            if view is None:
                raise _AttemptOver("vanished", "the instance no longer exists")
            self.react(live, view, now)
            self.status_line(live)
            self.clock.sleep(self.t.poll_interval)

    def read_worker(self, live: _Live, now: float) -> None:
        """Read the job's result and the attempt's heartbeat from the store."""
        try:
            result = self.rundir.read_result()
        except (JobError, OSError) as exc:
            logger.warning("could not read result.json: %s", exc)
            result = None
        if result is not None and result.attempt == live.number:
            self.final = result
            raise _AttemptOver("result", result.reason or result.status.value)
        try:
            beat = self.rundir.read_heartbeat(live.number)
        except (JobError, OSError) as exc:
            logger.warning("could not read the heartbeat: %s", exc)
            return
        if beat is None:
            return
        key = (beat.time, beat.step, beat.phase, beat.checkpoint_step, beat.message)
        if key != live.beat_key:
            live.beat_key = key
            live.beat_changed = now
            self.on_heartbeat(live, beat, now)

    def on_heartbeat(self, live: _Live, beat: Heartbeat, now: float) -> None:
        if live.ready_at is None:
            live.ready_at = now
            self.ledger.mark_phase(live.ledger_id, "ready", at=now)
            self.emit(
                "worker_ready",
                f"attempt {live.number}: the worker runs the command on machine {live.machine_id}",
                live=live,
                step=beat.step,
            )
        if beat.step is not None and beat.step != live.last_step:
            if live.last_step is None and live.resumed_from is None:
                live.resumed_from = beat.step
            live.last_step = beat.step
            self.last_step = beat.step
            self.emit(
                "progress",
                f"attempt {live.number}: step {beat.step}",
                live=live,
                step=beat.step,
                level=logging.DEBUG,
            )
        if beat.checkpoint_step is not None and beat.checkpoint_step != live.checkpoint_step:
            live.checkpoint_step = beat.checkpoint_step
            self.emit(
                "checkpoint",
                f"attempt {live.number}: checkpoint committed at step {beat.checkpoint_step}",
                live=live,
                step=beat.checkpoint_step,
            )

    def react(self, live: _Live, view: ApiInstance, now: float) -> None:
        state = view.state
        if state is not InstanceState.OUTBID and live.outbid_since is not None:
            live.outbid_since = None
            live.raised_for_outbid = False
            live.beat_changed = now
            self.emit("outbid_recovered", f"instance {live.instance_id} runs again", live=live)
        if state not in (InstanceState.OFFLINE, InstanceState.UNKNOWN):
            live.lost_since = None
        if state is not InstanceState.LOADING:
            live.loading_since = None
        if state is not InstanceState.STOPPED:
            live.stopped_since = None
        if state is InstanceState.RUNNING:
            if live.ready_at is None:
                if now - (live.running_at or now) >= self.t.worker_ready:
                    raise _AttemptOver(
                        "worker_never_started",
                        f"no heartbeat {self.t.worker_ready:.0f} s after the container ran",
                        blame=True,
                    )
            elif now - live.beat_changed >= self.t.heartbeat_stale:
                self.emit(
                    "heartbeat_stale",
                    f"attempt {live.number}: no heartbeat for {now - live.beat_changed:.0f} s",
                    live=live,
                    level=logging.WARNING,
                )
                raise _AttemptOver(
                    "heartbeat_stale",
                    f"the worker's heartbeat did not change for {now - live.beat_changed:.0f} s",
                    blame=True,
                )
            return
        if state is InstanceState.OUTBID:
            self.on_outbid(live, view, now)
            return
        if state in (InstanceState.OFFLINE, InstanceState.UNKNOWN):
            if live.lost_since is None:
                live.lost_since = now
                self.emit(
                    "host_lost",
                    f"instance {live.instance_id}: host is {state.value}; "
                    f"grace {self.t.host_lost_grace:.0f} s",
                    live=live,
                    level=logging.WARNING,
                )
            if now - live.lost_since >= self.t.host_lost_grace:
                raise _AttemptOver(
                    "host_lost",
                    f"the host was {state.value} for {now - live.lost_since:.0f} s",
                    blame=True,
                )
            live.beat_changed = now  # no heartbeat is expected from a frozen host
            return
        if state is InstanceState.EXITED:
            self.read_worker(live, now)
            try:
                attempt_result = self.rundir.read_attempt_result(live.number)
            except (JobError, OSError):
                attempt_result = None
            if attempt_result is not None and attempt_result.status in (
                ResultStatus.PREEMPTED,
                ResultStatus.ABANDONED,
            ):
                raise _AttemptOver("preempted", attempt_result.reason or "")
            if attempt_result is not None and attempt_result.status is ResultStatus.FAILED:
                self.final = attempt_result
                raise _AttemptOver("result", attempt_result.reason or "the worker failed")
            raise _AttemptOver(
                "worker_crashed", "the container exited without a result", blame=True
            )
        if state is InstanceState.LOADING:
            if live.loading_since is None:
                live.loading_since = now
            elif now - live.loading_since >= self.t.loading:
                raise _AttemptOver("loading_deadline", "stuck restarting", blame=True)
            live.beat_changed = now
            return
        if state is InstanceState.FAILED:
            raise _AttemptOver("failed", view.status_msg or "the container failed", blame=True)
        # stopped (by someone else, or scheduling) or provisioning again
        if live.stopped_since is None:
            live.stopped_since = now
        elif now - live.stopped_since >= self.t.host_lost_grace:
            raise _AttemptOver("stopped", f"the instance stayed {state.value}")
        live.beat_changed = now

    def on_outbid(self, live: _Live, view: ApiInstance, now: float) -> None:
        live.beat_changed = now
        if live.outbid_since is None:
            live.outbid_since = now
            self.emit(
                "outbid",
                f"instance {live.instance_id} on machine {live.machine_id} was outbid "
                f"(our bid {live.bid or 0:.4f} $/h)",
                live=live,
                level=logging.WARNING,
            )
        assert live.bid is not None
        assert live.bid_cap is not None
        decision = self.job.outbid.decide(
            outbid_for=now - live.outbid_since,
            current_bid=live.bid,
            min_bid=view.min_bid,
            cap=live.bid_cap,
            raised_at_current=live.raised_for_outbid,
        )
        if decision.action == "raise" and decision.bid is not None:
            try:
                self.client.change_bid(live.instance_id, decision.bid)
            except (AuthenticationError, PermissionDeniedError):
                raise
            except APIError as exc:
                logger.warning("raising the bid failed: %s", exc)
                return
            live.accrue(self.clock.now())
            live.bid = decision.bid
            live.price = attrs.evolve(live.price, gpu_dph=decision.bid)
            live.raised_for_outbid = True
            self.ledger.update_attempt(live.ledger_id, bid=decision.bid)
            self.sample(live)
            self.emit("bid_raised", f"instance {live.instance_id}: {decision.reason}", live=live)
        elif decision.action == "give_up":
            if live.machine_id is not None:
                self.stay_off(live.machine_id)
            raise _AttemptOver("outbid", decision.reason)
        else:
            self.emit(
                "outbid_waiting",
                f"instance {live.instance_id}: {decision.reason}",
                live=live,
                level=logging.DEBUG,
            )

    def status_line(self, live: _Live) -> None:
        step = f", step {live.last_step}" if live.last_step is not None else ""
        ckpt = f", checkpoint {live.checkpoint_step}" if live.checkpoint_step is not None else ""
        spent = self.spent(live)
        line = (
            f"{self.job.name}: attempt {live.number} {live.state.value} on machine "
            f"{live.machine_id}{step}{ckpt}; ${spent:.4f} so far"
        )
        if line != self._last_line:
            self._last_line = line
            self.progress.update(line)

    def spent(self, live: _Live | None) -> float:
        total = sum(
            s.cost_usd for n, s in self.summaries.items() if live is None or n != live.number
        )
        return total + (live.cost if live is not None else 0.0)

    # -- ending attempts -----------------------------------------------------------------------

    def wait_for_save(self, live: _Live) -> None:
        """Give the worker up to ``stop_grace`` to save and write its attempt result."""
        deadline = self.clock.now() + self.t.stop_grace
        step = min(self.t.poll_interval, 2.0)
        while self.clock.now() < deadline:
            try:
                if self.rundir.read_attempt_result(live.number) is not None:
                    return
            except (JobError, OSError):
                return
            self.beat()
            self.clock.sleep(step)

    def stop_attempt(self, live: _Live, status: str) -> None:
        """Budget or duration: stop the container so the worker saves, then destroy."""
        if live.closed:
            return
        if live.state is InstanceState.RUNNING and live.ready_at is not None:
            self.emit(
                "stopping",
                f"stopping instance {live.instance_id} so the command can save a checkpoint",
                live=live,
            )
            try:
                self.client.stop_instance(live.instance_id)
            except APIError as exc:
                logger.warning("stopping instance %s failed: %s", live.instance_id, exc)
            else:
                live.accrue(self.clock.now())
                live.state = InstanceState.STOPPED
                self.sample(live)
                self.wait_for_save(live)
        self.destroy(live, status)

    def destroy(self, live: _Live, reason: str, *, blame: bool = False, detail: str = "") -> None:
        if live.closed:
            return
        gone_at = destroy_confirmed(
            self.client, live.instance_id, clock=self.clock, deadline=self.t.destroy
        )
        live.accrue(gone_at)
        live.closed = True
        self.sample(live, destroyed_at=gone_at)
        self.ledger.update_attempt(
            live.ledger_id, end_reason=reason, ended_at=gone_at, destroyed_at=gone_at
        )
        if blame and live.machine_id is not None:
            self.ledger.block_machine(
                live.machine_id,
                reason=f"{reason}: {detail}" if detail else reason,
                for_s=self.t.machine_block,
                at=gone_at,
            )
        record = self.ledger.get_attempt(live.ledger_id)
        cost = record.cost_usd if record is not None else live.cost
        self.summaries[live.number] = AttemptSummary(
            attempt=live.number,
            instance_id=live.instance_id,
            offer_id=live.offer_id,
            machine_id=live.machine_id,
            gpu_name=live.gpu_name,
            rental="interruptible" if live.bid is not None else "on-demand",
            bid=live.bid,
            dph_total=live.price.dph_total,
            created_at=live.created_at,
            loading_at=record.loading_at if record is not None else None,
            running_at=live.running_at,
            ready_at=live.ready_at,
            ended_at=gone_at,
            end_reason=reason,
            cost_usd=cost,
            last_step=live.last_step,
            checkpoint_step=live.checkpoint_step,
        )
        if self.live is live:
            self.live = None
        self.emit(
            "destroyed",
            f"attempt {live.number}: instance {live.instance_id} destroyed ({reason}); "
            f"it cost ${cost:.4f}" + (", machine blocked" if blame else ""),
            live=live,
        )

    def end_from_result(self, final: AttemptResult) -> tuple[JobStatus, str] | None:
        """The job's end for the worker's ``result.json``; None to restart a failed command."""
        status = final.status
        if status is ResultStatus.SUCCEEDED:
            return "succeeded", final.reason or "the command exited 0"
        if status is ResultStatus.CANCELLED:
            return "cancelled", final.reason or "cancelled"
        if status is ResultStatus.TIMED_OUT:
            return "timed_out", final.reason or "the job's deadline passed"
        self.user_errors += 1
        if self.user_errors > self.job.restarts_on_error:
            return "failed", final.reason or "the command failed"
        self.emit(
            "relaunching",
            f"the command failed ({final.reason}); restart {self.user_errors} of "
            f"{self.job.restarts_on_error} allowed",
        )
        self.final = None
        return None

    def finish_attempt(self, live: _Live, over: _AttemptOver) -> tuple[JobStatus, str] | None:
        """Close an attempt; return the job's end, or None to relaunch."""
        if over.reason != "result":
            # A short command may finish (and its container exit) between two polls: the
            # result in the store wins over what the instance's state suggested.
            try:
                final = self.rundir.read_result()
            except (JobError, OSError):
                final = None
            if final is not None and final.attempt == live.number:
                self.final = final
                over = _AttemptOver("result", final.reason or final.status.value)
        if over.reason == "result":
            final = self.final
            assert final is not None
            self.destroy(live, final.status.value)
            return self.end_from_result(final)

        if over.reason in ("outbid", "preempted"):
            self.wait_for_save(live)
        self.emit(
            "attempt_ended",
            f"attempt {live.number} on machine {live.machine_id} ended: {over.reason}"
            + (f" ({over.detail})" if over.detail else ""),
            live=live,
            level=logging.WARNING,
        )
        blame = over.blame and over.reason in _MACHINE_FAILURES
        self.destroy(live, over.reason, blame=blame, detail=over.detail)
        self.emit(
            "relaunching",
            "relaunching on another machine; the worker resumes from the latest checkpoint"
            + (f" (step {live.checkpoint_step})" if live.checkpoint_step is not None else ""),
        )
        return None

    def cleanup(self, reason: str) -> None:
        live = self.live
        if live is None or live.closed:
            return
        try:
            self.destroy(live, reason)
        except DestroyFailedError:
            logger.exception("could not destroy instance %s", live.instance_id)
            raise

    def end_run(self, status: str) -> None:
        try:
            self.ledger.end_run(self.run_id, status, at=self.clock.now())
        except ValueError:
            pass

    def result(self, status: JobStatus, reason: str) -> JobResult:
        attempts = tuple(self.summaries[n] for n in sorted(self.summaries))
        records = self.ledger.attempts(self.run_id)
        by_attempt = {a.attempt: a.cost_usd for a in records}
        storage = 0.0
        for rec in records:
            if rec.storage_dph and rec.created_at is not None:
                end = rec.destroyed_at or rec.ended_at or self.clock.now()
                storage += rec.storage_dph * max(end - rec.created_at, 0.0) / 3600.0
        total = sum(by_attempt.values())
        storage = min(storage, total)
        checkpoints: tuple[CheckpointInfo, ...] = ()
        try:
            manager = CheckpointManager(
                self.rundir.checkpoint_url(),
                storage_options=self.job.storage_options,
                clock=self.clock,
            )
            checkpoints = tuple(manager.list())
            manager.close()
        except Exception as exc:  # listing checkpoints is informative only
            logger.warning("could not list checkpoints: %s", exc)
        final = self.final
        return JobResult(
            run_id=self.run_id,
            name=self.job.name,
            status=status,
            reason=reason,
            attempts=attempts,
            cost=CostBreakdown(gpu_usd=total - storage, storage_usd=storage, by_attempt=by_attempt),
            checkpoints=checkpoints,
            run_url=self.run_url,
            exit_code=final.exit_code if final is not None else None,
            metrics=dict(final.metrics) if final is not None else {},
            step=final.step if final is not None and final.step is not None else self.last_step,
            started_at=self.started_at,
            ended_at=self.clock.now(),
            outputs=self._outputs(),
            storage_options=dict(self.job.storage_options),
        )

    def _outputs(self) -> tuple[OutputFile, ...]:
        if not self.job.outputs:
            return ()
        try:
            return read_outputs(self.run_url, self.job.storage_options)
        except Exception as exc:  # listing outputs is informative only
            logger.warning("could not read the outputs listing: %s", exc)
            return ()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
        if self._owns_ledger:
            self.ledger.close()


def _summary(
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
        end_reason=reason.split(":", maxsplit=1)[0],
        cost_usd=0.0,
    )


def _summary_from_record(rec: AttemptRecord) -> AttemptSummary:
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


def run_job(
    job: Job,
    *,
    client: Client | None = None,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    on_event: Callable[[JobEvent], None] | None = None,
    budgets: Budgets | str | os.PathLike[str] | None = None,
    profiles: str | os.PathLike[str] | Mapping[str, GpuProfile] | None = None,
    run_id: str | None = None,
    progress: bool | None = None,
    progress_file: IO[str] | None = None,
) -> JobResult:
    """Run ``job`` to its end on rented GPUs, relaunching and resuming after failures.

    Args:
        job: What to run.
        client: The API client (default: one configured from the environment, closed at the
            end).
        ledger: Where runs, attempts, intents, blocked machines and costs are recorded
            (default: the ledger at its default path).
        clock: The clock every wait goes through (default: the client's, else real time).
        on_event: Called with a :class:`JobEvent` for everything that happens.
        budgets: A :class:`~vastkit.budget.Budgets` or the path of a ``budgets.yaml``; checked
            before every launch and on every poll.
        profiles: A ``gpu_profiles.yaml`` path or a mapping of profiles, to resolve
            ``job.profile`` by name (default: the built-in profiles).
        run_id: Resume a run after the orchestrator died: the run's live instance is adopted
            (never a second one rented) and watched to the end. Default: a new run.
        progress: Show a live status line: True, False, or None for automatic (a live line in
            a terminal or notebook, plain lines otherwise).
        progress_file: Where plain progress lines go (default: standard error).

    Returns:
        The :class:`JobResult`; its ``status`` says how the job ended.

    Raises:
        ConfigError: The profile or the budgets file is wrong, or no API key is configured.
        BudgetExceededError: The budget cannot cover the profile's worst case: nothing was
            rented.
        NoOfferError: No offer qualifies for the profile at the first launch.
        DestroyFailedError: An instance could not be confirmed destroyed (it may still bill).
        APIError: The API refused the key, or failed in a way retries could not fix.
    """
    if not isinstance(job, Job):
        raise TypeError(f"run_job takes a vastkit.Job, not {type(job).__name__}")
    runner = JobRunner(
        job,
        client=client,
        ledger=ledger,
        clock=clock,
        on_event=on_event,
        budgets=budgets,
        profiles=profiles,
        run_id=run_id,
        progress=progress,
        progress_file=progress_file,
    )
    try:
        return runner.run()
    finally:
        runner.close()

"""The run directory: the only channel between the orchestrator and a worker.

Workers often have no public IP and the orchestrator may sit behind NAT, so neither calls the
other: both read and write objects under ``<store_url>/<run_id>/`` in an fsspec store (S3, GCS,
MinIO, a local folder)::

    <store_url>/<run_id>/
    ├── job.json                         orchestrator: the JobSpec (command, env, settings)
    ├── code.tar.gz                      orchestrator: optional bundle of the working directory
    ├── orchestrator.json                orchestrator: liveness, refreshed every poll
    ├── cancel.json                      orchestrator: a request to stop the job for good
    ├── attempts/<n>/heartbeat.json      worker, every few seconds: time, phase, step, checkpoint
    ├── attempts/<n>/log/<00000000>      worker: stdout+stderr in ordered chunks
    ├── attempts/<n>/metrics/<00000000>.jsonl   worker: metric records, one object per chunk
    ├── attempts/<n>/result.json         worker, last for the attempt: how the attempt ended
    ├── attempts/<n>/starts/<k>/result.json  worker: how an earlier start of the attempt ended,
    │                                    kept when the container restarted (outbid, then won back)
    ├── outputs/<path>                   worker: the job's outputs (vastkit.artifacts)
    ├── outputs.json                     worker: the list of outputs with their sizes
    ├── checkpoints/step-<n>/...         the CheckpointManager (vastkit.checkpoint)
    └── result.json                      worker, last of all: the job's terminal result

Every object is written whole before it becomes visible (:meth:`RunDir.write_bytes`): on object
stores a single PUT is atomic; on a local folder the bytes go to a hidden temporary name that is
fsynced, then renamed. Nothing is ever appended to, so the layout works on stores without append.
Every store call goes through :class:`vastkit._store.Store`, which retries transient errors.

Readers tolerate objects that do not exist yet (they return ``None``); an object that exists but
cannot be decoded raises :class:`~vastkit.errors.JobError` naming the object.

``result.json`` at the top ends the job. It is written only for the terminal statuses
(:data:`TERMINAL_STATUSES`: succeeded, failed, cancelled, timed_out, budget_exceeded). An
attempt that was preempted (SIGTERM from outside) or abandoned (the worker's backstop fired
because the orchestrator stayed silent past ``AttemptSettings.away_limit``) writes only
``attempts/<n>/result.json``, so the orchestrator can tell "this machine went away" from "the
job is over".
"""

from __future__ import annotations

import enum
import json
import logging
import os
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs

from vastkit._bundle import (
    DEFAULT_BUNDLE_EXCLUDES,
    make_bundle,
    unpack_bundle,
)
from vastkit._documents import converter as document_converter
from vastkit._documents import decode_json, encode_json
from vastkit._store import POLLING_RETRY, Store
from vastkit._validate import (
    check_bool,
    check_choice,
    check_command,
    check_int,
    check_number,
    check_seconds,
    check_text,
    check_text_map,
    check_type,
    short_repr,
)
from vastkit._version import __version__
from vastkit.clock import Clock, SystemClock
from vastkit.errors import ConfigValueError, JobError
from vastkit.retry import RetryPolicy

__all__ = [
    "DEFAULT_BUNDLE_EXCLUDES",
    "ENV_BILLED_SINCE",
    "ENV_MAX_COST_USD",
    "ENV_RATE_DPH",
    "JOB_SPEC_VERSION",
    "TERMINAL_STATUSES",
    "AttemptLimits",
    "AttemptResult",
    "AttemptSettings",
    "CancelRequest",
    "CheckpointSettings",
    "Heartbeat",
    "JobSpec",
    "MetricRecord",
    "OrchestratorBeat",
    "Phase",
    "ResultStatus",
    "RunDir",
    "make_bundle",
    "unpack_bundle",
]

logger = logging.getLogger("vastkit.rundir")

JOB_SPEC_VERSION = 2
"""The newest version of the ``job.json`` format this vastkit reads and writes.

Version 2 added ``inputs`` and ``outputs``. A spec that uses neither is still written as
version 1, so older workers keep reading it; one that uses them is written as version 2, so an
older worker refuses it instead of silently running without its inputs."""

_CHUNK_DIGITS = 8


# --------------------------------------------------------------------------------------------
# Values


class Phase(enum.StrEnum):
    """Where a worker is in an attempt, as its heartbeat says."""

    STARTING = "starting"
    """Reading the job, unpacking the code, starting the command."""
    RUNNING = "running"
    """The command runs."""
    STOPPING = "stopping"
    """The command was asked to stop (SIGTERM) and has its grace period to save."""
    FINISHED = "finished"
    """The command ended and the attempt's result is written."""


class ResultStatus(enum.StrEnum):
    """How an attempt (and possibly the job) ended."""

    SUCCEEDED = "succeeded"
    """The command exited 0. Terminal."""
    FAILED = "failed"
    """The command exited non-zero on its own. Terminal (the orchestrator may still retry when
    the job allows restarts on errors)."""
    CANCELLED = "cancelled"
    """The orchestrator asked the job to stop (``cancel.json``). Terminal."""
    TIMED_OUT = "timed_out"
    """The job's max-duration deadline passed. Terminal."""
    BUDGET_EXCEEDED = "budget_exceeded"
    """The attempt's cost reached what it may spend (:class:`AttemptLimits`); the worker stopped
    the command and destroyed its own instance. Terminal."""
    PREEMPTED = "preempted"
    """The worker got SIGTERM from outside (the instance was stopped, outbid or is going away).
    Not terminal: the orchestrator relaunches and the next attempt resumes from a checkpoint."""
    ABANDONED = "abandoned"
    """The orchestrator stayed silent past ``AttemptSettings.away_limit`` (or, for an attempt
    with neither a deadline nor a cost cap, past ``orchestrator_timeout``); the worker stopped the
    command and destroyed its own instance. Not terminal."""


TERMINAL_STATUSES: frozenset[ResultStatus] = frozenset(
    {
        ResultStatus.SUCCEEDED,
        ResultStatus.FAILED,
        ResultStatus.CANCELLED,
        ResultStatus.TIMED_OUT,
        ResultStatus.BUDGET_EXCEEDED,
    }
)
"""Statuses that end the job; only these are written to the top-level ``result.json``."""


@attrs.frozen(kw_only=True)
class CheckpointSettings:
    """How the worker's :class:`~vastkit.checkpoint.CheckpointManager` is set up.

    Every field is checked when the settings are made (and again when a worker reads
    ``job.json``): a bad value raises :class:`~vastkit.errors.ConfigValueError` (a
    ``ConfigError`` and a ``ValueError``) or, for a wrong type,
    :class:`~vastkit.errors.ConfigTypeError` (also a ``TypeError``), naming the field.
    """

    url_suffix: str = ""
    """Where the :class:`~vastkit.checkpoint.CheckpointManager` is rooted, relative to the run
    directory (``""``: the run directory itself, so checkpoints land in ``<run>/checkpoints/``)."""
    every_steps: int | Literal["auto"] | None = None
    """Save every this many steps (an integer of 1 or more); ``"auto"``: the Young/Daly interval
    from the measured stall and ``mtbf_seconds`` (see
    :class:`~vastkit.checkpoint.CheckpointManager`); ``None``: not by steps."""
    mtbf_seconds: float = 6 * 3600.0
    """The expected time between preemptions (or host failures), for ``every_steps="auto"``:
    seconds greater than 0, at most a year."""
    every_seconds: float | None = None
    """Save at most this often, in seconds greater than 0 and at most a year (``None``: not by
    time)."""
    keep_last: int = 3
    """How many of the newest committed checkpoints pruning keeps (1 or more)."""
    keep_best: int | None = None
    """How many best checkpoints (by ``best_metric``) pruning also keeps (0 or more; needs
    ``best_metric``)."""
    best_metric: str | None = None
    """The metric that ranks checkpoints for ``keep_best``."""
    best_mode: str = "min"
    """``"min"`` or ``"max"``: which end of ``best_metric`` is best."""
    async_save: bool = True
    """Upload in the background after copying the state to CPU (``true`` or ``false``)."""

    def __attrs_post_init__(self) -> None:
        owner = "CheckpointSettings"
        check_type(owner, "url_suffix", self.url_suffix, str, "a relative folder (text)")
        if "\x00" in self.url_suffix or ".." in self.url_suffix.split("/"):
            raise ConfigValueError.of(
                owner,
                "url_suffix",
                f"must be a folder inside the run directory (got {short_repr(self.url_suffix)})",
                allowed="a relative folder without '..'",
            )
        if self.every_steps != "auto":
            check_int(
                owner,
                "every_steps",
                self.every_steps,
                minimum=1,
                none_ok=True,
                allowed="an integer of 1 or more, 'auto', or null",
            )
        check_seconds(owner, "mtbf_seconds", self.mtbf_seconds)
        check_seconds(owner, "every_seconds", self.every_seconds, none_means="not by time")
        check_int(owner, "keep_last", self.keep_last, minimum=1)
        check_int(owner, "keep_best", self.keep_best, minimum=0, none_ok=True)
        check_text(owner, "best_metric", self.best_metric, none_ok=True, what="metric name")
        if self.keep_best is not None and self.best_metric is None:
            raise ConfigValueError.of(
                owner,
                "keep_best",
                "needs best_metric (the metric that ranks checkpoints); set both or neither",
                allowed="an integer of 0 or more, with best_metric",
            )
        check_choice(owner, "best_mode", self.best_mode, ("min", "max"))
        check_bool(owner, "async_save", self.async_save)


@attrs.frozen(kw_only=True)
class AttemptSettings:
    """Timings and limits the worker applies to each attempt (checked like
    :class:`CheckpointSettings`)."""

    heartbeat_interval: float = 10.0
    """Seconds between heartbeats (and between checks of the cancel and liveness objects)."""
    grace_period: float = 30.0
    """Seconds the command gets to save and exit after SIGTERM before it is killed."""
    deadline: float | None = None
    """The job's max-duration deadline, an absolute time in Unix seconds (``None``: none)."""
    orchestrator_timeout: float | None = 900.0
    """Seconds without a sign of life in ``orchestrator.json`` after which the worker counts the
    orchestrator as away (a laptop asleep, a lost network). The attempt keeps running within the
    job's own limits (``deadline`` and the attempt's :class:`AttemptLimits`); only an attempt that
    has neither is stopped, and its instance destroyed, at this point (``None``: never)."""
    away_limit: float | None = None
    """Seconds of orchestrator silence after which the worker stops the command and destroys its
    own instance even within the job's limits (``None``: no such limit; the deadline and the cost
    cap bound the attempt). Set it far longer than a laptop sleeps, if at all."""
    api_base_url: str = "https://console.vast.ai"
    """Vast's API base URL, for the self-destroy call."""
    log_flush_seconds: float = 5.0
    """Upload buffered output at least this often."""
    log_flush_bytes: int = 256 * 1024
    """Upload buffered output as soon as this many bytes are waiting."""

    def __attrs_post_init__(self) -> None:
        owner = "AttemptSettings"
        check_seconds(owner, "heartbeat_interval", self.heartbeat_interval)
        check_seconds(owner, "grace_period", self.grace_period)
        check_number(owner, "deadline", self.deadline, minimum=0.0, none_ok=True)
        check_seconds(owner, "orchestrator_timeout", self.orchestrator_timeout, none_means="never")
        check_seconds(owner, "away_limit", self.away_limit, none_means="no limit")
        check_text(owner, "api_base_url", self.api_base_url, what="URL")
        check_seconds(owner, "log_flush_seconds", self.log_flush_seconds)
        check_int(owner, "log_flush_bytes", self.log_flush_bytes, minimum=1)


ENV_RATE_DPH = "VASTKIT_RATE_DPH"
"""The attempt's contract rate in $/h (storage included), for the worker's cost cap."""
ENV_BILLED_SINCE = "VASTKIT_BILLED_SINCE"
"""When the attempt's instance was created (Unix seconds): billing starts there."""
ENV_MAX_COST_USD = "VASTKIT_MAX_COST_USD"
"""What the attempt may spend in dollars (what is left of the job's cap when it was rented)."""


@attrs.frozen(kw_only=True)
class AttemptLimits:
    """What one attempt may spend, so the worker can keep it within the job's cap on its own.

    The orchestrator knows these only when it rents (the rate is the rented contract's), so they
    travel in the instance's environment (:meth:`environ`, passed to
    :func:`vastkit._bootstrap.build_onstart`'s ``env``), not in ``job.json``, which is written once
    per run. The worker reads them with :meth:`from_environ`.
    """

    rate_dph: float
    """The contract's price per hour, storage included (``ContractPrice.dph_total``)."""
    billed_since: float
    """When the instance was created, in Unix seconds."""
    max_cost_usd: float
    """The most this attempt may cost, in dollars."""

    def __attrs_post_init__(self) -> None:
        owner = "AttemptLimits"
        check_number(owner, "rate_dph", self.rate_dph, minimum=0.0)
        check_number(owner, "billed_since", self.billed_since, minimum=0.0)
        check_number(owner, "max_cost_usd", self.max_cost_usd, minimum=0.0)

    def cost_at(self, now: float) -> float:
        """What the attempt has cost by ``now`` at its rate (dollars, never negative)."""
        return self.rate_dph * max(0.0, now - self.billed_since) / 3600.0

    def environ(self) -> dict[str, str]:
        """The environment variables that carry these limits to the worker."""
        return {
            ENV_RATE_DPH: repr(float(self.rate_dph)),
            ENV_BILLED_SINCE: repr(float(self.billed_since)),
            ENV_MAX_COST_USD: repr(float(self.max_cost_usd)),
        }

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AttemptLimits | None:
        """The limits in ``environ``, or ``None`` when it carries none.

        Raises:
            ConfigValueError: Some but not all variables are set, or one is not a number.
        """
        names = (ENV_RATE_DPH, ENV_BILLED_SINCE, ENV_MAX_COST_USD)
        present = [name for name in names if environ.get(name, "").strip()]
        if not present:
            return None
        if len(present) != len(names):
            missing = ", ".join(name for name in names if name not in present)
            raise ConfigValueError.of(
                "AttemptLimits", "environ", f"{missing} not set (set all three or none)"
            )
        values: list[float] = []
        for name in names:
            raw = environ[name].strip()
            try:
                values.append(float(raw))
            except ValueError:
                raise ConfigValueError.of(
                    "AttemptLimits", name, f"must be a number (got {short_repr(raw)})"
                ) from None
        return cls(rate_dph=values[0], billed_since=values[1], max_cost_usd=values[2])


def _spec_version(inputs: Mapping[str, str], outputs: Sequence[str]) -> int:
    return 2 if inputs or outputs else 1


@attrs.frozen(kw_only=True)
class JobSpec:
    """What a worker runs: the content of ``job.json``."""

    run_id: str
    """The run's id (the last component of the run directory URL)."""
    command: tuple[str, ...] | str
    """The command: an argv tuple run directly, or a string run by ``/bin/sh -c``."""
    env: dict[str, str] = attrs.field(factory=dict)
    """Extra environment variables for the command."""
    checkpoint: CheckpointSettings = attrs.field(factory=CheckpointSettings)
    """Checkpoint settings."""
    attempt: AttemptSettings = attrs.field(factory=AttemptSettings)
    """Per-attempt timings and limits."""
    has_code_bundle: bool = False
    """Whether ``code.tar.gz`` holds the working directory to run in."""
    inputs: dict[str, str] = attrs.field(factory=dict)
    """Input name to the URL the worker fetches before the command starts (local folders are
    already uploaded to the dataset cache); exposed as ``VASTKIT_INPUT_<NAME>``."""
    outputs: tuple[str, ...] = ()
    """Paths relative to the command's working directory uploaded to ``<run>/outputs/``."""
    name: str | None = None
    """The job's human name."""
    created_at: float | None = None
    """When the orchestrator wrote the spec (Unix seconds)."""
    vastkit_version: str = __version__
    """The vastkit version that wrote the spec."""
    version: int = attrs.field(
        default=attrs.Factory(
            lambda self: _spec_version(self.inputs, self.outputs), takes_self=True
        )
    )
    """The format version of ``job.json`` (default: the oldest that holds this spec, so older
    workers read specs that use nothing newer)."""

    def __attrs_post_init__(self) -> None:
        owner = "JobSpec"
        check_text(owner, "run_id", self.run_id, what="run id")
        check_command(owner, self.command)
        check_text_map(owner, "env", self.env)
        check_text_map(owner, "inputs", self.inputs)
        check_type(owner, "checkpoint", self.checkpoint, CheckpointSettings)
        check_type(owner, "attempt", self.attempt, AttemptSettings)
        check_bool(owner, "has_code_bundle", self.has_code_bundle)
        check_type(owner, "outputs", self.outputs, tuple, "a list of paths")
        for path in self.outputs:
            check_text(owner, "outputs", path, what="path")
        check_text(owner, "name", self.name, none_ok=True)
        check_number(owner, "created_at", self.created_at, none_ok=True)
        check_int(owner, "version", self.version, minimum=1)


@attrs.frozen(kw_only=True)
class Heartbeat:
    """A worker's sign of life: ``attempts/<n>/heartbeat.json``."""

    attempt: int
    """The attempt number."""
    time: float
    """When it was written (the worker's clock, Unix seconds)."""
    phase: Phase
    """Where the attempt is."""
    step: int | None = None
    """The latest training step the command reported."""
    checkpoint_step: int | None = None
    """The step of the latest checkpoint the command reported as committed."""
    pid: int | None = None
    """The worker's process id."""
    child_pid: int | None = None
    """The command's process id, once it runs."""
    host: str | None = None
    """The worker's host name."""
    message: str | None = None
    """A short note (why the worker is stopping, for instance)."""
    start: int = 0
    """Which start of the attempt this is: 0, then 1, 2... each time the container restarted
    with the same attempt (an outbid instance that won its machine back)."""
    stop_signal_at: float | None = None
    """When the stop signal (SIGTERM) that stops this start reached the worker, read in its
    signal handler (the worker's clock); None before. Vast stops billing the GPU at that stop,
    so the ledger dates an outbid or a stop by it (:func:`vastkit.money.date_stop`)."""


@attrs.frozen(kw_only=True)
class AttemptResult:
    """How an attempt ended: ``attempts/<n>/result.json``, and ``result.json`` when terminal."""

    attempt: int
    """The attempt number."""
    status: ResultStatus
    """How it ended."""
    exit_code: int | None
    """The command's exit code (negative: killed by that signal; ``None``: never started)."""
    ended_at: float
    """When it ended (Unix seconds)."""
    metrics: dict[str, float] = attrs.field(factory=dict)
    """The last value of every metric the command logged."""
    step: int | None = None
    """The last step the command reported."""
    checkpoint_step: int | None = None
    """The latest checkpoint the command reported as committed."""
    reason: str | None = None
    """Why it ended that way, in words."""
    start: int = 0
    """Which start of the attempt ended (see :attr:`Heartbeat.start`)."""

    @property
    def terminal(self) -> bool:
        """Whether this result ends the job."""
        return self.status in TERMINAL_STATUSES


@attrs.frozen(kw_only=True)
class MetricRecord:
    """One call of ``log_metrics``: a step, a time and named values."""

    step: int
    """The training step."""
    time: float
    """When it was logged (Unix seconds)."""
    values: dict[str, float]
    """The metric values."""
    source: str = "log"
    """``"log"`` (``log_metrics``) or ``"checkpoint"`` (the metrics of a committed
    checkpoint's manifest)."""


@attrs.frozen(kw_only=True)
class OrchestratorBeat:
    """The orchestrator's sign of life: ``orchestrator.json``, refreshed every poll.

    The worker never compares ``time`` with its own clock (the two machines' clocks may
    disagree): any change of the object since the last look counts as a sign of life.
    """

    time: float
    """When it was written (the orchestrator's clock)."""
    seq: int = 0
    """A counter increased with every refresh."""
    pid: int | None = None
    """The orchestrator's process id."""
    host: str | None = None
    """The orchestrator's host name."""


@attrs.frozen(kw_only=True)
class CancelRequest:
    """A request to stop the job for good: ``cancel.json``."""

    time: float
    """When it was requested (Unix seconds)."""
    reason: str | None = None
    """Why."""


# --------------------------------------------------------------------------------------------
# Encoding


_T = TypeVar("_T")


def _chunk_name(index: int) -> str:
    if index < 0:
        raise ValueError(f"chunk index must be >= 0, not {index}")
    return f"{index:0{_CHUNK_DIGITS}d}"


def _check_attempt(attempt: int) -> int:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
        raise ValueError(f"attempt must be an int >= 0, not {attempt!r}")
    return attempt


# --------------------------------------------------------------------------------------------
# The run directory


class RunDir:
    """The run directory of one run, over any fsspec store.

    Every store call goes through one :class:`~vastkit._store.Store`: whole writes, reads that
    return ``None`` for a missing object, and retries of transient errors on ``clock``.

    Args:
        url: The run directory, ``<store_url>/<run_id>`` (``s3://bucket/runs/abc``,
            ``file:///data/runs/abc``, a plain local path, ``memory://runs/abc``).
        storage_options: Options for the fsspec filesystem (credentials, endpoint).
        clock: The clock used by :meth:`follow_log`, for times the run directory stamps, and for
            the waits between retries.
        retry: How transient store errors are retried (default: three tries within ten seconds,
            :data:`~vastkit._store.POLLING_RETRY`: the run directory is read and written from
            polling loops, whose next round is the next try).

    Raises:
        ValueError: ``url`` is empty.
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not url:
            raise ValueError("a run directory URL is required")
        self.url = url.rstrip("/")
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self.clock: Clock = clock or SystemClock()
        self.store = Store(
            self.url,
            self.storage_options,
            retry=retry if retry is not None else POLLING_RETRY,
            clock=self.clock,
        )
        """The store under the run directory."""

    def __repr__(self) -> str:
        return f"RunDir({self.url!r})"

    @property
    def run_id(self) -> str:
        """The last component of the URL."""
        return posixpath.basename(self.store.root)

    def url_of(self, *parts: str) -> str:
        """The URL of an object in the run directory (``url_of("attempts", "1")``)."""
        return "/".join([self.url, *parts])

    def checkpoint_url(self, spec: JobSpec | None = None) -> str:
        """The URL to give :class:`~vastkit.checkpoint.CheckpointManager` for this run.

        The manager writes under ``<this URL>/checkpoints/``; with the default settings that is
        the run directory, so checkpoints land in ``<run>/checkpoints/``.
        """
        suffix = (spec.checkpoint.url_suffix if spec is not None else "").strip("/")
        return self.url_of(suffix) if suffix else self.url

    def path_of(self, rel: str) -> str:
        """The store path (for :attr:`store`) of an object in the run directory."""
        return self.store.path(rel)

    def put_file(self, local: str | os.PathLike[str], rel: str, *, callback: Any = None) -> None:
        """Upload a local file as one object, whole (multipart where the store does it).

        Args:
            local: The local file.
            rel: The object's path relative to the run directory.
            callback: An fsspec callback that follows the bytes moved.
        """
        self.store.put(local, self.store.path(rel), callback=callback)

    def delete(self, rel: str) -> None:
        """Remove an object (nothing happens when it does not exist)."""
        self.store.delete(self.store.path(rel))

    def next_index(self, folder: str, suffix: str = "") -> int:
        """The first free number of a gapless chunk sequence (``folder/<00000000><suffix>``).

        It probes existence with a doubling then a bisection, so it costs about
        ``2 log2(n)`` small reads instead of a listing, and is not fooled by lagging listings.
        """

        def there(index: int) -> bool:
            return self.exists(f"{folder}/{_chunk_name(index)}{suffix}")

        if not there(0):
            return 0
        low, high = 0, 1
        while there(high):
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            if there(middle):
                low = middle
            else:
                high = middle
        return high

    # -- raw objects -------------------------------------------------------------------------

    def write_bytes(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        """Write one object whole: readers see all of it or nothing.

        On a local folder the bytes go to a hidden temporary name in the same directory that is
        fsynced (unless ``durable`` is False) and then renamed over the target; elsewhere a single
        PUT is atomic.

        Args:
            rel: The object's path relative to the run directory.
            data: The content.
            durable: Whether the write must survive a power loss once it returns (False for
                liveness signals that are rewritten every few seconds).
        """
        self.store.write(self.store.path(rel), data, durable=durable)

    def read_bytes(self, rel: str) -> bytes | None:
        """The content of an object, or ``None`` when it does not exist (or is still empty)."""
        return self.store.read(self.store.path(rel)) or None

    def exists(self, rel: str) -> bool:
        """Whether an object exists (never answered from a cached listing)."""
        return self.store.exists(self.store.path(rel))

    def numbered(self, rel: str) -> list[int]:
        """The numbers that name entries directly under a folder (``attempts/``), ascending."""
        names = (posixpath.basename(e) for e in self.store.ls(self.store.path(rel)))
        return sorted({int(name) for name in names if name.isdigit()})

    def _write_value(self, rel: str, value: Any, *, durable: bool = True) -> None:
        self.write_bytes(rel, encode_json(value), durable=durable)

    def _read_value(self, rel: str, cls: type[_T]) -> _T | None:
        data = self.read_bytes(rel)
        if data is None:
            return None
        return decode_json(data, cls, self.url_of(rel))

    # -- job ---------------------------------------------------------------------------------

    def write_job(self, spec: JobSpec) -> None:
        """Write ``job.json`` (as version 1 when it uses nothing newer, so old workers read it)."""
        needed = _spec_version(spec.inputs, spec.outputs)
        if spec.version < needed:
            spec = attrs.evolve(spec, version=needed)
        self._write_value("job.json", spec)

    def read_job(self) -> JobSpec | None:
        """Read ``job.json`` (``None`` when it is not there yet).

        Raises:
            JobError: It is garbled, or written by a newer vastkit whose format this one does
                not understand.
        """
        data = self.read_bytes("job.json")
        if data is None:
            return None
        where = self.url_of("job.json")
        try:
            version = json.loads(data).get("version")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            version = None  # _decode below names the problem
        if isinstance(version, int) and version > JOB_SPEC_VERSION:
            raise JobError(
                f"{where} has format version {version}, but this vastkit ({__version__}) reads "
                f"up to version {JOB_SPEC_VERSION}: install a newer vastkit on the worker"
            )
        return decode_json(data, JobSpec, where, strict=True)

    def write_bundle(self, data: bytes) -> None:
        """Write ``code.tar.gz`` (the bytes from :func:`make_bundle`)."""
        self.write_bytes("code.tar.gz", data)

    def read_bundle(self) -> bytes | None:
        """Read ``code.tar.gz`` (``None`` when there is none)."""
        return self.read_bytes("code.tar.gz")

    # -- orchestrator side signals -----------------------------------------------------------

    def write_orchestrator(self, beat: OrchestratorBeat) -> None:
        """Refresh ``orchestrator.json`` (the orchestrator does this every poll)."""
        self._write_value("orchestrator.json", beat, durable=False)

    def read_orchestrator(self) -> OrchestratorBeat | None:
        """Read ``orchestrator.json``."""
        return self._read_value("orchestrator.json", OrchestratorBeat)

    def request_cancel(self, reason: str | None = None) -> CancelRequest:
        """Ask the worker to stop the job for good (writes ``cancel.json``)."""
        request = CancelRequest(time=self.clock.now(), reason=reason)
        self._write_value("cancel.json", request)
        return request

    def read_cancel(self) -> CancelRequest | None:
        """Read ``cancel.json`` (``None``: no cancel was requested)."""
        return self._read_value("cancel.json", CancelRequest)

    # -- attempts ----------------------------------------------------------------------------

    def attempts(self) -> list[int]:
        """The attempt numbers that have a directory, ascending."""
        return self.numbered("attempts")

    def write_heartbeat(self, heartbeat: Heartbeat) -> None:
        """Write ``attempts/<n>/heartbeat.json``."""
        self._write_value(
            f"attempts/{_check_attempt(heartbeat.attempt)}/heartbeat.json", heartbeat, durable=False
        )

    def read_heartbeat(self, attempt: int) -> Heartbeat | None:
        """Read an attempt's latest heartbeat."""
        return self._read_value(f"attempts/{_check_attempt(attempt)}/heartbeat.json", Heartbeat)

    def write_attempt_result(self, result: AttemptResult) -> None:
        """Write ``attempts/<n>/result.json``, then ``result.json`` when the status is terminal.

        The top-level ``result.json`` is written last of everything: its presence ends the job.
        """
        self._write_value(f"attempts/{_check_attempt(result.attempt)}/result.json", result)
        if result.terminal:
            self._write_value("result.json", result)

    def read_attempt_result(self, attempt: int) -> AttemptResult | None:
        """Read how an attempt ended (``None`` while it has not)."""
        return self._read_value(f"attempts/{_check_attempt(attempt)}/result.json", AttemptResult)

    def archive_attempt_result(self, attempt: int) -> AttemptResult | None:
        """Keep an earlier start's result before the attempt runs again in a restarted container.

        Copies ``attempts/<n>/result.json`` to ``attempts/<n>/starts/<k>/result.json`` (``k``
        is the result's :attr:`~AttemptResult.start`), then removes it, so the attempt's
        ``result.json`` again means "the current start ended".

        Returns:
            The archived result, or ``None`` when there was none.
        """
        n = _check_attempt(attempt)
        previous = self.read_attempt_result(n)
        if previous is None:
            return None
        self._write_value(f"attempts/{n}/starts/{previous.start}/result.json", previous)
        self.delete(f"attempts/{n}/result.json")
        return previous

    def read_start_results(self, attempt: int) -> list[AttemptResult]:
        """The archived results of earlier starts of an attempt, in start order."""
        n = _check_attempt(attempt)
        starts = self.numbered(f"attempts/{n}/starts")
        found: list[AttemptResult] = []
        for start in starts:
            result = self._read_value(f"attempts/{n}/starts/{start}/result.json", AttemptResult)
            if result is not None:
                found.append(result)
        return found

    def read_result(self) -> AttemptResult | None:
        """Read the job's terminal result (``None`` while the job has not ended)."""
        return self._read_value("result.json", AttemptResult)

    # -- logs --------------------------------------------------------------------------------

    def write_log_chunk(self, attempt: int, index: int, data: bytes) -> None:
        """Write one chunk of an attempt's output. Chunks are numbered 0, 1, 2... without gaps."""
        self.write_bytes(f"attempts/{_check_attempt(attempt)}/log/{_chunk_name(index)}", data)

    def read_log_chunk(self, attempt: int, index: int) -> bytes | None:
        """Read one chunk of output (``None`` when it does not exist yet)."""
        return self.read_bytes(f"attempts/{_check_attempt(attempt)}/log/{_chunk_name(index)}")

    def iter_log_chunks(self, attempt: int, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """The chunks that exist now, in order from ``start``, as ``(index, data)``.

        It reads chunk after chunk until one is missing; it never lists, so it is not fooled by
        listings that lag behind writes.
        """
        index = start
        while True:
            data = self.read_log_chunk(attempt, index)
            if data is None:
                return
            yield index, data
            index += 1

    def read_log(self, attempt: int) -> bytes:
        """All output of an attempt so far, concatenated."""
        return b"".join(data for _, data in self.iter_log_chunks(attempt))

    def tail_log(self, attempt: int, lines: int = 50) -> str:
        """The last ``lines`` lines of an attempt's output so far, decoded as UTF-8."""
        if lines <= 0:
            return ""
        text = self.read_log(attempt).decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def follow_log(
        self,
        attempt: int,
        *,
        poll_interval: float = 2.0,
        stop: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> Iterator[bytes]:
        """Yield an attempt's output chunks as they appear, in order.

        It ends once the attempt's ``result.json`` exists and every chunk up to then has been
        yielded, when ``stop()`` returns true, or after ``timeout`` seconds of the run
        directory's clock.

        Args:
            attempt: The attempt to follow.
            poll_interval: Seconds between looks for new chunks.
            stop: Checked between looks; true ends the iteration.
            timeout: Give up after this many seconds (``None``: never).
        """
        next_index = 0
        started = self.clock.now()
        while True:
            for index, data in self.iter_log_chunks(attempt, next_index):
                yield data
                next_index = index + 1
            if self.read_attempt_result(attempt) is not None:
                # The worker writes its last chunk before its result: drain once more.
                for index, data in self.iter_log_chunks(attempt, next_index):
                    yield data
                    next_index = index + 1
                return
            if stop is not None and stop():
                return
            if timeout is not None and self.clock.now() - started >= timeout:
                return
            self.clock.sleep(poll_interval)

    # -- metrics -----------------------------------------------------------------------------

    def write_metrics_chunk(
        self, attempt: int, index: int, records: Sequence[MetricRecord]
    ) -> None:
        """Write one chunk of metric records (``attempts/<n>/metrics/<index>.jsonl``)."""
        body = "".join(
            json.dumps(document_converter.unstructure(r), sort_keys=True) + "\n" for r in records
        )
        self.write_bytes(
            f"attempts/{_check_attempt(attempt)}/metrics/{_chunk_name(index)}.jsonl",
            body.encode(),
        )

    def read_metrics(self, attempt: int | None = None) -> list[MetricRecord]:
        """Every metric record of one attempt, or of all attempts in order when ``None``.

        Raises:
            JobError: A chunk holds a line that is not a metric record.
        """
        attempts = self.attempts() if attempt is None else [_check_attempt(attempt)]
        records: list[MetricRecord] = []
        for n in attempts:
            index = 0
            while True:
                rel = f"attempts/{n}/metrics/{_chunk_name(index)}.jsonl"
                data = self.read_bytes(rel)
                if data is None:
                    break
                for line in data.splitlines():
                    if line.strip():
                        records.append(decode_json(line, MetricRecord, self.url_of(rel)))
                index += 1
        return records

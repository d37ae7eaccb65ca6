"""JobQueue: many jobs, several at once, and a restart never loses one.

:func:`~vastkit.jobs.run_job` runs one job. A :class:`JobQueue` keeps many of them in the
ledger and drives up to ``concurrency`` at once, each in its own thread::

    queue = vastkit.JobQueue(concurrency=3)
    ids = [queue.submit(job.evolve(name=f"lr-{lr}", env={"LR": str(lr)})) for lr in rates]
    queue.run()                      # returns when every job has ended
    for record in queue.list():
        print(record.job_id, record.status, f"${record.cost_usd:.2f}")

What makes it safe to kill:

* **Everything lives in the ledger.** A job is stored (serialised) when it is submitted; its
  status, its lease and a summary of its result are rows in the same SQLite file as runs and
  attempts. Submitting from one process and running from another works.
* **Leases.** Each job a process drives holds a lease: a random token, the owner (``host:pid``)
  and an expiry, renewed while the driver lives. A job whose lease expired (its process was
  killed, the laptop slept) is claimed by the next :meth:`JobQueue.run` and its live instance is
  *adopted* (its run id is the job id, and ``run_job`` adopts by run id), never rented twice.
* **Atomic claims.** A claim is one conditional ``UPDATE`` inside a ``BEGIN IMMEDIATE``
  transaction: two processes running the same queue file never drive the same job.
* **One list call per poll.** All drivers of a queue share one paged
  ``GET /api/v1/instances/`` per poll interval, whatever the number of jobs, and the client's
  per-endpoint pacing keeps the queue under Vast's rate limits.

Priorities (higher first), per-project concurrency caps, and budgets (per job, project and team,
checked by each job's budget guard before every launch and on every poll) all apply.
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from vastkit.api.client import Client
from vastkit.api.models import Instance as ApiInstance
from vastkit.budget import Budgets, load_budgets
from vastkit.clock import Clock, SystemClock
from vastkit.errors import BudgetExceededError, LedgerError, VastkitError
from vastkit.instance import SignalGuard, new_run_id
from vastkit.jobs import Job, JobEvent, JobResult, JobRunner
from vastkit.ledger import QUEUE_TERMINAL, Ledger, QueueEntry
from vastkit.profiles import GpuProfile

__all__ = ["JobQueue", "QueueStatus", "QueuedJob", "job_from_dict", "job_to_dict"]

logger = logging.getLogger("vastkit.queue")

QueueStatus = Literal[
    "queued", "running", "succeeded", "failed", "budget_exceeded", "timed_out", "cancelled"
]
"""Where a queued job stands: waiting, driven, or ended (the last five)."""

_STATUSES: tuple[str, ...] = ("queued", "running", *sorted(QUEUE_TERMINAL))


# --------------------------------------------------------------------------------------------
# Serialising a Job


def job_to_dict(job: Job) -> dict[str, Any]:
    """A JSON-compatible form of ``job`` (what the queue stores in the ledger).

    Nested settings (profile, checkpoint, timeouts, outbid policy...) keep their class name,
    so :func:`job_from_dict` rebuilds an equal :class:`~vastkit.jobs.Job`. A relative
    ``workdir`` is stored as an absolute path, since the queue may run from another directory.

    Note that ``storage_options`` are stored as given: keep credentials in the environment or
    the fsspec configuration rather than in the job when the ledger is shared.
    """
    if not isinstance(job, Job):
        raise TypeError(f"expected a vastkit.Job, not {type(job).__name__}")
    if job.workdir is not None:
        job = attrs.evolve(job, workdir=os.path.abspath(job.workdir))
    encoded = _encode(job)
    assert isinstance(encoded, dict)
    return encoded


def job_from_dict(data: Mapping[str, Any]) -> Job:
    """Rebuild a :class:`~vastkit.jobs.Job` from :func:`job_to_dict`'s output.

    Raises:
        ValueError: ``data`` is not a serialised job (or names a class outside vastkit).
    """
    job = _decode(data)
    if not isinstance(job, Job):
        raise ValueError("not a serialised vastkit.Job")
    return job


_CLASS_KEY = "__class__"
_TUPLE_KEY = "__tuple__"


def _encode(value: Any) -> Any:
    if attrs.has(type(value)):
        cls = type(value)
        out: dict[str, Any] = {_CLASS_KEY: f"{cls.__module__}:{cls.__qualname__}"}
        for field in attrs.fields(cls):
            if field.init:
                out[field.alias or field.name] = _encode(getattr(value, field.name))
        return out
    if isinstance(value, tuple):
        return {_TUPLE_KEY: [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot store a {type(value).__name__} in the queue")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, Mapping):
        return value
    if _TUPLE_KEY in value and len(value) == 1:
        return tuple(_decode(v) for v in value[_TUPLE_KEY])
    if _CLASS_KEY in value:
        cls = _class(str(value[_CLASS_KEY]))
        kwargs = {k: _decode(v) for k, v in value.items() if k != _CLASS_KEY}
        return cls(**kwargs)
    return {k: _decode(v) for k, v in value.items()}


def _class(name: str) -> type[Any]:
    import importlib

    module, _, qualname = name.partition(":")
    if not (module == "vastkit" or module.startswith("vastkit.")) or not qualname:
        raise ValueError(f"refusing to rebuild class {name!r} (only vastkit classes are stored)")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and attrs.has(obj)):
        raise ValueError(f"{name!r} is not a vastkit settings class")
    return obj


# --------------------------------------------------------------------------------------------
# The record


@attrs.frozen(kw_only=True)
class QueuedJob:
    """A job in a :class:`JobQueue` and where it stands (what ``get``, ``list`` and ``wait``
    return)."""

    job_id: str
    """The job id; also the run id of its run (labels ``vastkit/<job_id>/<attempt>``)."""
    job: Job
    """The job as submitted."""
    status: QueueStatus
    """``queued``, ``running``, ``succeeded``, ``failed``, ``budget_exceeded``,
    ``timed_out`` or ``cancelled``."""
    priority: int
    """Higher runs first."""
    project: str | None
    """The job's project."""
    submitted_at: float
    """When it was submitted (clock time)."""
    started_at: float | None
    """When a driver first claimed it."""
    ended_at: float | None
    """When it ended."""
    claims: int
    """How many times a driver claimed it: 1, or more when a driver died and another adopted
    the job."""
    owner: str | None
    """Who drives it now (``host:pid``), while running."""
    lease_expires_at: float | None
    """When the driver's lease ends unless renewed (running jobs)."""
    cancel_requested: bool
    """Whether :meth:`JobQueue.cancel` asked for it to stop."""
    reason: str | None
    """Why it ended, in words."""
    cost_usd: float = 0.0
    """What the job cost (every attempt), once ended."""
    attempts: int = 0
    """Instances rented or tried, once ended."""
    run_url: str | None = None
    """The run directory (``<store_url>/<job_id>``), once started."""
    exit_code: int | None = None
    """The command's exit code in the final attempt."""
    driver: str | None = None
    """The process that finished the job (``host:pid``)."""

    @property
    def done(self) -> bool:
        """Whether the job has ended."""
        return self.status in QUEUE_TERMINAL

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.status == "succeeded"


def _record(entry: QueueEntry) -> QueuedJob:
    try:
        job = job_from_dict(entry.spec)
    except (TypeError, ValueError, AttributeError, ImportError) as exc:
        raise LedgerError(
            f"queued job {entry.job_id} cannot be read back ({exc}); was it written by a newer "
            "vastkit?"
        ) from exc
    result = entry.result
    exit_code = result.get("exit_code")
    return QueuedJob(
        job_id=entry.job_id,
        job=job,
        status=entry.status if entry.status in _STATUSES else "failed",  # type: ignore[arg-type]
        priority=entry.priority,
        project=entry.project,
        submitted_at=entry.submitted_at,
        started_at=entry.started_at,
        ended_at=entry.ended_at,
        claims=entry.claims,
        owner=entry.lease_owner,
        lease_expires_at=entry.lease_expires_at,
        cancel_requested=entry.cancel_requested,
        reason=entry.reason,
        cost_usd=float(result.get("cost_usd") or 0.0),
        attempts=int(result.get("attempts") or 0),
        run_url=result.get("run_url"),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        driver=result.get("driver"),
    )


# --------------------------------------------------------------------------------------------
# The shared instance list


class _SharedInstances:
    """One paged list call per poll interval for every driver of the queue.

    A driver asks for the instances "as listed after ``fresh_after``" (the time its instance
    was created, so a new instance is never read as vanished). The last list is served while it
    is younger than ``max_age`` and newer than ``fresh_after``; otherwise one list call is made,
    under a lock, so drivers polling at the same moment share it.
    """

    def __init__(self, client: Client, clock: Clock, max_age: float) -> None:
        self.client = client
        self.clock = clock
        self.max_age = max_age
        self.calls = 0
        self.served = 0
        self._lock = threading.Lock()
        self._cache: list[ApiInstance] | None = None
        self._taken_at = -math.inf

    def __call__(self, fresh_after: float) -> list[ApiInstance]:
        with self._lock:
            self.served += 1
            now = self.clock.now()
            if (
                self._cache is not None
                and self._taken_at > fresh_after
                and now - self._taken_at < self.max_age
            ):
                return self._cache
            started = self.clock.now()
            listed = self.client.list_instances()
            self.calls += 1
            self._cache = listed
            self._taken_at = started
            return listed


# --------------------------------------------------------------------------------------------
# The queue


class _LeaseLost(BaseException):
    """Another driver took the job over: unwind without touching its instance."""


@attrs.define(eq=False)
class _Driver:
    job_id: str
    token: str
    job: Job
    renewed_at: float
    runner: JobRunner | None = None
    thread: threading.Thread | None = None
    done: threading.Event = attrs.field(factory=threading.Event)
    lost: bool = False
    stop_reason: str | None = None
    outcome: QueuedJob | None = None


class JobQueue:
    """A persistent queue of jobs in the ledger, run several at once.

    Args:
        ledger: A :class:`~vastkit.ledger.Ledger`, or the path of the ledger file (default:
            the default ledger). Two processes given the same file share the queue.
        client: The API client (default: one configured from the environment, made when the
            queue first needs the API: submitting and listing need no API key).
        concurrency: The most jobs this queue object drives at once.
        clock: The clock every wait goes through (default: the client's, else real time).
        budgets: A :class:`~vastkit.budget.Budgets` or the path of a ``budgets.yaml``: every
            job's budget guard checks it (per job, project and team).
        profiles: A ``gpu_profiles.yaml`` path or a mapping of profiles, to resolve profile
            names.
        project_caps: The most jobs of a project running at once, across every process that
            runs this queue (``{"vision": 2}``).
        lease_ttl: Seconds a driver's lease lasts unless renewed; it is renewed every third of
            that while the driver lives. A job whose driver died is adopted by the next
            ``run()`` after at most this long.
        claim_interval: Seconds between two looks for claimable jobs while ``run()`` has
            nothing to do, or for other processes' jobs to end.
        on_event: Called with every :class:`~vastkit.jobs.JobEvent` of every job (from the
            jobs' driver threads).

    Raises:
        ValueError: A bad ``concurrency``, cap, ``lease_ttl`` or ``claim_interval``.
        LedgerError: The ledger cannot be opened.
    """

    def __init__(
        self,
        ledger: Ledger | str | os.PathLike[str] | None = None,
        *,
        client: Client | None = None,
        concurrency: int = 4,
        clock: Clock | None = None,
        budgets: Budgets | str | os.PathLike[str] | None = None,
        profiles: str | os.PathLike[str] | Mapping[str, GpuProfile] | None = None,
        project_caps: Mapping[str, int] | None = None,
        lease_ttl: float = 120.0,
        claim_interval: float = 5.0,
        on_event: Callable[[JobEvent], None] | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1 (got {concurrency!r})")
        caps = dict(project_caps or {})
        for project, cap in caps.items():
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                raise ValueError(f"the cap of project {project!r} must be an integer >= 1")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be positive (got {lease_ttl!r})")
        if not claim_interval > 0:
            raise ValueError(f"claim_interval must be positive (got {claim_interval!r})")
        client_clock = getattr(client, "clock", None) if client is not None else None
        self.clock: Clock = clock or (
            client_clock if isinstance(client_clock, Clock) else SystemClock()
        )
        self._owns_ledger = not isinstance(ledger, Ledger)
        self.ledger: Ledger = (
            ledger if isinstance(ledger, Ledger) else Ledger(ledger, clock=self.clock)
        )
        self._client = client
        self._owns_client = False
        self.concurrency = concurrency
        self.project_caps: dict[str, int] = caps
        self.lease_ttl = float(lease_ttl)
        self.claim_interval = float(claim_interval)
        self.budgets = load_budgets(budgets) if isinstance(budgets, str | os.PathLike) else budgets
        self.profiles = profiles
        self._on_event = on_event
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        """Who this queue object is in leases (``host:pid``)."""
        self._drivers: dict[str, _Driver] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._launch_lock = threading.Lock()
        self._instances: _SharedInstances | None = None
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The API client (made on first use when none was given)."""
        if self._client is None:
            self._client = Client(clock=self.clock)
            self._owns_client = True
        return self._client

    @property
    def list_calls(self) -> int:
        """Instance list calls made by this queue's drivers so far (all pages count as one)."""
        return self._instances.calls if self._instances is not None else 0

    def close(self) -> None:
        """Close what the queue opened (the ledger and client it made). Idempotent.

        Raises:
            RuntimeError: Jobs are still being driven by :meth:`run` in another thread.
        """
        with self._lock:
            if self._drivers:
                raise RuntimeError("cannot close a JobQueue while it drives jobs")
            if self._closed:
                return
            self._closed = True
        if self._owns_client and self._client is not None:
            self._client.close()
        if self._owns_ledger:
            self.ledger.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JobQueue({self.ledger.path!r}, concurrency={self.concurrency})"

    # -- submitting and reading ----------------------------------------------------------------

    def submit(self, job: Job, *, priority: int = 0) -> str:
        """Add ``job`` to the queue.

        Args:
            job: What to run.
            priority: Higher runs first; equal priorities run in submission order.

        Returns:
            The job id (also its run id: the run directory is ``<store_url>/<job_id>``).

        Raises:
            TypeError: ``job`` is not a :class:`~vastkit.jobs.Job`, or holds a value that
                cannot be stored.
        """
        if not isinstance(job, Job):
            raise TypeError(f"submit takes a vastkit.Job, not {type(job).__name__}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an integer (got {priority!r})")
        spec = job_to_dict(job)
        job_id = new_run_id(self.clock)
        self.ledger.enqueue(
            job_id,
            name=job.name,
            spec=spec,
            project=job.project,
            team=job.team,
            priority=priority,
            at=self.clock.now(),
        )
        logger.info("queued job %s (%r, priority %d)", job_id, job.name, priority)
        self._wake.set()
        return job_id

    def get(self, job_id: str) -> QueuedJob | None:
        """The job ``job_id`` and where it stands, or None when the queue has no such job."""
        entry = self.ledger.queue_entry(job_id)
        return _record(entry) if entry is not None else None

    def list(self, status: QueueStatus | None = None) -> list[QueuedJob]:
        """Every job of the queue (with ``status``), in submission order.

        Raises:
            ValueError: An unknown status.
        """
        if status is not None and status not in _STATUSES:
            raise ValueError(f"unknown status {status!r}; statuses: {', '.join(_STATUSES)}")
        return [_record(e) for e in self.ledger.queue_entries(status)]

    def _require(self, job_id: str) -> QueuedJob:
        record = self.get(job_id)
        if record is None:
            raise ValueError(f"no job {job_id!r} in the queue at {self.ledger.path}")
        return record

    def wait(self, job_id: str, *, timeout: float | None = None) -> QueuedJob:
        """Wait until ``job_id`` has ended and return it.

        A job this queue object drives is waited for directly; any other is looked at every
        ``claim_interval`` (some process must be running the queue, or this waits for ever).

        Args:
            job_id: The job.
            timeout: Give up after this many seconds of the clock (None: no limit).

        Raises:
            ValueError: No such job.
            TimeoutError: The job had not ended after ``timeout``.
        """
        deadline = None if timeout is None else self.clock.now() + timeout
        while True:
            record = self._require(job_id)
            if record.done:
                return record
            with self._lock:
                driver = self._drivers.get(job_id)
            if driver is not None and not driver.done.is_set():
                driver.done.wait()
                continue
            if deadline is not None and self.clock.now() >= deadline:
                raise TimeoutError(f"job {job_id} is still {record.status} after {timeout} s")
            self.clock.sleep(self.claim_interval)

    # -- cancelling ----------------------------------------------------------------------------

    def cancel(self, job_id: str, *, wait: bool = True) -> QueuedJob:
        """Cancel a job: a queued one never runs; a running one is stopped (given
        ``stop_grace`` to save), its instance destroyed and its cost recorded.

        A running job whose driver is alive (in this or another process) is stopped by that
        driver at its next poll; one whose driver died is adopted here and stopped now.

        Args:
            job_id: The job.
            wait: Wait until the job has ended (otherwise return at once after asking).

        Returns:
            The job as it stands (``cancelled`` once it ended; a job that ended before the
            cancel keeps its status).

        Raises:
            ValueError: No such job.
        """
        record = self._require(job_id)
        if record.done:
            return record
        if record.status == "queued" and self.ledger.finish_queued(
            job_id, None, status="cancelled", reason="cancelled before it started"
        ):
            logger.info("cancelled queued job %s", job_id)
            return self._require(job_id)
        self.ledger.request_cancel(job_id)
        with self._lock:
            local = job_id in self._drivers
        if not local:
            token = secrets.token_hex(16)
            entry = self.ledger.claim_queued(
                owner=self.owner,
                token=token,
                ttl_s=self.lease_ttl,
                at=self.clock.now(),
                only=job_id,
            )
            if entry is not None:
                # Nobody drives it (its driver died, or it was just queued): stop it here.
                driver = self._start(entry)
                if driver is not None and driver.thread is not None:
                    driver.thread.join()
                    self._forget(driver)
        return self.wait(job_id) if wait else self._require(job_id)

    # -- running -------------------------------------------------------------------------------

    def run(self, until: Literal["empty", "forever"] = "empty") -> builtins.list[QueuedJob]:
        """Drive the queue's jobs, up to ``concurrency`` at once.

        Claims jobs (jobs whose driver died first, then by priority and submission order),
        runs each in its own thread with :func:`~vastkit.jobs.run_job`'s orchestrator, and
        renews their leases. Interrupting it (Ctrl-C, SIGTERM) stops the jobs it drives, lets
        them save, destroys their instances and puts them back in the queue.

        Args:
            until: ``"empty"``: return once no job of the queue is queued or running (in any
                process); ``"forever"``: keep waiting for new jobs.

        Returns:
            The jobs this call drove to their end, in the order they ended.

        Raises:
            ValueError: A bad ``until``.
        """
        if until not in ("empty", "forever"):
            raise ValueError(f"until must be 'empty' or 'forever' (got {until!r})")
        finished: builtins.list[QueuedJob] = []
        signals = SignalGuard()  # SIGTERM unwinds like Ctrl-C: jobs stop, save, go back
        signals.install()
        try:
            while True:
                self._wake.clear()
                self._reap(finished)
                self._renew_all()
                while True:
                    with self._lock:
                        full = len(self._drivers) >= self.concurrency
                        busy = list(self._drivers)
                    if full:
                        break
                    entry = self.ledger.claim_queued(
                        owner=self.owner,
                        token=secrets.token_hex(16),
                        ttl_s=self.lease_ttl,
                        at=self.clock.now(),
                        exclude=busy,
                        project_caps=self.project_caps,
                    )
                    if entry is None:
                        break
                    self._start(entry)
                with self._lock:
                    driving = bool(self._drivers)
                if until == "empty" and not driving and not self._open_jobs():
                    return finished
                if driving:
                    # Woken when a driver ends or a job is submitted; at the latest after
                    # claim_interval real seconds, to renew leases and look for new work.
                    self._wake.wait(timeout=min(self.claim_interval, self.lease_ttl / 3))
                else:
                    self.clock.sleep(self.claim_interval)
        except BaseException:
            with signals.deferring():
                self._stop_all("the queue's run() was interrupted")
                self._reap(finished)
            raise
        finally:
            signals.uninstall()

    def _open_jobs(self) -> bool:
        counts = self.ledger.queue_counts()
        return counts.get("queued", 0) + counts.get("running", 0) > 0

    def _already_ended(self, entry: QueueEntry) -> bool:
        """A job whose previous driver ended its run but died before the queue heard of it."""
        run = self.ledger.get_run(entry.job_id)
        if run is None or run.ended_at is None or run.status not in QUEUE_TERMINAL:
            return False
        if run.status == "cancelled" and not entry.cancel_requested:
            return False  # put back in the queue by an interrupted run(): drive it again
        attempts = self.ledger.attempts(entry.job_id)
        if any(a.destroyed_at is None and a.instance_id is not None for a in attempts):
            return False  # an instance may still live: let the orchestrator adopt and close it
        summary = {
            "driver": self.owner,
            "cost_usd": sum(a.cost_usd for a in attempts),
            "attempts": len(attempts),
            "run_url": run.metadata.get("run_url") if isinstance(run.metadata, Mapping) else None,
        }
        self.ledger.finish_queued(
            entry.job_id,
            entry.lease_token,
            status=run.status,
            reason=f"its run had ended ({run.status}) before its previous driver stopped",
            result=summary,
            at=self.clock.now(),
        )
        return True

    def _start(self, entry: QueueEntry) -> _Driver | None:
        assert entry.lease_token is not None
        now = self.clock.now()
        adopting = entry.claims > 1
        logger.info(
            "%s job %s (%r)",
            "adopting" if adopting else "starting",
            entry.job_id,
            entry.name,
        )
        try:
            job = job_from_dict(entry.spec)
        except (TypeError, ValueError, AttributeError, ImportError) as exc:
            self.ledger.finish_queued(
                entry.job_id,
                entry.lease_token,
                status="failed",
                reason=f"the stored job cannot be read back: {exc}",
                at=now,
            )
            return None
        if adopting and self._already_ended(entry):
            return None
        driver = _Driver(job_id=entry.job_id, token=entry.lease_token, job=job, renewed_at=now)
        instances = self._shared_instances(job)
        try:
            driver.runner = JobRunner(
                job,
                client=self.client,
                ledger=self.ledger,
                clock=self.clock,
                on_event=self._on_event,
                budgets=self.budgets,
                profiles=self.profiles,
                run_id=entry.job_id,
                progress=False,
                progress_file=None,
                instance_source=instances,
                cancel_check=lambda: self._check(driver),
                reconcile_first=False,
                launch_lock=self._launch_lock,
            )
        except (VastkitError, ValueError, TypeError) as exc:
            status = "budget_exceeded" if isinstance(exc, BudgetExceededError) else "failed"
            self.ledger.finish_queued(
                entry.job_id, entry.lease_token, status=status, reason=str(exc), at=now
            )
            return None
        driver.thread = threading.Thread(
            target=self._drive, args=(driver,), name=f"vastkit-job-{entry.job_id}", daemon=True
        )
        with self._lock:
            self._drivers[entry.job_id] = driver
        driver.thread.start()
        return driver

    def _shared_instances(self, job: Job) -> _SharedInstances:
        with self._lock:
            if self._instances is None:
                self._instances = _SharedInstances(
                    self.client, self.clock, job.timeouts.poll_interval
                )
            else:
                self._instances.max_age = min(self._instances.max_age, job.timeouts.poll_interval)
            return self._instances

    def _check(self, driver: _Driver) -> str | None:
        """Run by the job's orchestrator on every poll: renew the lease, report a cancel."""
        if driver.lost:
            raise _LeaseLost
        now = self.clock.now()
        if now - driver.renewed_at >= self.lease_ttl / 3:
            self._renew(driver, now)
            if driver.lost:
                raise _LeaseLost
        if driver.stop_reason is not None:
            return driver.stop_reason
        entry = self.ledger.queue_entry(driver.job_id)
        if entry is None or entry.lease_token != driver.token:
            self._lose(driver)
            raise _LeaseLost
        if entry.cancel_requested:
            return "cancelled by JobQueue.cancel()"
        return None

    def _renew(self, driver: _Driver, now: float) -> None:
        if driver.lost:
            return
        if self.ledger.renew_lease(driver.job_id, driver.token, ttl_s=self.lease_ttl, at=now):
            driver.renewed_at = now
            return
        self._lose(driver)

    def _lose(self, driver: _Driver) -> None:
        logger.error(
            "job %s: the lease was lost (another process took the job over); this process "
            "stops driving it and leaves its instance to the new driver",
            driver.job_id,
        )
        driver.lost = True
        if driver.runner is not None:
            driver.runner.detached = True

    def _renew_all(self) -> None:
        now = self.clock.now()
        with self._lock:
            drivers = [d for d in self._drivers.values() if not d.done.is_set()]
        for driver in drivers:
            if now - driver.renewed_at >= self.lease_ttl / 3:
                self._renew(driver, now)

    def _drive(self, driver: _Driver) -> None:
        runner = driver.runner
        assert runner is not None
        status: str
        reason: str
        result: JobResult | None = None
        try:
            try:
                result = runner.run()
            finally:
                runner.close()
        except _LeaseLost:
            driver.done.set()
            self._wake.set()
            return
        except BudgetExceededError as exc:
            status, reason = "budget_exceeded", str(exc)
        except VastkitError as exc:
            status, reason = "failed", str(exc)
        except BaseException as exc:
            logger.exception("job %s: the orchestrator failed", driver.job_id)
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        else:
            status, reason = result.status, result.reason
        if driver.stop_reason is not None and status == "cancelled":
            entry = self.ledger.queue_entry(driver.job_id)
            if entry is None or not entry.cancel_requested:
                status, reason = "queued", f"put back in the queue: {driver.stop_reason}"
        summary: dict[str, Any] = {"driver": self.owner, "run_url": runner.run_url}
        if result is not None:
            summary.update(
                cost_usd=result.total_cost_usd,
                attempts=len(result.attempts),
                exit_code=result.exit_code,
                instances=[a.instance_id for a in result.attempts if a.instance_id is not None],
            )
        else:
            summary.update(cost_usd=sum(a.cost_usd for a in self.ledger.attempts(runner.run_id)))
            summary["attempts"] = len(self.ledger.attempts(runner.run_id))
        try:
            if not self.ledger.finish_queued(
                driver.job_id,
                driver.token,
                status=status,
                reason=reason,
                result=summary,
                at=self.clock.now(),
            ):
                logger.error("job %s ended (%s) but its lease was lost", driver.job_id, status)
            logger.info("job %s %s: %s", driver.job_id, status, reason)
        finally:
            driver.done.set()
            self._wake.set()

    def _reap(self, finished: builtins.list[QueuedJob]) -> None:
        with self._lock:
            ended = [d for d in self._drivers.values() if d.done.is_set()]
        for driver in ended:
            if driver.thread is not None:
                driver.thread.join()
            self._forget(driver)
            record = self.get(driver.job_id)
            if record is not None and record.done:
                finished.append(record)

    def _forget(self, driver: _Driver) -> None:
        with self._lock:
            if self._drivers.get(driver.job_id) is driver:
                del self._drivers[driver.job_id]

    def _stop_all(self, reason: str) -> None:
        """Stop every job driven here (save, destroy, back to the queue) and wait for them."""
        with self._lock:
            drivers = list(self._drivers.values())
        for driver in drivers:
            driver.stop_reason = reason
        for driver in drivers:
            if driver.thread is None:
                continue
            while driver.thread.is_alive():
                try:
                    driver.thread.join()
                except KeyboardInterrupt:
                    logger.warning(
                        "still stopping %d job(s) so their instances are destroyed",
                        sum(1 for d in drivers if d.thread and d.thread.is_alive()),
                    )

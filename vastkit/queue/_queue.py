"""The :class:`JobQueue` class: submit, read, wait, cancel, and the ``run()`` loop that claims."""

from __future__ import annotations

import builtins
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Literal

from vastkit._console import SignalGuard
from vastkit.api.client import Client
from vastkit.budget import Budgets, load_budgets
from vastkit.clock import Clock, SystemClock
from vastkit.jobs import Job, JobEvent, JobRunner
from vastkit.jobs.launch import job_timeouts
from vastkit.jobs.polling import SharedInstances, shared_instances
from vastkit.labels import new_run_id
from vastkit.ledger import Fence, Ledger
from vastkit.profiles import GpuProfile
from vastkit.queue._drivers import DriverPool
from vastkit.queue._payload import job_to_dict
from vastkit.queue._records import STATUSES, QueuedJob, QueueStatus, queued_job

__all__ = ["JobQueue"]

logger = logging.getLogger("vastkit.queue")


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
        self._pool = DriverPool(
            self.ledger,
            self.clock,
            owner=self.owner,
            lease_ttl=self.lease_ttl,
            make_runner=self._runner,
        )
        self._lock = threading.RLock()
        self._instances: SharedInstances | None = None
        self._launch_lock = threading.Lock()
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
        """Instance list calls made so far for this queue's account (all pages count as one).

        The list is the process's one list for the account, so separate ``run_job`` calls and
        other queues on the same account in this process share (and count in) it.
        """
        return self._instances.calls if self._instances is not None else 0

    @property
    def driving(self) -> frozenset[str]:
        """The ids of the jobs this queue object drives now."""
        return frozenset(self._pool.job_ids())

    def close(self) -> None:
        """Close what the queue opened (the ledger and client it made). Idempotent.

        Raises:
            RuntimeError: Jobs are still being driven by :meth:`run` in another thread.
        """
        with self._lock:
            if self._pool.job_ids():
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
        self._pool.wake.set()
        return job_id

    def get(self, job_id: str) -> QueuedJob | None:
        """The job ``job_id`` and where it stands, or None when the queue has no such job."""
        entry = self.ledger.queue_entry(job_id)
        return queued_job(entry) if entry is not None else None

    def list(self, status: QueueStatus | None = None) -> list[QueuedJob]:
        """Every job of the queue (with ``status``), in submission order.

        Raises:
            ValueError: An unknown status.
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; statuses: {', '.join(STATUSES)}")
        return [queued_job(e) for e in self.ledger.queue_entries(status)]

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
            driver = self._pool.get(job_id)
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
        if self._pool.get(job_id) is None:
            entry = self.ledger.claim_queued(
                owner=self.owner,
                token=secrets.token_hex(16),
                ttl_s=self.lease_ttl,
                at=self.clock.now(),
                only=job_id,
            )
            if entry is not None:
                # Nobody drives it (its driver died, or it was just queued): stop it here.
                driver = self._pool.start(entry)
                if driver is not None and driver.thread is not None:
                    driver.thread.join()
                    self._pool.forget(driver)
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
                self._pool.wake.clear()
                self._pool.reap(finished)
                self._pool.renew_all()
                self._claim_more()
                driving = bool(self._pool.job_ids())
                if until == "empty" and not driving and not self._open_jobs():
                    return finished
                if driving:
                    # Woken when a driver ends or a job is submitted; at the latest after
                    # claim_interval real seconds, to renew leases and look for new work.
                    self._pool.wake.wait(timeout=min(self.claim_interval, self.lease_ttl / 3))
                else:
                    self.clock.sleep(self.claim_interval)
        except BaseException:
            with signals.deferring():
                self._pool.stop_all("the queue's run() was interrupted")
                self._pool.reap(finished)
            raise
        finally:
            signals.uninstall()

    def _claim_more(self) -> None:
        """Claim and start jobs until ``concurrency`` are driven or none can be claimed."""
        while True:
            busy = self._pool.job_ids()
            if len(busy) >= self.concurrency:
                return
            entry = self.ledger.claim_queued(
                owner=self.owner,
                token=secrets.token_hex(16),
                ttl_s=self.lease_ttl,
                at=self.clock.now(),
                exclude=busy,
                project_caps=self.project_caps,
            )
            if entry is None:
                return
            self._pool.start(entry)

    def _open_jobs(self) -> bool:
        counts = self.ledger.queue_counts()
        return counts.get("queued", 0) + counts.get("running", 0) > 0

    def _runner(
        self, job: Job, run_id: str, cancel_check: Callable[[], str | None], fence: Fence
    ) -> JobRunner:
        """The orchestrator of one queued job: ``run_job``'s, sharing the list call."""
        return JobRunner(
            job,
            client=self.client,
            ledger=self.ledger,
            clock=self.clock,
            on_event=self._on_event,
            budgets=self.budgets,
            profiles=self.profiles,
            run_id=run_id,
            progress=False,
            progress_file=None,
            instance_source=self._shared_instances(job),
            cancel_check=cancel_check,
            reconcile_first=False,
            launch_lock=self._launch_lock,
            fence=fence,
        )

    def _shared_instances(self, job: Job) -> SharedInstances:
        # the process's one list for this account: drivers of this queue, other queues and
        # separate run_job calls all share it
        poll = job_timeouts(job.timeouts).poll_interval  # the configured one, as run_job's
        self._instances = shared_instances(self.client, self.clock, poll)
        return self._instances

"""The driver threads of a :class:`~vastkit.JobQueue`: one per job, each under a lease.

A :class:`DriverPool` starts a thread per claimed job that runs the job's orchestrator (a
:class:`~vastkit.jobs.JobRunner`), renews the job's lease while it lives, and records the job's
end in the queue with the lease token, so a driver that lost its lease changes nothing.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Callable
from typing import Any

import attrs

from vastkit.clock import Clock
from vastkit.errors import BudgetExceededError, VastkitError
from vastkit.jobs import Job, JobResult, JobRunner
from vastkit.ledger import Fence, LeaseLost, Ledger, QueueEntry
from vastkit.queue._adoption import finish_if_run_ended
from vastkit.queue._payload import job_from_dict
from vastkit.queue._records import QueuedJob, queued_job

__all__ = ["Driver", "DriverPool", "LeaseLost", "RunnerFactory"]

logger = logging.getLogger("vastkit.queue")


@attrs.define(eq=False)
class Driver:
    """One job driven in this process."""

    job_id: str
    token: str
    job: Job
    renewed_at: float
    fence: Fence
    """The lease epoch this driver holds: its money writes check it (see
    :mod:`vastkit.ledger`'s fencing)."""
    runner: JobRunner | None = None
    thread: threading.Thread | None = None
    done: threading.Event = attrs.field(factory=threading.Event)
    lost: bool = False
    stop_reason: str | None = None


RunnerFactory = Callable[[Job, str, Callable[[], str | None], Fence], JobRunner]
"""Builds the orchestrator of a job: ``(job, run_id, cancel_check, fence) -> JobRunner``."""


class DriverPool:
    """The jobs this process drives, one thread each.

    Args:
        ledger: The queue's ledger.
        clock: The queue's clock.
        owner: Who drives (``host:pid``), stored with the leases.
        lease_ttl: Seconds a lease lasts unless renewed (renewed every third of that).
        make_runner: Builds a job's orchestrator.
    """

    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        *,
        owner: str,
        lease_ttl: float,
        make_runner: RunnerFactory,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.owner = owner
        self.lease_ttl = lease_ttl
        self.make_runner = make_runner
        self.wake = threading.Event()
        """Set when a driver ends (or a job is submitted): the queue's loop looks again."""
        self._drivers: dict[str, Driver] = {}
        self._lock = threading.RLock()

    def job_ids(self) -> builtins.list[str]:
        """The jobs driven now."""
        with self._lock:
            return list(self._drivers)

    def get(self, job_id: str) -> Driver | None:
        """The driver of ``job_id``, if it is driven here."""
        with self._lock:
            return self._drivers.get(job_id)

    # -- starting ------------------------------------------------------------------------------

    def start(self, entry: QueueEntry) -> Driver | None:
        """Drive the job of a freshly claimed row in a new thread.

        Returns:
            The driver, or None when the job ended here without running (it cannot be read
            back, cannot start, or its run had already ended).
        """
        assert entry.lease_token is not None
        now = self.clock.now()
        adopting = entry.claims > 1
        logger.info(
            "%s job %s (%r)", "adopting" if adopting else "starting", entry.job_id, entry.name
        )
        try:
            job = job_from_dict(entry.spec)
        except ValueError as exc:
            reason = f"the stored job cannot be read back: {exc}"
            self.ledger.finish_queued(
                entry.job_id, entry.lease_token, status="failed", reason=reason, at=now
            )
            return None
        if adopting and finish_if_run_ended(self.ledger, entry, owner=self.owner, now=now):
            return None
        fence = Fence(entry.job_id, entry.lease_token, entry.claims)
        driver = Driver(
            job_id=entry.job_id, token=entry.lease_token, job=job, renewed_at=now, fence=fence
        )
        try:
            driver.runner = self.make_runner(job, entry.job_id, lambda: self.check(driver), fence)
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

    # -- the lease -----------------------------------------------------------------------------

    def check(self, driver: Driver) -> str | None:
        """Run by the job's orchestrator on every poll: renew the lease, report a stop.

        Returns:
            Why the job must stop (cancelled, or the queue's ``run()`` was interrupted), or None.

        Raises:
            LeaseLost: Another driver holds the job now.
        """
        if driver.lost:
            raise LeaseLost
        now = self.clock.now()
        if now - driver.renewed_at >= self.lease_ttl / 3:
            self._renew(driver, now)
            if driver.lost:
                raise LeaseLost
        if driver.stop_reason is not None:
            return driver.stop_reason
        entry = self.ledger.queue_entry(driver.job_id)
        if entry is None or entry.lease_token != driver.token:
            self._lose(driver)
            raise LeaseLost
        if entry.cancel_requested:
            return "cancelled by JobQueue.cancel()"
        return None

    def renew_all(self) -> None:
        """Renew every live driver's lease that is a third of ``lease_ttl`` old."""
        now = self.clock.now()
        with self._lock:
            drivers = [d for d in self._drivers.values() if not d.done.is_set()]
        for driver in drivers:
            if now - driver.renewed_at >= self.lease_ttl / 3:
                self._renew(driver, now)

    def _renew(self, driver: Driver, now: float) -> None:
        if driver.lost:
            return
        if self.ledger.renew_lease(driver.job_id, driver.token, ttl_s=self.lease_ttl, at=now):
            driver.renewed_at = now
            return
        self._lose(driver)

    def _lose(self, driver: Driver) -> None:
        logger.error(
            "job %s: the lease was lost (another driver took the job over, lease epoch > %d); "
            "this process stops acting for it",
            driver.job_id,
            driver.fence.epoch,
        )
        driver.lost = True
        if driver.runner is not None:
            driver.runner.detached = True

    # -- the thread ----------------------------------------------------------------------------

    def _drive(self, driver: Driver) -> None:
        runner = driver.runner
        assert runner is not None
        result: JobResult | None = None
        try:
            try:
                result = runner.run()
            finally:
                runner.close()
        except LeaseLost:
            if not driver.lost:
                self._lose(driver)  # a fenced write found the lease taken over
            driver.done.set()
            self.wake.set()
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
        try:
            self._finish(driver, runner, result, status, reason)
        finally:
            driver.done.set()
            self.wake.set()

    def _finish(
        self,
        driver: Driver,
        runner: JobRunner,
        result: JobResult | None,
        status: str,
        reason: str,
    ) -> None:
        """Record the end of a driven job (or put it back in the queue when it was stopped
        because the queue's ``run()`` was interrupted, not cancelled)."""
        if driver.stop_reason is not None and status == "cancelled":
            entry = self.ledger.queue_entry(driver.job_id)
            if entry is None or not entry.cancel_requested:
                status, reason = "queued", f"put back in the queue: {driver.stop_reason}"
        if not self.ledger.finish_queued(
            driver.job_id,
            driver.token,
            status=status,
            reason=reason,
            result=self._summary(runner, result),
            at=self.clock.now(),
        ):
            logger.error("job %s ended (%s) but its lease was lost", driver.job_id, status)
        logger.info("job %s %s: %s", driver.job_id, status, reason)

    def _summary(self, runner: JobRunner, result: JobResult | None) -> dict[str, Any]:
        summary: dict[str, Any] = {"driver": self.owner, "run_url": runner.run_url}
        if result is not None:
            summary.update(
                cost_usd=result.total_cost_usd,
                attempts=len(result.attempts),
                exit_code=result.exit_code,
                instances=[a.instance_id for a in result.attempts if a.instance_id is not None],
            )
        else:
            attempts = self.ledger.attempts(runner.run_id)
            summary.update(cost_usd=sum(a.cost_usd for a in attempts), attempts=len(attempts))
        return summary

    # -- ending --------------------------------------------------------------------------------

    def reap(self, finished: builtins.list[QueuedJob]) -> None:
        """Join the drivers that ended; append the jobs they ended to ``finished``."""
        with self._lock:
            ended = [d for d in self._drivers.values() if d.done.is_set()]
        for driver in ended:
            if driver.thread is not None:
                driver.thread.join()
            self.forget(driver)
            entry = self.ledger.queue_entry(driver.job_id)
            record = queued_job(entry) if entry is not None else None
            if record is not None and record.done:
                finished.append(record)

    def forget(self, driver: Driver) -> None:
        """Drop a driver whose thread ended."""
        with self._lock:
            if self._drivers.get(driver.job_id) is driver:
                del self._drivers[driver.job_id]

    def stop_all(self, reason: str) -> None:
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

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

How the package is laid out: ``_queue`` holds :class:`JobQueue` (submitting, reading, waiting,
cancelling and the claim loop), ``_drivers`` the driver threads and their leases,
``_adoption`` what happens when a dead driver's job is claimed again, ``_instances`` the shared
list call, ``_payload`` how a job is stored and ``_records`` what the queue says about it.
"""

from __future__ import annotations

from vastkit.queue._payload import job_from_dict, job_to_dict
from vastkit.queue._queue import JobQueue
from vastkit.queue._records import QueuedJob, QueueStatus

__all__ = ["JobQueue", "QueueStatus", "QueuedJob", "job_from_dict", "job_to_dict"]

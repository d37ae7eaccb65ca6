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
``vastkit/<ledger_id>/<run_id>/<attempt>`` and an onstart that starts
``python -m vastkit.worker``, wait through each phase with its own deadline, then watch the
attempt with one paged ``GET /api/v1/instances/`` per poll plus the worker's heartbeat in the
store. Each failure class has its own reaction:

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

from vastkit.jobs.orchestrator import JobRunner, run_job
from vastkit.jobs.result import AttemptSummary, CostBreakdown, JobEvent, JobResult
from vastkit.jobs.spec import Job, JobStatus, JobTimeouts

__all__ = [
    "AttemptSummary",
    "CostBreakdown",
    "Job",
    "JobEvent",
    "JobResult",
    "JobRunner",
    "JobStatus",
    "JobTimeouts",
    "run_job",
]

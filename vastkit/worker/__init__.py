"""The worker: what runs on the GPU host, and the API the training code uses.

On the host, ``python -m vastkit.worker --run-url URL --attempt N`` (started by the onstart
script) reads ``job.json``, runs the command, streams its output, writes heartbeats and
finally the result; see the worker guide.

In the training code::

    from vastkit import worker

    ctx = worker.context()
    start = 0
    latest = ctx.checkpoints.latest()
    ...
    for step in range(start, total):
        ...
        worker.log_metrics(step, loss=loss)
        ctx.checkpoints.save(step, state)
        if worker.should_stop():        # SIGTERM: the machine is going away
            ctx.checkpoints.save_now(step, state)
            break

The same script runs outside a worker against a local folder. Under a launcher
(``Job(launcher="torchrun")``) every rank runs it: ``ctx.rank``, ``ctx.world_size`` and
``ctx.is_main`` say which one this is (see the multi-GPU guide).
"""

from __future__ import annotations

import threading

from vastkit.worker._context import WorkerContext

__all__ = ["WorkerContext", "context", "log_metrics", "should_stop"]

_context: WorkerContext | None = None
_context_lock = threading.Lock()


def context() -> WorkerContext:
    """The context of this process, created on first call (from the main thread, ideally).

    Inside a worker it is bound to the run directory and attempt from the environment the worker
    set; outside one it works against ``./vastkit-local-run`` (or ``VASTKIT_LOCAL_RUN``). The
    first call installs a SIGTERM handler that makes :func:`should_stop` true.

    Returns:
        The process-wide :class:`WorkerContext`.

    Raises:
        JobError: The environment the worker set is malformed, or ``job.json`` is garbled.
    """
    global _context
    with _context_lock:
        if _context is None:
            _context = WorkerContext()
        return _context


def should_stop(*, any_rank: bool = False) -> bool:
    """True once the worker forwarded SIGTERM: save a checkpoint and exit within the grace period.

    Args:
        any_rank: Under a launcher, whether the stop reached any rank (one all-reduce; every
            rank must call it at the same point), so that all stop after the same step (see
            :meth:`WorkerContext.should_stop`).

    Returns:
        Whether the command should stop now.
    """
    return context().should_stop(any_rank=any_rank)


def log_metrics(step: int, *, all_ranks: bool = False, **values: float) -> None:
    """Record metric values at a training step (see :meth:`WorkerContext.log_metrics`).

    Args:
        step: The training step.
        all_ranks: Under a launcher, keep every rank's values (named ``<name>/rank<n>``), not
            only the main rank's.
        **values: Metric names and numbers.
    """
    context().log_metrics(step, all_ranks=all_ranks, **values)

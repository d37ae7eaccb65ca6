"""The asynchronous save: at most one in flight, and its failure never swallowed.

:class:`BackgroundSave` runs one save at a time on a single worker thread (or on the caller's
thread for a synchronous save, through the same bookkeeping). A save that fails is kept and raised
as :class:`~vastkit.errors.CheckpointError` at the next call that looks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from vastkit.clock import Clock
from vastkit.errors import CheckpointError

__all__ = ["BackgroundSave"]

_POLL = 0.02


class BackgroundSave:
    """The save in flight, and the error of the last one that failed."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._future: Future[None] | None = None
        self._future_step: int | None = None
        self._error: BaseException | None = None
        self._error_step: int | None = None

    def start(self, step: int, work: Callable[[], None], *, background: bool) -> None:
        """Run ``work`` (the save of ``step``) in the background, or now with ``background=False``.

        The caller finishes the save in flight first (:meth:`finish`).
        """
        self._future_step = step
        if not background:
            fut: Future[None] = Future()
            try:
                work()
            except Exception as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(None)
            self._future = fut
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="vastkit-checkpoint")
        self._future = self._executor.submit(work)

    def finish(self) -> None:
        """Wait for the save in flight, then raise its error (or an earlier one)."""
        fut, self._future = self._future, None
        if fut is None:
            return
        try:
            fut.result()
        except BaseException as exc:
            self._error, self._error_step = exc, self._future_step
        self.raise_pending()

    def raise_pending(self) -> None:
        """Raise the error of a save that already ended, if any.

        Raises:
            CheckpointError: that save failed.
        """
        if self._future is not None and self._future.done():
            self.finish()
            return
        err, self._error = self._error, None
        if err is None:
            return
        if isinstance(err, CheckpointError):
            raise err
        raise CheckpointError(f"saving checkpoint step {self._error_step} failed: {err}") from err

    def wait_until(self, end: float | None, clock: Clock) -> bool:
        """Wait for the save in flight until ``end`` (a time of ``clock``; None: no bound).

        Returns:
            Whether no save is in flight any more (its error, if any, is kept for later).
        """
        fut = self._future
        if fut is None or end is None:
            if fut is not None:
                with contextlib.suppress(BaseException):
                    fut.result()
            return True
        while not fut.done():
            if clock.now() >= end:
                return False
            clock.sleep(_POLL)
        return True

    def shutdown(self) -> None:
        """Release the worker thread (after :meth:`finish`)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

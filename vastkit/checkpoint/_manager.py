"""The checkpoint manager: when to save, and the public face of saving and restoring."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

from vastkit._store import DEFAULT_CHUNK, DEFAULT_CONCURRENCY
from vastkit.checkpoint import _sharded
from vastkit.checkpoint._background import BackgroundSave
from vastkit.checkpoint._commits import Retention
from vastkit.checkpoint._group import writes_here
from vastkit.checkpoint._reader import CheckpointReader
from vastkit.checkpoint._schedule import SaveSchedule, SaveStats, ema
from vastkit.checkpoint._serialize import (
    FORMAT_TAG,
    Stager,
    capture_rng,
)
from vastkit.checkpoint.naming import step_dirname
from vastkit.clock import Clock
from vastkit.errors import CheckpointError
from vastkit.retry import RetryPolicy

__all__ = ["CheckpointManager", "SaveStats"]

logger = logging.getLogger("vastkit.checkpoint")


def _check_settings(
    *,
    every_steps: int | Literal["auto"] | None,
    every_seconds: float | None,
    keep_last: int | None,
    keep_best: int | None,
    best_metric: str | None,
    best_mode: str,
    mtbf_seconds: float,
    save_rank: int | None,
) -> None:
    """Refuse a manager's settings that are out of range (see :class:`CheckpointManager`)."""
    if save_rank is not None and (
        isinstance(save_rank, bool) or not isinstance(save_rank, int) or save_rank < 0
    ):
        raise ValueError(f"save_rank must be an int >= 0 or None, not {save_rank!r}")
    if every_steps is not None and every_steps != "auto":
        if isinstance(every_steps, bool) or not isinstance(every_steps, int):
            raise TypeError(f"every_steps must be an int, 'auto' or None, not {every_steps!r}")
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, not {every_steps}")
    if every_seconds is not None and not every_seconds > 0:
        raise ValueError(f"every_seconds must be > 0, not {every_seconds}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, not {keep_last}")
    if keep_best is not None and (keep_best < 0 or best_metric is None):
        raise ValueError("keep_best needs best_metric and a count >= 0")
    if best_mode not in ("min", "max"):
        raise ValueError(f"best_mode must be 'min' or 'max', not {best_mode!r}")
    if not mtbf_seconds > 0:
        raise ValueError(f"mtbf_seconds must be > 0, not {mtbf_seconds}")


class CheckpointManager(CheckpointReader):
    """Committed, asynchronous, verified checkpoints under an fsspec URL.

    Args:
        url: Any fsspec URL or plain path (``s3://bucket/run``, ``gs://...``, ``file:///...``,
            ``memory://...``). Checkpoints go under ``<url>/checkpoints/``.
        every_steps: Save when the step is a multiple of this (or this many steps passed since the
            last save). ``"auto"`` picks the interval from Young/Daly, ``sqrt(2 x stall x MTBF)``,
            bounded below by the measured upload time, using ``mtbf_seconds``.
        every_seconds: Save when this many seconds passed since the last save (by ``clock``).
            With neither interval, every call to :meth:`save` saves.
        keep_last: Keep the newest N committed checkpoints (``None`` keeps all); older ones are
            pruned only after a new commit. The newest is always kept.
        keep_best: Also keep the best N checkpoints by ``best_metric``.
        best_metric: The metric (a key of ``save(metrics=...)``) that ranks checkpoints.
        best_mode: ``"min"`` (lower is better) or ``"max"``.
        async_save: Stage on the caller's thread and upload in the background (default). With
            ``False`` :meth:`save` returns only after the commit.
        storage_options: Passed to fsspec (credentials, ``client_kwargs``, ...).
        retries: A :class:`~vastkit.retry.RetryPolicy` for transient store errors, or the
            number of tries (default: six tries within 120 seconds, waits of 0.25 s to 8 s).
        clock: The clock for intervals, backoff and deadlines (default :class:`SystemClock`).
        capture_rng: Save Python, NumPy, torch and CUDA RNG states with every checkpoint.
        mtbf_seconds: The mean time between failures for ``every_steps="auto"``.
        transfer_chunk_bytes: The part size of concurrent multipart uploads and ranged reads
            (S3).
        transfer_concurrency: How many parts move at once (S3).
        save_rank: In a group of processes (``torch.distributed`` initialised, else ``RANK`` and
            ``WORLD_SIZE`` set, as by torchrun), the one rank whose :meth:`save` and
            :meth:`save_now` write a replicated state (DDP); on the others they return ``False``
            at once. ``None``: every rank writes (give each its own ``url``). Reading
            (:meth:`latest`, :meth:`restore`, ...) works on every rank. :meth:`save_sharded` is
            called by every rank regardless.
        collective_timeout: Seconds a sharded save or load waits for the other ranks in any one
            step before it raises :class:`~vastkit.errors.CheckpointError` (a rank killed,
            crashed or hung). It bounds the slowest rank's upload too, so keep it generous.

    Raises:
        ValueError: an interval, a count, ``save_rank`` or ``collective_timeout`` is out of
            range, or ``keep_best`` lacks ``best_metric``.
    """

    def __init__(
        self,
        url: str,
        *,
        every_steps: int | Literal["auto"] | None = None,
        every_seconds: float | None = None,
        keep_last: int | None = 3,
        keep_best: int | None = None,
        best_metric: str | None = None,
        best_mode: Literal["min", "max"] = "min",
        async_save: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        retries: RetryPolicy | int | None = None,
        clock: Clock | None = None,
        capture_rng: bool = True,
        mtbf_seconds: float = 6 * 3600.0,
        transfer_chunk_bytes: int = DEFAULT_CHUNK,
        transfer_concurrency: int = DEFAULT_CONCURRENCY,
        save_rank: int | None = 0,
        collective_timeout: float = 1800.0,
    ) -> None:
        _check_settings(
            every_steps=every_steps,
            every_seconds=every_seconds,
            keep_last=keep_last,
            keep_best=keep_best,
            best_metric=best_metric,
            best_mode=best_mode,
            mtbf_seconds=mtbf_seconds,
            save_rank=save_rank,
        )
        super().__init__(
            url,
            storage_options=storage_options,
            retries=retries,
            clock=clock,
            transfer_chunk_bytes=transfer_chunk_bytes,
            transfer_concurrency=transfer_concurrency,
            collective_timeout=collective_timeout,
        )
        self._folders.retention = Retention(
            keep_last=keep_last, keep_best=keep_best, best_metric=best_metric, best_mode=best_mode
        )
        self._schedule = SaveSchedule(
            every_steps, every_seconds, float(mtbf_seconds), last_time=self._clock.now()
        )
        self._async = async_save
        self._capture_rng = capture_rng
        self._stager = Stager()
        self._saves = BackgroundSave()
        self._last_seen: tuple[int, Any, Mapping[str, float] | None] | None = None
        self._committed: int | None = None
        self._save_rank = save_rank
        self.stats: SaveStats = self._schedule.stats
        """Measured ``stall_seconds``, ``upload_seconds`` and ``step_seconds`` (moving averages)."""

    def _restored(self, step: int) -> None:
        self._schedule.restored(step)

    @property
    def committed_step(self) -> int | None:
        """The step of the newest checkpoint this manager committed (``None`` before its first
        commit); a cheap check, without store calls, of whether a background save is durable."""
        return self._committed

    # ------------------------------------------------------------------ saving

    @property
    def interval_steps(self) -> int | None:
        """The current interval in steps (the measured one for ``every_steps="auto"``)."""
        return self._schedule.interval_steps

    def save(
        self,
        step: int,
        state: Mapping[str, Any],
        *,
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Save ``state`` as checkpoint ``step`` if the interval says so (or ``force``).

        Call it every step; it returns at once when no save is due. ``state`` maps names to
        modules, optimizers, schedulers, GradScalers (saved through ``state_dict()``), tensors,
        NumPy arrays and plain Python values.

        In a group of processes only ``save_rank`` (rank 0 by default) writes: the state is
        replicated (DDP), so one copy is the checkpoint. On the other ranks this returns
        ``False`` at once, without a store call or a collective. A state that each rank holds
        a different part of (FSDP) is saved with :meth:`save_sharded` instead.

        Args:
            step: The training step (>= 0); checkpoints are ordered by it.
            state: What to save.
            metrics: Numbers to record in the manifest (used by keep-best retention).
            force: Save even if no save is due.

        Returns:
            Whether a save was started (async) or committed (sync); ``False`` on a rank that
            does not write.

        Raises:
            CheckpointError: the previous background save failed, or (sync) this one failed.
            ValueError: ``step`` is negative, or ``save_rank`` is not a rank of the group.
            ConfigValueError: ``RANK``/``WORLD_SIZE`` are malformed (no process group).
        """
        self._check_open()
        step_dirname(step)  # validates
        if not self._writes_here():
            return False
        self._saves.raise_pending()
        now = self._clock.now()
        self._schedule.note_call(step, now)
        self._last_seen = (step, state, metrics)
        if not force and not self._schedule.due(step, now):
            return False
        self._start_save(step, state, metrics)
        if not self._async:
            self.wait()
        return True

    def _writes_here(self) -> bool:
        """Whether this process writes replicated saves (see ``save_rank``)."""
        return writes_here(self._save_rank)

    def _start_save(
        self, step: int, state: Mapping[str, Any], metrics: Mapping[str, float] | None
    ) -> None:
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, not {type(state).__name__}")
        clean_metrics = {str(k): float(v) for k, v in (metrics or {}).items()}
        self._saves.finish()
        started = self._clock.now()
        tree, nbytes = self._stager.stage(dict(state), copy_tensors=self._async)
        rng = capture_rng() if self._capture_rng else None
        self.stats.stall_seconds = ema(self.stats.stall_seconds, self._clock.now() - started)
        payload = {"format": FORMAT_TAG, "state": tree, "rng": rng}
        self._schedule.saved(step, self._clock.now())
        self._saves.start(
            step,
            lambda: self._commit(step, payload, nbytes, clean_metrics),
            background=self._async,
        )

    def _commit(
        self, step: int, payload: Mapping[str, Any], nbytes: int, metrics: Mapping[str, float]
    ) -> None:
        started = self._clock.now()
        self._folders.write(step, payload, nbytes, metrics)
        self._committed = step
        self.stats.upload_seconds = ema(self.stats.upload_seconds, self._clock.now() - started)
        self._folders.after_commit(step)

    def wait(self) -> None:
        """Block until the save in flight (if any) is committed.

        Raises:
            CheckpointError: that save (or an earlier one) failed.
        """
        self._saves.finish()
        self._saves.raise_pending()

    def save_now(
        self,
        step: int | None = None,
        state: Mapping[str, Any] | None = None,
        *,
        metrics: Mapping[str, float] | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Commit a checkpoint now, within ``deadline`` seconds: the hook for a SIGTERM handler.

        Without ``step`` and ``state`` it saves the step and state last passed to :meth:`save`
        (the live objects, so their current values), unless that step is already committed.

        Args:
            step: The step to save (default: the last one passed to :meth:`save`).
            state: The state to save (default: the last one passed to :meth:`save`).
            metrics: Metrics for the manifest.
            deadline: Seconds to wait for the commit (``None``: as long as it takes).

        Returns:
            Whether a checkpoint of that step is committed when this returns. When the deadline
            passes first the upload goes on in the background. ``False`` at once on a rank that
            does not write (see ``save_rank``).

        Raises:
            CheckpointError: a background save failed.
        """
        self._check_open()
        if not self._writes_here():
            return False
        end = None if deadline is None else self._clock.now() + deadline
        if state is None or step is None:
            if self._last_seen is None:
                if not self._saves.wait_until(end, self._clock):
                    return False
                self.wait()
                return self._committed is not None
            step = self._last_seen[0] if step is None else step
            state = self._last_seen[1] if state is None else state
            metrics = self._last_seen[2] if metrics is None else metrics
        if not self._saves.wait_until(end, self._clock):
            return False
        self._saves.raise_pending()
        if self._committed != step:
            self._start_save(step, state, metrics)
        if not self._saves.wait_until(end, self._clock):
            return False
        self.wait()
        return self._committed == step

    # ------------------------------------------------------------ sharded states

    def save_sharded(
        self,
        step: int,
        state_dict: dict[str, Any],
        *,
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Save a state that every rank holds a part of (FSDP, DTensor): call it on every rank.

        Each rank writes its shards into the step's folder with ``torch.distributed.checkpoint``
        (through vastkit's store, hashing every object as it is written); rank 0 then checks
        that every rank's objects are in the store with their sizes and commits them all with
        one manifest, and every rank returns only after that commit. A rank that fails, dies or
        hangs means the step is never committed: the others raise
        :class:`~vastkit.errors.CheckpointError` within ``collective_timeout``. Retention, the
        ``latest`` hint and :meth:`latest` work as for :meth:`save`; re-saving a committed step
        writes aside and swaps the manifest, so the step is never uncommitted. The call is
        synchronous; RNG states are not captured (put them in ``state_dict`` if needed).

        Outside a process group (one process) it saves the state alone, as rank 0 of 1.

        Args:
            step: The training step (>= 0), the same on every rank.
            state_dict: What DCP saves: tensors, ``DTensor``/``ShardedTensor`` shards, objects
                with ``state_dict()``/``load_state_dict()`` (``Stateful``) and small Python
                values; for FSDP use ``torch.distributed.checkpoint.state_dict.get_state_dict``.
            metrics: Numbers for the manifest (keep-best retention); rank 0's are recorded.
            force: Save even if the interval says no save is due. The interval is decided on
                rank 0 and shared when it depends on time (``every_seconds``, ``"auto"``), so
                every rank agrees.

        Returns:
            Whether the step was committed (``False``: no save was due).

        Raises:
            CheckpointError: a rank failed to write, a rank is gone or silent past
                ``collective_timeout`` (end the process then: its process group is broken), or
                torch.distributed is not initialised although ``WORLD_SIZE`` > 1.
            ValueError: ``step`` is negative.
        """
        self._check_open()
        step_dirname(step)  # validates
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, not {type(state_dict).__name__}")
        self.wait()
        committed = _sharded.save_if_due(
            self._folders,
            self._coordinator,
            self._schedule,
            self._clock,
            step=step,
            state_dict=state_dict,
            metrics={str(k): float(v) for k, v in (metrics or {}).items()},
            force=force,
        )
        if committed:
            self._committed = step
        return committed

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Wait for the save in flight, then release the background thread. Idempotent.

        Raises:
            CheckpointError: the last background save failed.
        """
        if self._closed:
            return
        try:
            self.wait()
        finally:
            self._closed = True
            self._saves.shutdown()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except CheckpointError as err:  # do not mask the exception already on its way
            logger.error("a background checkpoint save failed: %s", err)

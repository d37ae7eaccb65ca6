"""The checkpoint manager: when to save, and the public face of saving and restoring."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal

import attrs

from vastkit._store import DEFAULT_CHUNK, DEFAULT_CONCURRENCY, STORE_RETRY, Store
from vastkit.checkpoint import _sharded
from vastkit.checkpoint._background import BackgroundSave
from vastkit.checkpoint._commits import CheckpointFolders, CheckpointInfo, Retention
from vastkit.checkpoint._group import Coordinator, Ranks, detect_ranks, initialized_dist
from vastkit.checkpoint._serialize import (
    FORMAT_TAG,
    Stager,
    capture_rng,
    is_module,
)
from vastkit.checkpoint._serialize import restore_rng as restore_rng_states
from vastkit.checkpoint.naming import auto_interval_steps, is_due, step_dirname
from vastkit.clock import Clock, SystemClock
from vastkit.errors import CheckpointError
from vastkit.retry import RetryPolicy

__all__ = ["CheckpointManager", "SaveStats"]

logger = logging.getLogger("vastkit.checkpoint")


@attrs.define
class SaveStats:
    """Measured costs of saving (moving averages, in seconds; ``None`` until measured)."""

    stall_seconds: float | None = None
    """How long a save held up the caller (staging the state)."""
    upload_seconds: float | None = None
    """How long serialising, uploading and committing took."""
    step_seconds: float | None = None
    """The time per training step between calls to :meth:`CheckpointManager.save`."""


def ema(old: float | None, new: float, weight: float = 0.5) -> float:
    """An exponential moving average step (``new`` when there is no ``old``)."""
    return new if old is None else (1 - weight) * old + weight * new


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
    collective_timeout: float,
) -> None:
    """Refuse a manager's settings that are out of range (see :class:`CheckpointManager`)."""
    if save_rank is not None and (
        isinstance(save_rank, bool) or not isinstance(save_rank, int) or save_rank < 0
    ):
        raise ValueError(f"save_rank must be an int >= 0 or None, not {save_rank!r}")
    if not collective_timeout > 0:
        raise ValueError(f"collective_timeout must be > 0, not {collective_timeout}")
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


class CheckpointManager:
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
            collective_timeout=collective_timeout,
        )
        if retries is None:
            retry = STORE_RETRY
        elif isinstance(retries, RetryPolicy):
            retry = retries
        else:
            retry = attrs.evolve(STORE_RETRY, attempts=int(retries))
        self._clock: Clock = clock if clock is not None else SystemClock()
        if transfer_chunk_bytes < 5 * 2**20 or transfer_concurrency < 1:
            raise ValueError("transfer_chunk_bytes must be >= 5 MiB and transfer_concurrency >= 1")
        self._store = Store(
            url,
            storage_options,
            retry=retry,
            clock=self._clock,
            transfer_chunk_bytes=transfer_chunk_bytes,
            transfer_concurrency=transfer_concurrency,
        )
        self.url = self._store.url
        self._folders = CheckpointFolders(
            self._store,
            retention=Retention(
                keep_last=keep_last,
                keep_best=keep_best,
                best_metric=best_metric,
                best_mode=best_mode,
            ),
        )
        self._every_steps = every_steps
        self._every_seconds = every_seconds
        self._keep_last = keep_last
        self._keep_best = keep_best
        self._best_metric = best_metric
        self._best_mode: Literal["min", "max"] = best_mode
        self._async = async_save
        self._capture_rng = capture_rng
        self._mtbf = float(mtbf_seconds)
        self._stager = Stager()
        self._saves = BackgroundSave()
        self._closed = False
        self._last_step: int | None = None
        self._last_time = self._clock.now()
        self._last_call: tuple[int, float] | None = None
        self._last_seen: tuple[int, Any, Mapping[str, float] | None] | None = None
        self._committed: int | None = None
        self._save_rank = save_rank
        self._coordinator = Coordinator(collective_timeout)
        self.stats = SaveStats()
        """Measured ``stall_seconds``, ``upload_seconds`` and ``step_seconds`` (moving averages)."""

    def __repr__(self) -> str:
        return f"CheckpointManager({self.url!r})"

    @property
    def committed_step(self) -> int | None:
        """The step of the newest checkpoint this manager committed (``None`` before its first
        commit); a cheap check, without store calls, of whether a background save is durable."""
        return self._committed

    # ------------------------------------------------------------------ saving

    @property
    def interval_steps(self) -> int | None:
        """The current interval in steps (the measured one for ``every_steps="auto"``)."""
        if self._every_steps != "auto":
            return self._every_steps
        s = self.stats
        if s.step_seconds is None or s.stall_seconds is None:
            return None
        return auto_interval_steps(
            step_seconds=s.step_seconds,
            stall_seconds=s.stall_seconds,
            upload_seconds=s.upload_seconds or 0.0,
            mtbf_seconds=self._mtbf,
        )

    def _due(self, step: int, now: float) -> bool:
        if self._every_steps == "auto":
            if self._last_step is None:
                return True
            interval = self.interval_steps
            if step <= self._last_step:
                return False
            return interval is None or step - self._last_step >= interval
        return is_due(
            step=step,
            now=now,
            last_step=self._last_step,
            last_time=self._last_time,
            every_steps=self._every_steps,
            every_seconds=self._every_seconds,
        )

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
        now = self._note_call(step)
        self._last_seen = (step, state, metrics)
        if not force and not self._due(step, now):
            return False
        self._start_save(step, state, metrics)
        if not self._async:
            self.wait()
        return True

    def _note_call(self, step: int) -> float:
        """Measure the time per step between calls; the time now."""
        now = self._clock.now()
        if self._last_call is not None and step > self._last_call[0]:
            per_step = (now - self._last_call[1]) / (step - self._last_call[0])
            self.stats.step_seconds = ema(self.stats.step_seconds, max(per_step, 0.0))
        self._last_call = (step, now)
        return now

    def _ranks(self) -> Ranks:
        ranks = detect_ranks()
        if self._save_rank is not None and self._save_rank >= ranks.world_size:
            raise ValueError(
                f"save_rank={self._save_rank} is not a rank of this group "
                f"(world size {ranks.world_size})"
            )
        return ranks

    def _writes_here(self) -> bool:
        """Whether this process writes replicated saves (see ``save_rank``)."""
        if self._save_rank is None:
            return True
        return self._ranks().rank == self._save_rank

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
        self._last_step = step
        self._last_time = self._clock.now()
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
        ranks = self._sharded_ranks("save_sharded")
        self.wait()
        now = self._note_call(step)
        due = force or self._due(step, now)
        if ranks.world_size > 1 and not force and self._time_decides():
            due = self._coordinator.broadcast(
                due, what=f"sharded checkpoint step {step}: deciding whether to save"
            )
        if not due:
            return False
        started = self._clock.now()
        clean_metrics = {str(k): float(v) for k, v in (metrics or {}).items()}
        _sharded.save(
            self._folders,
            self._coordinator,
            ranks,
            step=step,
            state_dict=state_dict,
            metrics=clean_metrics,
        )
        self._committed = step
        self._last_step = step
        self._last_time = self._clock.now()
        self.stats.upload_seconds = ema(self.stats.upload_seconds, self._last_time - started)
        return True

    def load_sharded(
        self, state_dict: dict[str, Any], *, step: int | None = None
    ) -> CheckpointInfo | None:
        """Load a checkpoint written by :meth:`save_sharded` into ``state_dict``, in place, on
        every rank: each rank reads the parts its tensors need (DCP plans it), also when the
        world size differs from the one that saved (as far as DCP can reshard the tensors).

        Rank 0 picks the step (the newest committed one whose objects are all there with their
        sizes) and every rank loads that one; each object read is checked against the SHA-256
        in the manifest first. A damaged step is skipped on every rank, with a warning, for the
        next older one.

        Args:
            state_dict: The state to load into (its tensors, sharded as they are now, receive
                the values; ``Stateful`` objects get ``load_state_dict``); call it on every rank.
            step: A specific step instead of the newest that loads.

        Returns:
            The checkpoint loaded; ``None`` only when nothing was ever committed: a fresh start.

        Raises:
            CheckpointError: no committed checkpoint of ``step``, the checkpoint was saved by
                :meth:`save` (one process; use :meth:`restore`), the state does not match it, or
                a rank is gone or silent past ``collective_timeout``.
            CheckpointCorruptError: ``step`` fails verification, or (``step=None``) every
                committed checkpoint does; never a silent fresh start.

        Warns:
            CheckpointWarning: for each newer checkpoint skipped as damaged.
        """
        self._check_open()
        if step is not None:
            step_dirname(step)  # validates
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, not {type(state_dict).__name__}")
        ranks = self._sharded_ranks("load_sharded")
        manifest = _sharded.load(
            self._folders, self._coordinator, ranks, state_dict=state_dict, step=step
        )
        if manifest is None:
            return None
        if self._last_step is None or manifest.step > self._last_step:
            self._last_step = manifest.step
        return self._folders.info(manifest, self._folders.folder(manifest.step))

    def _sharded_ranks(self, what: str) -> Ranks:
        ranks = detect_ranks()
        if ranks.world_size > 1 and initialized_dist() is None:
            raise CheckpointError(
                f"{what} with WORLD_SIZE={ranks.world_size} needs torch.distributed initialised "
                "(torch.distributed.init_process_group) on every rank first"
            )
        return ranks

    def _time_decides(self) -> bool:
        """Whether a save's being due depends on the clock or on measurements (not the step
        alone), so that ranks could disagree."""
        return self._every_seconds is not None or self._every_steps == "auto"

    def latest(self, *, verify: Literal["size", "full"] = "size") -> CheckpointInfo | None:
        """The newest committed checkpoint whose payload verifies, or ``None``.

        An inspection: damaged checkpoints are skipped with a warning, so ``None`` also when
        every one is damaged; :meth:`restore` and :meth:`load` raise then.

        Args:
            verify: ``"size"`` checks every payload object's size (one listing per step tried);
                ``"full"`` also re-reads it and checks its SHA-256.

        Warns:
            CheckpointWarning: for each newer checkpoint skipped as damaged.
        """
        for manifest, folder in self._folders.candidates(verify=verify):
            return self._folders.info(manifest, folder)
        return None

    def list(self) -> list[CheckpointInfo]:
        """Every committed checkpoint whose payload sizes verify, oldest step first.

        Warns:
            CheckpointWarning: for each checkpoint skipped as damaged.
        """
        found = [self._folders.info(m, f) for m, f in self._folders.candidates(verify="size")]
        return sorted(found, key=lambda info: info.step)

    def load(
        self,
        step: int | None = None,
        *,
        map_location: Any = "cpu",
        weights_only: bool = True,
    ) -> dict[str, Any]:
        """Load a checkpoint's state (modules and optimizers come back as their state dicts).

        Args:
            step: The step to load; ``None`` loads the newest checkpoint that verifies, falling
                back to older ones past damaged checkpoints.
            map_location: Passed to :func:`torch.load`.
            weights_only: Refuse pickled Python objects (the default). Pass ``False`` only for
                files you trust: unpickling can run arbitrary code.

        Raises:
            CheckpointError: there is no committed checkpoint (of that step), or it holds objects
                ``weights_only`` loading refuses.
            CheckpointCorruptError: the given step fails verification, or (``step=None``) every
                committed checkpoint does; the message lists what was found for each.

        Warns:
            CheckpointWarning: for each newer checkpoint skipped as damaged (``step=None``).
        """
        found = self._folders.load_payload(
            step, map_location=map_location, weights_only=weights_only
        )
        if found is None:
            raise CheckpointError(f"no committed checkpoint under {self.url}")
        return dict(found[1]["state"])

    def restore(
        self,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        *,
        step: int | None = None,
        strict: bool = True,
        restore_rng: bool = True,
        map_location: Any = "cpu",
        weights_only: bool = True,
        **objects: Any,
    ) -> CheckpointInfo | None:
        """Load the latest committed checkpoint into live objects and restore RNG states.

        Each keyword names an entry of the saved state: ``restore(model=m, optimizer=o)`` calls
        ``m.load_state_dict(state["model"])`` and ``o.load_state_dict(state["optimizer"])``.

        Args:
            model: Receives ``state["model"]`` (``strict`` applies).
            optimizer: Receives ``state["optimizer"]``.
            scheduler: Receives ``state["scheduler"]``.
            scaler: Receives ``state["scaler"]``.
            step: A specific step instead of the newest that verifies.
            strict: Passed to ``model.load_state_dict``.
            restore_rng: Restore the RNG states saved with the checkpoint.
            map_location: Passed to :func:`torch.load`.
            weights_only: See :meth:`load`.
            **objects: More entries, by name, to load into objects with ``load_state_dict``.

        Returns:
            The checkpoint restored, with the whole loaded state in ``info.state``; ``None``
            only when nothing was ever committed (no step folder holds a manifest): a fresh
            start.

        Raises:
            CheckpointError: the checkpoint lacks an entry asked for, or cannot be loaded.
            CheckpointCorruptError: every committed checkpoint is damaged, whatever the damage
                (truncated or missing payload, flipped bits, an empty or garbled manifest); the
                message lists what was found for each step. Never a silent fresh start.

        Warns:
            CheckpointWarning: for each newer checkpoint skipped as damaged, when an older one
                is restored.
        """
        targets = {
            name: obj
            for name, obj in {
                "model": model,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "scaler": scaler,
                **objects,
            }.items()
            if obj is not None
        }
        found = self._folders.load_payload(
            step, map_location=map_location, weights_only=weights_only
        )
        if found is None:
            return None
        manifest, payload = found
        state = payload["state"]
        folder = self._folders.folder(manifest.step)
        load_into(targets, state, step=manifest.step, strict=strict)
        if restore_rng and payload.get("rng"):
            restore_rng_states(payload["rng"])
        with self._folders.lock:
            self._folders.manifests[manifest.step] = manifest
        if self._last_step is None or manifest.step > self._last_step:
            self._last_step = manifest.step
        return attrs.evolve(self._folders.info(manifest, folder), state=state)

    # ---------------------------------------------------------------- lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"{self!r} is closed")

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


def load_into(
    targets: Mapping[str, Any], state: Mapping[Any, Any], *, step: int, strict: bool
) -> None:
    """Call each target's ``load_state_dict`` with its entry of ``state``."""
    for name, obj in targets.items():
        if name not in state:
            raise CheckpointError(
                f"checkpoint step {step} has no entry {name!r} (it has {sorted(map(str, state))})"
            )
        if name == "model" and is_module(obj):
            obj.load_state_dict(state[name], strict=strict)
        else:
            obj.load_state_dict(state[name])

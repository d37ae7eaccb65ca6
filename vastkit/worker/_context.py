"""The training code's side of the worker: :class:`WorkerContext`."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vastkit import _ranks
from vastkit._documents import strict_converter
from vastkit._ranks import ranks_from_env
from vastkit.clock import Clock, SystemClock
from vastkit.errors import ConfigValueError, JobError
from vastkit.rundir import CheckpointSettings, JobSpec, RunDir
from vastkit.worker._protocol import (
    ENV_ATTEMPT,
    ENV_CHECKPOINT_URL,
    ENV_RUN_URL,
    ENV_STATUS_DIR,
    ENV_STORAGE_OPTIONS,
    JOB_FILE,
    METRICS_FILE,
    STATUS_FILE,
    STOP_FILE,
    write_json_atomic,
)

if TYPE_CHECKING:
    from vastkit.checkpoint import CheckpointManager

__all__ = ["LOCAL_RUN_DIR", "WorkerContext"]

logger = logging.getLogger("vastkit.worker")

LOCAL_RUN_DIR = "vastkit-local-run"
"""The folder (relative to the current directory) a script uses outside a worker, unless
``VASTKIT_LOCAL_RUN`` names another."""

_REPORT_EVERY = 1.0


class WorkerContext:
    """What the worker tells the training code, and the way back.

    Get it with :func:`vastkit.worker.context`; do not build it yourself except in tests.

    Inside a worker it is bound to the run directory and attempt the worker was started for.
    Under a launcher (``Job(launcher="torchrun")``, ``accelerate launch``, ``deepspeed``) each
    rank has its own context: :attr:`rank`, :attr:`local_rank` and :attr:`world_size` come
    from the ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` the launcher sets (0, 0 and 1
    without one), only the main rank (:attr:`is_main`) reports progress and logs metrics
    (unless ``all_ranks=True``), and :meth:`should_stop` turns true on every rank.
    Outside one (no ``VASTKIT_RUN_URL``), it works against a local folder (``VASTKIT_LOCAL_RUN``
    or ``./vastkit-local-run``) as attempt 0, so the same script runs on a laptop: checkpoints
    go to ``<folder>/checkpoints`` and a second run resumes from them.

    Args:
        environ: The environment to read (default: ``os.environ``).
        clock: The clock that throttles progress reports.
        install_signal_handler: Install a SIGTERM handler that makes :meth:`should_stop` true
            (only possible from the main thread; elsewhere the worker's stop file still works).
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Clock | None = None,
        install_signal_handler: bool = True,
    ) -> None:
        env = os.environ if environ is None else environ
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._manager: CheckpointManager | None = None
        self._last_report = float("-inf")
        self._step: int | None = None
        self._checkpoint_step: int | None = None
        run_url = env.get(ENV_RUN_URL)
        self.local: bool = not run_url
        """True outside a worker (the script runs against a local folder)."""
        if run_url:
            self.run_url: str = run_url
            """The run directory URL."""
        else:
            folder = Path(env.get("VASTKIT_LOCAL_RUN") or LOCAL_RUN_DIR).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            self.run_url = folder.as_posix()
        try:
            self.attempt: int = int(env.get(ENV_ATTEMPT) or 0)
            """The attempt number (0 outside a worker)."""
        except ValueError as exc:
            raise JobError(f"{ENV_ATTEMPT} is not a number: {env.get(ENV_ATTEMPT)!r}") from exc
        raw_options = env.get(ENV_STORAGE_OPTIONS)
        try:
            options = json.loads(raw_options) if raw_options else {}
        except ValueError as exc:
            raise JobError(f"{ENV_STORAGE_OPTIONS} is not valid JSON") from exc
        self.storage_options: dict[str, Any] = dict(options) if isinstance(options, dict) else {}
        """fsspec storage options for the run directory."""
        status_dir = env.get(ENV_STATUS_DIR)
        if status_dir:
            self._status_dir = Path(status_dir)
        elif self.local:
            self._status_dir = Path(self.run_url) / "status"
        else:
            self._status_dir = Path(LOCAL_RUN_DIR).resolve() / "status"
        self._status_dir.mkdir(parents=True, exist_ok=True)
        try:
            ranks = ranks_from_env(env)
        except ConfigValueError as err:
            raise JobError(f"the launcher's environment is malformed: {err}") from err
        self.rank: int = ranks.rank
        """This process's global rank (``RANK``; 0 without a launcher)."""
        self.local_rank: int = ranks.local_rank
        """This process's rank on its machine (``LOCAL_RANK``; 0 without a launcher)."""
        self.world_size: int = ranks.world_size
        """How many ranks the job runs (``WORLD_SIZE``; 1 without a launcher)."""
        self.spec: JobSpec | None = self._load_spec()
        """The job spec, when one could be found (``None`` for a plain local run)."""
        default_ckpt = RunDir(self.run_url, self.storage_options).checkpoint_url(self.spec)
        self.checkpoint_url: str = env.get(ENV_CHECKPOINT_URL) or default_ckpt
        """Where the run's checkpoints live."""
        if install_signal_handler:
            self._install_handler()

    def __repr__(self) -> str:
        where = "local" if self.local else "worker"
        ranks = f", rank={self.rank}/{self.world_size}" if self.world_size > 1 else ""
        return f"WorkerContext({where}, run_url={self.run_url!r}, attempt={self.attempt}{ranks})"

    @property
    def is_main(self) -> bool:
        """True on the rank that reports for the job (global rank 0; always true alone)."""
        return self.rank == 0

    def _load_spec(self) -> JobSpec | None:
        copy = self._status_dir / JOB_FILE
        if copy.is_file():
            try:
                return strict_converter.structure(json.loads(copy.read_text()), JobSpec)
            except Exception:
                logger.warning("could not read the job spec copy %s; reading the store", copy)
        try:
            return RunDir(self.run_url, self.storage_options).read_job()
        except JobError:
            raise
        except Exception as exc:  # a store that cannot be reached from a laptop, for instance
            logger.warning("could not read job.json from %s: %s", self.run_url, exc)
            return None

    def _install_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: should_stop() relies on the stop file only")
            return
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: types.FrameType | None) -> None:
            self._stop.set()
            if callable(previous) and previous is not on_sigterm:
                chained: Callable[[int, types.FrameType | None], Any] = previous
                chained(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    # -- public ------------------------------------------------------------------------------

    @property
    def checkpoints(self) -> CheckpointManager:
        """A :class:`~vastkit.checkpoint.CheckpointManager` bound to the run's checkpoints.

        It is set up with the job's checkpoint settings and created on first use. Report the
        step of a committed checkpoint with :meth:`report` so heartbeats carry it.
        """
        with self._lock:
            if self._manager is None:
                from vastkit.checkpoint import CheckpointManager

                settings = self.spec.checkpoint if self.spec is not None else CheckpointSettings()
                self._manager = CheckpointManager(
                    self.checkpoint_url,
                    every_steps=settings.every_steps,
                    every_seconds=settings.every_seconds,
                    keep_last=settings.keep_last,
                    keep_best=settings.keep_best,
                    best_metric=settings.best_metric,
                    best_mode="max" if settings.best_mode == "max" else "min",
                    async_save=settings.async_save,
                    storage_options=self.storage_options or None,
                    mtbf_seconds=settings.mtbf_seconds,
                )
            return self._manager

    def should_stop(self, *, any_rank: bool = False, device: Any = None) -> bool:
        """True once the worker asked the command to stop (SIGTERM): save and exit soon.

        The worker gives the command the job's grace period, then kills it. Under a launcher
        it is true on every rank: each gets SIGTERM, and the worker's stop file (in the status
        directory all ranks share) reaches a rank that missed the signal. Ranks see it at
        slightly different moments: with ``any_rank=True`` the ranks agree, so every rank stops
        after the same step and none waits in a collective for one that already left.

        Args:
            any_rank: Whether the stop reached any rank of the default ``torch.distributed``
                process group (one all-reduce of one number; every rank must call it at the
                same point of its step). Without a process group of two or more ranks, the
                same as ``False``.
            device: Where the all-reduce's tensor lives (default: the current CUDA device with
                the NCCL backend, else the CPU).
        """
        local = self._stop_seen()
        if not any_rank:
            return local
        return _ranks.any_rank(local, device)

    def _stop_seen(self) -> bool:
        if self._stop.is_set():
            return True
        if (self._status_dir / STOP_FILE).exists():
            self._stop.set()
            return True
        return False

    def report(self, step: int | None = None, *, checkpoint_step: int | None = None) -> None:
        """Tell the worker how far training is; the next heartbeat carries it.

        Cheap enough to call every step: the local status file is rewritten at most once a
        second, or at once when ``checkpoint_step`` changes. Only the main rank reports: on
        other ranks this does nothing.

        Args:
            step: The current training step.
            checkpoint_step: The step of the newest checkpoint known to be committed.
        """
        if not self.is_main:
            return
        with self._lock:
            if step is not None:
                self._step = step
            changed = checkpoint_step is not None and checkpoint_step != self._checkpoint_step
            if checkpoint_step is not None:
                self._checkpoint_step = checkpoint_step
            now = self._clock.now()
            if not changed and now - self._last_report < _REPORT_EVERY:
                return
            self._last_report = now
            write_json_atomic(
                self._status_dir / STATUS_FILE,
                {"step": self._step, "checkpoint_step": self._checkpoint_step, "time": now},
            )

    def log_metrics(self, step: int, *, all_ranks: bool = False, **values: float) -> None:
        """Record metric values at a step (they end up in the run directory and the result).

        Under a launcher only the main rank's values are kept, once; with ``all_ranks=True``
        every rank's are, each name suffixed with its rank (``loss/rank1``).

        Args:
            step: The training step.
            all_ranks: Keep the values of every rank, not just the main rank's.
            **values: Metric names and numbers (``loss=0.31, lr=1e-4``).

        Raises:
            TypeError: A value is not a number.
        """
        clean: dict[str, float] = {}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                try:
                    value = float(value)  # numpy and torch scalars
                except (TypeError, ValueError):
                    raise TypeError(
                        f"metric {name!r} must be a number, not {type(value).__name__}"
                    ) from None
            clean[name] = float(value)
        if all_ranks and self.world_size > 1:
            clean = {f"{name}/rank{self.rank}": value for name, value in clean.items()}
        elif not self.is_main:
            return
        record = {"step": int(step), "time": self._clock.now(), "values": clean}
        line = json.dumps(record) + "\n"
        with self._lock, open(self._status_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(line)
        self.report(step)

    def close(self) -> None:
        """Wait for a background checkpoint save and close the manager (if one was made)."""
        with self._lock:
            manager, self._manager = self._manager, None
        if manager is not None:
            manager.close()

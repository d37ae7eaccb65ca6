"""Hugging Face Trainer: commit its checkpoints through vastkit, resume, stop on preemption.

::

    from vastkit.integrations.transformers import VastkitTrainerCallback

    vk = VastkitTrainerCallback()            # the run's CheckpointManager
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[vk])
    trainer.train(resume_from_checkpoint=vk.resume_from_checkpoint(args.output_dir))

* Every checkpoint folder the Trainer writes (``<output_dir>/checkpoint-<step>``: weights,
  optimizer, scheduler, RNG and trainer state, as the Trainer saves them; ``save_strategy``
  and ``save_steps`` decide when) is committed as vastkit checkpoint ``<step>``: its files
  travel as bytes (``uint8`` tensors), so the vastkit checkpoint loads with
  ``weights_only=True``, and the Trainer reads the files back with its own loaders.
* :meth:`VastkitTrainerCallback.resume_from_checkpoint` writes the latest committed checkpoint
  back into ``<output_dir>/checkpoint-<step>`` and returns that path (``None`` on a fresh start),
  for ``trainer.train(resume_from_checkpoint=...)``.
* When :func:`vastkit.worker.should_stop` is true (SIGTERM: outbid, stopped) at the end of a
  step, on any rank, the callback sets ``control.should_save`` and
  ``control.should_training_stop`` on every rank: the Trainer saves that step, the callback
  commits it on the main process and waits, and ``train()`` returns.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vastkit.errors import CheckpointError
from vastkit.integrations import MissingExtraError

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as exc:
    raise MissingExtraError(
        "vastkit.integrations.transformers", needs="transformers", extra="transformers"
    ) from exc

if TYPE_CHECKING:
    from vastkit.checkpoint import CheckpointManager
    from vastkit.worker import WorkerContext

__all__ = ["STATE_KEY", "VastkitTrainerCallback", "folder_state", "write_folder"]

STATE_KEY = "transformers"
"""The entry of a vastkit checkpoint that holds a Trainer checkpoint folder."""


def folder_state(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint folder as a state the checkpoint manager saves: ``{"files": {relative
    path: uint8 tensor of its bytes}}``, each file memory-mapped rather than read.

    Raises:
        CheckpointError: the folder does not exist or holds no file.
    """
    import torch

    root = Path(folder)
    if not root.is_dir():
        raise CheckpointError(f"the Trainer's checkpoint folder {root} does not exist")
    files: dict[str, Any] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        size = path.stat().st_size
        files[path.relative_to(root).as_posix()] = (
            torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
            if size
            else torch.empty(0, dtype=torch.uint8)
        )
    if not files:
        raise CheckpointError(f"the Trainer's checkpoint folder {root} is empty")
    return {"files": files}


def write_folder(state: Mapping[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write a state made by :func:`folder_state` back as ``folder`` (replacing it): written
    aside first, then renamed, so a folder that exists is whole.

    Raises:
        CheckpointError: the state is not a checkpoint folder, or names a path outside it.
    """
    files = state.get("files") if isinstance(state, Mapping) else None
    if not isinstance(files, Mapping):
        raise CheckpointError("this vastkit checkpoint holds no Trainer checkpoint folder")
    target = Path(folder)
    staging = target.parent / f".vastkit-restore-{target.name}"
    paths = {}
    for name in files:
        path = (staging / str(name)).resolve()
        if not isinstance(name, str) or not path.is_relative_to(staging.resolve()):
            raise CheckpointError(f"a file of the checkpoint escapes its folder: {name!r}")
        paths[name] = path
    shutil.rmtree(staging, ignore_errors=True)
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name].numpy().tobytes())
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


class VastkitTrainerCallback(TrainerCallback):
    """Commit the Trainer's checkpoints through vastkit and stop cleanly on preemption.

    Args:
        manager: The checkpoint manager (default: the run's, ``context.checkpoints``). The
            Trainer's ``save_steps`` decide when to save; every folder it writes is committed,
            and the manager's ``keep_last`` prunes vastkit's copies.
        context: The worker context for ``should_stop`` and progress reports (default:
            :func:`vastkit.worker.context`, created on first use).
    """

    def __init__(
        self, manager: CheckpointManager | None = None, *, context: WorkerContext | None = None
    ) -> None:
        self._manager = manager
        self._context = context
        self.stopped_step: int | None = None
        """The step at which training stopped for preemption (``None`` if it did not)."""
        self._stopping = False

    @property
    def context(self) -> WorkerContext:
        """The worker context (created on first use)."""
        if self._context is None:
            from vastkit import worker

            self._context = worker.context()
        return self._context

    @property
    def manager(self) -> CheckpointManager:
        """The checkpoint manager."""
        if self._manager is None:
            self._manager = self.context.checkpoints
        return self._manager

    def resume_from_checkpoint(self, output_dir: str | os.PathLike[str]) -> str | None:
        """Fetch the latest committed checkpoint into ``<output_dir>/checkpoint-<step>``.

        Returns:
            That folder, for ``trainer.train(resume_from_checkpoint=...)``; ``None`` when no
            checkpoint was ever committed (a fresh start).

        Raises:
            CheckpointCorruptError: every committed checkpoint is damaged (never a silent fresh
                start).
            CheckpointError: the latest checkpoint was not saved by this callback.
        """
        info = self.manager.restore(restore_rng=False)  # the Trainer restores its own RNG
        if info is None:
            return None
        state = info.state or {}
        if STATE_KEY not in state:
            raise CheckpointError(
                f"checkpoint step {info.step} under {self.manager.url} was not saved by "
                f"vastkit.integrations.transformers (it has {sorted(map(str, state))})"
            )
        folder = Path(output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{info.step}"
        return str(write_folder(state[STATE_KEY], folder))

    # -- hooks -------------------------------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Resolve the context (its SIGTERM handler) and the manager before the first step."""
        self.stopped_step = None
        self._stopping = False
        _ = self.manager

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Report the step; on preemption, ask the Trainer to save it and stop."""
        if state.is_world_process_zero:
            self.context.report(state.global_step)
        if self.context.should_stop(any_rank=True, device=args.device):
            self._stopping = True
            self.stopped_step = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Commit the folder the Trainer just wrote (waiting for it when stopping)."""
        if not state.is_world_process_zero:
            return
        step = state.global_step
        folder = Path(args.output_dir or ".") / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        self.manager.save(step, {STATE_KEY: folder_state(folder)}, force=True)
        if self._stopping:
            self.manager.wait()
        self.context.report(step, checkpoint_step=self.manager.committed_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Wait for the save in flight, so the last checkpoint is durable when train() ends."""
        if state.is_world_process_zero:
            self.manager.wait()
            self.context.report(state.global_step, checkpoint_step=self.manager.committed_step)

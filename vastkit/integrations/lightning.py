"""PyTorch Lightning: save through vastkit, resume from its latest checkpoint, stop on preemption.

::

    from vastkit.integrations.lightning import VastkitCheckpoints

    vk = VastkitCheckpoints()                 # the run's CheckpointManager
    trainer = Trainer(max_steps=1000, callbacks=[vk], plugins=[vk.checkpoint_io])
    trainer.fit(model, loader, ckpt_path=vk.ckpt_path())   # None on a fresh start

* :class:`VastkitCheckpoints` (a ``Callback``) offers Lightning's whole checkpoint (weights,
  optimizers, schedulers, loops, callbacks, hyper-parameters) to the manager after every
  optimizer step; the manager's interval (the job's ``checkpoint`` settings) decides which
  steps are saved. When :func:`vastkit.worker.should_stop` turns true (SIGTERM: outbid,
  stopped) it commits the current step at once and sets ``trainer.should_stop``.
* :class:`VastkitCheckpointIO` (a ``CheckpointIO`` plugin) reads ``ckpt_path="vastkit:latest"``
  (or ``"vastkit:step=N"``) from the manager, verified, with ``weights_only=True`` loading;
  ``trainer.save_checkpoint("vastkit:")`` commits the current step. Every other path goes to
  the plugin it wraps (Lightning's ``TorchCheckpointIO``), so ``ModelCheckpoint`` is unchanged.

Lightning comes from ``lightning.pytorch`` or ``pytorch_lightning``: the one the training script
already imported, else ``lightning.pytorch`` when installed, else ``pytorch_lightning``.
Strategies that keep one full copy of the state per process are supported (single device,
DDP); sharded ones (FSDP, DeepSpeed) are refused at setup.
"""

from __future__ import annotations

import importlib
import io
import logging
import pickle
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from vastkit.errors import CheckpointError
from vastkit.integrations import MissingExtraError

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from pytorch_lightning.plugins import CheckpointIO as _CheckpointIOBase

    from vastkit.checkpoint import CheckpointManager
    from vastkit.worker import WorkerContext
else:

    def _import_lightning() -> Any:
        """The Lightning the script uses: an imported namespace first, then an installed one."""
        names = ("lightning.pytorch", "pytorch_lightning")
        for name in names:
            if sys.modules.get(name) is not None:
                return sys.modules[name]
        missing: ImportError | None = None
        for name in names:
            try:
                return importlib.import_module(name)
            except ImportError as exc:
                missing = exc
        raise MissingExtraError(
            "vastkit.integrations.lightning",
            needs="PyTorch Lightning (lightning or pytorch-lightning)",
            extra="lightning",
        ) from missing

    pl = _import_lightning()
    _CheckpointIOBase = importlib.import_module(pl.__name__ + ".plugins").CheckpointIO

__all__ = ["PREFIX", "VastkitCheckpointIO", "VastkitCheckpoints", "lightning_namespace"]

logger = logging.getLogger("vastkit.integrations.lightning")

PREFIX = "vastkit:"
"""``ckpt_path`` values that start with this are read from (and written to) vastkit's manager:
``"vastkit:latest"`` or ``"vastkit:step=N"``."""

STATE_KEY = "lightning"
"""The entry of a vastkit checkpoint that holds Lightning's checkpoint dictionary."""


def lightning_namespace() -> str:
    """The Lightning package this module subclasses (``"lightning.pytorch"`` or
    ``"pytorch_lightning"``): its ``Trainer`` is the one that accepts these objects."""
    return str(pl.__name__)


def _parse_step(path: str) -> int | None:
    """``"vastkit:latest"`` -> None, ``"vastkit:step=12"`` -> 12."""
    rest = path[len(PREFIX) :]
    if rest in ("", "latest"):
        return None
    if rest.startswith("step="):
        digits = rest[len("step=") :]
        if digits.isdigit():
            return int(digits)
    raise CheckpointError(
        f"{path!r} is not a vastkit checkpoint path: use {PREFIX}latest or {PREFIX}step=<number>"
    )


# ------------------------------------------------------------------ weights_only safety


_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def _leaves(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Leaves of a checkpoint dictionary that are not tensors, plain values or containers the
    checkpoint manager keeps (with the key path that reaches each), as the manager stages them:
    mappings become dicts, ``state_dict()`` holders their state dicts, NumPy arrays tensors."""
    import torch

    if isinstance(obj, (torch.Tensor, torch.dtype, torch.device, torch.Size, *_PLAIN)):
        return
    if type(obj).__module__ == "numpy" and type(obj).__name__ == "ndarray":
        if obj.dtype.kind in "biufc":
            return
        yield path, obj
        return
    state_dict = getattr(obj, "state_dict", None)
    if callable(state_dict) and not isinstance(obj, Mapping | type):
        yield from _leaves(state_dict(), path)
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, _PLAIN):
                yield f"{path} (a key)", key
            yield from _leaves(value, f"{path}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            yield from _leaves(value, f"{path}[{i}]")
        return
    yield path, obj


def _refused_by_weights_only(value: Any) -> str | None:
    """Why ``torch.load(weights_only=True)`` refuses ``value`` (None when it loads it)."""
    import torch

    buf = io.BytesIO()
    torch.save({"value": value}, buf)
    buf.seek(0)
    try:
        torch.load(buf, weights_only=True)
    except pickle.UnpicklingError as exc:
        return str(exc).splitlines()[0]
    return None


def check_weights_only(checkpoint: Mapping[str, Any]) -> None:
    """Refuse, at save time, a checkpoint that ``weights_only=True`` loading could not read.

    Raises:
        CheckpointError: naming each entry torch refuses (its key path and type).
    """
    refused = []
    for path, value in _leaves(checkpoint, "checkpoint"):
        why = _refused_by_weights_only(value)
        if why is not None:
            refused.append(f"{path}: a {type(value).__module__}.{type(value).__qualname__}")
    if refused:
        raise CheckpointError(
            "this Lightning checkpoint holds objects that weights_only=True loading refuses, so "
            "it could not be resumed safely: "
            + "; ".join(refused[:5])
            + (f" (and {len(refused) - 5} more)" if len(refused) > 5 else "")
            + ". Store plain values instead (save_hyperparameters of numbers and strings), or "
            "pass weights_only=False to VastkitCheckpoints if you trust every reader of the store"
        )


# ------------------------------------------------------------------ the plugin


class VastkitCheckpointIO(_CheckpointIOBase):
    """A ``CheckpointIO`` plugin: ``vastkit:`` paths go through vastkit's manager.

    ``load_checkpoint("vastkit:latest")`` restores the newest committed checkpoint that
    verifies (falling back past damaged ones, never to a silent fresh start), and the RNG states
    saved with it; ``"vastkit:step=N"`` a given step. ``save_checkpoint(ckpt, "vastkit:")``
    commits ``ckpt["global_step"]`` and waits for it. Other paths go to ``inner``.

    Args:
        manager: The checkpoint manager, or a function returning it (called on first use).
        weights_only: Load with ``weights_only=True`` (the default) and refuse to save what it
            could not load. ``False`` unpickles arbitrary objects: only for stores you trust.
        inner: The plugin for every other path (default: Lightning's ``TorchCheckpointIO``).
    """

    def __init__(
        self,
        manager: CheckpointManager | Callable[[], CheckpointManager],
        *,
        weights_only: bool = True,
        inner: Any = None,
    ) -> None:
        super().__init__()
        self._manager = manager
        self.weights_only = weights_only
        if inner is None:
            inner = importlib.import_module(pl.__name__ + ".plugins").TorchCheckpointIO()
        self.inner = inner

    @property
    def manager(self) -> CheckpointManager:
        """The checkpoint manager (resolved on first use)."""
        if callable(self._manager):
            self._manager = self._manager()
        return self._manager

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Commit ``checkpoint`` as step ``checkpoint["global_step"]`` (``vastkit:`` paths),
        or hand it to ``inner``.

        Raises:
            CheckpointError: the save failed, or (``weights_only``) the checkpoint holds objects
                ``weights_only=True`` loading would refuse.
        """
        if not str(path).startswith(PREFIX):
            self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        step = _parse_step(str(path))
        step = int(checkpoint["global_step"]) if step is None else step
        if self.weights_only:
            check_weights_only(checkpoint)
        self.manager.save_now(step, {STATE_KEY: checkpoint})

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's checkpoint dictionary from vastkit (``vastkit:`` paths) or ``inner``.

        Raises:
            CheckpointError: nothing was committed, or the checkpoint is not a Lightning one.
            CheckpointCorruptError: every committed checkpoint (or the step asked for) fails
                verification.
        """
        if not str(path).startswith(PREFIX):
            loaded: dict[str, Any] = self.inner.load_checkpoint(
                path, map_location=map_location, weights_only=weights_only
            )
            return loaded
        info = self.manager.restore(
            step=_parse_step(str(path)),
            map_location=map_location if map_location is not None else "cpu",
            weights_only=self.weights_only if weights_only is None else weights_only,
        )
        if info is None:
            raise CheckpointError(f"no committed checkpoint under {self.manager.url} to resume")
        state = info.state or {}
        if STATE_KEY not in state:
            raise CheckpointError(
                f"checkpoint step {info.step} under {self.manager.url} was not saved by "
                f"vastkit.integrations.lightning (it has {sorted(map(str, state))})"
            )
        return dict(state[STATE_KEY])

    def remove_checkpoint(self, path: Any) -> None:
        """Remove a file of ``inner``; vastkit's own checkpoints follow the manager's retention."""
        if not str(path).startswith(PREFIX):
            self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        """Tear ``inner`` down."""
        self.inner.teardown()


# ------------------------------------------------------------------ the callback


class _LightningState:
    """Lightning's checkpoint dictionary, built only when the manager stages a save (it calls
    ``state_dict()``), so offering it after every step costs nothing."""

    def __init__(self, trainer: pl.Trainer, *, weights_only: bool) -> None:
        self.trainer = trainer
        self.weights_only = weights_only

    def state_dict(self) -> dict[str, Any]:
        connector = getattr(self.trainer, "_checkpoint_connector", None)
        dump = getattr(connector, "dump_checkpoint", None)
        if dump is None:  # pragma: no cover - a Lightning that renamed it
            raise CheckpointError(
                f"this Lightning ({getattr(pl, '__version__', '?')}) has no "
                "Trainer._checkpoint_connector."
                "dump_checkpoint; vastkit.integrations.lightning was tested with 2.6"
            )
        checkpoint: dict[str, Any] = dump(weights_only=False)
        if self.weights_only:
            check_weights_only(checkpoint)
        return checkpoint


class VastkitCheckpoints(pl.Callback):
    """Save Lightning's checkpoints through vastkit and stop cleanly on preemption.

    Add it to ``callbacks`` and its :attr:`checkpoint_io` to ``plugins``, and pass
    :meth:`ckpt_path` to ``trainer.fit``. After every optimizer step it reports the step (the
    worker's heartbeats carry it) and offers the checkpoint to the manager, whose interval
    decides whether to save; when :func:`vastkit.worker.should_stop` is true (on any rank) it
    commits that step on the main rank, waits for the commit, and sets ``trainer.should_stop``
    on every rank. At the end of training it commits the last step.

    Args:
        manager: The checkpoint manager (default: the run's, ``context.checkpoints``).
        context: The worker context for ``should_stop`` and progress reports (default:
            :func:`vastkit.worker.context`, created on first use).
        weights_only: Resume with ``weights_only=True`` loading (the default) and refuse, at
            the first save, a checkpoint it could not load. ``False`` trusts the store.
        save_on_train_end: Commit the last step when training ends.

    Raises:
        CheckpointError: at setup, for a sharded strategy (FSDP, DeepSpeed) or a missing
            plugin; at a save, for objects ``weights_only`` loading would refuse.
    """

    def __init__(
        self,
        manager: CheckpointManager | None = None,
        *,
        context: WorkerContext | None = None,
        weights_only: bool = True,
        save_on_train_end: bool = True,
    ) -> None:
        super().__init__()
        self._given_manager = manager
        self._context = context
        self.weights_only = weights_only
        self.save_on_train_end = save_on_train_end
        self.checkpoint_io = VastkitCheckpointIO(self._get_manager, weights_only=weights_only)
        """The plugin to pass in ``Trainer(plugins=[...])``."""
        self.stopped_step: int | None = None
        """The step at which training stopped for preemption (``None`` if it did not)."""
        self._last_step: int | None = None

    @property
    def context(self) -> WorkerContext:
        """The worker context (created on first use)."""
        if self._context is None:
            from vastkit import worker

            self._context = worker.context()
        return self._context

    def _get_manager(self) -> CheckpointManager:
        if self._given_manager is None:
            self._given_manager = self.context.checkpoints
        return self._given_manager

    @property
    def manager(self) -> CheckpointManager:
        """The checkpoint manager."""
        return self._get_manager()

    def ckpt_path(self) -> str | None:
        """What to pass as ``trainer.fit(ckpt_path=...)``: ``"vastkit:latest"`` when a
        checkpoint was ever committed, ``None`` (a fresh start) when none was.

        A store whose every checkpoint is damaged still gives ``"vastkit:latest"``, so loading
        raises :class:`~vastkit.errors.CheckpointCorruptError` instead of starting afresh.
        """
        return PREFIX + "latest" if self._committed_any() else None

    def _committed_any(self) -> bool:
        import warnings

        from vastkit.checkpoint import CheckpointWarning

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            found = self.manager.latest()
        damaged = False
        for w in seen:  # passed on to the caller, after noting the damaged ones
            damaged = damaged or issubclass(w.category, CheckpointWarning)
            warnings.warn(w.message, w.category, stacklevel=3)
        return found is not None or damaged

    # -- hooks -------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse a sharded strategy, and a Trainer without :attr:`checkpoint_io`."""
        strategies = importlib.import_module(pl.__name__ + ".strategies")
        strategy = trainer.strategy
        replicated = isinstance(strategy, strategies.SingleDeviceStrategy | strategies.DDPStrategy)
        if not replicated or isinstance(strategy, strategies.DeepSpeedStrategy):
            raise CheckpointError(
                f"VastkitCheckpoints saves one full copy of the state from the main rank; "
                f"{type(strategy).__name__} shards it (use a single device or DDP)"
            )
        if strategy.checkpoint_io is not self.checkpoint_io:
            raise CheckpointError(
                "VastkitCheckpoints needs its plugin: "
                "Trainer(callbacks=[vk], plugins=[vk.checkpoint_io])"
            )
        # The worker context's SIGTERM handler goes in before Lightning's (which chains it and
        # puts it back at teardown), and the manager exists before the first step.
        _ = self.context
        self._get_manager()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the step training starts from (a resumed one, or 0)."""
        self._last_step = trainer.global_step
        self.stopped_step = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """After an optimizer step: report, offer a save, and stop on preemption."""
        step = trainer.global_step
        if step == self._last_step:
            return  # between optimizer steps (gradient accumulation): nothing to save yet
        self._last_step = step
        stop = trainer.strategy.reduce_boolean_decision(self.context.should_stop(), all=False)
        if trainer.is_global_zero:
            state = {STATE_KEY: _LightningState(trainer, weights_only=self.weights_only)}
            if stop:
                self.manager.save_now(step, state)
            else:
                self.manager.save(step, state)
            self.context.report(step, checkpoint_step=self.manager.committed_step)
        if stop:
            self.stopped_step = step
            trainer.should_stop = True
            logger.info("preempted: checkpoint step %d committed, stopping", step)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Lightning ends ``fit`` with an exception on SIGTERM outside a training batch (in
        validation, say): commit the last optimizer step then, as the batch end would have."""
        if self.stopped_step is not None or not self.context.should_stop():
            return
        step = trainer.global_step
        self.stopped_step = step
        if trainer.is_global_zero:
            state = {STATE_KEY: _LightningState(trainer, weights_only=self.weights_only)}
            self.manager.save_now(step, state)
            self.context.report(step, checkpoint_step=self.manager.committed_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Commit the last step (``save_on_train_end``) and wait for the save in flight."""
        if not trainer.is_global_zero:
            return
        if self.save_on_train_end and self.stopped_step is None:
            step = trainer.global_step
            state = {STATE_KEY: _LightningState(trainer, weights_only=self.weights_only)}
            self.manager.save_now(step, state)
            self.context.report(step, checkpoint_step=self.manager.committed_step)
        self.manager.wait()

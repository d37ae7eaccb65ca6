"""Reading committed checkpoints: the newest that verifies, a list, a load, a restore."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from vastkit._store import DEFAULT_CHUNK, DEFAULT_CONCURRENCY, STORE_RETRY, Store
from vastkit.checkpoint import _sharded
from vastkit.checkpoint._commits import CheckpointFolders, CheckpointInfo, Retention
from vastkit.checkpoint._group import Coordinator
from vastkit.checkpoint._serialize import is_module
from vastkit.checkpoint._serialize import restore_rng as restore_rng_states
from vastkit.checkpoint.naming import step_dirname
from vastkit.clock import Clock, SystemClock
from vastkit.errors import CheckpointError
from vastkit.retry import RetryPolicy

__all__ = ["CheckpointReader", "load_into"]


class CheckpointReader:
    """The committed checkpoints under an fsspec URL, read only: it never writes or prunes.

    Use it where a process only needs checkpoints (an evaluation, an export, an inspection) and
    must not touch the run's store; :class:`CheckpointManager` reads the same way and also saves.

    Args:
        url: Any fsspec URL or plain path; checkpoints are under ``<url>/checkpoints/``.
        storage_options: Passed to fsspec (credentials, ``client_kwargs``, ...).
        retries: A :class:`~vastkit.retry.RetryPolicy` for transient store errors, or the
            number of tries (default: six tries within 120 seconds, waits of 0.25 s to 8 s).
        clock: The clock for backoff and deadlines (default :class:`SystemClock`).
        transfer_chunk_bytes: The part size of concurrent multipart uploads and ranged reads
            (S3).
        transfer_concurrency: How many parts move at once (S3).
        collective_timeout: Seconds a sharded load (and save) waits for the other ranks in any
            one step before it raises :class:`~vastkit.errors.CheckpointError`.

    Raises:
        ValueError: a transfer setting or ``collective_timeout`` is out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        retries: RetryPolicy | int | None = None,
        clock: Clock | None = None,
        transfer_chunk_bytes: int = DEFAULT_CHUNK,
        transfer_concurrency: int = DEFAULT_CONCURRENCY,
        collective_timeout: float = 1800.0,
    ) -> None:
        if not collective_timeout > 0:
            raise ValueError(f"collective_timeout must be > 0, not {collective_timeout}")
        if transfer_chunk_bytes < 5 * 2**20 or transfer_concurrency < 1:
            raise ValueError("transfer_chunk_bytes must be >= 5 MiB and transfer_concurrency >= 1")
        if retries is None:
            retry = STORE_RETRY
        elif isinstance(retries, RetryPolicy):
            retry = retries
        else:
            retry = attrs.evolve(STORE_RETRY, attempts=int(retries))
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._store = Store(
            url,
            storage_options,
            retry=retry,
            clock=self._clock,
            transfer_chunk_bytes=transfer_chunk_bytes,
            transfer_concurrency=transfer_concurrency,
        )
        self.url = self._store.url
        self._folders = CheckpointFolders(self._store, retention=Retention(keep_last=None))
        self._coordinator = Coordinator(collective_timeout)
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"{self!r} is closed")

    def _restored(self, step: int) -> None:
        """A checkpoint of ``step`` was loaded (the manager counts its next save from it)."""

    def latest(self, *, verify: Literal["size", "full"] = "size") -> CheckpointInfo | None:
        """The newest committed checkpoint whose payload verifies, or ``None``.

        An inspection: damaged checkpoints are skipped with a warning, so ``None`` also when
        every one is damaged; :meth:`restore` and :meth:`load` raise then.

        Args:
            verify: ``"size"`` checks every payload object's size (one listing per step tried);
                ``"full"`` also re-reads it and checks its digest.

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
        self._restored(manifest.step)
        return attrs.evolve(self._folders.info(manifest, folder), state=state)

    def load_sharded(
        self, state_dict: dict[str, Any], *, step: int | None = None
    ) -> CheckpointInfo | None:
        """Load a checkpoint written by :meth:`save_sharded` into ``state_dict``, in place, on
        every rank: each rank reads the parts its tensors need (DCP plans it), also when the
        world size differs from the one that saved (as far as DCP can reshard the tensors).

        Rank 0 picks the step (the newest committed one whose objects are all there with their
        sizes) and every rank loads that one; each object read is checked against the digest
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
        ranks = _sharded.group_ranks("load_sharded")
        manifest = _sharded.load(
            self._folders, self._coordinator, ranks, state_dict=state_dict, step=step
        )
        if manifest is None:
            return None
        self._restored(manifest.step)
        return self._folders.info(manifest, self._folders.folder(manifest.step))


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

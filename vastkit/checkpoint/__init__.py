"""Committed, asynchronous, verified checkpoints on any fsspec store.

:class:`CheckpointManager` writes each checkpoint under
``<url>/checkpoints/step-<zero-padded step>/``: the payload object first, then ``manifest.json``
(sizes and BLAKE3 digests of every payload object, step, time, metrics, format version). A
checkpoint exists once its manifest exists; the latest one is the highest step whose manifest
exists and whose payload verifies. Timestamps never order checkpoints. Re-saving a committed step
writes the new payload aside and swaps the manifest in one write, so the step is never
uncommitted; when every committed checkpoint is damaged, :meth:`~CheckpointManager.restore` raises
:class:`~vastkit.errors.CheckpointCorruptError` instead of starting afresh.

An asynchronous save copies the state into reused CPU buffers on the caller's thread (the only
stall), then serialises, uploads, verifies and commits in a background thread. At most one save is
in flight; a failed background save is raised as :class:`~vastkit.errors.CheckpointError` at the
next call to :meth:`~CheckpointManager.save`, :meth:`~CheckpointManager.wait`,
:meth:`~CheckpointManager.save_now` or :meth:`~CheckpointManager.close`.

In a group of processes (``torch.distributed`` initialised, else ``RANK``/``WORLD_SIZE`` set):
:meth:`~CheckpointManager.save` writes a replicated state (DDP) on rank 0 only (``save_rank``),
and :meth:`~CheckpointManager.save_sharded` has every rank write its shards of a sharded state
(FSDP, DTensor) with ``torch.distributed.checkpoint`` into one step folder, which rank 0 commits
with one manifest once every rank's objects are in the store; a rank that dies or hangs means
no commit, and the others raise within ``collective_timeout``.
:meth:`~CheckpointManager.load_sharded` loads it on every rank, also onto another world size.

torch is optional for ``import vastkit``; it is imported when a checkpoint is saved or loaded.

The package's parts:

* :mod:`vastkit.checkpoint.naming`: folder names, manifests, retention and intervals (pure);
* ``_serialize``: staging, ``torch.save`` sinks (memory or spool file), RNG states;
* ``_commits``: the step folders in the store (commit, verify, prune, read);
* ``_background``: the one save in flight;
* ``_group``: which rank this is, and the collectives of sharded saves (with a timeout);
* ``_sharded``: sharded saves and loads through DCP, over the store;
* ``_schedule``: when a save is due (the interval, measured step and save costs);
* ``_reader``: :class:`CheckpointReader`, reading committed checkpoints (never writing);
* ``_manager``: :class:`CheckpointManager`, a reader that also saves.

Every store call goes through :class:`vastkit._store.Store` (retries by
:class:`vastkit.retry.RetryPolicy`).
"""

from __future__ import annotations

from vastkit.checkpoint._commits import CheckpointInfo, CheckpointWarning
from vastkit.checkpoint._manager import CheckpointManager, SaveStats
from vastkit.checkpoint._reader import CheckpointReader
from vastkit.checkpoint.naming import PAYLOAD_NAME
from vastkit.retry import RetryPolicy

__all__ = [
    "PAYLOAD_NAME",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointReader",
    "CheckpointWarning",
    "RetryPolicy",
    "SaveStats",
]

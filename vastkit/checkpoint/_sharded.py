"""Sharded checkpoints: every rank writes its part through ``torch.distributed.checkpoint``.

DCP plans which rank writes which tensor (and, on load, which rank reads which bytes, also onto
another world size); vastkit supplies the storage and the commit:

* :class:`StoreFileSystem` is DCP's file-system interface over :class:`vastkit._store.Store`, so
  shards go through the one store layer (whole writes, retries, concurrent multipart uploads on
  S3) and every object's size and digest are taken from the bytes as they are written. Object
  names get a per-save token (``<token>-0_0.distcp``, ``<token>-metadata``), so a re-save of a
  committed step writes aside and a killed save's leftovers never mix with a commit;
* :func:`save` runs DCP on every rank, gathers what each rank wrote, and has rank 0 check every
  object's size in the store and commit them with one manifest (``layout: "dcp"``), through the
  same :meth:`CheckpointFolders.commit_written` the single-process path uses; rank 0 then tells
  every rank the outcome;
* :func:`load` has rank 0 pick the committed step (newest whose objects are all there with their
  sizes) and tell every rank; each rank's reads are checked against the manifest's digest before
  DCP sees a byte, and a damaged step is skipped on every rank alike (DCP shares each rank's
  failure with all).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

import attrs

from vastkit._digest import ALGORITHM, digest_file, hasher
from vastkit._digest import shown as algorithm_name
from vastkit._ranks import Ranks, detect_ranks, initialized_dist
from vastkit._store import ObjectWriter, Store
from vastkit.checkpoint._commits import CheckpointFolders, Damaged
from vastkit.checkpoint._group import Coordinator
from vastkit.checkpoint._schedule import SaveSchedule, ema
from vastkit.checkpoint.naming import CHECKPOINTS_DIR, LAYOUT_DCP, Manifest, PayloadEntry
from vastkit.clock import Clock
from vastkit.errors import CheckpointCorruptError, CheckpointError, install_hint

__all__ = [
    "LoadPlan",
    "StoreFileSystem",
    "group_ranks",
    "load",
    "object_name",
    "save",
    "save_if_due",
]


def import_dcp() -> tuple[Any, Any, Any]:
    """``torch.distributed.checkpoint``, its ``filesystem`` module and ``CheckpointException``."""
    try:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import filesystem
        from torch.distributed.checkpoint.api import CheckpointException
    except ImportError as exc:  # pragma: no cover - torch is installed in the dev environment
        raise CheckpointError(
            f"sharded checkpoints need PyTorch with torch.distributed: {install_hint('torch')}"
        ) from exc
    return dcp, filesystem, CheckpointException


def object_name(token: str, dcp_name: str) -> str:
    """The store object a DCP file name becomes in a save with ``token``.

    DCP names its files ``.metadata`` and ``__<rank>_<n>.distcp``; manifest names start with a
    letter or digit, and each save's names are its own: ``<token>-metadata``,
    ``<token>-0_0.distcp``.
    """
    return f"{token}-{dcp_name.lstrip('._')}"


def _folder_of(path: str) -> str:
    return path.rsplit("/", 1)[0]


class _Tell:
    """A write-only stream over :class:`ObjectWriter` with the ``tell`` DCP needs; closing it
    does nothing (the object is finished when :meth:`Store.writer`'s block ends)."""

    def __init__(self, sink: ObjectWriter) -> None:
        self.sink = sink

    def write(self, data: Any) -> int:
        return self.sink.write(data)

    def tell(self) -> int:
        return self.sink.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class StoreFileSystem:
    """DCP's ``FileSystemBase`` over a :class:`~vastkit._store.Store`, for one save or load.

    Paths are ``<step folder>/<object name>`` (see :func:`object_name`). Writing records each
    object's :class:`~vastkit.checkpoint.naming.PayloadEntry` (size and digest of the bytes
    written); with ``expected`` (a committed manifest's entries) every read is checked first:
    an object the manifest does not name, or whose size or digest differs, raises
    :class:`~vastkit.errors.CheckpointCorruptError`.
    """

    def __init__(
        self,
        store: Store,
        token: str,
        *,
        step: int,
        expected: Mapping[str, PayloadEntry] | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.step = step
        self.expected = expected
        self.lock = threading.Lock()
        self.written: dict[str, PayloadEntry] = {}
        self.corrupt: list[CheckpointCorruptError] = []

    @contextlib.contextmanager
    def create_stream(self, path: str | os.PathLike[str], mode: str) -> Iterator[Any]:
        where = os.fspath(path)
        name = where.rsplit("/", 1)[-1]
        if "w" in mode:
            with self.store.writer(where) as sink:
                yield _Tell(sink)
            with self.lock:
                self.written[name] = PayloadEntry(
                    name=name, size=sink.size, digest=sink.digest, algorithm=sink.algorithm
                )
            return
        with contextlib.ExitStack() as stack:
            yield self._verified(where, name, stack)

    def _verified(self, path: str, name: str, stack: contextlib.ExitStack) -> IO[bytes]:
        """A seekable local file holding the object, checked against the manifest."""
        store = self.store
        shown = store.unstrip(path)
        entry = None if self.expected is None else self.expected.get(name)
        if self.expected is not None and entry is None:
            self._corrupt(f"{shown} is not named in its manifest")
        algorithm = ALGORITHM if entry is None else entry.algorithm
        try:
            if store.is_local:
                fh: IO[bytes] = stack.enter_context(open(path, "rb"))  # noqa: SIM115
                size, digest = digest_file(fh, algorithm)
            else:
                fh = stack.enter_context(
                    tempfile.NamedTemporaryFile(prefix="vastkit-shard-")  # noqa: SIM115
                )
                size, digest = store.read_into(path, fh, algorithm)
        except FileNotFoundError:
            self._corrupt(f"{shown} is missing")
        if entry is not None and (size != entry.size or digest != entry.digest):
            self._corrupt(f"{shown} fails its size or {algorithm_name(algorithm)} check")
        fh.seek(0)
        return fh

    def _corrupt(self, what: str) -> None:
        exc = CheckpointCorruptError(f"checkpoint step {self.step}: {what}")
        self.corrupt.append(exc)
        raise exc

    def concat_path(self, path: str | os.PathLike[str], suffix: str) -> str:
        return f"{os.fspath(path)}/{object_name(self.token, suffix)}"

    def init_path(self, path: str | os.PathLike[str]) -> str:
        return os.fspath(path)

    def rename(self, path: str | os.PathLike[str], new_path: str | os.PathLike[str]) -> None:
        src, dst = os.fspath(path), os.fspath(new_path)
        data = self.store.read(src)
        if data is None:
            raise FileNotFoundError(self.store.unstrip(src))
        self.store.write(dst, data)
        self.store.delete(src)
        with self.lock:
            old = self.written.pop(src.rsplit("/", 1)[-1], None)
            name = dst.rsplit("/", 1)[-1]
            if old is None:
                hashed = hasher()
                hashed.update(data)
                old = PayloadEntry(name=name, size=len(data), digest=hashed.hexdigest())
            self.written[name] = attrs.evolve(old, name=name, size=len(data))

    def mkdir(self, path: str | os.PathLike[str]) -> None:
        pass  # whole writes create their folders; object stores have none

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return False  # never chosen by DCP on its own: vastkit passes it in

    def exists(self, path: str | os.PathLike[str]) -> bool:
        return self.store.exists(os.fspath(path))

    def rm_file(self, path: str | os.PathLike[str]) -> None:
        self.store.delete(os.fspath(path))


def _storage(fs: StoreFileSystem, folder: str, *, reader: bool) -> Any:
    """A DCP ``FileSystemWriter`` or ``FileSystemReader`` whose file system is ``fs``."""
    _, filesystem, _ = import_dcp()
    if reader:
        storage = filesystem.FileSystemReader(folder)
    else:
        # one file per rank; the store's whole writes make their own fsyncs
        storage = filesystem.FileSystemWriter(folder, sync_files=False, overwrite=True)
    storage.fs = fs
    storage.path = folder
    return storage


def _failures(exc: BaseException) -> list[BaseException]:
    """The per-rank errors inside DCP's ``CheckpointException`` (or ``exc`` itself)."""
    found = getattr(exc, "failures", None)
    if not isinstance(found, Mapping):
        return [exc]
    return [
        pair[0] for _, pair in sorted(found.items()) if pair and isinstance(pair[0], BaseException)
    ]


def _summary(exc: BaseException) -> str:
    found = getattr(exc, "failures", None)
    if isinstance(found, Mapping):
        return "; ".join(
            f"rank {rank}: {type(pair[0]).__name__}: {pair[0]}"
            for rank, pair in sorted(found.items())
        )
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns on every call without a process group that it assumes one process: vastkit
    chose that on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def group_ranks(what: str) -> Ranks:
    """This process's rank and world size, for a sharded ``what`` that every rank calls.

    Raises:
        CheckpointError: ``WORLD_SIZE`` > 1 but torch.distributed is not initialised.
    """
    ranks = detect_ranks()
    if ranks.world_size > 1 and initialized_dist() is None:
        raise CheckpointError(
            f"{what} with WORLD_SIZE={ranks.world_size} needs torch.distributed initialised "
            "(torch.distributed.init_process_group) on every rank first"
        )
    return ranks


def save_if_due(
    folders: CheckpointFolders,
    coordinator: Coordinator,
    schedule: SaveSchedule,
    clock: Clock,
    *,
    step: int,
    state_dict: dict[str, Any],
    metrics: Mapping[str, float],
    force: bool,
) -> bool:
    """:meth:`CheckpointManager.save_sharded` after its argument checks: whether it committed.

    When being due depends on time (``every_seconds``, ``"auto"``) rank 0 decides and tells the
    others, so no rank waits in a save the others skipped.
    """
    ranks = group_ranks("save_sharded")
    now = clock.now()
    schedule.note_call(step, now)
    due = force or schedule.due(step, now)
    if ranks.world_size > 1 and not force and schedule.time_decides:
        due = coordinator.broadcast(
            due, what=f"sharded checkpoint step {step}: deciding whether to save"
        )
    if not due:
        return False
    started = clock.now()
    save(folders, coordinator, ranks, step=step, state_dict=state_dict, metrics=metrics)
    finished = clock.now()
    schedule.stats.upload_seconds = ema(schedule.stats.upload_seconds, finished - started)
    schedule.saved(step, finished)
    return True


def save(
    folders: CheckpointFolders,
    coordinator: Coordinator,
    ranks: Ranks,
    *,
    step: int,
    state_dict: dict[str, Any],
    metrics: Mapping[str, float],
) -> Manifest:
    """Write ``state_dict`` on every rank and commit it with one manifest (see module doc).

    Returns:
        The manifest committed (the same on every rank).

    Raises:
        CheckpointError: any rank failed, or a rank is gone or silent past the timeout; the
            step is not committed, except in the one case the message of rank 0's error says
            so (every object was written and committed, but a rank left before hearing it).
    """
    dcp, _, checkpoint_exception = import_dcp()
    distributed = ranks.world_size > 1
    where = f"sharded checkpoint step {step}"
    token = uuid.uuid4().hex[:12]
    if distributed:
        token = coordinator.broadcast(token, what=f"{where}: starting the save")
    folder = folders.folder(step)
    fs = StoreFileSystem(folders.store, token, step=step)
    writer = _storage(fs, folder, reader=False)
    group = coordinator.group() if distributed else None
    try:
        with _quiet_single_process():
            dcp.save(
                state_dict, storage_writer=writer, process_group=group, no_dist=not distributed
            )
    except checkpoint_exception as exc:  # every rank got here: the group still works
        raise CheckpointError(f"{where}: writing the shards failed: {_summary(exc)}") from exc
    except Exception as exc:
        raise CheckpointError(
            f"{where}: rank {ranks.rank} of {ranks.world_size} lost the other ranks while "
            f"writing (a rank was killed, crashed or hangs past {coordinator.timeout:g} s); "
            f"nothing was committed; end this process ({type(exc).__name__}: {exc})"
        ) from exc
    written = tuple(sorted(fs.written.values(), key=lambda e: e.name))
    every: Sequence[tuple[PayloadEntry, ...]] = (
        coordinator.all_gather(written, what=f"{where}: reporting the shards written")
        if distributed
        else [written]
    )
    outcome: tuple[str | None, bytes | None] = (None, None)
    if ranks.is_main:
        outcome = _commit(folders, step, every, metrics, where)
    if distributed:
        try:
            outcome = coordinator.broadcast(
                outcome, what=f"{where}: telling every rank whether rank 0 committed"
            )
        except CheckpointError as exc:
            if outcome[1] is None:  # not rank 0, or rank 0 did not commit
                raise
            raise CheckpointError(
                f"{where} is committed (every shard was written and checked), but {exc}"
            ) from exc
    error, data = outcome
    if error is not None or data is None:
        raise CheckpointError(error or f"{where}: rank 0 sent no manifest")
    manifest = Manifest.from_json(data)
    if not ranks.is_main:
        with folders.lock:
            folders.manifests[step] = manifest
    return manifest


def _commit(
    folders: CheckpointFolders,
    step: int,
    every: Sequence[tuple[PayloadEntry, ...]],
    metrics: Mapping[str, float],
    where: str,
) -> tuple[str | None, bytes | None]:
    """Rank 0's part: check and commit every rank's objects; ``(error, manifest JSON)``."""
    files: dict[str, PayloadEntry] = {}
    for rank, entries in enumerate(every):
        for entry in entries:
            if entry.name in files and files[entry.name] != entry:
                return f"{where}: ranks disagree about {entry.name} (rank {rank})", None
            files[entry.name] = entry
    if not any(e.name.endswith("-metadata") for e in files.values()):
        return f"{where}: no rank wrote DCP's metadata", None
    try:
        manifest = folders.commit_written(
            step, tuple(files[n] for n in sorted(files)), metrics, layout=LAYOUT_DCP
        )
    except CheckpointError as exc:
        return str(exc), None
    folders.after_commit(step)
    return None, manifest.to_json()


def load(
    folders: CheckpointFolders,
    coordinator: Coordinator,
    ranks: Ranks,
    *,
    state_dict: dict[str, Any],
    step: int | None,
) -> Manifest | None:
    """Load a sharded checkpoint into ``state_dict`` on every rank (in place, as DCP does).

    Returns:
        The manifest loaded; ``None`` when nothing was ever committed (``step=None`` only).

    Raises:
        CheckpointError: there is no committed step ``step``, it is not sharded, or a rank failed.
        CheckpointCorruptError: the given step is damaged, or (``step=None``) every committed one.
    """
    dcp, _, checkpoint_exception = import_dcp()
    distributed = ranks.world_size > 1
    plan = LoadPlan()
    if ranks.is_main:
        plan = _choose(folders, step)
    if distributed:
        plan = coordinator.broadcast(plan, what="loading a sharded checkpoint: choosing the step")
    if plan.error is not None:
        raise (CheckpointCorruptError if plan.corrupt else CheckpointError)(plan.error)
    damaged = list(plan.damaged)
    group = coordinator.group() if distributed else None
    for data in plan.manifests:
        manifest = Manifest.from_json(data)
        folder = folders.folder(manifest.step)
        if manifest.layout != LAYOUT_DCP:
            raise CheckpointError(
                f"checkpoint step {manifest.step} under {folders.store.url} was saved by one "
                "process (save): load it with restore or load, not load_sharded"
            )
        token = manifest.files[0].name.split("-", 1)[0]
        fs = StoreFileSystem(
            folders.store, token, step=manifest.step, expected={f.name: f for f in manifest.files}
        )
        reader = _storage(fs, folder, reader=True)
        try:
            with _quiet_single_process():
                dcp.load(
                    state_dict, storage_reader=reader, process_group=group, no_dist=not distributed
                )
        except (checkpoint_exception, CheckpointError) as exc:
            corrupt = fs.corrupt or [
                e for e in _failures(exc) if isinstance(e, CheckpointCorruptError)
            ]
            if not corrupt:
                raise CheckpointError(
                    f"loading sharded checkpoint step {manifest.step} failed: {_summary(exc)}"
                ) from exc
            if step is not None:
                raise CheckpointCorruptError(str(corrupt[0])) from exc
            folders.warn(f"skipping damaged checkpoint: {corrupt[0]}")
            damaged.append(str(corrupt[0]))
            continue
        except Exception as exc:
            raise CheckpointError(
                f"loading sharded checkpoint step {manifest.step}: rank {ranks.rank} lost the "
                f"other ranks (one was killed, crashed or hangs past {coordinator.timeout:g} s); "
                f"end this process ({type(exc).__name__}: {exc})"
            ) from exc
        with folders.lock:
            folders.manifests[manifest.step] = manifest
        return manifest
    if not damaged:
        return None
    top = folders.store.unstrip(folders.store.path(CHECKPOINTS_DIR))
    raise CheckpointCorruptError(
        f"no checkpoint under {folders.store.url} can be loaded: every committed one is "
        f"damaged ({len(damaged)}): " + "; ".join(damaged) + f". Nothing was loaded; to start "
        f"afresh, move {top} aside"
    )


@attrs.frozen(kw_only=True)
class LoadPlan:
    """Rank 0's choice for a sharded load, sent to every rank."""

    error: str | None = None
    """Why nothing can be loaded (then ``corrupt`` says whether it is damage)."""
    corrupt: bool = False
    manifests: tuple[bytes, ...] = ()
    """The committed manifests to try, newest first."""
    damaged: tuple[str, ...] = ()
    """What was found wrong with the newer committed steps skipped."""


def _choose(folders: CheckpointFolders, step: int | None) -> LoadPlan:
    """Rank 0's part of a load: which committed steps to try."""
    try:
        if step is not None:
            found = folders.check(step, folders.folder(step), verify="size")
            if found is None:
                return LoadPlan(
                    error=f"no committed checkpoint step {step} under {folders.store.url} "
                    "(no manifest)"
                )
            if isinstance(found, Damaged):
                return LoadPlan(error=found.reason, corrupt=True)
            return LoadPlan(manifests=(found.to_json(),))
        manifests: list[bytes] = []
        damaged: list[str] = []
        for at, folder in sorted(folders.list_steps().items(), reverse=True):
            checked = folders.check(at, folder, verify="size")
            if isinstance(checked, Damaged):
                folders.warn(f"skipping damaged checkpoint: {checked.reason}")
                damaged.append(checked.reason)
            elif checked is not None:
                manifests.append(checked.to_json())
        return LoadPlan(manifests=tuple(manifests), damaged=tuple(damaged))
    except CheckpointError as exc:
        return LoadPlan(error=str(exc), corrupt=isinstance(exc, CheckpointCorruptError))

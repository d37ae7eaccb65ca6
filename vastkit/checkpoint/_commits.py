"""The checkpoints in a store: commit, verify, prune and read (the manager's I/O).

:class:`CheckpointFolders` knows the layout (``checkpoints/step-<n>/state.pt`` then
``manifest.json``) and does every store call a checkpoint needs through one
:class:`~vastkit._store.Store`. It never decides *when* to save; the manager does.

The invariants it keeps:

* a commit is one write of ``manifest.json``; re-saving a committed step writes its payload aside
  (``state-<token>.pt``), verifies it, swaps the manifest in that one write and only then removes
  the replaced payload, so at every instant the old or the new commit of the step is whole;
* pruning runs only after a commit and never touches the newest committed step;
* every step folder is classified as uncommitted (no manifest), committed or :class:`Damaged`
  (with what was found); when every committed one is damaged a load raises
  :class:`~vastkit.errors.CheckpointCorruptError` listing them, never a silent fresh start;
* entries under ``checkpoints/`` that are not step folders (``step-4``, ``tmp``) are ignored with
  a :class:`CheckpointWarning` naming them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

from vastkit._digest import digest_file, shown
from vastkit._parts import Lender
from vastkit._store import Store
from vastkit.checkpoint._serialize import (
    FORMAT_TAG,
    decode,
    import_torch,
    load_file,
)
from vastkit.checkpoint.naming import (
    CHECKPOINTS_DIR,
    LATEST_HINT,
    LAYOUT_DCP,
    LAYOUT_SINGLE,
    MANIFEST_NAME,
    PAYLOAD_NAME,
    STEP_WIDTH,
    Manifest,
    ManifestError,
    PayloadEntry,
    payload_name,
    select_retained,
    split_step_entries,
    step_dirname,
)
from vastkit.errors import CheckpointCorruptError, CheckpointError

__all__ = ["CheckpointFolders", "CheckpointInfo", "CheckpointWarning", "Damaged", "Retention"]

logger = logging.getLogger("vastkit.checkpoint")

_RACE_TRIES = 3
"""How often a check is repeated when the step's manifest changed under it (a re-save)."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it is damaged (bad manifest, size or checksum), or an
    entry under ``checkpoints/`` that is not a step folder was ignored."""


@attrs.frozen(kw_only=True)
class Damaged:
    """A step folder with a manifest whose commit does not verify."""

    step: int
    """The step of the folder."""
    reason: str
    """What was found (``checkpoint step 3: .../state.pt has 90 bytes, the manifest says 100``)."""


@attrs.frozen(kw_only=True)
class CheckpointInfo:
    """A committed checkpoint."""

    step: int
    """The training step it holds."""
    url: str
    """The URL of its folder (``.../checkpoints/step-000000000042``)."""
    time: float
    """When it was committed (Unix seconds; informative, never used for ordering)."""
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    """The metrics passed to ``save(metrics=...)``."""
    size_bytes: int = 0
    """The total size of its payload objects."""
    files: tuple[str, ...] = ()
    """The names of its payload objects."""
    sharded: bool = False
    """Whether every rank of a group wrote it (:meth:`CheckpointManager.save_sharded`); load
    it with :meth:`CheckpointManager.load_sharded`."""
    state: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    """The loaded state, on the value :meth:`CheckpointManager.restore` returns; else ``None``."""


@attrs.frozen(kw_only=True)
class Retention:
    """Which committed checkpoints survive a prune (see :func:`~.naming.select_retained`)."""

    keep_last: int | None
    keep_best: int | None = None
    best_metric: str | None = None
    best_mode: Literal["min", "max"] = "min"


class CheckpointFolders:
    """The step folders under ``<store>/checkpoints/``.

    Args:
        store: The store rooted at the manager's URL.
        retention: What pruning keeps.
    """

    def __init__(self, store: Store, *, retention: Retention) -> None:
        self.store = store
        self.retention = retention
        self.lock = threading.Lock()
        self.manifests: dict[int, Manifest] = {}
        self._strays_warned: set[str] = set()

    def folder(self, step: int) -> str:
        """The store path of a step's folder."""
        return self.store.path(CHECKPOINTS_DIR, step_dirname(step))

    def list_steps(self) -> dict[int, str]:
        """Every step folder under ``checkpoints/``: step -> path.

        Warns (once per entry and instance) about entries that are not step folders.
        """
        top = self.store.path(CHECKPOINTS_DIR)
        steps, strays = split_step_entries(self.store.ls(top))
        new = [s for s in strays if s not in self._strays_warned]
        if new:
            self._strays_warned.update(new)
            self.warn(
                f"ignoring {len(new)} entr{'y' if len(new) == 1 else 'ies'} under "
                f"{self.store.unstrip(top)} that {'is' if len(new) == 1 else 'are'} not a step "
                f"folder (step-<{STEP_WIDTH} digits>, written only by vastkit): "
                + ", ".join(self.store.unstrip(s) for s in new)
            )
        return steps

    # -- writing -----------------------------------------------------------------------------

    def write(
        self, step: int, payload: Mapping[str, Any], nbytes: int, metrics: Mapping[str, float]
    ) -> Manifest:
        """Upload, verify and commit one checkpoint (:meth:`after_commit` comes next).

        Re-saving a committed step never uncommits it: the new payload goes aside, under a new
        name, and is verified; one write of the manifest then swaps the commit to it; the replaced
        payload is removed last. A kill at any point leaves the old commit or the new one whole.
        ``nbytes`` (the state's tensor bytes) sizes the upload's parts.

        Raises:
            CheckpointError: the save failed (the step keeps its previous commit, if any).
        """
        folder = self.folder(step)
        doing = f"saving checkpoint step {step} to {self.store.unstrip(folder)}"
        with _failing_as(doing):
            replacing = self.read_manifest(step, folder, warn=False)
            name = payload_name(
                () if replacing is None else (f.name for f in replacing.files), uuid.uuid4().hex
            )
            entry = self._upload_payload(f"{folder}/{name}", payload, nbytes)
        # the digest is of the bytes written; the listing proves they all arrived
        return self.commit_written(step, (entry,), metrics, layout=LAYOUT_SINGLE, doing=doing)

    def commit_written(
        self,
        step: int,
        files: tuple[PayloadEntry, ...],
        metrics: Mapping[str, float],
        *,
        layout: str,
        doing: str | None = None,
    ) -> Manifest:
        """Commit payload objects already written into the step's folder (by :meth:`write`, or
        the shards of every rank): check that each is there with its recorded size, then write
        the manifest (one write; :meth:`after_commit` comes next). The objects the manifest does
        not name (a replaced commit's, a killed save's) are removed after the commit.

        Raises:
            CheckpointCorruptError: an object is missing or has another size (nothing committed).
            CheckpointError: the commit failed (the step keeps its previous commit, if any);
                ``doing`` says what failed (by default: committing the step).
        """
        store = self.store
        folder = self.folder(step)
        with _failing_as(doing or f"committing checkpoint step {step} in {store.unstrip(folder)}"):
            listing = self.verify_payload(step, folder, files, full=False)
            manifest = Manifest(
                step=step, time=store.clock.now(), files=files, metrics=metrics, layout=layout
            )
            self._write_manifest(f"{folder}/{MANIFEST_NAME}", manifest)
        self._committed(manifest, folder, listing)
        return manifest

    def _write_manifest(self, path: str, manifest: Manifest) -> None:
        """The commit (for a re-save, the swap): one write of the manifest, read back."""
        data = manifest.to_json()
        self.store.write(path, data)
        if self.store.read(path) != data:
            raise CheckpointCorruptError(
                f"checkpoint step {manifest.step}: {self.store.unstrip(path)} did not read back"
            )

    def _committed(self, manifest: Manifest, folder: str, listing: Mapping[str, int]) -> None:
        with self.lock:
            self.manifests[manifest.step] = manifest
        logger.info(
            "committed checkpoint step %d (%d bytes in %d objects)",
            manifest.step,
            manifest.total_size,
            len(manifest.files),
        )
        self.drop_unreferenced(manifest.step, folder, manifest, listing)

    def drop_unreferenced(
        self, step: int, folder: str, manifest: Manifest, listing: Mapping[str, int] | None = None
    ) -> None:
        """Remove the objects of a step folder that its manifest does not name (the payload a
        re-save replaced, leftovers of a killed save); failures are logged, never raised.

        ``listing``: the folder's objects as listed after the payload arrived (saves a listing;
        nothing but the manifest is written there after it)."""
        keep = {MANIFEST_NAME, *(f.name for f in manifest.files)}
        try:
            for name in sorted(self.store.sizes(folder) if listing is None else listing):
                if name not in keep:
                    self.store.delete(f"{folder}/{name}")
        except Exception as exc:
            logger.warning(
                "could not remove the replaced objects of checkpoint step %d (removed at its "
                "next save or prune): %s",
                step,
                exc,
            )

    def after_commit(self, step: int) -> None:
        """Write the ``latest`` hint and prune; failures are logged, never raised."""
        store = self.store
        try:
            store.write(store.path(CHECKPOINTS_DIR, LATEST_HINT), f"{step}\n".encode())
        except Exception as exc:
            logger.warning("could not write the latest hint for step %d: %s", step, exc)
        try:
            self.prune(step)
        except Exception as exc:
            logger.warning("pruning after step %d failed (will retry next commit): %s", step, exc)

    def _upload_payload(self, target: str, payload: Mapping[str, Any], nbytes: int) -> PayloadEntry:
        """Serialise ``payload`` straight into the store, hashing on the way.

        ``torch.save`` writes into :meth:`Store.writer`'s sink: no temporary copy of the whole
        payload, no re-read to hash; on S3 the parts go up while the rest is serialised.
        """
        torch = import_torch()
        # the payload's tensors (staged copies, or a blocking save's own) stay unchanged until
        # the upload ends: their bytes are sent without a copy
        lender = Lender(_cpu_storages(torch, payload))
        with self.store.writer(target, size_hint=nbytes, lender=lender) as sink:
            torch.save(payload, sink)
        return PayloadEntry(
            name=target.rsplit("/", 1)[-1],
            size=sink.size,
            digest=sink.digest,
            algorithm=sink.algorithm,
        )

    def verify_payload(
        self, step: int, folder: str, files: tuple[PayloadEntry, ...], *, full: bool
    ) -> dict[str, int]:
        """Check every payload object's size (and digest with ``full``); the folder's listing
        (object name -> size).

        Raises:
            CheckpointCorruptError: an object is missing or does not match the manifest.
        """
        sizes = self.store.sizes(folder)
        for entry in files:
            path = self.store.unstrip(f"{folder}/{entry.name}")
            if entry.name not in sizes:
                raise CheckpointCorruptError(f"checkpoint step {step}: {path} is missing")
            if sizes[entry.name] != entry.size:
                raise CheckpointCorruptError(
                    f"checkpoint step {step}: {path} has {sizes[entry.name]} bytes, "
                    f"the manifest says {entry.size}"
                )
            if full:
                digest = self.store.digest(f"{folder}/{entry.name}", entry.algorithm)
                if digest != entry.digest:
                    raise CheckpointCorruptError(
                        f"checkpoint step {step}: {path} fails its {shown(entry.algorithm)} check"
                    )
        return sizes

    def prune(self, newest: int) -> None:
        """Remove the step folders that retention does not keep (never ``newest`` or later)."""
        steps = self.list_steps()
        committed: dict[int, Manifest] = {}
        for step, folder in steps.items():
            manifest = self.manifests.get(step)
            if manifest is None:
                with contextlib.suppress(FileNotFoundError, ManifestError, CheckpointError):
                    manifest = self.read_manifest(step, folder, warn=False)
            if manifest is not None:
                committed[step] = manifest
        rule = self.retention
        metric = rule.best_metric
        keep = select_retained(
            committed,
            keep_last=rule.keep_last,
            keep_best=rule.keep_best,
            metrics={s: (m.metrics.get(metric) if metric else None) for s, m in committed.items()},
            mode=rule.best_mode,
        )
        for step, folder in sorted(steps.items()):
            if step in keep or step >= newest:
                continue
            if step in committed:
                logger.info("pruning checkpoint step %d", step)
                self.store.delete(f"{folder}/{MANIFEST_NAME}")  # uncommit first
            self.store.delete(folder, recursive=True)
            with self.lock:
                self.manifests.pop(step, None)

    # -- reading -----------------------------------------------------------------------------

    def read_manifest(self, step: int, folder: str, *, warn: bool = True) -> Manifest | None:
        """The manifest of a step folder; ``None`` when uncommitted or damaged (warns then)."""
        found = self.read_commit(step, folder)
        if isinstance(found, Damaged):
            if warn:
                self.warn(f"skipping damaged checkpoint: {found.reason}")
            return None
        return found

    def read_commit(self, step: int, folder: str) -> Manifest | Damaged | None:
        """The manifest of a step folder, what is wrong with it, or ``None`` when there is none."""
        path = f"{folder}/{MANIFEST_NAME}"
        data = self.store.read(path)
        if data is None:
            return None
        try:
            manifest = Manifest.from_json(data)
            if manifest.step != step:
                raise ManifestError(f"it names step {manifest.step}")
        except ManifestError as exc:
            shown = self.store.unstrip(path)
            what = "empty" if not data.strip() else "bad"
            return Damaged(step=step, reason=f"checkpoint step {step}: {what} {shown}: {exc}")
        return manifest

    def check(
        self, step: int, folder: str, *, verify: Literal["size", "full"]
    ) -> Manifest | Damaged | None:
        """A step folder's commit when its payload verifies; else what is wrong, or ``None``
        when it is uncommitted. A check that fails while the manifest changes (a re-save swapped
        it) is repeated with the new one."""
        for _ in range(_RACE_TRIES):
            found = self.read_commit(step, folder)
            if not isinstance(found, Manifest):
                return found
            try:
                self.verify_payload(step, folder, found.files, full=verify == "full")
            except CheckpointCorruptError as exc:
                if self.read_commit(step, folder) != found:
                    continue
                return Damaged(step=step, reason=str(exc))
            return found
        return Damaged(step=step, reason=f"checkpoint step {step}: its manifest kept changing")

    def warn(self, message: str) -> None:
        """Log and warn (:class:`CheckpointWarning`) about a damaged checkpoint or a stray."""
        logger.warning("%s", message)
        warnings.warn(message, CheckpointWarning, stacklevel=3)

    def info(self, manifest: Manifest, folder: str) -> CheckpointInfo:
        """The public description of a committed checkpoint."""
        return CheckpointInfo(
            step=manifest.step,
            url=self.store.unstrip(folder),
            time=manifest.time,
            metrics=dict(manifest.metrics),
            size_bytes=manifest.total_size,
            files=tuple(f.name for f in manifest.files),
            sharded=manifest.layout == LAYOUT_DCP,
        )

    def candidates(self, *, verify: Literal["size", "full"]) -> Iterator[tuple[Manifest, str]]:
        """Committed checkpoints whose payload verifies, newest first (warning on damage)."""
        for step, folder in sorted(self.list_steps().items(), reverse=True):
            found = self.check(step, folder, verify=verify)
            if isinstance(found, Damaged):
                self.warn(f"skipping damaged checkpoint: {found.reason}")
            elif found is not None:
                yield found, folder

    def load_payload(
        self, step: int | None, *, map_location: Any, weights_only: bool
    ) -> tuple[Manifest, dict[str, Any]] | None:
        """The manifest and decoded payload of ``step``, or of the newest that loads.

        Returns:
            ``None`` only with ``step=None`` when nothing was ever committed (no step folder
            holds a manifest): a fresh start.

        Raises:
            CheckpointError: there is no committed checkpoint of the given step.
            CheckpointCorruptError: the given step fails verification; or, with ``step=None``,
                every committed checkpoint does (the message lists what was found for each).
        """
        # the manifest alone: reading the payload checks its size and digest (no listing first)
        if step is not None:
            folder = self.folder(step)
            found = self.read_commit(step, folder)
            if found is None:
                raise CheckpointError(
                    f"no committed checkpoint step {step} under {self.store.url} (no manifest)"
                )
            if isinstance(found, Damaged):
                raise CheckpointCorruptError(found.reason)
            return self.load_committed(found, folder, map_location, weights_only)
        damaged: list[Damaged] = []
        for at, folder in sorted(self.list_steps().items(), reverse=True):
            found = self.read_commit(at, folder)
            if isinstance(found, Manifest):
                try:
                    return self.load_committed(found, folder, map_location, weights_only)
                except CheckpointCorruptError as exc:
                    found = Damaged(step=at, reason=str(exc))
            if isinstance(found, Damaged):
                self.warn(f"skipping damaged checkpoint: {found.reason}")
                damaged.append(found)
        if not damaged:
            return None
        top = self.store.unstrip(self.store.path(CHECKPOINTS_DIR))
        raise CheckpointCorruptError(
            f"no checkpoint under {self.store.url} can be loaded: every committed one is "
            f"damaged ({len(damaged)}): "
            + "; ".join(d.reason for d in damaged)
            + f". Nothing was loaded; to start afresh, move {top} aside"
        )

    def load_committed(
        self, manifest: Manifest, folder: str, map_location: Any, weights_only: bool
    ) -> tuple[Manifest, dict[str, Any]]:
        """Read a committed checkpoint, following its manifest if a re-save swaps it meanwhile.

        Raises:
            CheckpointCorruptError: its payload fails verification or cannot be loaded.
        """
        for _ in range(_RACE_TRIES - 1):
            try:
                return manifest, self.read_payload(manifest, folder, map_location, weights_only)
            except CheckpointCorruptError:
                current = self.read_commit(manifest.step, folder)
                if not isinstance(current, Manifest) or current == manifest:
                    raise
                manifest = current
        return manifest, self.read_payload(manifest, folder, map_location, weights_only)

    def read_payload(
        self, manifest: Manifest, folder: str, map_location: Any, weights_only: bool
    ) -> dict[str, Any]:
        """Read, check and ``torch.load`` a checkpoint's payload object."""
        torch = import_torch()
        if manifest.layout == LAYOUT_DCP:
            raise CheckpointError(
                f"checkpoint step {manifest.step} under {self.store.url} is sharded (every rank "
                "saved its part with save_sharded): load it on every rank with load_sharded"
            )
        entry = manifest.files[0]
        for f in manifest.files:
            if f.name == PAYLOAD_NAME:
                entry = f
        path = f"{folder}/{entry.name}"
        shown = self.store.unstrip(path)
        with contextlib.ExitStack() as stack:
            try:
                local = fetch_verified(self.store, path, entry, manifest.step, stack)
            except CheckpointError:
                raise
            except FileNotFoundError as exc:
                raise CheckpointCorruptError(
                    f"checkpoint step {manifest.step}: {shown} is missing"
                ) from exc
            except Exception as exc:
                raise CheckpointError(
                    f"reading checkpoint step {manifest.step} object {shown} failed: {exc}"
                ) from exc
            try:
                payload = load_file(torch, local, map_location, weights_only)
            except Exception as exc:
                if weights_only and "weights_only" in str(exc).lower().replace(" ", "_"):
                    raise CheckpointError(
                        f"checkpoint step {manifest.step} object {shown} holds pickled Python "
                        "objects that weights_only loading refuses; pass weights_only=False only "
                        f"if you trust this file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0]})"
                    ) from exc
                raise CheckpointCorruptError(
                    f"checkpoint step {manifest.step}: {shown} could not be loaded: {exc}"
                ) from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_TAG:
            raise CheckpointCorruptError(
                f"checkpoint step {manifest.step}: {shown} is not a vastkit checkpoint payload"
            )
        payload["state"] = decode(payload["state"])
        return dict(payload)


def _cpu_storages(torch: Any, tree: Any) -> Iterator[tuple[int, int]]:
    """(address, size) of the storage of every CPU tensor in a state tree."""
    if isinstance(tree, torch.Tensor):
        if tree.device.type == "cpu" and tree.layout == torch.strided:
            storage = tree.untyped_storage()
            yield storage.data_ptr(), storage.nbytes()
    elif isinstance(tree, Mapping):
        for value in tree.values():
            yield from _cpu_storages(torch, value)
    elif isinstance(tree, list | tuple):
        for value in tree:
            yield from _cpu_storages(torch, value)


@contextlib.contextmanager
def _failing_as(doing: str) -> Iterator[None]:
    """Raise what fails inside as a :class:`CheckpointError` saying what was being done."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{doing} failed: {type(exc).__name__}: {exc}") from exc


def fetch_verified(
    store: Store, path: str, entry: PayloadEntry, step: int, stack: contextlib.ExitStack
) -> str:
    """A local file holding the verified payload: the object itself on a local disk (hashed
    in place; ``stack`` checks on closing that the file loaded is the one hashed), else a
    temporary file streamed with one GET and hashed on the way (removed when ``stack``
    closes; the loaded tensors keep its pages mapped)."""
    if store.is_local:
        fh = stack.enter_context(open(path, "rb"))  # noqa: SIM115
        size = os.fstat(fh.fileno()).st_size
        if size != entry.size:  # not worth hashing
            raise CheckpointCorruptError(
                f"checkpoint step {step}: {store.unstrip(path)} has {size} bytes, the "
                f"manifest says {entry.size}"
            )
        size, digest = digest_file(fh, entry.algorithm)
        local = path
        hashed_file = os.fstat(fh.fileno())
        stack.callback(_check_unchanged, path, hashed_file, step, store.unstrip(path))
    else:
        tmp = stack.enter_context(
            tempfile.NamedTemporaryFile(prefix="vastkit-restore-", suffix=".pt")  # noqa: SIM115
        )
        size, digest = store.read_into(path, tmp, entry.algorithm)
        local = tmp.name
        if size != entry.size:
            raise CheckpointCorruptError(
                f"checkpoint step {step}: {store.unstrip(path)} has {size} bytes, the "
                f"manifest says {entry.size}"
            )
    if size != entry.size or digest != entry.digest:
        raise CheckpointCorruptError(
            f"checkpoint step {step}: {store.unstrip(path)} fails its size or "
            f"{shown(entry.algorithm)} check"
        )
    return local


def _check_unchanged(path: str, hashed: os.stat_result, step: int, shown: str) -> None:
    """Raise when ``path`` is no longer the file that was hashed (a re-save replaced it)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        now = None
    if now is None or (now.st_ino, now.st_dev) != (hashed.st_ino, hashed.st_dev):
        raise CheckpointCorruptError(f"checkpoint step {step}: {shown} was replaced while loading")

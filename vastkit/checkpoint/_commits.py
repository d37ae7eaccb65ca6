"""The checkpoints in a store: commit, verify, prune and read (the manager's I/O).

:class:`CheckpointFolders` knows the layout (``checkpoints/step-<n>/state.pt`` then
``manifest.json``) and does every store call a checkpoint needs through one
:class:`~vastkit._store.Store`. It never decides *when* to save; the manager does.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

from vastkit._store import Store
from vastkit.checkpoint._serialize import (
    FORMAT_TAG,
    PAYLOAD_NAME,
    HashingFileWriter,
    MemoryWriter,
    decode,
    hash_while,
    import_torch,
)
from vastkit.checkpoint.naming import (
    CHECKPOINTS_DIR,
    LATEST_HINT,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    PayloadEntry,
    parse_step_dirname,
    select_retained,
    step_dirname,
)
from vastkit.errors import CheckpointCorruptError, CheckpointError

__all__ = ["CheckpointFolders", "CheckpointInfo", "CheckpointWarning", "Retention"]

logger = logging.getLogger("vastkit.checkpoint")


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it is damaged (bad manifest, size or checksum)."""


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
        spool_max_bytes: States estimated larger than this are serialised to a temporary file.
    """

    def __init__(
        self,
        store: Store,
        *,
        retention: Retention,
        spool_max_bytes: int,
    ) -> None:
        self.store = store
        self.retention = retention
        self.spool_max = int(spool_max_bytes)
        self.lock = threading.Lock()
        self.manifests: dict[int, Manifest] = {}
        self._serial = bytearray()

    def folder(self, step: int) -> str:
        """The store path of a step's folder."""
        return self.store.path(CHECKPOINTS_DIR, step_dirname(step))

    def list_steps(self) -> dict[int, str]:
        """Every step folder under ``checkpoints/``: step -> path."""
        out: dict[int, str] = {}
        for entry in self.store.ls(self.store.path(CHECKPOINTS_DIR)):
            step = parse_step_dirname(entry)
            if step is not None:
                out[step] = entry
        return out

    # -- writing -----------------------------------------------------------------------------

    def write(
        self, step: int, payload: Mapping[str, Any], nbytes: int, metrics: Mapping[str, float]
    ) -> Manifest:
        """Upload, verify and commit one checkpoint (:meth:`after_commit` comes next).

        Raises:
            CheckpointError: the save failed (the step stays uncommitted).
        """
        store = self.store
        folder = self.folder(step)
        manifest_path = f"{folder}/{MANIFEST_NAME}"
        try:
            # Re-saving a committed step: uncommit first, so readers fall back meanwhile.
            if MANIFEST_NAME in store.sizes(folder):
                store.delete(manifest_path)
            entry = self._upload_payload(f"{folder}/{PAYLOAD_NAME}", payload, nbytes)
            self.verify_payload(step, folder, (entry,), full=store.cheap_reads)
            manifest = Manifest(step=step, time=store.clock.now(), files=(entry,), metrics=metrics)
            data = manifest.to_json()
            store.write(manifest_path, data)
            if store.read(manifest_path) != data:
                raise CheckpointCorruptError(
                    f"checkpoint step {step}: {store.unstrip(manifest_path)} did not read back"
                )
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"saving checkpoint step {step} to {store.unstrip(folder)} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        with self.lock:
            self.manifests[step] = manifest
        logger.info("committed checkpoint step %d (%d bytes)", step, entry.size)
        return manifest

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
        """Serialise ``payload`` (in memory, or spooled to a file when large) and upload it."""
        torch = import_torch()
        store = self.store
        if nbytes + (1 << 20) <= self.spool_max:
            if len(self._serial) < nbytes + (1 << 20):
                self._serial = bytearray(nbytes + (1 << 20))
            writer = MemoryWriter(self._serial)
            torch.save(payload, writer)
            self._serial = writer.buffer
            view = writer.getview()
            try:
                size = view.nbytes
                digest = hash_while(view, lambda: store.write(target, view))
            finally:
                view.release()
                writer.view.release()
        else:
            with tempfile.NamedTemporaryFile(prefix="vastkit-ckpt-", suffix=".pt") as tmp:
                hw = HashingFileWriter(tmp)
                torch.save(payload, hw)
                tmp.flush()
                size, digest = hw.size, hw.hash.hexdigest()
                store.put(tmp.name, target)
        return PayloadEntry(name=PAYLOAD_NAME, size=size, sha256=digest)

    def verify_payload(
        self, step: int, folder: str, files: tuple[PayloadEntry, ...], *, full: bool
    ) -> None:
        """Check every payload object's size (and SHA-256 with ``full``).

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
                digest = self.store.sha256(f"{folder}/{entry.name}")
                if digest != entry.sha256:
                    raise CheckpointCorruptError(
                        f"checkpoint step {step}: {path} fails its SHA-256 check"
                    )

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
        """The manifest of a step folder; ``None`` when uncommitted; warns when damaged."""
        path = f"{folder}/{MANIFEST_NAME}"
        data = self.store.read(path)
        if data is None:
            return None
        try:
            manifest = Manifest.from_json(data)
            if manifest.step != step:
                raise ManifestError(f"it names step {manifest.step}")
        except ManifestError as exc:
            if warn:
                self.warn(f"skipping checkpoint step {step}: bad {self.store.unstrip(path)}: {exc}")
            return None
        return manifest

    def warn(self, message: str) -> None:
        """Log and warn (:class:`CheckpointWarning`) about a damaged checkpoint."""
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
        )

    def candidates(self, *, verify: Literal["size", "full"]) -> Iterator[tuple[Manifest, str]]:
        """Committed checkpoints whose payload verifies, newest first (warning on damage)."""
        for step, folder in sorted(self.list_steps().items(), reverse=True):
            manifest = self.read_manifest(step, folder)
            if manifest is None:
                continue
            try:
                self.verify_payload(step, folder, manifest.files, full=verify == "full")
            except CheckpointCorruptError as exc:
                self.warn(f"skipping damaged checkpoint: {exc}")
                continue
            yield manifest, folder

    def load_payload(
        self, step: int | None, *, map_location: Any, weights_only: bool
    ) -> tuple[Manifest, dict[str, Any]]:
        """The manifest and decoded payload of ``step``, or of the newest that loads.

        Raises:
            CheckpointError: there is no committed checkpoint (of that step).
            CheckpointCorruptError: the given step fails verification.
        """
        if step is not None:
            folder = self.folder(step)
            manifest = self.read_manifest(step, folder, warn=False)
            if manifest is None:
                raise CheckpointError(
                    f"no committed checkpoint step {step} under {self.store.url} "
                    "(missing or unreadable manifest)"
                )
            self.verify_payload(step, folder, manifest.files, full=False)
            return manifest, self.read_payload(manifest, folder, map_location, weights_only)
        tried = 0
        for manifest, folder in self.candidates(verify="size"):
            tried += 1
            try:
                payload = self.read_payload(manifest, folder, map_location, weights_only)
            except CheckpointCorruptError as exc:
                self.warn(f"skipping damaged checkpoint: {exc}")
                continue
            return manifest, payload
        raise CheckpointError(
            f"no committed checkpoint under {self.store.url}"
            + (f" ({tried} damaged ones skipped)" if tried else "")
        )

    def read_payload(
        self, manifest: Manifest, folder: str, map_location: Any, weights_only: bool
    ) -> dict[str, Any]:
        """Read, check and ``torch.load`` a checkpoint's payload object."""
        torch = import_torch()
        entry = manifest.files[0]
        for f in manifest.files:
            if f.name == PAYLOAD_NAME:
                entry = f
        path = f"{folder}/{entry.name}"
        shown = self.store.unstrip(path)
        try:
            data = self.store.read(path)
        except Exception as exc:
            raise CheckpointError(
                f"reading checkpoint step {manifest.step} object {shown} failed: {exc}"
            ) from exc
        if data is None:
            raise CheckpointError(
                f"reading checkpoint step {manifest.step} object {shown} failed: it does not exist"
            )
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise CheckpointCorruptError(
                f"checkpoint step {manifest.step}: {shown} fails its size or SHA-256 check"
            )
        try:
            payload = torch.load(
                io.BytesIO(data), map_location=map_location, weights_only=weights_only
            )
        except Exception as exc:
            if weights_only and "weights_only" in str(exc).lower().replace(" ", "_"):
                raise CheckpointError(
                    f"checkpoint step {manifest.step} object {shown} holds pickled Python objects "
                    "that weights_only loading refuses; pass weights_only=False only if you "
                    f"trust this file ({type(exc).__name__}: {str(exc).splitlines()[0]})"
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

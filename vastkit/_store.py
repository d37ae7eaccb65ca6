"""The one store layer over fsspec: checkpoints, the run directory, artifacts and the worker.

:class:`Store` opens an fsspec file system from a URL and storage options and gives every caller
the same guarantees:

* **whole writes**: on object stores a single PUT (or one multipart upload) is atomic; on a local
  disk the bytes go to a hidden temporary name beside the target, are fsynced, renamed over it,
  and the directory is fsynced, so a crash leaves the old object or the new one, never a part;
* **reads that tolerate absence**: :meth:`Store.read` returns ``None`` for a missing object;
* **retries**: every call goes through :func:`vastkit.retry.retry_call` with the store's
  :class:`~vastkit.retry.RetryPolicy` on the injected clock, retrying only errors that
  :func:`is_transient` accepts (network trouble, throttling, 5xx);
* **fresh answers**: listings and existence checks drop fsspec's listing cache first (s3fs caches
  listings), so a reader is never fooled by a stale one.

On S3 it also turns off botocore's per-part CRC32 (our own SHA-256 covers integrity, and the CRC
runs serially on s3fs's event loop, halving throughput) and moves large objects in concurrent
parts of ``transfer_chunk_bytes``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, TypeVar

import fsspec

from vastkit.clock import Clock, SystemClock
from vastkit.errors import VastkitError
from vastkit.retry import RetryPolicy, retry_call

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_CONCURRENCY",
    "POLLING_RETRY",
    "STORE_RETRY",
    "Store",
    "atomic_local_file",
    "atomic_local_write",
    "is_transient",
]

logger = logging.getLogger("vastkit.store")

_T = TypeVar("_T")

DEFAULT_CHUNK = 8 * 2**20
"""The part size of concurrent multipart uploads and ranged reads on S3, and of local copies."""

DEFAULT_CONCURRENCY = 10
"""How many parts move at once on S3."""

_READ_CHUNK = 32 * 2**20

STORE_RETRY = RetryPolicy(attempts=6, initial_delay=0.25, max_delay=8.0, deadline=120.0)
"""The default policy for store calls (checkpoints, datasets): six tries within two minutes,
waits of 0.25 s to 8 s."""

POLLING_RETRY = RetryPolicy(attempts=3, initial_delay=0.25, max_delay=2.0, deadline=10.0)
"""The policy for the run directory's small objects, read and written from polling loops (the
worker's, the orchestrator's): three tries within ten seconds, so a loop is never held up for
long; the loop's next round is the next try."""

_PERMANENT = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
    ValueError,
    TypeError,
    KeyError,
    NotImplementedError,
    VastkitError,
)
_TRANSIENT_MODULES = {"aiohttp", "urllib3", "requests", "google", "gcsfs", "s3fs"}


def is_transient(exc: BaseException) -> bool:
    """Whether a store error is worth retrying (network trouble, throttling, 5xx).

    Missing objects, permissions, programming errors and vastkit's own errors are final; other
    ``OSError``, connection and timeout errors are transient; a botocore error is transient when
    its HTTP status is 5xx, 408 or 429 (or, without a status, when it is a connection, timeout or
    streaming error); errors of the HTTP stacks under fsspec (aiohttp, urllib3, requests, gcsfs,
    s3fs) are transient.
    """
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return True
    package = type(exc).__module__.split(".")[0]
    if package == "botocore":
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status >= 500 or status in (408, 429)
        name = type(exc).__name__
        return any(w in name for w in ("Connection", "Timeout", "Streaming", "HTTPClient"))
    return package in _TRANSIENT_MODULES


# --------------------------------------------------------------------------------------------
# Whole writes on a local disk


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (where the platform can open a directory)."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse to sync a directory
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_local_file(path: str, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A hidden temporary file beside ``path``, renamed over it when the block ends.

    With ``durable`` (the default) the file is fsynced before the rename and the directory after
    it, so the new object survives a power loss; without, the write is atomic (readers see the old
    or the new content, never part of it) but may be lost in a crash, which suits objects that are
    rewritten every few seconds anyway (heartbeats). When the block or the rename fails the
    temporary file is removed and ``path`` keeps its old content.
    """
    folder, name = os.path.split(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if durable:
        _fsync_dir(folder)


def atomic_local_write(path: str, data: bytes | memoryview, *, durable: bool = True) -> None:
    """Write ``data`` to a local ``path`` whole (see :func:`atomic_local_file`)."""
    with atomic_local_file(path, durable=durable) as fh:
        fh.write(data)


class _Sliceable:
    """Lets s3fs cut multipart chunks out of a memoryview (botocore wants bytes per part)."""

    def __init__(self, view: bytes | memoryview) -> None:
        self.view = memoryview(view)

    def __len__(self) -> int:
        return self.view.nbytes

    def __getitem__(self, key: slice) -> bytes:
        return bytes(self.view[key])


# --------------------------------------------------------------------------------------------
# The store


def _s3_options(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(storage_options or {})
    if fsspec.core.split_protocol(url)[0] in ("s3", "s3a"):
        # Our own SHA-256 covers integrity; botocore's per-part CRC32 (default since 1.36)
        # runs serially on s3fs's event loop and halves upload throughput.
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("request_checksum_calculation", "when_required")
        options["config_kwargs"] = config
    return options


class Store:
    """An fsspec file system under a URL, with whole writes and retries of transient errors.

    Paths given to the methods are file-system paths (:meth:`path` builds them from the root).

    Args:
        url: Any fsspec URL or plain path (``s3://bucket/run``, ``file:///data``, ``memory://x``).
        storage_options: Passed to fsspec (credentials, ``client_kwargs``, ...).
        retry: How transient errors are retried (default :data:`STORE_RETRY`).
        clock: Every backoff wait is ``clock.sleep`` (default :class:`~vastkit.clock.SystemClock`).
        transfer_chunk_bytes: The part size of multipart uploads and ranged reads (S3).
        transfer_concurrency: How many parts move at once (S3).

    Raises:
        ValueError: ``url`` is empty.
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        transfer_chunk_bytes: int = DEFAULT_CHUNK,
        transfer_concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if not url:
            raise ValueError("a store URL is required")
        self.url = url.rstrip("/")
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        fs, root = fsspec.core.url_to_fs(url, **_s3_options(url, storage_options))
        self.fs: fsspec.AbstractFileSystem = fs
        self.root: str = root.rstrip("/")
        protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
        self.protocols = tuple(str(p) for p in protocols)
        self.is_local = "file" in self.protocols or "local" in self.protocols
        self.is_s3 = "s3" in self.protocols or "s3a" in self.protocols
        self.cheap_reads = self.is_local or "memory" in self.protocols
        """Whether reading an object back costs no network transfer."""
        self.retry = retry if retry is not None else STORE_RETRY
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.chunk = int(transfer_chunk_bytes)
        self.concurrency = int(transfer_concurrency)
        self._jitter = random.Random()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def path(self, *parts: str) -> str:
        """The file-system path of ``parts`` under the root."""
        return "/".join([self.root, *parts])

    def unstrip(self, path: str) -> str:
        """The URL of a file-system path (for messages)."""
        return str(self.fs.unstrip_protocol(path))

    def call(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn``, retrying transient errors as the policy allows; ``what`` names it."""

        def log(exc: Exception, retry: int, wait: float) -> None:
            logger.warning(
                "%s failed (%s: %s); retry %d in %.2fs", what, type(exc).__name__, exc, retry, wait
            )

        return retry_call(
            fn,
            policy=self.retry,
            clock=self.clock,
            retry_if=is_transient,
            rng=self._jitter,
            on_retry=log,
            what=what,
        )

    def invalidate(self, path: str) -> None:
        """Drop fsspec's cached listing of ``path``."""
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(path)

    # -- reading -----------------------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        """The content of an object, or ``None`` when it does not exist."""

        def cat() -> bytes | None:
            try:
                if self.is_s3:
                    return bytes(
                        self.fs.cat_file(
                            path,
                            chunksize=max(self.chunk, _READ_CHUNK),
                            max_concurrency=self.concurrency,
                        )
                    )
                return bytes(self.fs.cat_file(path))
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None

        return self.call(f"reading {self.unstrip(path)}", cat)

    def sha256(self, path: str) -> str:
        """The SHA-256 of an object, read in chunks (never whole in memory).

        Raises:
            FileNotFoundError: the object does not exist.
        """

        def digest() -> str:
            hashed = hashlib.sha256()
            with self.fs.open(path, "rb") as fh:
                while chunk := fh.read(DEFAULT_CHUNK):
                    hashed.update(chunk)
            return hashed.hexdigest()

        return self.call(f"reading {self.unstrip(path)}", digest)

    def exists(self, path: str) -> bool:
        """Whether an object exists (never answered from a cached listing)."""
        self.invalidate(path)
        return bool(self.call(f"looking up {self.unstrip(path)}", lambda: self.fs.exists(path)))

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is a folder (a prefix with objects under it)."""
        self.invalidate(path)
        return bool(self.call(f"looking up {self.unstrip(path)}", lambda: self.fs.isdir(path)))

    def size(self, path: str) -> int | None:
        """The size of an object in bytes, or ``None`` when it is not a file."""
        self.invalidate(path)

        def info() -> int | None:
            try:
                found = self.fs.info(path)
            except FileNotFoundError:
                return None
            if found.get("type", "file") != "file":
                return None
            return int(found.get("size") or 0)

        return self.call(f"looking up {self.unstrip(path)}", info)

    def ls(self, folder: str) -> list[str]:
        """The paths directly under ``folder`` (empty when it does not exist)."""
        self.invalidate(folder)

        def ls() -> list[str]:
            try:
                return [str(p).rstrip("/") for p in self.fs.ls(folder, detail=False)]
            except FileNotFoundError:
                return []

        return self.call(f"listing {self.unstrip(folder)}", ls)

    def sizes(self, folder: str) -> dict[str, int]:
        """Object name -> size in bytes for every object directly in ``folder``."""
        self.invalidate(folder)

        def ls() -> list[dict[str, Any]]:
            try:
                return list(self.fs.ls(folder, detail=True))
            except FileNotFoundError:
                return []

        return {
            str(e["name"]).rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
            for e in self.call(f"listing {self.unstrip(folder)}", ls)
            if e.get("type") != "directory"
        }

    def find(self, folder: str) -> dict[str, int]:
        """Every object under ``folder`` at any depth: path relative to it -> size in bytes."""
        root = folder.rstrip("/")
        self.invalidate(root)

        def find() -> dict[str, Any]:
            try:
                return dict(self.fs.find(root, detail=True))
            except FileNotFoundError:
                return {}

        found = self.call(f"listing {self.unstrip(root)}", find)
        return {
            str(p)[len(root) + 1 :] if str(p).startswith(root + "/") else str(p): int(
                info.get("size") or 0
            )
            for p, info in sorted(found.items())
            if info.get("type", "file") == "file"
        }

    def download(self, path: str, local: str, *, callback: Any = None) -> None:
        """Copy an object to a local file (``callback``: an fsspec callback for the bytes)."""
        kwargs: dict[str, Any] = {} if callback is None else {"callback": callback}
        self.call(f"reading {self.unstrip(path)}", lambda: self.fs.get_file(path, local, **kwargs))

    # -- writing -----------------------------------------------------------------------------

    def write(self, path: str, data: bytes | memoryview, *, durable: bool = True) -> None:
        """Write ``data`` as one object, whole: readers never see a partial object.

        Args:
            path: The object's path in the store.
            data: The content.
            durable: On a local disk, fsync before the write counts (object stores are durable
                once the PUT returns). Pass False for objects rewritten every few seconds, whose
                loss in a power cut costs nothing (heartbeats).
        """
        if self.is_local:
            self.call(
                f"writing {self.unstrip(path)}",
                lambda: atomic_local_write(path, data, durable=durable),
            )
            return

        def pipe() -> None:
            if self.is_s3:
                body: Any = bytes(data) if len(data) < 2 * self.chunk else _Sliceable(data)
                self.fs.pipe_file(
                    path, body, chunksize=self.chunk, max_concurrency=self.concurrency
                )
            else:
                self.fs.pipe_file(path, bytes(data))

        self.call(f"writing {self.unstrip(path)}", pipe)
        self.invalidate(path)

    def put(self, local: str | os.PathLike[str], path: str, *, callback: Any = None) -> None:
        """Upload a local file as one object, whole (multipart on S3).

        Args:
            local: The local file.
            path: The object's path.
            callback: An fsspec callback that follows the bytes moved.
        """
        src_path = os.fspath(local)
        if self.is_local:

            def copy_atomic() -> None:
                if callback is not None:
                    callback.set_size(os.path.getsize(src_path))
                with atomic_local_file(path) as dst, open(src_path, "rb") as src:
                    while chunk := src.read(DEFAULT_CHUNK):
                        dst.write(chunk)
                        if callback is not None:
                            callback.relative_update(len(chunk))

            self.call(f"writing {self.unstrip(path)}", copy_atomic)
            return
        kwargs: dict[str, Any] = {} if callback is None else {"callback": callback}
        if self.is_s3:
            kwargs.update(chunksize=self.chunk, max_concurrency=self.concurrency)

        self.call(
            f"writing {self.unstrip(path)}", lambda: self.fs.put_file(src_path, path, **kwargs)
        )
        self.invalidate(path)

    def delete(self, path: str, *, recursive: bool = False) -> None:
        """Remove an object (or a folder with ``recursive``); nothing happens when it is missing."""

        def rm() -> None:
            try:
                if recursive:
                    self.fs.rm(path, recursive=True)
                else:
                    self.fs.rm_file(path)
            except FileNotFoundError:
                pass

        self.call(f"removing {self.unstrip(path)}", rm)
        self.invalidate(path)

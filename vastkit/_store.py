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

:meth:`Store.writer` streams an object whose size is not known up front (a ``torch.save``): the
first part is held in memory; an object that fits is one whole write (:meth:`Store.write`), a
larger one becomes a concurrent multipart upload on S3 (each part retried on its own, at most
``transfer_concurrency`` parts in flight), a streamed atomic write on a local disk, or a spooled
temporary file uploaded whole elsewhere. :meth:`Store.read_into` streams an object into a local
file with one GET, hashing it on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, BinaryIO, TypeVar

import fsspec

from vastkit._digest import ALGORITHM, digest_file, hasher
from vastkit._parts import Lender, Part, register_payload
from vastkit.clock import Clock, SystemClock
from vastkit.errors import VastkitError
from vastkit.retry import RetryPolicy, retry_call

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_CONCURRENCY",
    "POLLING_RETRY",
    "STORE_RETRY",
    "ObjectWriter",
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

_S3_MIN_PART = 5 * 2**20

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
        response = getattr(exc, "response", None) or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
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
        # botocore's own default: s3fs's 15 s is shorter than a CompleteMultipartUpload of a
        # large object can take, and a timed-out complete is retried, redoing its work
        config.setdefault("read_timeout", 60)
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
        """The content of an object, or ``None`` when it does not exist.

        Meant for small objects (one GET on S3); stream large ones with :meth:`read_into`.
        """

        def cat() -> bytes | None:
            try:
                if self.is_s3:  # one GET: s3fs would HEAD first (and list on a 404) to split it
                    return bytes(self.fs.cat_file(path, max_concurrency=1))
                return bytes(self.fs.cat_file(path))
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None

        return self.call(f"reading {self.unstrip(path)}", cat)

    def digest(self, path: str, algorithm: str = ALGORITHM) -> str:
        """The hex digest of an object (``blake3`` or ``sha256``), never whole in memory: a
        local file is memory-mapped, an object streamed in chunks.

        Raises:
            FileNotFoundError: the object does not exist.
        """

        def digest() -> str:
            if self.is_local:
                with open(path, "rb") as fh:
                    return digest_file(fh, algorithm)[1]
            hashed = hasher(algorithm, all_cores=True)
            for chunk in self._chunks(path):
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

    def read_into(self, path: str, fh: IO[bytes], algorithm: str = ALGORITHM) -> tuple[int, str]:
        """Stream an object into the local file ``fh`` (from its start), hashing on the way.

        One GET on S3 (no ranged re-reads), read in chunks of ``transfer_chunk_bytes``; a failed
        attempt is retried from the start of the file.

        Returns:
            The object's size in bytes and its hex digest (``algorithm``).

        Raises:
            FileNotFoundError: the object does not exist.
        """

        def stream() -> tuple[int, str]:
            fh.seek(0)
            fh.truncate()
            hashed = hasher(algorithm, all_cores=True)
            size = 0
            for chunk in self._chunks(path):
                hashed.update(chunk)
                fh.write(chunk)
                size += len(chunk)
            fh.flush()
            return size, hashed.hexdigest()

        return self.call(f"reading {self.unstrip(path)}", stream)

    def _chunks(self, path: str) -> Iterator[bytes]:
        if not self.is_s3:
            with self.fs.open(path, "rb", block_size=self.chunk) as src:
                while chunk := src.read(self.chunk):
                    yield chunk
            return
        bucket, key, version = self.fs.split_path(path)
        extra = {"VersionId": version} if version else {}
        answer = self.fs.call_s3("get_object", Bucket=bucket, Key=key, **extra)
        body = answer["Body"]
        loop = self.fs.loop
        # the next chunk is read on the event loop while the caller handles this one
        ahead = asyncio.run_coroutine_threadsafe(body.read(self.chunk), loop)
        try:
            while chunk := ahead.result():
                ahead = asyncio.run_coroutine_threadsafe(body.read(self.chunk), loop)
                yield chunk
        finally:
            ahead.cancel()
            body.close()

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

    @contextlib.contextmanager
    def writer(
        self, path: str, *, size_hint: int | None = None, lender: Lender | None = None
    ) -> Iterator[ObjectWriter]:
        """A file-like sink that writes one object whole when the block ends without error.

        The first ``transfer_chunk_bytes`` are held in memory; an object no larger is written with
        :meth:`write` (one call, retried). A larger one is streamed: on S3 as a multipart upload
        with up to ``transfer_concurrency`` parts in flight (each part retried; the upload is
        aborted when the block fails), on a local disk through :func:`atomic_local_file`
        (fsynced once at the end), elsewhere into a temporary file uploaded with :meth:`put`.
        Readers never see a part of the object.

        ``size_hint`` (the expected size) bounds the memory in flight to about a tenth of it:
        smaller parts (down to S3's 5 MiB minimum) and fewer of them at once for small objects.
        ``lender``: memory that stays valid and unchanged until the block ends; views of it are
        sent without a copy (and cost no memory in flight).
        """
        out = ObjectWriter(self, path, size_hint=size_hint, lender=lender)
        try:
            yield out
            out.finish()
        except BaseException:
            out.abort()
            raise

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


# --------------------------------------------------------------------------------------------
# Streamed writes


class ObjectWriter:
    """The sink of :meth:`Store.writer`: ``write`` bytes; the object appears when the block ends.

    Parts of ``transfer_chunk_bytes`` are filled with copies of the bytes written, except views
    of memory a :class:`~vastkit._parts.Lender` lends (a checkpoint's staged tensors), which are
    kept and sent as they are. Full parts are hashed in order on one thread and sent on others
    (uploaded, or written to the file), so producing, hashing and sending overlap; at most
    ``transfer_concurrency`` parts (two for a file) are in flight besides the one filling, and
    at most a tenth of ``size_hint`` of copied bytes.
    ``size`` counts the bytes written; ``digest`` is their hex digest (``algorithm``, BLAKE3)
    once the block ended.
    """

    def __init__(
        self,
        store: Store,
        path: str,
        *,
        size_hint: int | None = None,
        lender: Lender | None = None,
    ) -> None:
        self.store = store
        self.path = path
        self.size = 0
        self.algorithm = ALGORITHM
        self.digest = ""
        self._hash = hasher(self.algorithm)
        self._lender = lender
        self._most_inflight = store.concurrency if store.is_s3 else 2
        self._part_size = store.chunk
        self._budget = self._most_inflight * self._part_size  # copied bytes in flight
        if size_hint is not None and size_hint > 0:
            smallest = _S3_MIN_PART if store.is_s3 else 2**20
            if lender is None:  # parts are copies: smaller ones for a small object
                self._part_size = min(store.chunk, max(smallest, size_hint // 12))
            self._budget = max(self._part_size, size_hint // 10)
        self._part = Part()
        self._fill = 0
        self._mode: str | None = None  # None: first part in memory; "s3", "local", "spool"
        self._stack = contextlib.ExitStack()
        self._fh: IO[bytes] | None = None
        self._s3: _Multipart | None = None
        self._hasher: ThreadPoolExecutor | None = None
        self._sender: ThreadPoolExecutor | None = None
        self._room = threading.Condition()
        self._parts_out = 0
        self._copied_out = 0
        self._inflight: list[Future[Any]] = []

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = view.nbytes
        lent = self._lender is not None and self._lender.lends(view)
        pos = 0
        while pos < n:
            if self._fill == self._part_size:  # a full part and more to come: send it on
                self._ship(self._part)
                self._part = Part()
                self._fill = 0
            take = min(n - pos, self._part_size - self._fill)
            piece = view[pos : pos + take]
            if lent:
                self._part.lend(piece)
            else:
                self._part.copy(piece)
            self._fill += take
            pos += take
        self.size += n
        return n

    def flush(self) -> None:
        pass

    def _start(self) -> None:
        """More than one part: stream from now on."""
        store = self.store
        inflight = self._most_inflight
        if store.is_s3:
            self._mode = "s3"
            self._s3 = _Multipart(store, self.path)
            register_payload()
        elif store.is_local:
            self._mode = "local"
            self._fh = self._stack.enter_context(atomic_local_file(self.path))
        else:
            self._mode = "spool"
            self._fh = self._stack.enter_context(
                tempfile.NamedTemporaryFile(prefix="vastkit-spool-")  # noqa: SIM115
            )
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="vastkit-hash")
        self._sender = ThreadPoolExecutor(
            inflight if self._s3 is not None else 1, thread_name_prefix="vastkit-send"
        )

    def _ship(self, part: Part) -> None:
        if self._mode is None:
            self._start()
        assert self._hasher is not None
        assert self._sender is not None
        self._raise_failed()
        cost = part.copied
        with self._room:  # at most so many parts, and so many copied bytes, in flight
            self._room.wait_for(
                lambda: (
                    self._parts_out < self._most_inflight
                    and (self._parts_out == 0 or self._copied_out + cost <= self._budget)
                )
            )
            self._parts_out += 1
            self._copied_out += cost
        hashed = self._hasher.submit(_update, self._hash, part)
        if self._s3 is not None:
            sent: Future[Any] = self._sender.submit(self._s3.part, self._s3.next_number(), part)
        else:
            assert self._fh is not None
            fh = self._fh
            sent = self._sender.submit(_write, fh, part)
        pending = [hashed, sent]

        def done(fut: Future[Any]) -> None:
            pending.remove(fut)
            if not pending:
                with self._room:
                    self._parts_out -= 1
                    self._copied_out -= cost
                    self._room.notify_all()

        for fut in (hashed, sent):
            self._inflight.append(fut)
            fut.add_done_callback(done)

    def _raise_failed(self) -> None:
        for fut in self._inflight:
            if fut.done() and fut.exception() is not None:
                fut.result()
        self._inflight = [f for f in self._inflight if not f.done()]

    def _drain(self) -> None:
        for fut in self._inflight:
            fut.result()
        self._inflight = []

    def finish(self) -> None:
        store = self.store
        if self._mode is None:
            whole = self._part.whole()
            self._hash.update(whole)
            self.digest = self._hash.hexdigest()
            store.write(self.path, whole)
            self._close_pools()
            return
        if self._fill:
            self._ship(self._part)
        self._part = Part()
        self._drain()
        self.digest = self._hash.hexdigest()
        self._close_pools()
        if self._s3 is not None:
            self._s3.complete()
            store.invalidate(self.path)
            return
        assert self._fh is not None
        fh, self._fh = self._fh, None
        if self._mode == "local":
            self._stack.close()  # fsync, rename, fsync the folder
            return
        fh.flush()
        store.put(fh.name, self.path)
        self._stack.close()

    def _close_pools(self) -> None:
        for pool in (self._hasher, self._sender):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        self._part = Part()
        self._close_pools()
        self._fh = None
        if self._s3 is not None:
            self._s3.abort()
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


class _Multipart:
    """An S3 multipart upload; parts are sent by the caller's threads, each retried on its own."""

    def __init__(self, store: Store, path: str) -> None:
        self.store = store
        self.what = f"writing {store.unstrip(path)}"
        self.bucket, self.key, _ = store.fs.split_path(path)
        answer = store.call(
            self.what,
            lambda: store.fs.call_s3("create_multipart_upload", Bucket=self.bucket, Key=self.key),
        )
        self.upload_id = str(answer["UploadId"])
        self.numbers = 0
        self.done: dict[int, str] = {}

    def next_number(self) -> int:
        self.numbers += 1
        return self.numbers

    def part(self, number: int, data: Part) -> None:
        store = self.store

        def send() -> Any:
            data.seek(0)  # a retry sends the part again from its start
            return store.fs.call_s3(
                "upload_part",
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
            )

        answer = store.call(f"{self.what} (part {number})", send)
        self.done[number] = str(answer["ETag"])

    def complete(self) -> None:
        """Complete the upload; a retry after a first try that completed but whose answer was
        lost (the upload id is gone then) is recognised by the object's multipart ETag."""
        parts = [{"PartNumber": n, "ETag": self.done[n]} for n in range(1, self.numbers + 1)]
        store = self.store

        def once() -> None:
            try:
                store.fs.call_s3(
                    "complete_multipart_upload",
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except Exception:
                if not self.completed_already([self.done[n] for n in sorted(self.done)]):
                    raise

        store.call(self.what, once)
        self.upload_id = ""

    def completed_already(self, etags: list[str]) -> bool:
        """Whether the object now is this upload's parts (its ETag is their multipart ETag)."""
        try:
            found = self.store.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
            digests = b"".join(bytes.fromhex(e.strip('"')) for e in etags)
        except Exception:
            return False
        expected = f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(etags)}"
        return str(found.get("ETag", "")).strip('"') == expected

    def abort(self) -> None:
        if not self.upload_id:
            return
        with contextlib.suppress(Exception):
            self.store.fs.call_s3(
                "abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )
        self.upload_id = ""


def _update(hashed: Any, part: Part) -> None:
    for view in part.views():
        hashed.update(view)


def _write(fh: IO[bytes], part: Part) -> None:
    for view in part.views():
        fh.write(view)

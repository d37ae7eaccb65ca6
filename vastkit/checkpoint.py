"""Committed, asynchronous, verified checkpoints on any fsspec store.

:class:`CheckpointManager` writes each checkpoint under
``<url>/checkpoints/step-<zero-padded step>/``: the payload object first, then ``manifest.json``
(sizes and SHA-256 of every payload object, step, time, metrics, format version). A checkpoint
exists once its manifest exists; the latest one is the highest step whose manifest exists and whose
payload verifies. Timestamps never order checkpoints.

An asynchronous save copies the state into reused CPU buffers on the caller's thread (the only
stall), then serialises, uploads, verifies and commits in a background thread. At most one save is
in flight; a failed background save is raised as :class:`~vastkit.errors.CheckpointError` at the
next call to :meth:`~CheckpointManager.save`, :meth:`~CheckpointManager.wait`,
:meth:`~CheckpointManager.save_now` or :meth:`~CheckpointManager.close`.

torch is optional for ``import vastkit``; it is imported when a checkpoint is saved or loaded.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import random
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeVar

import attrs
import fsspec

from vastkit._ckpt_policy import (
    CHECKPOINTS_DIR,
    LATEST_HINT,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    PayloadEntry,
    RetryPolicy,
    auto_interval_steps,
    is_due,
    parse_step_dirname,
    select_retained,
    step_dirname,
)
from vastkit.clock import Clock, SystemClock
from vastkit.errors import CheckpointCorruptError, CheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["CheckpointInfo", "CheckpointManager", "CheckpointWarning", "RetryPolicy"]

logger = logging.getLogger("vastkit.checkpoint")

PAYLOAD_NAME = "state.pt"
_FORMAT_TAG = "vastkit-checkpoint"
_NDARRAY_TAG = "__vastkit_ndarray__"
_CHUNK = 8 * 2**20
_CONCURRENCY = 10
_READ_CHUNK = 32 * 2**20
_T = TypeVar("_T")


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


@attrs.define
class _Stats:
    stall_seconds: float | None = None
    upload_seconds: float | None = None
    step_seconds: float | None = None


def _ema(old: float | None, new: float, weight: float = 0.5) -> float:
    return new if old is None else (1 - weight) * old + weight * new


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is installed in the dev environment
        raise CheckpointError(
            "checkpoints need PyTorch: install it (pip install 'vastkit[torch]')"
        ) from exc
    return torch


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
    CheckpointError,
)
_TRANSIENT_MODULES = {"aiohttp", "urllib3", "requests", "google", "gcsfs", "s3fs"}


def _is_transient(exc: BaseException) -> bool:
    """Whether a store error is worth retrying (network trouble, throttling, 5xx)."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return True
    if type(exc).__module__.split(".")[0] == "botocore":
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status >= 500 or status in (408, 429)
        name = type(exc).__name__
        return any(w in name for w in ("Connection", "Timeout", "Streaming", "HTTPClient"))
    return type(exc).__module__.split(".")[0] in _TRANSIENT_MODULES


class _Store:
    """The fsspec file system under the manager's URL, with retries and atomic local writes."""

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None,
        retry: RetryPolicy,
        clock: Clock,
    ) -> None:
        options = dict(storage_options or {})
        if fsspec.core.split_protocol(url)[0] in ("s3", "s3a"):
            # Our own SHA-256 covers integrity; botocore's per-part CRC32 (default since 1.36)
            # runs serially on s3fs's event loop and halves upload throughput.
            config = dict(options.get("config_kwargs") or {})
            config.setdefault("request_checksum_calculation", "when_required")
            options["config_kwargs"] = config
        fs, root = fsspec.core.url_to_fs(url, **options)
        self.fs = fs
        self.root = root.rstrip("/")
        protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
        self.protocols = tuple(str(p) for p in protocols)
        self.is_local = "file" in self.protocols or "local" in self.protocols
        self.is_s3 = "s3" in self.protocols or "s3a" in self.protocols
        self.cheap_reads = self.is_local or "memory" in self.protocols
        self.retry = retry
        self.clock = clock
        self.chunk = _CHUNK
        self.concurrency = _CONCURRENCY
        self._jitter = random.Random()
        self.url = url.rstrip("/")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def unstrip(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))

    def call(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` with retries on transient errors, bounded by the policy's deadline."""
        start = self.clock.now()
        tries = 0
        while True:
            tries += 1
            try:
                return fn()
            except BaseException as exc:
                if not isinstance(exc, Exception) or not _is_transient(exc):
                    raise
                elapsed = self.clock.now() - start
                delay = self.retry.delay(tries, 0.5 + self._jitter.random() / 2)
                if tries >= self.retry.attempts or elapsed + delay > self.retry.deadline:
                    raise
                logger.warning(
                    "%s failed (%s: %s); retry %d in %.2fs",
                    what,
                    type(exc).__name__,
                    exc,
                    tries,
                    delay,
                )
                self.clock.sleep(delay)

    def invalidate(self, path: str) -> None:
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(path)

    def list_steps(self) -> dict[int, str]:
        """Every step folder under ``checkpoints/``: step -> path."""
        base = self.path(CHECKPOINTS_DIR)
        self.invalidate(base)

        def ls() -> list[str]:
            try:
                return [str(p) for p in self.fs.ls(base, detail=False)]
            except FileNotFoundError:
                return []

        out: dict[int, str] = {}
        for entry in self.call(f"listing {self.unstrip(base)}", ls):
            step = parse_step_dirname(entry)
            if step is not None:
                out[step] = entry.rstrip("/")
        return out

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

    def read(self, path: str) -> bytes:
        def cat() -> bytes:
            if self.is_s3:
                return bytes(
                    self.fs.cat_file(
                        path,
                        chunksize=max(self.chunk, _READ_CHUNK),
                        max_concurrency=self.concurrency,
                    )
                )
            return bytes(self.fs.cat_file(path))

        return self.call(f"reading {self.unstrip(path)}", cat)

    def sha256(self, path: str) -> str:
        """The SHA-256 of an object, read in chunks (never whole in memory)."""

        def digest() -> str:
            hashed = hashlib.sha256()
            with self.fs.open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    hashed.update(chunk)
            return hashed.hexdigest()

        return self.call(f"reading {self.unstrip(path)}", digest)

    def write(self, path: str, data: bytes | memoryview) -> None:
        """Write ``data`` whole: readers never see a partial object."""
        if self.is_local:
            self.call(f"writing {self.unstrip(path)}", lambda: _atomic_local_write(path, data))
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

    def put(self, local: str, path: str) -> None:
        """Upload a local file whole."""
        if self.is_local:

            def copy_atomic() -> None:
                with _atomic_local_file(path) as dst, open(local, "rb") as src:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)

            self.call(f"writing {self.unstrip(path)}", copy_atomic)
            return

        def put() -> None:
            if self.is_s3:
                self.fs.put_file(
                    local, path, chunksize=self.chunk, max_concurrency=self.concurrency
                )
            else:
                self.fs.put_file(local, path)

        self.call(f"writing {self.unstrip(path)}", put)
        self.invalidate(path)

    def remove(self, path: str, *, recursive: bool = False) -> None:
        def rm() -> None:
            try:
                self.fs.rm(path, recursive=recursive)
            except FileNotFoundError:
                pass

        self.call(f"removing {self.unstrip(path)}", rm)
        self.invalidate(path)


class _Sliceable:
    """Lets s3fs cut multipart chunks out of a memoryview (botocore wants bytes per part)."""

    def __init__(self, view: bytes | memoryview) -> None:
        self.view = memoryview(view)

    def __len__(self) -> int:
        return self.view.nbytes

    def __getitem__(self, key: slice) -> bytes:
        return bytes(self.view[key])


@contextlib.contextmanager
def _atomic_local_file(path: str) -> Iterator[BinaryIO]:
    """A temporary file next to ``path``, synced and renamed over it when the block succeeds."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _atomic_local_write(path: str, data: bytes | memoryview) -> None:
    with _atomic_local_file(path) as fh:
        fh.write(data)


def _hash_while(data: memoryview, work: Callable[[], None]) -> str:
    """SHA-256 of ``data``, computed in a thread while ``work()`` runs (hashlib frees the GIL)."""
    out: list[str] = []
    hasher = threading.Thread(
        target=lambda: out.append(hashlib.sha256(data).hexdigest()),
        name="vastkit-checkpoint-hash",
        daemon=True,
    )
    hasher.start()
    try:
        work()
    finally:
        hasher.join()
    return out[0]


class _MemoryWriter:
    """A file-like sink over a reusable bytearray (grows when needed, never shrinks)."""

    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer
        self.view = memoryview(buffer)
        self.pos = 0

    def write(self, data: Any) -> int:
        chunk = memoryview(data).cast("B")
        n = chunk.nbytes
        end = self.pos + n
        if end > len(self.buffer):
            grown = bytearray(max(end, len(self.buffer) + len(self.buffer) // 4))
            grown[: self.pos] = self.view[: self.pos]
            self.view.release()
            self.buffer = grown
            self.view = memoryview(grown)
        self.view[self.pos : end] = chunk
        self.pos = end
        return n

    def flush(self) -> None:
        pass

    def getview(self) -> memoryview:
        return self.view[: self.pos]


class _HashingFileWriter:
    """A file-like sink that writes to a file and hashes on the way."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        chunk = memoryview(data).cast("B")
        self.hash.update(chunk)
        self.fh.write(chunk)
        self.size += chunk.nbytes
        return chunk.nbytes

    def flush(self) -> None:
        self.fh.flush()


class _Stager:
    """Copies a state tree into CPU buffers that are reused across saves."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def stage(self, state: Any, *, copy_tensors: bool) -> tuple[Any, int]:
        th = _import_torch()
        used: dict[tuple[Any, ...], torch.Tensor] = {}
        memo: dict[int, Any] = {}
        total = [0]
        any_cuda = [False]
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

        def buffer_for(path: tuple[Any, ...], src: torch.Tensor) -> torch.Tensor:
            buf = self.buffers.get(path)
            pin = src.is_cuda and th.cuda.is_available()
            if (
                buf is None
                or buf.shape != src.shape
                or buf.dtype != src.dtype
                or (pin and not buf.is_pinned())
            ):
                buf = th.empty(src.shape, dtype=src.dtype, device="cpu", pin_memory=pin)
            used[path] = buf
            return buf

        def tensor(path: tuple[Any, ...], t: torch.Tensor) -> torch.Tensor:
            if id(t) in memo:
                return memo[id(t)][1]  # type: ignore[no-any-return]
            total[0] += t.numel() * t.element_size()
            if not copy_tensors:
                out = t.detach()
            elif t.is_sparse or t.is_quantized or t.layout != th.strided:
                out = t.detach().to("cpu", copy=True)
            else:
                out = buffer_for(path, t)
                pairs.append((out, t.detach()))
                any_cuda[0] = any_cuda[0] or t.is_cuda
            memo[id(t)] = (t, out)  # holding t keeps its id from being reused
            return out

        def walk(path: tuple[Any, ...], obj: Any) -> Any:
            if isinstance(obj, th.Tensor):
                return tensor(path, obj)
            if obj is None or isinstance(obj, bool | int | float | complex | str | bytes):
                return obj
            if isinstance(obj, th.dtype | th.device | th.Size):
                return obj
            if type(obj).__module__ == "numpy" and type(obj).__name__ == "ndarray":
                return ndarray(path, obj)
            state_dict = getattr(obj, "state_dict", None)
            if callable(state_dict) and not isinstance(obj, Mapping | type):
                return walk(path, state_dict())
            if isinstance(obj, OrderedDict):
                return OrderedDict((k, walk((*path, k), v)) for k, v in obj.items())
            if isinstance(obj, Mapping):
                return {k: walk((*path, k), v) for k, v in obj.items()}
            if type(obj) is list:
                return [walk((*path, i), v) for i, v in enumerate(obj)]
            if type(obj) is tuple:
                return tuple(walk((*path, i), v) for i, v in enumerate(obj))
            return copy.deepcopy(obj) if copy_tensors else obj

        def ndarray(path: tuple[Any, ...], arr: Any) -> Any:
            import numpy as np

            try:
                src = th.from_numpy(np.ascontiguousarray(arr))
            except TypeError:  # a dtype torch cannot hold: keep the array (pickled)
                return arr.copy() if copy_tensors else arr
            return {_NDARRAY_TAG: tensor((*path, _NDARRAY_TAG), src)}

        tree = walk((), state)
        if pairs:
            _copy_all(th, pairs, non_blocking=any_cuda[0])
        if any_cuda[0]:
            th.cuda.synchronize()
        if copy_tensors:
            self.buffers = used
        return tree, total[0]


def _copy_all(
    th: Any, pairs: list[tuple[torch.Tensor, torch.Tensor]], *, non_blocking: bool
) -> None:
    """Copy every source into its buffer: one batched ``_foreach_copy_`` where torch has it."""
    dst = [d for d, _ in pairs]
    src = [s for _, s in pairs]
    with th.no_grad():
        foreach = getattr(th, "_foreach_copy_", None)
        if foreach is not None:
            try:
                foreach(dst, src, non_blocking=non_blocking)
                return
            except (RuntimeError, TypeError):  # pragma: no cover - older torch or odd dtypes
                pass
        for d, s in pairs:
            d.copy_(s, non_blocking=non_blocking)


def _decode(obj: Any) -> Any:
    """Undo the staging encoding (numpy arrays travel as tensors)."""
    if isinstance(obj, dict):
        if len(obj) == 1 and _NDARRAY_TAG in obj:
            return obj[_NDARRAY_TAG].numpy()
        decoded = {k: _decode(v) for k, v in obj.items()}
        return OrderedDict(decoded) if isinstance(obj, OrderedDict) else decoded
    if type(obj) is list:
        return [_decode(v) for v in obj]
    if type(obj) is tuple:
        return tuple(_decode(v) for v in obj)
    return obj


def _capture_rng() -> dict[str, Any]:
    torch = _import_torch()
    rng: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is installed in the dev environment
        pass
    else:
        st = np.random.get_state(legacy=False)
        rng["numpy"] = {
            "bit_generator": str(st["bit_generator"]),
            "key": torch.from_numpy(np.asarray(st["state"]["key"], dtype=np.int64)),
            "pos": int(st["state"]["pos"]),
            "has_gauss": int(st["has_gauss"]),
            "gauss": float(st["gauss"]),
        }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = list(torch.cuda.get_rng_state_all())
    return rng


def _restore_rng(rng: Mapping[str, Any]) -> None:
    torch = _import_torch()
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "numpy" in rng:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover
            pass
        else:
            st = rng["numpy"]
            np.random.set_state(
                {
                    "bit_generator": st["bit_generator"],
                    "state": {"key": st["key"].numpy().astype(np.uint32), "pos": st["pos"]},
                    "has_gauss": st["has_gauss"],
                    "gauss": st["gauss"],
                }
            )
    cuda = rng.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


class CheckpointManager:
    """Committed, asynchronous, verified checkpoints under an fsspec URL.

    Args:
        url: Any fsspec URL or plain path (``s3://bucket/run``, ``gs://...``, ``file:///...``,
            ``memory://...``). Checkpoints go under ``<url>/checkpoints/``.
        every_steps: Save when the step is a multiple of this (or this many steps passed since the
            last save). ``"auto"`` picks the interval from Young/Daly, ``sqrt(2 x stall x MTBF)``,
            bounded below by the measured upload time, using ``mtbf_seconds``.
        every_seconds: Save when this many seconds passed since the last save (by ``clock``).
            With neither interval, every call to :meth:`save` saves.
        keep_last: Keep the newest N committed checkpoints (``None`` keeps all); older ones are
            pruned only after a new commit. The newest is always kept.
        keep_best: Also keep the best N checkpoints by ``best_metric``.
        best_metric: The metric (a key of ``save(metrics=...)``) that ranks checkpoints.
        best_mode: ``"min"`` (lower is better) or ``"max"``.
        async_save: Stage on the caller's thread and upload in the background (default). With
            ``False`` :meth:`save` returns only after the commit.
        storage_options: Passed to fsspec (credentials, ``client_kwargs``, ...).
        retries: A :class:`RetryPolicy` for transient store errors, or the number of attempts.
        clock: The clock for intervals, backoff and deadlines (default :class:`SystemClock`).
        capture_rng: Save Python, NumPy, torch and CUDA RNG states with every checkpoint.
        mtbf_seconds: The mean time between failures for ``every_steps="auto"``.
        spool_max_bytes: States estimated larger than this (default 64 MiB) are serialised to
            a temporary file instead of memory before the upload, so the extra memory a save
            holds is about one copy of the state (its CPU staging buffers); smaller states are
            serialised into a reused in-memory buffer.
        transfer_chunk_bytes: The part size of concurrent multipart uploads and ranged reads
            (S3).
        transfer_concurrency: How many parts move at once (S3).

    Raises:
        ValueError: an interval or a count is out of range, or ``keep_best`` lacks ``best_metric``.
    """

    def __init__(
        self,
        url: str,
        *,
        every_steps: int | Literal["auto"] | None = None,
        every_seconds: float | None = None,
        keep_last: int | None = 3,
        keep_best: int | None = None,
        best_metric: str | None = None,
        best_mode: Literal["min", "max"] = "min",
        async_save: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        retries: RetryPolicy | int | None = None,
        clock: Clock | None = None,
        capture_rng: bool = True,
        mtbf_seconds: float = 6 * 3600.0,
        spool_max_bytes: int = 64 * 2**20,
        transfer_chunk_bytes: int = _CHUNK,
        transfer_concurrency: int = _CONCURRENCY,
    ) -> None:
        if every_steps is not None and every_steps != "auto":
            if isinstance(every_steps, bool) or not isinstance(every_steps, int):
                raise TypeError(f"every_steps must be an int, 'auto' or None, not {every_steps!r}")
            if every_steps < 1:
                raise ValueError(f"every_steps must be >= 1, not {every_steps}")
        if every_seconds is not None and not every_seconds > 0:
            raise ValueError(f"every_seconds must be > 0, not {every_seconds}")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, not {keep_last}")
        if keep_best is not None and (keep_best < 0 or best_metric is None):
            raise ValueError("keep_best needs best_metric and a count >= 0")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', not {best_mode!r}")
        if not mtbf_seconds > 0:
            raise ValueError(f"mtbf_seconds must be > 0, not {mtbf_seconds}")
        if retries is None:
            retry = RetryPolicy()
        elif isinstance(retries, RetryPolicy):
            retry = retries
        else:
            retry = RetryPolicy(attempts=int(retries))
        self._clock: Clock = clock if clock is not None else SystemClock()
        if transfer_chunk_bytes < 5 * 2**20 or transfer_concurrency < 1:
            raise ValueError("transfer_chunk_bytes must be >= 5 MiB and transfer_concurrency >= 1")
        self._store = _Store(url, storage_options, retry, self._clock)
        self._store.chunk = int(transfer_chunk_bytes)
        self._store.concurrency = int(transfer_concurrency)
        self.url = self._store.url
        self._every_steps = every_steps
        self._every_seconds = every_seconds
        self._keep_last = keep_last
        self._keep_best = keep_best
        self._best_metric = best_metric
        self._best_mode: Literal["min", "max"] = best_mode
        self._async = async_save
        self._capture_rng = capture_rng
        self._mtbf = float(mtbf_seconds)
        self._spool_max = int(spool_max_bytes)
        self._stager = _Stager()
        self._serial = bytearray()
        self._executor: ThreadPoolExecutor | None = None
        self._future: Future[None] | None = None
        self._future_step: int | None = None
        self._error: BaseException | None = None
        self._error_step: int | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._last_step: int | None = None
        self._last_time = self._clock.now()
        self._last_call: tuple[int, float] | None = None
        self._last_seen: tuple[int, Any, Mapping[str, float] | None] | None = None
        self._committed: int | None = None
        self._manifests: dict[int, Manifest] = {}
        self.stats = _Stats()
        """Measured ``stall_seconds``, ``upload_seconds`` and ``step_seconds`` (moving averages)."""

    def __repr__(self) -> str:
        return f"CheckpointManager({self.url!r})"

    # ------------------------------------------------------------------ saving

    @property
    def interval_steps(self) -> int | None:
        """The current interval in steps (the measured one for ``every_steps="auto"``)."""
        if self._every_steps != "auto":
            return self._every_steps
        s = self.stats
        if s.step_seconds is None or s.stall_seconds is None:
            return None
        return auto_interval_steps(
            step_seconds=s.step_seconds,
            stall_seconds=s.stall_seconds,
            upload_seconds=s.upload_seconds or 0.0,
            mtbf_seconds=self._mtbf,
        )

    def _due(self, step: int, now: float) -> bool:
        if self._every_steps == "auto":
            if self._last_step is None:
                return True
            interval = self.interval_steps
            if step <= self._last_step:
                return False
            return interval is None or step - self._last_step >= interval
        return is_due(
            step=step,
            now=now,
            last_step=self._last_step,
            last_time=self._last_time,
            every_steps=self._every_steps,
            every_seconds=self._every_seconds,
        )

    def save(
        self,
        step: int,
        state: Mapping[str, Any],
        *,
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Save ``state`` as checkpoint ``step`` if the interval says so (or ``force``).

        Call it every step; it returns at once when no save is due. ``state`` maps names to
        modules, optimizers, schedulers, GradScalers (saved through ``state_dict()``), tensors,
        NumPy arrays and plain Python values.

        Args:
            step: The training step (>= 0); checkpoints are ordered by it.
            state: What to save.
            metrics: Numbers to record in the manifest (used by keep-best retention).
            force: Save even if no save is due.

        Returns:
            Whether a save was started (async) or committed (sync).

        Raises:
            CheckpointError: the previous background save failed, or (sync) this one failed.
            ValueError: ``step`` is negative.
        """
        self._check_open()
        step_dirname(step)  # validates
        self._raise_pending()
        now = self._clock.now()
        if self._last_call is not None and step > self._last_call[0]:
            per_step = (now - self._last_call[1]) / (step - self._last_call[0])
            self.stats.step_seconds = _ema(self.stats.step_seconds, max(per_step, 0.0))
        self._last_call = (step, now)
        self._last_seen = (step, state, metrics)
        if not force and not self._due(step, now):
            return False
        self._start_save(step, state, metrics)
        if not self._async:
            self.wait()
        return True

    def _start_save(
        self, step: int, state: Mapping[str, Any], metrics: Mapping[str, float] | None
    ) -> None:
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, not {type(state).__name__}")
        clean_metrics = {str(k): float(v) for k, v in (metrics or {}).items()}
        self._finish_in_flight()
        started = self._clock.now()
        tree, nbytes = self._stager.stage(dict(state), copy_tensors=self._async)
        rng = _capture_rng() if self._capture_rng else None
        self.stats.stall_seconds = _ema(self.stats.stall_seconds, self._clock.now() - started)
        payload = {"format": _FORMAT_TAG, "state": tree, "rng": rng}
        self._last_step = step
        self._last_time = self._clock.now()
        if not self._async:
            self._future_step = step
            fut: Future[None] = Future()
            try:
                self._write(step, payload, nbytes, clean_metrics)
            except Exception as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(None)
            self._future = fut
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="vastkit-checkpoint")
        self._future_step = step
        self._future = self._executor.submit(self._write, step, payload, nbytes, clean_metrics)

    def _finish_in_flight(self) -> None:
        fut, self._future = self._future, None
        if fut is None:
            return
        try:
            fut.result()
        except BaseException as exc:
            self._error, self._error_step = exc, self._future_step
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._future is not None and self._future.done():
            self._finish_in_flight()
            return
        err, self._error = self._error, None
        if err is None:
            return
        if isinstance(err, CheckpointError):
            raise err
        raise CheckpointError(f"saving checkpoint step {self._error_step} failed: {err}") from err

    def wait(self) -> None:
        """Block until the save in flight (if any) is committed.

        Raises:
            CheckpointError: that save (or an earlier one) failed.
        """
        self._finish_in_flight()
        self._raise_pending()

    def save_now(
        self,
        step: int | None = None,
        state: Mapping[str, Any] | None = None,
        *,
        metrics: Mapping[str, float] | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Commit a checkpoint now, within ``deadline`` seconds: the hook for a SIGTERM handler.

        Without ``step`` and ``state`` it saves the step and state last passed to :meth:`save`
        (the live objects, so their current values), unless that step is already committed.

        Args:
            step: The step to save (default: the last one passed to :meth:`save`).
            state: The state to save (default: the last one passed to :meth:`save`).
            metrics: Metrics for the manifest.
            deadline: Seconds to wait for the commit (``None``: as long as it takes).

        Returns:
            Whether a checkpoint of that step is committed when this returns. When the deadline
            passes first the upload goes on in the background.

        Raises:
            CheckpointError: a background save failed.
        """
        self._check_open()
        end = None if deadline is None else self._clock.now() + deadline
        if state is None or step is None:
            if self._last_seen is None:
                if not self._wait_until(end):
                    return False
                self.wait()
                return self._committed is not None
            step = self._last_seen[0] if step is None else step
            state = self._last_seen[1] if state is None else state
            metrics = self._last_seen[2] if metrics is None else metrics
        if not self._wait_until(end):
            return False
        self._raise_pending()
        if self._committed != step:
            self._start_save(step, state, metrics)
        if not self._wait_until(end):
            return False
        self.wait()
        return self._committed == step

    def _wait_until(self, end: float | None) -> bool:
        fut = self._future
        if fut is None or end is None:
            if fut is not None:
                with contextlib.suppress(BaseException):
                    fut.result()
            return True
        while not fut.done():
            if self._clock.now() >= end:
                return False
            self._clock.sleep(0.02)
        return True

    # ------------------------------------------------------------ background

    def _write(
        self, step: int, payload: Mapping[str, Any], nbytes: int, metrics: Mapping[str, float]
    ) -> None:
        torch = _import_torch()
        store = self._store
        folder = store.path(CHECKPOINTS_DIR, step_dirname(step))
        target = f"{folder}/{PAYLOAD_NAME}"
        manifest_path = f"{folder}/{MANIFEST_NAME}"
        started = self._clock.now()
        try:
            # Re-saving a committed step: uncommit first, so readers fall back meanwhile.
            if MANIFEST_NAME in store.sizes(folder):
                store.remove(manifest_path)
            if nbytes + (1 << 20) <= self._spool_max:
                if len(self._serial) < nbytes + (1 << 20):
                    self._serial = bytearray(nbytes + (1 << 20))
                writer = _MemoryWriter(self._serial)
                torch.save(payload, writer)
                self._serial = writer.buffer
                view = writer.getview()
                try:
                    size = view.nbytes
                    digest = _hash_while(view, lambda: store.write(target, view))
                finally:
                    view.release()
                    writer.view.release()
            else:
                with tempfile.NamedTemporaryFile(prefix="vastkit-ckpt-", suffix=".pt") as tmp:
                    hw = _HashingFileWriter(tmp)
                    torch.save(payload, hw)
                    tmp.flush()
                    size, digest = hw.size, hw.hash.hexdigest()
                    store.put(tmp.name, target)
            entry = PayloadEntry(name=PAYLOAD_NAME, size=size, sha256=digest)
            self._verify_payload(step, folder, (entry,), full=store.cheap_reads)
            manifest = Manifest(step=step, time=self._clock.now(), files=(entry,), metrics=metrics)
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
        with self._lock:
            self._manifests[step] = manifest
            self._committed = step
        self.stats.upload_seconds = _ema(self.stats.upload_seconds, self._clock.now() - started)
        logger.info("committed checkpoint step %d (%d bytes)", step, size)
        try:
            store.write(store.path(CHECKPOINTS_DIR, LATEST_HINT), f"{step}\n".encode())
        except Exception as exc:
            logger.warning("could not write the latest hint for step %d: %s", step, exc)
        try:
            self._prune(step)
        except Exception as exc:
            logger.warning("pruning after step %d failed (will retry next commit): %s", step, exc)

    def _verify_payload(
        self, step: int, folder: str, files: tuple[PayloadEntry, ...], *, full: bool
    ) -> None:
        sizes = self._store.sizes(folder)
        for entry in files:
            path = self._store.unstrip(f"{folder}/{entry.name}")
            if entry.name not in sizes:
                raise CheckpointCorruptError(f"checkpoint step {step}: {path} is missing")
            if sizes[entry.name] != entry.size:
                raise CheckpointCorruptError(
                    f"checkpoint step {step}: {path} has {sizes[entry.name]} bytes, "
                    f"the manifest says {entry.size}"
                )
            if full:
                digest = self._store.sha256(f"{folder}/{entry.name}")
                if digest != entry.sha256:
                    raise CheckpointCorruptError(
                        f"checkpoint step {step}: {path} fails its SHA-256 check"
                    )

    def _prune(self, newest: int) -> None:
        steps = self._store.list_steps()
        committed: dict[int, Manifest] = {}
        for step, folder in steps.items():
            manifest = self._manifests.get(step)
            if manifest is None:
                with contextlib.suppress(FileNotFoundError, ManifestError, CheckpointError):
                    manifest = self._read_manifest(step, folder, warn=False)
            if manifest is not None:
                committed[step] = manifest
        metric = self._best_metric
        keep = select_retained(
            committed,
            keep_last=self._keep_last,
            keep_best=self._keep_best,
            metrics={s: (m.metrics.get(metric) if metric else None) for s, m in committed.items()},
            mode=self._best_mode,
        )
        for step, folder in sorted(steps.items()):
            if step in keep or step >= newest:
                continue
            if step in committed:
                logger.info("pruning checkpoint step %d", step)
                self._store.remove(f"{folder}/{MANIFEST_NAME}")  # uncommit first
            self._store.remove(folder, recursive=True)
            with self._lock:
                self._manifests.pop(step, None)

    # ---------------------------------------------------------------- reading

    def _read_manifest(self, step: int, folder: str, *, warn: bool = True) -> Manifest | None:
        """The manifest of a step folder; ``None`` when uncommitted; warns when damaged."""
        path = f"{folder}/{MANIFEST_NAME}"
        try:
            data = self._store.read(path)
        except FileNotFoundError:
            return None
        try:
            manifest = Manifest.from_json(data)
            if manifest.step != step:
                raise ManifestError(f"it names step {manifest.step}")
        except ManifestError as exc:
            if warn:
                self._warn(
                    f"skipping checkpoint step {step}: bad {self._store.unstrip(path)}: {exc}"
                )
            return None
        return manifest

    def _warn(self, message: str) -> None:
        logger.warning("%s", message)
        warnings.warn(message, CheckpointWarning, stacklevel=3)

    def _info(self, manifest: Manifest, folder: str) -> CheckpointInfo:
        return CheckpointInfo(
            step=manifest.step,
            url=self._store.unstrip(folder),
            time=manifest.time,
            metrics=dict(manifest.metrics),
            size_bytes=manifest.total_size,
            files=tuple(f.name for f in manifest.files),
        )

    def _candidates(self, *, verify: Literal["size", "full"]) -> Iterator[tuple[Manifest, str]]:
        """Committed checkpoints whose payload verifies, newest first (warning on damage)."""
        for step, folder in sorted(self._store.list_steps().items(), reverse=True):
            manifest = self._read_manifest(step, folder)
            if manifest is None:
                continue
            try:
                self._verify_payload(step, folder, manifest.files, full=verify == "full")
            except CheckpointCorruptError as exc:
                self._warn(f"skipping damaged checkpoint: {exc}")
                continue
            yield manifest, folder

    def latest(self, *, verify: Literal["size", "full"] = "size") -> CheckpointInfo | None:
        """The newest committed checkpoint whose payload verifies, or ``None``.

        Args:
            verify: ``"size"`` checks every payload object's size (one listing per step tried);
                ``"full"`` also re-reads it and checks its SHA-256.

        Warns:
            CheckpointWarning: for each newer checkpoint skipped as damaged.
        """
        for manifest, folder in self._candidates(verify=verify):
            return self._info(manifest, folder)
        return None

    def list(self) -> list[CheckpointInfo]:
        """Every committed checkpoint whose payload sizes verify, oldest step first.

        Warns:
            CheckpointWarning: for each checkpoint skipped as damaged.
        """
        found = [self._info(m, f) for m, f in self._candidates(verify="size")]
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
            CheckpointCorruptError: the given step fails verification.

        Warns:
            CheckpointWarning: for each newer checkpoint skipped as damaged (``step=None``).
        """
        _, payload = self._load_payload(step, map_location=map_location, weights_only=weights_only)
        return dict(payload["state"])

    def _load_payload(
        self, step: int | None, *, map_location: Any, weights_only: bool
    ) -> tuple[Manifest, dict[str, Any]]:
        if step is not None:
            folder = self._store.path(CHECKPOINTS_DIR, step_dirname(step))
            manifest = self._read_manifest(step, folder, warn=False)
            if manifest is None:
                raise CheckpointError(
                    f"no committed checkpoint step {step} under {self._store.url} "
                    "(missing or unreadable manifest)"
                )
            self._verify_payload(step, folder, manifest.files, full=False)
            return manifest, self._read_payload(manifest, folder, map_location, weights_only)
        tried = 0
        for manifest, folder in self._candidates(verify="size"):
            tried += 1
            try:
                payload = self._read_payload(manifest, folder, map_location, weights_only)
            except CheckpointCorruptError as exc:
                self._warn(f"skipping damaged checkpoint: {exc}")
                continue
            return manifest, payload
        raise CheckpointError(
            f"no committed checkpoint under {self._store.url}"
            + (f" ({tried} damaged ones skipped)" if tried else "")
        )

    def _read_payload(
        self, manifest: Manifest, folder: str, map_location: Any, weights_only: bool
    ) -> dict[str, Any]:
        torch = _import_torch()
        entry = manifest.files[0]
        for f in manifest.files:
            if f.name == PAYLOAD_NAME:
                entry = f
        path = f"{folder}/{entry.name}"
        shown = self._store.unstrip(path)
        try:
            data = self._store.read(path)
        except Exception as exc:
            raise CheckpointError(
                f"reading checkpoint step {manifest.step} object {shown} failed: {exc}"
            ) from exc
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
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT_TAG:
            raise CheckpointCorruptError(
                f"checkpoint step {manifest.step}: {shown} is not a vastkit checkpoint payload"
            )
        payload["state"] = _decode(payload["state"])
        return dict(payload)

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
            when there is no checkpoint yet (a fresh start).

        Raises:
            CheckpointError: the checkpoint lacks an entry asked for, or cannot be loaded.
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
        try:
            manifest, payload = self._load_payload(
                step, map_location=map_location, weights_only=weights_only
            )
        except CheckpointCorruptError:
            raise
        except CheckpointError:
            if step is None and self.latest() is None:
                return None
            raise
        state = payload["state"]
        folder = self._store.path(CHECKPOINTS_DIR, step_dirname(manifest.step))
        for name, obj in targets.items():
            if name not in state:
                raise CheckpointError(
                    f"checkpoint step {manifest.step} has no entry {name!r} "
                    f"(it has {sorted(map(str, state))})"
                )
            if name == "model" and _is_module(obj):
                obj.load_state_dict(state[name], strict=strict)
            else:
                obj.load_state_dict(state[name])
        if restore_rng and payload.get("rng"):
            _restore_rng(payload["rng"])
        with self._lock:
            self._manifests[manifest.step] = manifest
        if self._last_step is None or manifest.step > self._last_step:
            self._last_step = manifest.step
        return attrs.evolve(self._info(manifest, folder), state=state)

    # ---------------------------------------------------------------- lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"{self!r} is closed")

    def close(self) -> None:
        """Wait for the save in flight, then release the background thread. Idempotent.

        Raises:
            CheckpointError: the last background save failed.
        """
        if self._closed:
            return
        try:
            self.wait()
        finally:
            self._closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except CheckpointError as err:  # do not mask the exception already on its way
            logger.error("a background checkpoint save failed: %s", err)


def _is_module(obj: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, torch.nn.Module)

"""Artifacts: the content-addressed dataset cache, job inputs and outputs, metric plots.

A job names its inputs and outputs::

    job = vastkit.Job(
        ...,
        inputs={"data": "s3://bucket/datasets/imagenet-mini", "vocab": "./local/vocab"},
        outputs=["outputs/"],
    )

- A **remote input** (any fsspec URL) is fetched by the worker as it is.
- A **local input** (a folder or a file on this machine) is uploaded once into the
  *dataset cache*, a content-addressed area of the store::

      <cache_url>/<digest>/data/...        the files, under their relative paths
      <cache_url>/<digest>/manifest.json   written last: the digest, every file's size and SHA-256

  The digest covers the relative paths, sizes and SHA-256 of the contents (never times or
  permissions), so a later job that names the same content finds the manifest and uploads
  nothing. The cache defaults to a ``datasets`` folder beside the run directories
  (:func:`dataset_cache_url`).
- The worker fetches every input before the command starts and exposes its local path as
  ``VASTKIT_INPUT_<NAME>`` (:func:`input_env_name`).
- **Outputs** (paths relative to the command's working directory; folders, files or glob
  patterns) are uploaded to ``<run>/outputs/<path>`` when the command ends, also after a
  SIGTERM as far as the grace period allows, and listed in ``<run>/outputs.json``
  (:func:`read_outputs`).

Large transfers show a progress bar (rich) in terminals and notebooks; elsewhere they log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import attrs
import fsspec
from fsspec.callbacks import Callback

from vastkit._documents import converter as document_converter
from vastkit._store import STORE_RETRY, Store
from vastkit._version import __version__
from vastkit.clock import Clock, SystemClock
from vastkit.errors import JobError, install_hint
from vastkit.rundir import MetricRecord, RunDir

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "DATASET_FORMAT",
    "LARGE_TRANSFER_BYTES",
    "DatasetFile",
    "DatasetManifest",
    "DatasetUpload",
    "OutputFile",
    "check_inputs",
    "check_outputs",
    "dataset_cache_url",
    "fetch_artifact",
    "folder_digest",
    "input_env_name",
    "is_local_path",
    "plot_metrics",
    "read_outputs",
    "resolve_inputs",
    "upload_dataset",
    "upload_outputs",
]

logger = logging.getLogger("vastkit.artifacts")

DATASET_FORMAT = 1
"""The format version of a dataset ``manifest.json`` (and of the digest it names)."""

LARGE_TRANSFER_BYTES = 64 * 1024 * 1024
"""Transfers at least this large show a progress bar when ``progress`` is automatic."""

OUTPUTS_MANIFEST = "outputs.json"
"""The object in the run directory that lists the uploaded outputs."""

_DIGEST_HEADER = b"vastkit-dataset-v1\n"
_READ_CHUNK = 4 * 1024 * 1024
_ENV_UNSAFE = re.compile(r"[^A-Za-z0-9]")
_GLOB_CHARS = frozenset("*?[")


# --------------------------------------------------------------------------------------------
# Values


@attrs.frozen(kw_only=True)
class DatasetFile:
    """One file of a dataset."""

    path: str
    """The path relative to the dataset root, with ``/`` separators."""
    size: int
    """Its size in bytes."""
    sha256: str
    """The lowercase hex SHA-256 of its bytes."""


@attrs.frozen(kw_only=True)
class DatasetManifest:
    """The commit object of a cached dataset: ``<cache_url>/<digest>/manifest.json``."""

    digest: str
    """The dataset's content digest (the folder name in the cache)."""
    files: tuple[DatasetFile, ...]
    """Every file, sorted by path."""
    total_bytes: int
    """The sum of all sizes."""
    upload_id: str
    """A random id of the upload that wrote this manifest (a reuse leaves it unchanged)."""
    created_at: float
    """When the upload finished (Unix seconds; informative only)."""
    source: str | None = None
    """Where the files came from (the local path), for people."""
    vastkit_version: str = __version__
    """The vastkit version that uploaded it."""
    format: int = DATASET_FORMAT
    """The manifest format version."""


@attrs.frozen(kw_only=True)
class DatasetUpload:
    """What :func:`upload_dataset` did."""

    url: str
    """The URL of the dataset's files (``<cache_url>/<digest>/data``, plus the file name when
    the source was a single file). This is what a job's ``job.json`` records."""
    digest: str
    """The content digest."""
    uploaded: bool
    """True when files were uploaded; False when the cache already held the content."""
    files: int
    """How many files the dataset has."""
    total_bytes: int
    """How many bytes it has."""
    uploaded_bytes: int = 0
    """How many bytes this call uploaded (0 on a reuse)."""


@attrs.frozen(kw_only=True)
class OutputFile:
    """One uploaded output of a job (an entry of ``<run>/outputs.json``)."""

    path: str
    """The path relative to the command's working directory (``outputs/model.pt``)."""
    size: int
    """Its size in bytes."""
    url: str
    """Where it is in the store (``<run>/outputs/<path>``)."""
    attempt: int | None = None
    """The attempt that uploaded it last."""


# --------------------------------------------------------------------------------------------
# Names and validation


def input_env_name(name: str) -> str:
    """The environment variable that holds an input's local path on the worker.

    ``"data"`` gives ``VASTKIT_INPUT_DATA``; every character that is not a letter or digit
    becomes ``_`` (``"val-set.v2"`` gives ``VASTKIT_INPUT_VAL_SET_V2``).

    Args:
        name: The input's name (a key of ``Job.inputs``).

    Returns:
        The variable name.
    """
    return "VASTKIT_INPUT_" + _ENV_UNSAFE.sub("_", name).upper()


def is_local_path(value: str) -> bool:
    """Whether an input names a path on this machine (no protocol, or ``file://``)."""
    protocol, _ = fsspec.core.split_protocol(value)
    return protocol in (None, "file", "local")


def check_inputs(inputs: Mapping[str, str]) -> None:
    """Check a job's inputs: non-empty names whose variables differ, non-empty locations.

    Raises:
        ValueError: A name or a location is empty, or two names give the same variable.
    """
    seen: dict[str, str] = {}
    for name, where in inputs.items():
        if not name or not name.strip():
            raise ValueError("input names must not be empty")
        if not where or not str(where).strip():
            raise ValueError(f"input {name!r} has an empty location")
        var = input_env_name(name)
        if var in seen:
            raise ValueError(f"inputs {seen[var]!r} and {name!r} both map to {var}; rename one")
        seen[var] = name


def check_outputs(outputs: Sequence[str]) -> None:
    """Check a job's outputs: relative paths that stay inside the working directory.

    Raises:
        ValueError: An entry is empty, absolute, or climbs out with ``..``.
    """
    for entry in outputs:
        if not entry or not entry.strip():
            raise ValueError("output paths must not be empty")
        pure = PurePosixPath(entry.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts:
            raise ValueError(
                f"output {entry!r} must be a path relative to the command's working directory"
            )


def dataset_cache_url(store_url: str, cache_url: str | None = None) -> str:
    """Where the dataset cache is: ``cache_url`` when given, else beside the run directories.

    ``s3://bucket/runs`` gives ``s3://bucket/datasets``; a store at a bucket's root
    (``s3://bucket``) gives ``s3://bucket/datasets``; ``/data/runs`` gives ``/data/datasets``.

    Args:
        store_url: The job's ``store_url``.
        cache_url: An explicit cache location (wins).

    Returns:
        The cache URL, without a trailing ``/``.
    """
    if cache_url:
        return cache_url.rstrip("/")
    protocol, path = fsspec.core.split_protocol(store_url.rstrip("/"))
    head, _, _ = path.rpartition("/")
    if head:
        parent = head
    elif path.startswith("/"):
        parent = ""  # a folder right under the file system root
    else:
        parent = path  # a bucket root
    joined = f"{parent}/datasets"
    return f"{protocol}://{joined}" if protocol else joined


# --------------------------------------------------------------------------------------------
# Progress


def _want_progress(progress: bool | None, total_bytes: int) -> bool:
    if progress is not None:
        return progress
    if total_bytes < LARGE_TRANSFER_BYTES:
        return False
    try:
        from rich.console import Console
    except ImportError:  # pragma: no cover - rich is a dependency
        return False
    console = Console(stderr=True)
    return bool(console.is_terminal or console.is_jupyter)


class _BarCallback(Callback):  # type: ignore[misc]
    """An fsspec callback that forwards byte counts to one rich progress task."""

    def __init__(self, bar: Progress | None, task: Any) -> None:
        super().__init__()
        self._bar = bar
        self._task = task
        self._seen = 0
        self.moved = 0

    def call(self, hook_name: str | None = None, **kwargs: Any) -> None:
        value = int(self.value or 0)
        delta = value - self._seen
        if delta > 0:
            self._seen = value
            self.moved += delta
            if self._bar is not None:
                self._bar.advance(self._task, delta)

    def reset(self) -> None:
        self._seen = 0


@contextmanager
def _progress(description: str, total_bytes: int, show: bool) -> Iterator[_BarCallback]:
    if not show:
        yield _BarCallback(None, None)
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total_bytes)
        yield _BarCallback(bar, task)


# --------------------------------------------------------------------------------------------
# Hashing


def _scan(source: Path) -> list[tuple[str, Path]]:
    """The files of a folder (or the one file), as (relative POSIX path, local path), sorted."""
    if source.is_file():
        return [(source.name, source)]
    if not source.is_dir():
        raise JobError(f"input {str(source)!r} does not exist (expected a folder or a file)")
    found: list[tuple[str, Path]] = []
    for current, dirnames, filenames in os.walk(source):
        here = Path(current)
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        for name in filenames:
            path = here / name
            if path.is_file():  # regular files, and links to regular files
                found.append((path.relative_to(source).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(files: Iterable[tuple[str, Path]]) -> tuple[str, tuple[DatasetFile, ...]]:
    entries = tuple(
        DatasetFile(path=rel, size=local.stat().st_size, sha256=_sha256(local))
        for rel, local in files
    )
    digest = hashlib.sha256(_DIGEST_HEADER)
    for entry in entries:
        digest.update(f"{entry.sha256} {entry.size} {entry.path}\n".encode())
    return digest.hexdigest(), entries


def folder_digest(source: str | os.PathLike[str]) -> str:
    """The content digest of a local folder (or file), as the dataset cache names it.

    It covers every regular file's path relative to the folder, its size and the SHA-256 of
    its bytes, in sorted order; modification times, permissions and empty folders do not count,
    so the same content on two machines gives the same digest.

    Args:
        source: The folder or file.

    Returns:
        64 lowercase hex digits.

    Raises:
        JobError: ``source`` does not exist.
    """
    return _describe(_scan(Path(source)))[0]


# --------------------------------------------------------------------------------------------
# The dataset cache


def _manifest_bytes(manifest: DatasetManifest) -> bytes:
    raw = document_converter.unstructure(manifest)
    return json.dumps(raw, indent=1, sort_keys=True).encode() + b"\n"


def _read_manifest(base: RunDir) -> DatasetManifest | None:
    data = base.read_bytes("manifest.json")
    if data is None:
        return None
    try:
        return document_converter.structure(json.loads(data), DatasetManifest)
    except Exception as exc:
        logger.warning("ignoring an unreadable dataset manifest at %s: %s", base.url, exc)
        return None


def _cached_sizes(base: RunDir) -> dict[str, int]:
    return base.store.find(base.path_of("data"))


def _is_cached(
    manifest: DatasetManifest | None,
    digest: str,
    entries: Sequence[DatasetFile],
    present: Mapping[str, int],
) -> bool:
    """Whether the cache holds the dataset whole: its manifest, and every file at its size."""
    complete = all(present.get(e.path) == e.size for e in entries)
    return manifest is not None and manifest.digest == digest and complete


def upload_dataset(
    source: str | os.PathLike[str],
    cache_url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    progress: bool | None = None,
    clock: Clock | None = None,
) -> DatasetUpload:
    """Put a local folder (or file) into the content-addressed dataset cache, once.

    When ``<cache_url>/<digest>/manifest.json`` exists and every file it lists is present with
    its size, nothing is uploaded. Otherwise the missing files are uploaded and the manifest is
    written last, so a half-finished upload is never taken for a complete one. Objects under a
    content-addressed prefix are written whole (one PUT, or a local rename), so a file already
    there with the right size is kept and not uploaded again.

    Args:
        source: The local folder or file.
        cache_url: The cache (see :func:`dataset_cache_url`).
        storage_options: fsspec options for the cache.
        progress: Show a progress bar: True, False, or None for automatic (transfers of at
            least :data:`LARGE_TRANSFER_BYTES` in a terminal or notebook).
        clock: Stamps the manifest's ``created_at``.

    Returns:
        What was done, with the URL to record in the job.

    Raises:
        JobError: ``source`` does not exist, or the upload failed (the message names the cause).
    """
    src = Path(source).expanduser()
    files = _scan(src)
    digest, entries = _describe(files)
    total = sum(e.size for e in entries)
    base = RunDir(f"{cache_url.rstrip('/')}/{digest}", storage_options, retry=STORE_RETRY)
    url = base.url_of("data", src.name) if src.is_file() else base.url_of("data")
    try:
        manifest = _read_manifest(base)
        present = _cached_sizes(base)
        if _is_cached(manifest, digest, entries, present):
            logger.info("dataset %s is already in the cache (%s)", src, base.url)
            return DatasetUpload(
                url=url, digest=digest, uploaded=False, files=len(entries), total_bytes=total
            )
        todo = [
            (rel, local, e)
            for (rel, local), e in zip(files, entries, strict=True)
            if present.get(rel) != e.size
        ]
        todo_bytes = sum(t[2].size for t in todo)
        logger.info(
            "uploading %d files (%d bytes) of %s to the dataset cache %s",
            len(todo),
            todo_bytes,
            src,
            base.url,
        )
        show = _want_progress(progress, todo_bytes)
        with _progress(f"upload {src.name}", todo_bytes, show) as callback:
            for rel, local, _ in todo:
                callback.reset()
                base.put_file(local, f"data/{rel}", callback=callback)
        written = DatasetManifest(
            digest=digest,
            files=entries,
            total_bytes=total,
            upload_id=uuid.uuid4().hex,
            created_at=(clock or SystemClock()).now(),
            source=str(src.resolve()),
        )
        base.write_bytes("manifest.json", _manifest_bytes(written))
    except JobError:
        raise
    except Exception as exc:
        raise JobError(
            f"uploading {str(src)!r} to the dataset cache {base.url} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return DatasetUpload(
        url=url,
        digest=digest,
        uploaded=True,
        files=len(entries),
        total_bytes=total,
        uploaded_bytes=todo_bytes,
    )


def resolve_inputs(
    inputs: Mapping[str, str],
    *,
    store_url: str,
    storage_options: Mapping[str, Any] | None = None,
    cache_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    clock: Clock | None = None,
) -> tuple[dict[str, str], dict[str, DatasetUpload]]:
    """Turn a job's inputs into URLs the worker can fetch, uploading local ones to the cache.

    Args:
        inputs: Name to location (a URL, or a local folder or file).
        store_url: The job's store (the cache defaults to a folder beside it).
        storage_options: fsspec options for the store and the cache.
        cache_url: An explicit dataset cache location.
        base_dir: What relative local paths are relative to (default: the current directory).
        progress: Progress bars (see :func:`upload_dataset`).
        clock: Stamps manifests.

    Returns:
        ``(urls, uploads)``: every input's URL, and what was done for each local one.

    Raises:
        JobError: A local input does not exist, or its upload failed.
    """
    check_inputs(inputs)
    cache = dataset_cache_url(store_url, cache_url)
    urls: dict[str, str] = {}
    uploads: dict[str, DatasetUpload] = {}
    for name, where in inputs.items():
        if not is_local_path(where):
            urls[name] = where
            continue
        _, path = fsspec.core.split_protocol(where)
        local = Path(path).expanduser()
        if not local.is_absolute() and base_dir is not None:
            local = Path(base_dir) / local
        if not local.exists():
            raise JobError(f"input {name!r}: {str(local)!r} does not exist")
        upload = upload_dataset(local, cache, storage_options, progress=progress, clock=clock)
        urls[name] = upload.url
        uploads[name] = upload
    return urls, uploads


# --------------------------------------------------------------------------------------------
# Fetching


def fetch_artifact(
    url: str,
    destination: str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    progress: bool | None = None,
    clock: Clock | None = None,
) -> Path:
    """Download a folder or a file from any fsspec store into a local folder.

    A folder's files keep their relative paths under ``destination``; a single file lands as
    ``destination/<its name>``. Transient store errors are retried (waiting on ``clock``).

    Args:
        url: What to fetch.
        destination: The local folder (created if missing).
        storage_options: fsspec options.
        progress: Progress bars (see :func:`upload_dataset`).
        clock: The clock for the waits between retries (default: the system clock).

    Returns:
        The local path of what was fetched (``destination`` for a folder, the file's path for
        a file).

    Raises:
        JobError: Nothing exists at ``url``, or the download failed (the message names why).
    """
    dest = Path(destination)
    try:
        store = Store(url, storage_options, clock=clock)
        root = store.root
        if store.isdir(root):
            items = [(rel, f"{root}/{rel}", size) for rel, size in store.find(root).items()]
            target = dest
        elif (size := store.size(root)) is not None:
            items = [(posixpath.basename(root), root, size)]
            target = dest / posixpath.basename(root)
        else:
            raise JobError(f"nothing to fetch at {url}: it does not exist")
        total = sum(i[2] for i in items)
        dest.mkdir(parents=True, exist_ok=True)
        with _progress(
            f"fetch {posixpath.basename(root)}", total, _want_progress(progress, total)
        ) as cb:
            for rel, remote, _ in items:
                local = dest / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                cb.reset()
                store.download(remote, str(local), callback=cb)
    except JobError:
        raise
    except Exception as exc:
        raise JobError(f"fetching {url} failed: {type(exc).__name__}: {exc}") from exc
    return target


# --------------------------------------------------------------------------------------------
# Outputs


def _collect_outputs(cwd: Path, outputs: Sequence[str]) -> list[tuple[str, Path]]:
    found: dict[str, Path] = {}
    for entry in outputs:
        pattern = entry.replace("\\", "/").rstrip("/") or "."
        if _GLOB_CHARS & set(pattern):
            matches = sorted(cwd.glob(pattern))
        else:
            matches = [cwd / pattern] if (cwd / pattern).exists() else []
        for match in matches:
            if match.is_file():
                found[match.relative_to(cwd).as_posix()] = match
            elif match.is_dir():
                for rel, local in _scan(match):
                    found[(match / rel).relative_to(cwd).as_posix()] = local
    return sorted(found.items())


def upload_outputs(
    cwd: str | os.PathLike[str],
    outputs: Sequence[str],
    run_url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    attempt: int | None = None,
    deadline: float | None = None,
    clock: Clock | None = None,
    progress: bool | None = False,
) -> tuple[list[OutputFile], list[str]]:
    """Upload a job's outputs to ``<run>/outputs/<path>`` and update ``<run>/outputs.json``.

    Files are uploaded one by one in path order; once ``deadline`` (a time of ``clock``) has
    passed, the rest is skipped. The listing is merged with what earlier attempts uploaded and
    written last.

    Args:
        cwd: The command's working directory (output paths are relative to it).
        outputs: Paths, folders or glob patterns relative to ``cwd``.
        run_url: The run directory.
        storage_options: fsspec options.
        attempt: The attempt uploading (recorded in the listing).
        deadline: Stop starting new uploads after this time (``None``: no limit).
        clock: The clock ``deadline`` is measured on.
        progress: Progress bars (default off: the worker runs without a terminal).

    Returns:
        ``(uploaded, skipped)``: the files uploaded now, and the paths left out (deadline or
        error).
    """
    check_outputs(outputs)
    clk = clock or SystemClock()
    retry = STORE_RETRY
    if deadline is not None:  # never retry past the deadline (the worker's grace period)
        retry = attrs.evolve(retry, deadline=max(0.0, deadline - clk.now()))
    rundir = RunDir(run_url, storage_options, clock=clk, retry=retry)
    files = _collect_outputs(Path(cwd), outputs)
    uploaded: list[OutputFile] = []
    skipped: list[str] = []
    total = sum(local.stat().st_size for _, local in files)
    with _progress("upload outputs", total, _want_progress(progress, total)) as callback:
        for rel, local in files:
            if deadline is not None and clk.now() >= deadline:
                skipped.append(rel)
                continue
            try:
                callback.reset()
                size = local.stat().st_size
                rundir.put_file(local, f"outputs/{rel}", callback=callback)
            except Exception as exc:
                logger.warning("could not upload output %s: %s", rel, exc)
                skipped.append(rel)
                continue
            uploaded.append(
                OutputFile(path=rel, size=size, url=rundir.url_of("outputs", rel), attempt=attempt)
            )
    if uploaded:
        listing = {o.path: o for o in read_outputs(run_url, storage_options)}
        listing.update({o.path: o for o in uploaded})
        body = [document_converter.unstructure(listing[k]) for k in sorted(listing)]
        rundir.write_bytes(OUTPUTS_MANIFEST, json.dumps(body, indent=1).encode() + b"\n")
    return uploaded, skipped


def read_outputs(
    run_url: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[OutputFile, ...]:
    """The outputs a job uploaded, from ``<run>/outputs.json`` (empty when there are none).

    Raises:
        JobError: ``outputs.json`` exists but is garbled.
    """
    rundir = RunDir(run_url, storage_options)
    data = rundir.read_bytes(OUTPUTS_MANIFEST)
    if data is None:
        return ()
    try:
        raw = json.loads(data)
        return tuple(document_converter.structure(item, OutputFile) for item in raw)
    except Exception as exc:
        raise JobError(f"{rundir.url_of(OUTPUTS_MANIFEST)} is not a valid outputs listing") from exc


# --------------------------------------------------------------------------------------------
# Metrics


def plot_metrics(
    records: Iterable[MetricRecord],
    path: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Plot metric histories (one panel per metric, step on the x axis) to an image file.

    Records logged with ``log_metrics`` are drawn as lines; values that arrived with
    checkpoints as markers. Needs matplotlib (``pip install "vastkit[plot]"``); no display is
    used.

    Args:
        records: Metric records (``JobResult.read_metrics()``, ``RunDir.read_metrics()``).
        path: The image to write (the suffix picks the format: ``.png``, ``.svg``, ``.pdf``).
        names: The metrics to plot (default: all, sorted).
        title: A title over the panels.

    Returns:
        The path written.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
        ValueError: There is nothing to plot.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"plot_metrics needs matplotlib: {install_hint('plot')}") from exc
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for record in records:
        source = getattr(record, "source", "log")
        for key, value in record.values.items():
            series.setdefault(key, {}).setdefault(source, []).append((record.step, value))
    chosen = list(names) if names is not None else sorted(series)
    chosen = [n for n in chosen if n in series]
    if not chosen:
        raise ValueError("no metric records to plot")
    figure = Figure(figsize=(7.0, 2.4 * len(chosen)), layout="constrained")
    axes = figure.subplots(len(chosen), 1, squeeze=False)
    for ax, key in zip(axes[:, 0], chosen, strict=True):
        for source, points in sorted(series[key].items()):
            points.sort()
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            if source == "checkpoint":
                ax.plot(xs, ys, "o", label=f"{key} (checkpoints)")
            else:
                ax.plot(xs, ys, "-", label=key)
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("step")
    if title:
        figure.suptitle(title)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target)
    return target

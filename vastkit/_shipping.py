"""Shipping the orchestrator's own vastkit to a host that has none.

A stock image (``pytorch/pytorch``) has no vastkit, and vastkit's version may exist on no package
index (a development build, an editable install). So the orchestrator ships the vastkit it is
running:

1. :func:`build_worker_wheel` packs the importable ``vastkit`` package (whatever its files are
   now, editable installs included) into a pure-Python wheel with the standard library only: no
   build backend and no network. The dependencies are copied from the installed distribution's
   metadata. Wheels are content-addressed and cached under :func:`cache_dir`, so the same files
   are packed once.
2. :func:`ship_worker_wheel` uploads it into the run directory, under
   ``worker/<digest>/vastkit-<version>-py3-none-any.whl``, once per run and content.
3. :func:`signed_wheel_url` signs a short-lived HTTPS GET URL for it (S3 and GCS presigned URLs,
   through fsspec's ``sign``), fresh for every attempt; :data:`WHEEL_URL_EXPIRY` says how long
   it is valid.
4. The onstart script (:mod:`vastkit._bootstrap`) installs ``vastkit[<extra>] @ <url>`` only when
   the image lacks this vastkit version; its dependencies come from the host's package index.

:func:`worker_requirement` ties the steps together for a job.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import zipfile
from collections.abc import Iterator
from email.message import Message
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import fsspec

from vastkit._store import atomic_local_write
from vastkit._version import __version__
from vastkit.errors import JobError
from vastkit.rundir import RunDir

__all__ = [
    "WHEEL_FOLDER",
    "WHEEL_URL_EXPIRY",
    "WorkerWheel",
    "build_worker_wheel",
    "cache_dir",
    "ship_worker_wheel",
    "signed_wheel_url",
    "store_extra",
    "worker_requirement",
]

logger = logging.getLogger("vastkit.shipping")

WHEEL_URL_EXPIRY = 12 * 3600
"""Seconds a signed wheel URL stays valid: 12 hours. The URL is used once, when the container
first starts, which may be after a long image pull on a slow host (the start phase's deadline is
far shorter); a relaunch signs a fresh one. A restarted container that already installed the
wheel does not need it again. S3 caps presigned URLs at 7 days, and at the lifetime of the
session token when the credentials are temporary."""

WHEEL_FOLDER = "worker"
"""The run directory's folder for shipped wheels: ``worker/<digest>/<wheel name>``."""

_DIST = "vastkit"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same files give the same bytes
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
_ALTERNATIVES = (
    "Either use an image with vastkit {version} preinstalled (docker/Dockerfile; see the worker "
    "guide) or set Job.worker_requirement to something the host's pip can install (a wheel URL, "
    "or vastkit=={version} from an index you run)"
)


@attrs.frozen
class WorkerWheel:
    """A built wheel of the running vastkit."""

    path: Path
    """The wheel file in the cache."""
    version: str
    """The vastkit version it holds."""
    digest: str
    """The SHA-256 (hex) of the wheel's ``RECORD``, which lists the hash of every member: equal
    files give equal digests (and equal bytes)."""
    size: int
    """Its size in bytes."""

    @property
    def name(self) -> str:
        """The wheel's file name (``vastkit-<version>-py3-none-any.whl``)."""
        return self.path.name


def cache_dir() -> Path:
    """Where vastkit caches built wheels: ``$VASTKIT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/vastkit``, else ``~/.cache/vastkit``."""
    explicit = os.environ.get("VASTKIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "vastkit"


def store_extra(url: str) -> str | None:
    """The vastkit extra a worker needs to reach a store URL (``s3`` for ``s3://``, ``gcs`` for
    ``gs://``), or ``None``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    return _EXTRAS.get(scheme)


# --------------------------------------------------------------------------------------------
# Building


def _package_files(package_dir: Path) -> Iterator[tuple[str, Path]]:
    """``(archive name, file)`` for every file of the package, sorted, caches left out."""
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in files:
            if name.endswith(_SKIP_SUFFIXES) or name.startswith("."):
                continue
            path = Path(folder, name)
            rel = path.relative_to(package_dir.parent).as_posix()
            found.append((rel, path))
    yield from sorted(found)


def _metadata_text(dist: metadata.Distribution, version: str) -> str:
    """A Metadata-Version 2.1 ``METADATA`` (which every pip reads) with the installed
    distribution's summary, Python requirement, extras and dependencies."""
    meta = dist.metadata
    msg = Message()
    msg["Metadata-Version"] = "2.1"
    msg["Name"] = meta["Name"] or _DIST
    msg["Version"] = version
    for key in ("Summary", "Requires-Python"):
        if key in meta:
            msg[key] = meta[key]
    for extra in meta.get_all("Provides-Extra") or []:
        msg["Provides-Extra"] = extra
    for requirement in meta.get_all("Requires-Dist") or []:
        msg["Requires-Dist"] = requirement
    return msg.as_string()


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _wheel_entries(
    package_dir: Path, dist: metadata.Distribution, version: str
) -> list[tuple[str, bytes]]:
    """Every member of the wheel, ``RECORD`` last, in archive order."""
    info = f"{_DIST}-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [
        (name, path.read_bytes()) for name, path in _package_files(package_dir)
    ]
    entries.append((f"{info}/METADATA", _metadata_text(dist, version).encode()))
    entries.append(
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: vastkit._shipping\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        entries.append((f"{info}/entry_points.txt", entry_points.encode()))
    record = [_record_line(name, data) for name, data in entries]
    record.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    return entries


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            member = zipfile.ZipInfo(name, date_time=_EPOCH)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o100644 << 16
            archive.writestr(member, data)
    return buffer.getvalue()


def build_worker_wheel(
    *,
    cache: Path | None = None,
    package_dir: Path | None = None,
    version: str = __version__,
) -> WorkerWheel:
    """A wheel of the running vastkit, built once per content and kept in the cache.

    The wheel holds every file of the importable ``vastkit`` package (``__pycache__`` left out)
    and a ``dist-info`` with the installed distribution's dependencies, extras and console
    script. It is named by the SHA-256 of its members (the ``RECORD``, which lists the hash of
    every other member): ``<cache>/wheels/<digest>/vastkit-<version>-py3-none-any.whl``, so
    the same files are zipped once, and a changed file (an editable install) gives a new wheel.

    Args:
        cache: The cache folder (default :func:`cache_dir`).
        package_dir: The package folder to pack (default: the one imported).
        version: The version to stamp (default: the running one).

    Returns:
        The wheel.

    Raises:
        JobError: vastkit is importable but not installed as a distribution (no metadata to
            take its dependencies from: ``pip install -e .`` fixes it).
    """
    if package_dir is None:
        package_dir = Path(__file__).resolve().parent
    try:
        dist = metadata.distribution(_DIST)
    except metadata.PackageNotFoundError as exc:
        raise JobError(
            "cannot ship vastkit to the host: it is importable but not installed, so its "
            "dependencies are unknown (run `pip install -e .` in its checkout). "
            + _ALTERNATIVES.format(version=version)
        ) from exc
    entries = _wheel_entries(package_dir, dist, version)
    digest = hashlib.sha256(entries[-1][1]).hexdigest()
    name = f"{_DIST}-{version}-py3-none-any.whl"
    path = (cache if cache is not None else cache_dir()) / "wheels" / digest[:32] / name
    if path.is_file():
        return WorkerWheel(path=path, version=version, digest=digest, size=path.stat().st_size)
    data = _zip(entries)
    atomic_local_write(str(path), data)
    logger.info("built %s (%d bytes) in %s", name, len(data), path.parent)
    return WorkerWheel(path=path, version=version, digest=digest, size=len(data))


# --------------------------------------------------------------------------------------------
# Shipping and signing


def ship_worker_wheel(rundir: RunDir, wheel: WorkerWheel) -> str:
    """Upload ``wheel`` into the run directory unless it is already there.

    Returns:
        Its path relative to the run directory (``worker/<digest>/<name>``).
    """
    rel = f"{WHEEL_FOLDER}/{wheel.digest[:32]}/{wheel.name}"
    if rundir.store.size(rundir.path_of(rel)) != wheel.size:
        rundir.put_file(wheel.path, rel)
        logger.info("shipped %s (%d bytes) to %s", wheel.name, wheel.size, rundir.url_of(rel))
    return rel


def _signer(rundir: RunDir) -> Any:
    """The file system that signs: the store's own, except on S3, where botocore would sign
    with the legacy SigV2 in ``us-east-1`` (refused by buckets created since 2020): a twin
    that signs with SigV4."""
    store = rundir.store
    if not store.is_s3:
        return store.fs
    options = dict(rundir.storage_options)
    options["config_kwargs"] = {
        **dict(options.get("config_kwargs") or {}),
        "signature_version": "s3v4",
    }
    return fsspec.filesystem("s3", **options)


def signed_wheel_url(
    rundir: RunDir, rel: str, *, expiry: int = WHEEL_URL_EXPIRY, version: str = __version__
) -> str:
    """A signed HTTPS GET URL of a shipped wheel, valid for ``expiry`` seconds.

    Raises:
        JobError: The store cannot sign URLs (a local folder, ``memory://``, HTTP, ...) or the
            credentials cannot (a GCS user login without a service account); the message names
            the two alternatives.
    """
    try:
        url = _signer(rundir).sign(rundir.path_of(rel), expiration=expiry)
    except Exception as exc:
        why = (
            "cannot sign URLs"
            if isinstance(exc, NotImplementedError)
            else f"could not sign a URL ({type(exc).__name__})"
        )
        raise JobError(
            f"cannot ship vastkit to the host: the store of {rundir.url!r} {why}, so a stock "
            "image would have no way to download the worker. "
            + _ALTERNATIVES.format(version=version)
        ) from exc
    return str(url)


def worker_requirement(
    rundir: RunDir,
    *,
    explicit: str | None = None,
    cache: Path | None = None,
    expiry: int = WHEEL_URL_EXPIRY,
) -> str | None:
    """What the onstart pip-installs when the image lacks this vastkit version.

    ``explicit`` (the job's ``worker_requirement``) wins. A run directory on this machine's disk
    or in memory needs nothing shipped: only a host that shares this machine (the emulator's
    process runner) can reach it, and vastkit is installed there; ``None`` keeps the onstart's
    default. Anywhere else the running vastkit is built (or found in the cache), uploaded once
    and signed afresh: ``vastkit[<store extra>] @ <signed URL>``.

    Raises:
        JobError: The store cannot sign URLs (see :func:`signed_wheel_url`).
    """
    if explicit:
        return explicit
    store = rundir.store
    if store.is_local or "memory" in store.protocols:
        return None
    wheel = build_worker_wheel(cache=cache)
    rel = ship_worker_wheel(rundir, wheel)
    url = signed_wheel_url(rundir, rel, expiry=expiry, version=wheel.version)
    extra = store_extra(rundir.url)
    return f"{_DIST}[{extra}] @ {url}" if extra else f"{_DIST} @ {url}"

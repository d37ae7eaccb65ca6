"""Code bundles: a working directory packed into ``code.tar.gz`` and unpacked safely.

The orchestrator packs the user's working directory (:func:`make_bundle`) into the run directory;
the worker unpacks it (:func:`unpack_bundle`), refusing any member that could escape the
destination. Re-exported by :mod:`vastkit.rundir`.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import os
import tarfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from vastkit.errors import JobError

__all__ = ["DEFAULT_BUNDLE_EXCLUDES", "DEFAULT_BUNDLE_MAX_BYTES", "make_bundle", "unpack_bundle"]

DEFAULT_BUNDLE_EXCLUDES: tuple[str, ...] = (
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "*.pyc",
    ".venv",
    "venv",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
    "node_modules",
    ".DS_Store",
)
"""Names left out of a code bundle (matched against every path component, fnmatch style)."""

DEFAULT_BUNDLE_MAX_BYTES = 200 * 1024 * 1024
"""The largest working directory :func:`make_bundle` packs (uncompressed bytes)."""


# --------------------------------------------------------------------------------------------
# Code bundles


def _excluded(rel: PurePosixPath, patterns: Iterable[str]) -> bool:
    pats = tuple(patterns)
    text = rel.as_posix()
    return any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in pats) or any(
        fnmatch.fnmatch(text, pat) for pat in pats
    )


def make_bundle(
    directory: str | os.PathLike[str],
    *,
    exclude: Iterable[str] = DEFAULT_BUNDLE_EXCLUDES,
    max_bytes: int = DEFAULT_BUNDLE_MAX_BYTES,
) -> bytes:
    """Pack a working directory into ``code.tar.gz`` bytes.

    Regular files and directories are packed in sorted order; symbolic links and special files
    are left out (a link could point anywhere on the worker).

    Args:
        directory: The directory to pack.
        exclude: fnmatch patterns matched against every path component and against the whole
            relative path (``.git``, ``*.pyc``, ``data/*.bin``).
        max_bytes: The most uncompressed bytes to pack.

    Returns:
        The gzip-compressed tar archive.

    Raises:
        JobError: The directory does not exist, or holds more than ``max_bytes``; the message
            names the largest files so you know what to exclude.
    """
    root = Path(directory)
    if not root.is_dir():
        raise JobError(f"cannot bundle {str(root)!r}: not a directory")
    patterns = tuple(exclude)
    files: list[tuple[Path, PurePosixPath, int]] = []
    dirs: list[PurePosixPath] = []
    total = 0
    for current, dirnames, filenames in os.walk(root):
        here = Path(current)
        rel_here = PurePosixPath(here.relative_to(root).as_posix())
        kept = []
        for name in sorted(dirnames):
            rel = rel_here / name
            if _excluded(rel, patterns) or (here / name).is_symlink():
                continue
            kept.append(name)
            dirs.append(rel)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = here / name
            rel = rel_here / name
            if _excluded(rel, patterns) or path.is_symlink() or not path.is_file():
                continue
            size = path.stat().st_size
            total += size
            files.append((path, rel, size))
    if total > max_bytes:
        biggest = sorted(files, key=lambda f: f[2], reverse=True)[:3]
        names = ", ".join(f"{rel.as_posix()} ({size / 1e6:.1f} MB)" for _, rel, size in biggest)
        raise JobError(
            f"the working directory {str(root)!r} holds {total / 1e6:.1f} MB, more than the "
            f"bundle limit of {max_bytes / 1e6:.1f} MB; largest files: {names}. Exclude them "
            "or put data in the store"
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for rel in dirs:
            info = tarfile.TarInfo(rel.as_posix())
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path, rel, _ in files:
            info = tar.gettarinfo(str(path), arcname=rel.as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return buffer.getvalue()


def unpack_bundle(data: bytes, destination: str | os.PathLike[str]) -> list[str]:
    """Unpack ``code.tar.gz`` bytes into a directory, refusing anything unsafe.

    Every member must be a regular file or directory whose path stays inside ``destination``:
    absolute paths, ``..`` components, links and device files are refused before anything is
    written.

    Args:
        data: The archive.
        destination: Where to unpack (created if missing).

    Returns:
        The relative paths of the files unpacked.

    Raises:
        JobError: The archive is unreadable or holds an unsafe member (named in the message).
    """
    dest = Path(destination)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            _check_members(members)
            dest.mkdir(parents=True, exist_ok=True)
            resolved = dest.resolve()
            for member in members:
                target = (resolved / member.name).resolve()
                if target != resolved and resolved not in target.parents:
                    raise JobError(f"the code bundle holds an unsafe path: {member.name!r}")
            tar.extractall(resolved, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise JobError(f"the code bundle is not a readable .tar.gz: {exc}") from exc
    return [m.name for m in members if m.isfile()]


def _check_members(members: Sequence[tarfile.TarInfo]) -> None:
    for member in members:
        name = member.name
        parts = PurePosixPath(name).parts
        if (
            not name
            or name.startswith(("/", "\\"))
            or ".." in parts
            or ":" in (parts[0] if parts else "")
        ):
            raise JobError(f"the code bundle holds an unsafe path: {name!r}")
        if not (member.isfile() or member.isdir()):
            raise JobError(
                f"the code bundle holds {name!r}, which is not a regular file or directory"
            )

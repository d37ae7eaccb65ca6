"""Fixtures for the checkpoint tests: a store URL per backend and a flaky in-memory store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem


class FlakyMemoryFileSystem(MemoryFileSystem):
    """``flakymem://``: an in-memory store whose writes can be made to fail or lie.

    ``hooks`` maps an operation (``"pipe"``, ``"cat"``) to a function of the path that may raise
    (to fail the call) or return replacement bytes for a write (to corrupt it silently), and
    ``"after"`` to a function of the path and the operation (``"pipe"``, ``"rm"``) called after
    every change of the store: the moments a kill could land between.
    """

    protocol = "flakymem"
    hooks: dict[str, Callable[[str, Any], Any]] = {}  # noqa: RUF012
    calls: list[tuple[str, str]] = []  # noqa: RUF012

    def pipe_file(self, path: str, value: Any, mode: str = "overwrite", **kwargs: Any) -> None:
        self.calls.append(("pipe", path))
        hook = self.hooks.get("pipe")
        if hook is not None:
            replaced = hook(path, value)
            if replaced is not None:
                value = replaced
        super().pipe_file(path, value, mode=mode, **kwargs)
        self._after(path, "pipe")

    def _rm(self, path: str) -> None:
        self.calls.append(("rm", path))
        super()._rm(path)
        self._after(path, "rm")

    def _after(self, path: str, op: str) -> None:
        hook = self.hooks.get("after")
        if hook is not None:
            hook(path, op)

    def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> Any:
        self.calls.append(("cat", path))
        hook = self.hooks.get("cat")
        if hook is not None:
            hook(path, None)
        return super().cat_file(path, start=start, end=end, **kwargs)


fsspec.register_implementation("flakymem", FlakyMemoryFileSystem, clobber=True)


@pytest.fixture
def flaky() -> Iterator[tuple[str, type[FlakyMemoryFileSystem]]]:
    """``("flakymem://<unique>/run", FlakyMemoryFileSystem)`` with hooks cleared afterwards."""
    FlakyMemoryFileSystem.hooks = {}
    FlakyMemoryFileSystem.calls = []
    root = f"flakytest-{uuid.uuid4().hex[:10]}"
    try:
        yield f"flakymem://{root}/run", FlakyMemoryFileSystem
    finally:
        FlakyMemoryFileSystem.hooks = {}
        fs = fsspec.filesystem("flakymem")
        if fs.exists(f"/{root}"):
            fs.rm(f"/{root}", recursive=True)


@pytest.fixture(
    params=["memory", "file", pytest.param("s3", marks=pytest.mark.s3)],
)
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(url, storage_options)`` on each backend: memory://, file:// (tmp_path), s3:// (moto)."""
    if request.param == "memory":
        root = f"ckpt-{uuid.uuid4().hex[:10]}"
        try:
            yield f"memory://{root}/run", {}
        finally:
            fs = fsspec.filesystem("memory")
            if fs.exists(f"/{root}"):
                fs.rm(f"/{root}", recursive=True)
    elif request.param == "file":
        yield f"file://{tmp_path}/run", {}
    else:
        bucket, options = request.getfixturevalue("s3_bucket")
        yield f"{bucket}/run", options

"""Fixtures for the adapter tests: a local worker context whose SIGTERM handler is real.

``worker_context`` binds a :class:`~vastkit.worker.WorkerContext` to a temporary local run and
installs its SIGTERM handler (the one a worker's SIGTERM reaches), so a test can preempt
training by sending SIGTERM to its own process at a chosen step; the handlers the test
process had are put back afterwards (Lightning installs its own during ``fit`` too).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vastkit.worker import WorkerContext

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub downloads, and no writes to ~/.cache, from any adapter test."""
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models train several times faster on one intra-op thread than on two threads
    that other test processes compete for (the results are the same either way)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def worker_context(tmp_path: Path) -> Iterator[WorkerContext]:
    """A local worker context (``<tmp>/run``) with its SIGTERM handler installed."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    ctx = WorkerContext({"VASTKIT_LOCAL_RUN": str(tmp_path / "run")})
    try:
        yield ctx
    finally:
        ctx.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def fresh_context(tmp_path: Path) -> WorkerContext:
    """A second context on the same local run: the restarted attempt after a preemption."""
    return WorkerContext({"VASTKIT_LOCAL_RUN": str(tmp_path / "run")})


def sigterm_self() -> None:
    """What the worker does when the machine is being taken away: SIGTERM to the command."""
    os.kill(os.getpid(), signal.SIGTERM)


def reported(tmp_path: Path) -> dict[str, Any]:
    """The progress the training code reported to the worker (the heartbeat's source)."""
    status: dict[str, Any] = json.loads((tmp_path / "run" / "status" / "status.json").read_text())
    return status

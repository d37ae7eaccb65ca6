"""SIGKILL of the worker in the middle of a checkpoint save.

A worker commits a checkpoint, starts the next save and is SIGKILLed half way through the
payload, before the manifest, or half way through the manifest (``_saving_worker.py``). The next
attempt's worker must resume from the previous committed checkpoint, no torn checkpoint may be
visible (``latest()`` never names it, no manifest over a partial payload), and the next save of
the same step must commit over the debris.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests._support.fault_matrix import CellRecord, record_cell
from tests._support.processes import Lines, ProcessGroups
from tests.faults.conftest import torn_checkpoints
from vastkit.checkpoint import CheckpointManager
from vastkit.checkpoint.naming import MANIFEST_NAME, step_dirname

pytestmark = pytest.mark.faults

DRIVER = Path(__file__).with_name("_saving_worker.py")


class Driver:
    """``_saving_worker.py`` in its own process group: one round per call."""

    def __init__(self, groups: ProcessGroups) -> None:
        self.proc = groups.popen(
            [sys.executable, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout)

    def round(self, url: str, where: str, is_async: bool) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{url} {where} {int(is_async)}\n")
        self.proc.stdin.flush()
        line = self.lines.next()
        assert line, "the driver died"
        answer: dict[str, Any] = json.loads(line)
        return answer


@pytest.fixture(scope="module")
def driver() -> Iterator[Driver]:
    with ProcessGroups() as groups:  # kills the driver and any worker it forked, also on failure
        yield Driver(groups)


@pytest.mark.parametrize(
    ("where", "is_async"),
    [("payload", True), ("payload", False), ("before_manifest", False), ("manifest", True)],
)
def test_worker_killed_mid_save_resumes_from_the_last_commit(
    driver: Driver, tmp_path: Path, where: str, is_async: bool, request: pytest.FixtureRequest
) -> None:
    url = f"file://{tmp_path}/run"
    torn_total = 0
    for attempt, (resumed, committed, doomed) in enumerate([(0, 10, 20), (10, 20, 30)], 1):
        answer = driver.round(url, where, is_async)
        assert answer["sigkilled"], answer
        assert answer["lines"] == [
            f"RESUMED {resumed}",
            f"COMMITTED {committed}",
            f"MID-SAVE {doomed}",
        ], f"attempt {attempt}: {answer}"
        # the killed save left debris but no commit
        folder = tmp_path / "run" / "checkpoints" / step_dirname(doomed)
        assert folder.is_dir()
        assert not (folder / MANIFEST_NAME).exists()
        assert list(folder.iterdir()), "the kill should have left a partial object"
        mgr = CheckpointManager(url, capture_rng=False)
        latest = mgr.latest(verify="full")
        assert latest is not None
        assert latest.step == committed
        loaded = mgr.load()
        assert loaded["step"] == committed
        assert torch.equal(loaded["w"], torch.full((4096,), float(committed)))
        mgr.close()
        torn_total += torn_checkpoints(url)
    record = CellRecord(cell=request.node.name, torn=torn_total)
    record_cell(request.node, record)
    assert torn_total == 0

"""The matrix's instruments can see what they measure (so a clean total means something)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
import torch

from tests._support.fault_matrix import Matrix
from tests.faults.conftest import FaultWorld, torn_checkpoints
from vastkit.api.models import CreateInstanceRequest
from vastkit.checkpoint import PAYLOAD_NAME, CheckpointManager

pytestmark = pytest.mark.faults


def test_the_probe_sees_two_live_instances_of_one_run(fault_world: FaultWorld) -> None:
    world = fault_world
    offers = world.client.search_offers({"rentable": {"eq": True}, "limit": 2})
    for offer in offers[:2]:
        world.client.create_instance(
            offer.id,
            CreateInstanceRequest(image="x", disk_gb=8, label="vastkit/20260101-000000-abcd/1"),
        )
    world.probe.sample()
    assert world.probe.duplicates >= 2  # one moment with two live, one label on two instances
    for view in world.emu.instances:
        world.client.destroy_instance(view.id)
    assert world.emu.instances == []


def test_torn_checkpoints_are_counted(store_url: str) -> None:
    url = f"{store_url}/run"
    mgr = CheckpointManager(url, async_save=False, capture_rng=False)
    for step in (1, 2):
        mgr.save(step, {"w": torch.full((64,), float(step))})
    mgr.close()
    assert torn_checkpoints(url) == 0
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/checkpoints/step-000000000002/{PAYLOAD_NAME}", b"garbage")
    assert torn_checkpoints(url) == 1  # a manifest over a payload that fails verification
    # same size, different bytes: only the SHA-256 sees it, and latest() must not name it
    good = bytes(fs.cat_file(f"{root}/checkpoints/step-000000000001/{PAYLOAD_NAME}"))
    fs.pipe_file(f"{root}/checkpoints/step-000000000001/{PAYLOAD_NAME}", bytes(reversed(good)))
    assert torn_checkpoints(url) == 2


def test_the_summary_line_has_the_agreed_form() -> None:
    m = Matrix()
    m.outcomes = {"a": "passed", "b": "failed", "c": "passed"}
    assert m.line() == (
        "fault matrix: 2 passed, 1 failed; leaked instances 0, torn checkpoints 0, "
        "budget overruns 0, duplicate rentals 0"
    )


MATRIX_CELLS = """
import pytest

from tests._support.fault_matrix import CellRecord, record_cell

pytestmark = pytest.mark.faults


def test_clean(request):
    record_cell(request.node, CellRecord(cell="clean"))


def test_leaky(request):
    record_cell(request.node, CellRecord(cell="leaky", leaked=1))
"""


@pytest.fixture
def cells(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project of two cells that pass, one of which leaked an instance."""
    pytester.makeini("[pytest]\nmarkers =\n    faults: a cell\n")
    pytester.makepyfile(test_cells=MATRIX_CELLS)
    return pytester


@pytest.mark.parametrize("order", [[], ["test_cells.py::test_leaky", "test_cells.py::test_clean"]])
def test_a_total_that_is_not_zero_fails_the_run_in_any_order(
    cells: pytest.Pytester, order: list[str]
) -> None:
    result = cells.runpytest("-p", "tests._support.fault_matrix", *order)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*FAILED: an invariant total is not zero; cells: test_cells.py::test_leaky",
            "fault matrix: 2 passed, 0 failed; leaked instances 1, torn checkpoints 0, "
            "budget overruns 0, duplicate rentals 0",
        ]
    )


def test_a_leak_on_an_xdist_worker_fails_the_whole_run(
    cells: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cells' records travel with their reports, so the controller sums every worker's."""
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    result = cells.runpytest_subprocess("-p", "tests._support.fault_matrix", "-n", "2")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*FAILED: an invariant total is not zero; cells: test_cells.py::test_leaky",
            "fault matrix: 2 passed, 0 failed; leaked instances 1, *",
        ]
    )


def test_a_run_of_some_cells_is_judged_on_those_cells(cells: pytest.Pytester) -> None:
    result = cells.runpytest("-p", "tests._support.fault_matrix", "-k", "clean")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["fault matrix: 1 passed, 0 failed; leaked instances 0, *"])


def test_no_cell_no_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest("-p", "tests._support.fault_matrix")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.no_fnmatch_line("*fault matrix*")

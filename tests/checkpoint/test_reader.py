"""CheckpointReader: reads what a manager committed and never writes to the store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vastkit.checkpoint import CheckpointManager, CheckpointReader
from vastkit.errors import CheckpointError


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_a_reader_restores_what_a_manager_committed_and_writes_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    with CheckpointManager(str(tmp_path), async_save=False, keep_last=2) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, {"model": model, "step": step})
    before = _files(tmp_path)

    reader = CheckpointReader(str(tmp_path))
    other = torch.nn.Linear(3, 2)
    info = reader.restore(model=other)

    assert info is not None
    assert info.step == 3
    assert [i.step for i in reader.list()] == [2, 3]  # keep_last=2 pruned step 1
    assert torch.equal(other.weight, model.weight)
    assert reader.load(step=2)["step"] == 2
    assert repr(reader) == f"CheckpointReader({reader.url!r})"
    assert _files(tmp_path) == before  # not a byte written, moved or pruned


def test_a_reader_of_an_empty_store_says_fresh_start(tmp_path: Path) -> None:
    reader = CheckpointReader(str(tmp_path / "nothing-here"))
    assert reader.latest() is None
    assert reader.restore(model=torch.nn.Linear(1, 1)) is None
    with pytest.raises(CheckpointError, match="no committed checkpoint"):
        reader.load()
    assert not (tmp_path / "nothing-here").exists()


def test_a_reader_refuses_bad_settings_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="collective_timeout must be > 0"):
        CheckpointReader(str(tmp_path), collective_timeout=0)

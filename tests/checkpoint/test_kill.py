"""SIGKILL a saving process at random moments: latest() always names a complete checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._support.processes import HANG_S, Lines, ProcessGroups
from vastkit.checkpoint import CheckpointManager

DRIVER = Path(__file__).with_name("_killed_saver.py")


@pytest.mark.slow
def test_latest_is_always_complete_after_random_sigkills(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    url = f"file://{tmp_path}/run"
    rounds = 20
    torn = 0
    proc = processes.popen(
        [sys.executable, str(DRIVER), url, "20261127", str(rounds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    lines = Lines(proc.stdout)  # each line waited for under a hang guard
    seen: list[int] = []
    try:
        for round_no in range(rounds):
            assert lines.next() == f"killed {round_no}"
            # filterwarnings=error: a damaged checkpoint met on the way would fail the test too.
            mgr = CheckpointManager(url)
            info = mgr.latest(verify="full")
            if info is None:
                assert not seen, "a committed checkpoint disappeared"
            else:
                state = mgr.load(info.step)
                assert state["step"] == info.step
                for t in state["w"].values():
                    assert torch.equal(t, torch.full((64 * 1024,), float(info.step)))
                assert not seen or info.step >= seen[-1]
                seen.append(info.step)
            # Evidence that kills landed mid-save: a newer folder without a manifest.
            for folder in (tmp_path / "run" / "checkpoints").glob("step-*"):
                if not (folder / "manifest.json").exists():
                    torn += 1
                    break
            proc.stdin.write("\n")
            proc.stdin.flush()
        assert lines.next() == "done"
    finally:
        proc.stdin.close()
        proc.wait(timeout=HANG_S)
    # The kills landed while saving: progress was made and resumed across many rounds.
    assert len(seen) >= rounds // 2
    assert len(set(seen)) >= 3
    assert torn >= 1

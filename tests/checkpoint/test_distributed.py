"""Checkpoints from many ranks: replicated (DDP, rank 0 writes) and sharded (DCP, every rank).

The multi-rank tests run real gloo process groups on CPU: ``_dist_rank.py --fork N`` imports
torch once and forks N ranks (each rank importing torch itself costs seconds of CPU), joined
through a rendezvous file under ``tmp_path`` (no port). One test goes through ``torchrun``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch

from tests._support.processes import HANG_S, Lines, ProcessGroups
from vastkit._ranks import Ranks, ranks_from_env
from vastkit.checkpoint import CheckpointManager, CheckpointWarning
from vastkit.errors import CheckpointCorruptError, CheckpointError, ConfigError

RANK_SCRIPT = Path(__file__).with_name("_dist_rank.py")
ROWS, COLS = 8, 3


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process itself is never a rank (whatever launched pytest)."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


def full(step: int) -> torch.Tensor:
    return torch.arange(ROWS * COLS, dtype=torch.float32).reshape(ROWS, COLS) + 1000 * step


def plain_state(step: int) -> dict[str, Any]:
    return {"weight": full(step), "bias": torch.full((4,), float(step)), "step": step}


def empty_state() -> dict[str, Any]:
    return {"weight": torch.zeros(ROWS, COLS), "bias": torch.zeros(4), "step": -1}


def ranks(
    processes: ProcessGroups,
    tmp_path: Path,
    world: int,
    *args: str,
    storage: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Run ``_dist_rank.py`` on ``world`` forked ranks: (each rank's result by rank, exits)."""
    env = dict(os.environ)
    env["VASTKIT_TEST_RENDEZVOUS"] = str(tmp_path / f"rendezvous-{os.urandom(4).hex()}")
    env["VASTKIT_TEST_STORAGE"] = json.dumps(storage or {})
    done = processes.run(
        [sys.executable, str(RANK_SCRIPT), "--fork", str(world), *args], env=env, text=True
    )
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert results, done.stderr
    exits = results.pop()["exits"]
    return sorted(results, key=lambda r: int(r["rank"])), exits


# ------------------------------------------------------------------------------- ranks


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, Ranks(rank=0, world_size=1)),
        ({"RANK": "3", "WORLD_SIZE": "4"}, Ranks(rank=3, world_size=4)),
        ({"RANK": " 0 ", "WORLD_SIZE": "2"}, Ranks(rank=0, world_size=2)),
        ({"WORLD_SIZE": "2"}, Ranks(rank=0, world_size=2)),
    ],
)
def test_ranks_come_from_the_launchers_variables(env: dict[str, str], expected: Ranks) -> None:
    assert ranks_from_env(env) == expected
    assert ranks_from_env(env).is_main == (expected.rank == 0)


@pytest.mark.parametrize(
    ("env", "key", "words"),
    [
        ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK", "must be an integer >= 0"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE", "must be an integer >= 1"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK", "RANK=2 is not below WORLD_SIZE=2"),
    ],
)
def test_malformed_rank_variables_are_config_errors(
    env: dict[str, str], key: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=words) as err:
        ranks_from_env(env)
    assert err.value.key == key


def test_bad_rank_settings_are_refused_where_they_enter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"file://{tmp_path}/run"
    with pytest.raises(ValueError, match="save_rank must be an int >= 0 or None, not -1"):
        CheckpointManager(url, save_rank=-1)
    with pytest.raises(ValueError, match="collective_timeout must be > 0, not 0"):
        CheckpointManager(url, collective_timeout=0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="RANK must be an integer >= 0") as err:
        CheckpointManager(url).save(1, {"w": torch.ones(1)})
    assert err.value.key == "RANK"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ replicated (DDP)


def test_only_rank_0_writes_a_replicated_save_and_every_rank_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"file://{tmp_path}/run"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with CheckpointManager(url, async_save=False) as other:
        assert other.save(1, {"w": torch.ones(3)}) is False
        assert other.save_now(1, {"w": torch.ones(3)}) is False
        assert other.latest() is None
    assert not (tmp_path / "run").exists()  # not one store call wrote anything
    monkeypatch.setenv("RANK", "0")
    with CheckpointManager(url, async_save=False) as main:
        assert main.save(1, {"w": torch.ones(3)}) is True
    monkeypatch.setenv("RANK", "1")
    with CheckpointManager(url, async_save=False) as other:
        info = other.restore()
        assert info is not None
        assert info.step == 1
        assert info.state is not None
        assert torch.equal(info.state["w"], torch.ones(3))
    with CheckpointManager(url, async_save=False, save_rank=None) as everyone:
        assert everyone.save(2, {"w": torch.ones(3)}) is True  # save_rank=None: every rank
    with (
        CheckpointManager(url, save_rank=2) as wrong,
        pytest.raises(ValueError, match="save_rank=2"),
    ):
        wrong.save(3, {"w": torch.ones(3)})


@pytest.mark.slow
def test_ddp_on_two_ranks_saves_once_and_every_rank_restores_the_same_step(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    url = f"file://{tmp_path}/run"
    results, exits = ranks(processes, tmp_path, 2, "ddp", url, "5")
    assert exits == [0, 0]
    assert results[0]["saved"] == [False, True, False, True, False]  # every 2 steps, on rank 0
    assert results[1]["saved"] == [False] * 5  # rank 1 never writes
    assert results[0]["weight"] == results[1]["weight"]  # DDP kept the replicas equal
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert steps == ["step-000000000002", "step-000000000004"]
    # a fresh model and manager on every rank: the same committed step, the same weights
    assert [r["restored"] for r in results] == [4, 4]
    assert results[0]["restored_weight"] == results[1]["restored_weight"]
    assert results[0]["restored_weight"] != results[0]["weight"]  # step 5 trained past it


# --------------------------------------------------------------------------- sharded (DCP)


@pytest.mark.slow
def test_two_ranks_save_one_step_that_one_process_loads_whole(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    url = f"file://{tmp_path}/run"
    saved, exits = ranks(processes, tmp_path, 2, "sharded-save", url, "7")
    assert exits == [0, 0]
    assert [(r["committed"], r["committed_step"]) for r in saved] == [(True, 7), (True, 7)]

    folder = tmp_path / "run" / "checkpoints" / "step-000000000007"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["layout"] == "dcp"
    assert manifest["metrics"] == {"loss": 1 / 7}
    names = sorted(f["name"] for f in manifest["files"])
    token = names[0].split("-")[0]
    assert names == [f"{token}-0_0.distcp", f"{token}-1_0.distcp", f"{token}-metadata"]
    assert sorted(p.name for p in folder.iterdir()) == [*names, "manifest.json"]

    # one process, no process group: the whole tensor, put together from both ranks' shards
    mgr = CheckpointManager(url)
    info = mgr.latest()
    assert info is not None
    assert (info.step, info.sharded) == (7, True)
    state = empty_state()
    assert mgr.load_sharded(state) == info
    assert torch.equal(state["weight"], full(7))
    assert state["step"] == 7


@pytest.mark.slow
def test_four_ranks_save_and_two_ranks_load_resharded(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    url = f"file://{tmp_path}/run"
    saved, exits = ranks(processes, tmp_path, 4, "sharded-save", url, "3")
    assert exits == [0, 0, 0, 0]
    assert all(r["committed"] for r in saved)
    manifest = json.loads(
        (tmp_path / "run" / "checkpoints" / "step-000000000003" / "manifest.json").read_text()
    )
    assert len(manifest["files"]) == 5  # four shards and DCP's metadata

    loaded, exits = ranks(processes, tmp_path, 2, "sharded-load", url)
    assert exits == [0, 0]
    for r in loaded:  # each rank holds 4 of the 8 rows now, read from the 4 ranks' shards
        assert (r["step"], r["value"], r["weight_ok"], r["local_rows"]) == (3, 3, True, 4)
        assert r["bias"] == [3.0] * 4


@pytest.mark.slow
@pytest.mark.s3
def test_sharded_save_on_s3(
    tmp_path: Path, processes: ProcessGroups, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    bucket, options = s3_bucket
    url = f"{bucket}/run"
    saved, exits = ranks(processes, tmp_path, 2, "sharded-save", url, "4", storage=options)
    assert exits == [0, 0]
    assert all(r["committed"] for r in saved)
    mgr = CheckpointManager(url, storage_options=options)
    info = mgr.latest(verify="full")  # every object's digest, re-read from S3
    assert info is not None
    assert (info.step, info.sharded, len(info.files)) == (4, True, 3)
    state = empty_state()
    mgr.load_sharded(state)
    assert torch.equal(state["weight"], full(4))
    assert torch.equal(state["bias"], torch.full((4,), 4.0))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("victim", "when"), [(1, "mid-write"), (1, "after-write"), (0, "after-write")]
)
def test_a_rank_killed_during_a_save_never_commits_the_step(
    tmp_path: Path, processes: ProcessGroups, victim: int, when: str
) -> None:
    url = f"file://{tmp_path}/run"
    with CheckpointManager(url) as mgr:
        assert mgr.save_sharded(5, plain_state(5))

    results, exits = ranks(processes, tmp_path, 2, "sharded-kill", url, "6", str(victim), when)
    survivor = 1 - victim
    assert exits[victim] == -9  # SIGKILLed
    assert exits[survivor] == 0  # returned, with an error instead of hanging
    assert [r["rank"] for r in results] == [survivor]
    assert results[0]["error"] == "CheckpointError"
    assert "sharded checkpoint step 6" in results[0]["message"]
    assert "end this process" in results[0]["message"]

    folder = tmp_path / "run" / "checkpoints" / "step-000000000006"
    assert not (folder / "manifest.json").exists()
    if when == "after-write":  # every shard and the metadata were there: still no commit
        assert len([p for p in folder.iterdir() if not p.name.startswith(".")]) == 3
    mgr = CheckpointManager(url)
    info = mgr.latest(verify="full")
    assert info is not None
    assert info.step == 5
    state = empty_state()
    assert mgr.load_sharded(state) == info
    assert torch.equal(state["weight"], full(5))

    # the next save of step 6 commits and clears what the killed save left
    assert mgr.save_sharded(6, plain_state(6))
    manifest = json.loads((folder / "manifest.json").read_text())
    kept = {f["name"] for f in manifest["files"]} | {"manifest.json"}
    assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == kept


@pytest.mark.slow
@pytest.mark.s3
def test_a_rank_killed_during_a_save_on_s3_never_commits_the_step(
    tmp_path: Path, processes: ProcessGroups, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    bucket, options = s3_bucket
    url = f"{bucket}/run"
    with CheckpointManager(url, storage_options=options) as mgr:
        assert mgr.save_sharded(5, plain_state(5))
    results, exits = ranks(
        processes, tmp_path, 2, "sharded-kill", url, "6", "1", "after-write", storage=options
    )
    assert exits == [0, -9]
    assert results[0]["error"] == "CheckpointError"
    fs = fsspec.filesystem("s3", **options)
    step6 = f"{bucket.removeprefix('s3://')}/run/checkpoints/step-000000000006"
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(step6, refresh=True))
    assert len(names) == 3  # both shards and the metadata arrived...
    assert "manifest.json" not in names  # ...and still no commit
    mgr = CheckpointManager(url, storage_options=options)
    info = mgr.latest(verify="full")
    assert info is not None
    assert info.step == 5


@pytest.mark.slow
def test_a_shard_damaged_on_one_rank_is_skipped_by_every_rank(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    url = f"file://{tmp_path}/run"
    results, exits = ranks(processes, tmp_path, 2, "sharded-corrupt", url)
    assert exits == [0, 0]
    for r in results:  # rank 1 read the damaged shard; DCP told rank 0: both fell back alike
        assert (r["fallback_step"], r["weight_ok"]) == (1, True)
        assert r["error"] == "CheckpointCorruptError"
        assert re.search(
            r"checkpoint step 2: .*-1_0\.distcp fails its size or BLAKE3", r["message"]
        )
    assert any("skipping damaged checkpoint: checkpoint step 2" in w for w in results[1]["warned"])


@pytest.mark.slow
def test_a_hung_rank_makes_the_others_fail_within_the_timeout(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    url = f"file://{tmp_path}/run"
    env = dict(os.environ)
    env["VASTKIT_TEST_RENDEZVOUS"] = str(tmp_path / "rendezvous")
    proc = processes.popen(
        [sys.executable, str(RANK_SCRIPT), "--fork", "2", "sharded-kill", url, "6", "1", "hang"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = Lines(proc.stdout).next(HANG_S)
    assert line is not None
    result = json.loads(line)
    assert (result["rank"], result["error"]) == (0, "CheckpointError")
    assert "did not answer within 4 s" in result["message"]
    assert CheckpointManager(url).latest() is None
    # the hung rank is still asleep: the processes fixture kills the group


def test_a_damaged_shard_is_found_on_load_and_skipped_for_the_older_step(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/run"
    mgr = CheckpointManager(url)
    assert mgr.save_sharded(1, plain_state(1))
    assert mgr.save_sharded(2, plain_state(2))
    folder = tmp_path / "run" / "checkpoints" / "step-000000000002"
    shard = next(folder.glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # same size: only the digest tells
    shard.write_bytes(bytes(data))

    with pytest.raises(CheckpointCorruptError, match=r"step 2: .*distcp fails its size or BLAKE3"):
        mgr.load_sharded(empty_state(), step=2)
    state = empty_state()
    with pytest.warns(CheckpointWarning, match="skipping damaged checkpoint: checkpoint step 2"):
        info = mgr.load_sharded(state)
    assert info is not None
    assert info.step == 1
    assert torch.equal(state["weight"], full(1))

    older = next((tmp_path / "run" / "checkpoints" / "step-000000000001").glob("*-metadata"))
    older.write_bytes(older.read_bytes()[:-1])  # truncated: found by size before any load
    with (
        pytest.warns(CheckpointWarning),
        pytest.raises(CheckpointCorruptError, match="every committed one is damaged"),
    ):
        mgr.load_sharded(empty_state())


def test_sharded_and_single_process_checkpoints_are_not_mixed_up(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/run"
    mgr = CheckpointManager(url, async_save=False)
    assert mgr.load_sharded(empty_state()) is None  # nothing committed: a fresh start
    assert mgr.save(1, {"w": torch.ones(2)})
    with pytest.raises(CheckpointError, match=r"step 1 .* was saved by one process"):
        mgr.load_sharded(empty_state())
    assert mgr.save_sharded(2, plain_state(2))
    with pytest.raises(CheckpointError, match=r"step 2 .* is sharded .* load_sharded"):
        mgr.restore()
    with pytest.raises(CheckpointError, match="no committed checkpoint step 9"):
        mgr.load_sharded(empty_state(), step=9)
    assert [i.sharded for i in mgr.list()] == [False, True]


def test_sharded_saves_follow_the_interval_and_retention(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/run"
    mgr = CheckpointManager(url, every_steps=2, keep_last=2)
    committed = [mgr.save_sharded(step, plain_state(step)) for step in range(1, 8)]
    assert committed == [False, True, False, True, False, True, False]
    assert [i.step for i in mgr.list()] == [4, 6]
    assert mgr.committed_step == 6
    assert mgr.save_sharded(7, plain_state(7), force=True)
    assert [i.step for i in mgr.list()] == [6, 7]


def test_a_resaved_sharded_step_swaps_to_the_new_objects(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/run"
    mgr = CheckpointManager(url)
    assert mgr.save_sharded(3, plain_state(3))
    before = set(mgr.list()[0].files)
    assert mgr.save_sharded(3, plain_state(4), force=True)
    after = mgr.list()[0]
    assert set(after.files).isdisjoint(before)  # written aside, under a new token
    folder = tmp_path / "run" / "checkpoints" / "step-000000000003"
    assert {p.name for p in folder.iterdir()} == {*after.files, "manifest.json"}
    state = empty_state()
    mgr.load_sharded(state)
    assert torch.equal(state["weight"], full(4))


def test_save_sharded_needs_a_process_group_when_world_size_is_above_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    mgr = CheckpointManager(f"file://{tmp_path}/run")
    with pytest.raises(CheckpointError, match=r"WORLD_SIZE=2 needs torch\.distributed initialised"):
        mgr.save_sharded(1, plain_state(1))
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        mgr.save_sharded(1, [1, 2])  # type: ignore[arg-type]


@pytest.mark.slow
def test_torchrun_ranks_save_and_load_a_sharded_state(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    url = f"file://{tmp_path}/run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    for mode, args in (("sharded-save", ["2"]), ("sharded-load", [])):
        done = processes.run([*launch, "2", str(RANK_SCRIPT), mode, url, *args], text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        results = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        assert sorted(r["rank"] for r in results) == [0, 1]
        if mode == "sharded-load":
            assert all(r["weight_ok"] and r["step"] == 2 for r in results)

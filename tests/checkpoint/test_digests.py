"""Payload digests: BLAKE3 written, SHA-256 manifests (formats 1-2) still read and checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import blake3
import pytest
import torch

from vastkit._digest import digest_file, hasher
from vastkit.checkpoint import CheckpointManager, CheckpointWarning
from vastkit.checkpoint.naming import MANIFEST_NAME, PAYLOAD_NAME, step_dirname


def _save(url: str, steps: tuple[int, ...]) -> None:
    with CheckpointManager(url, capture_rng=False, async_save=False) as mgr:
        for step in steps:
            mgr.save(step, {"w": torch.full((4096,), float(step))})


def _as_sha256_format_1(folder: Path) -> None:
    """Rewrite a step's manifest as vastkit wrote it before BLAKE3: format 1, SHA-256."""
    doc = json.loads((folder / MANIFEST_NAME).read_bytes())
    for entry in doc["files"]:
        del entry["blake3"]
        entry["sha256"] = hashlib.sha256((folder / entry["name"]).read_bytes()).hexdigest()
    doc["format_version"] = 1
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))


def test_a_new_manifest_names_the_blake3_of_the_payload(tmp_path: Path) -> None:
    _save(f"file://{tmp_path}", (5,))
    folder = tmp_path / "checkpoints" / step_dirname(5)
    doc = json.loads((folder / MANIFEST_NAME).read_bytes())
    assert doc["format_version"] == 3
    (entry,) = doc["files"]
    assert "sha256" not in entry
    assert entry["blake3"] == blake3.blake3((folder / PAYLOAD_NAME).read_bytes()).hexdigest()


def test_a_checkpoint_written_with_sha256_still_loads_and_is_checked(tmp_path: Path) -> None:
    url = f"file://{tmp_path}"
    _save(url, (1, 2))
    for step in (1, 2):
        _as_sha256_format_1(tmp_path / "checkpoints" / step_dirname(step))
    with CheckpointManager(url, capture_rng=False) as mgr:
        info = mgr.latest(verify="full")
        assert info is not None
        assert info.step == 2
        assert torch.equal(mgr.load()["w"], torch.full((4096,), 2.0))
    payload = tmp_path / "checkpoints" / step_dirname(2) / PAYLOAD_NAME
    data = bytearray(payload.read_bytes())
    data[-600] ^= 0xFF  # same size: only the digest tells
    payload.write_bytes(bytes(data))
    with CheckpointManager(url, capture_rng=False) as mgr:
        with pytest.warns(
            CheckpointWarning, match=r"step 2: .*state\.pt fails its size or SHA-256"
        ):
            state = mgr.load()
        assert torch.equal(state["w"], torch.full((4096,), 1.0))  # step 1, checked with SHA-256


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, (3 << 20) + 17])
@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_a_whole_file_digest_equals_the_streamed_one(
    tmp_path: Path, size: int, algorithm: str
) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "f"
    path.write_bytes(data)
    streamed = hasher(algorithm)
    for start in range(0, size, 65536):
        streamed.update(data[start : start + 65536])
    with path.open("rb") as fh:
        assert digest_file(fh, algorithm) == (size, streamed.hexdigest())


def test_an_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown digest algorithm 'md5'"):
        hasher("md5")

"""vastkit's prices are Vast's prices (issue 17): the same offer, the same ``dph_total``.

The search sends ``allocated_storage`` for the disk the profile (or job) rents, so the server
prices each offer's ``dph_total`` with that disk, as ``vastai search offers --storage N`` does.
Checked against the official CLI (vastai 1.9.1) talking to the emulator on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests._support.world import ON_DEMAND
from vastkit.api import Client
from vastkit.emulator import Emulator
from vastkit.selector import build_query

VASTAI = shutil.which("vastai", path=str(Path(sys.executable).parent)) or shutil.which("vastai")
pytestmark = pytest.mark.skipif(VASTAI is None, reason="the official vastai CLI is not installed")


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(0, offers=400) as emulator:
        emulator.serve()
        yield emulator


def vastai_search(emu: Emulator, home: Path, disk: int, query: str) -> list[dict[str, object]]:
    assert VASTAI is not None
    done = subprocess.run(
        [
            VASTAI,
            "--url",
            emu.url,
            "--api-key",
            emu.api_key,
            "search",
            "offers",
            "--storage",
            str(disk),
            query,
            "-o",
            "dph+",
            "--raw",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
        timeout=120,
        check=True,
    )
    offers: list[dict[str, object]] = json.loads(done.stdout)
    return offers


@pytest.mark.parametrize("disk", [16, 200])
def test_the_top_offer_costs_what_vastai_search_offers_shows(
    emu: Emulator, tmp_path: Path, disk: int
) -> None:
    profile = attrs.evolve(ON_DEMAND, disk_gb=disk)
    with Client(emu.api_key, base_url=emu.url) as client:
        ours = client.search_offers(build_query(profile))
    assert ours
    theirs = vastai_search(emu, tmp_path, disk, "gpu_name=RTX_4090 num_gpus=1 verified=true")
    by_id = {o["id"]: o for o in theirs}
    top = ours[0]
    assert top.id in by_id
    assert by_id[top.id]["dph_total"] == pytest.approx(top.dph_total, abs=1e-9)
    assert top.dph_total <= profile.max_dph

"""Every Instance carries a host-side backstop: a dead owner does not bill until ``reap``.

The emulator serves from this process and runs each container's onstart with bash
(``ProcessRunner``), so the backstop runs as it would on a host: a background shell loop that
destroys its own instance with the per-instance key (``CONTAINER_API_KEY``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.processes import HANG_S, Lines, ProcessGroups
from vastkit._bootstrap import backstop_onstart
from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest
from vastkit.emulator import Emulator, ProcessRunner, Timings, serve
from vastkit.errors import ConfigValueError
from vastkit.instance import Instance

OWNER = Path(__file__).with_name("_notebook_owner.py")

pytestmark = [pytest.mark.slow, pytest.mark.faults]

KEEPALIVE_S = 2.0


@pytest.fixture
def proc_emu(tmp_path: Path) -> Iterator[Emulator]:
    runner = ProcessRunner(tmp_path / "emu", grace_s=1.0)
    with serve(
        seed=3,
        offers=300,
        rate_limits=False,
        runner=runner,
        timings=Timings(provision_s=0.3, loading_s=0.3),
    ) as emu:
        yield emu


def _wait_gone(emu: Emulator, instance_id: int, limit: float) -> float | None:
    """Seconds until ``instance_id`` is no longer listed (None: still there after ``limit``).
    A hang guard on real time: the backstop runs on the container's real clock."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        if all(inst.id != instance_id for inst in emu.instances):
            return time.monotonic() - began
        time.sleep(0.1)
    return None


def test_a_sigkilled_owner_is_destroyed_by_its_backstop_without_reap(
    proc_emu: Emulator, tmp_path: Path, processes: ProcessGroups
) -> None:
    keepalive_dir = tmp_path / "keepalive"
    keepalive_dir.mkdir()
    owner = processes.popen(
        [
            sys.executable,
            str(OWNER),
            proc_emu.url,
            proc_emu.api_key,
            str(tmp_path / "ledger.db"),
            str(keepalive_dir),
            str(KEEPALIVE_S),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    lines = Lines(owner.stdout)
    line = lines.next()
    assert line is not None, lines.seen
    assert line.startswith("RUNNING "), lines.seen
    instance_id = int(line.split()[1])
    # While the owner lives it renews the keepalive, and the instance stays up past the deadline.
    assert _wait_gone(proc_emu, instance_id, 3 * KEEPALIVE_S) is None
    [renewal] = list(keepalive_dir.iterdir())
    assert renewal.read_text().split()[0] != "1"  # renewed more than once

    owner.send_signal(signal.SIGKILL)
    assert owner.wait(timeout=HANG_S) == -signal.SIGKILL
    took = _wait_gone(proc_emu, instance_id, HANG_S)
    assert took is not None, "the backstop never destroyed the instance"
    # The keepalive deadline plus one renewal interval and one look of the loop (each a quarter
    # of it) is 3 s; the rest is slack for a loaded machine (the backstop runs on real time).
    assert took <= KEEPALIVE_S * 1.5 + 15.0, took
    print(f"backstop destroyed instance {instance_id} {took:.1f} s after SIGKILL")


def test_the_max_duration_backstop_needs_no_keepalive(proc_emu: Emulator, tmp_path: Path) -> None:
    # A script with a deadline already passed: the backstop fires on its first look.
    with Client(proc_emu.api_key, base_url=proc_emu.url, min_intervals={}) as client:
        offer = client.search_offers("gpu_name=RTX_4090 rentable=true")[0]
        created = client.create_instance(
            offer.id,
            CreateInstanceRequest(
                image="vastai/base-image",
                disk_gb=8,
                onstart=backstop_onstart(api_url=proc_emu.url, until=time.time() - 1),
                label="backstop-test",
            ),
        )
    took = _wait_gone(proc_emu, created.id, HANG_S)
    assert took is not None, "the max-duration backstop never destroyed the instance"


def test_keepalive_settings_are_checked_before_renting() -> None:
    with pytest.raises(ConfigValueError, match="keepalive_s needs keepalive_url"):
        Instance("dev-test", keepalive_s=60)
    with pytest.raises(ConfigValueError, match="keepalive_s needs backstop=True"):
        Instance("dev-test", keepalive_s=60, keepalive_url="/tmp", backstop=False)
    with pytest.raises(ConfigValueError, match="keepalive_s must be 1 second or more"):
        Instance("dev-test", keepalive_s=0, keepalive_url="/tmp")

"""The stalled-driver scenarios of ``tests/queue/test_stalled_driver.py`` on a PostgreSQL ledger.

Two driver processes share one PostgreSQL ledger; driver A stops itself (SIGSTOP) at a point of
its job, its lease lapses, driver B takes the job over, A is woken: no job is lost, no instance
left, no job ever has two live instances at once. The fence is checked in the same PostgreSQL
transaction as each write, and no transaction is held open across an API call (a stopped driver
holds no write lock).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._support.processes import ProcessGroups
from tests.queue.conftest import Fleet, emu, fleet, store_url
from tests.queue.test_stalled_driver import POINTS, pincer, stall_and_wake
from vastkit.emulator import Emulator

__all__ = ["emu", "fleet", "store_url"]


@pytest.mark.parametrize("point", POINTS)
def test_a_stalled_driver_on_postgresql_loses_nothing(  # noqa: PLR0917 - fixtures
    point: str,
    emu: Emulator,
    fleet: Fleet,
    tmp_path: Path,
    postgres_url: str,
    processes: ProcessGroups,
) -> None:
    stall_and_wake(point, "claimed", postgres_url, emu, fleet, tmp_path, processes)


@pytest.mark.parametrize("point", ["before_intent", "after_intent", "sending"])
def test_a_stalled_driver_on_postgresql_woken_before_the_new_one_rents_writes_nothing(  # noqa: PLR0917 - fixtures
    point: str,
    emu: Emulator,
    fleet: Fleet,
    tmp_path: Path,
    postgres_url: str,
    processes: ProcessGroups,
) -> None:
    pincer(point, postgres_url, emu, fleet, tmp_path, processes)

"""Fixtures for the lifecycle tests: an emulator on loopback in virtual time, a client, a ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vastkit.api.client import Client
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator, Timings, serve
from vastkit.instance import Instance, InstanceEvent, InstanceTimeouts
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile

ON_DEMAND = GpuProfile(
    name="test-4090", gpu_name="RTX_4090", max_dph=0.40, max_duration_hours=4, disk_gb=16
)
"""An on-demand profile the emulator's seed-0 catalog has many offers for."""

INTERRUPTIBLE = GpuProfile(
    name="test-bid",
    gpu_name="RTX_3090",
    max_dph=0.20,
    max_duration_hours=4,
    disk_gb=16,
    rental="interruptible",
)
"""An interruptible profile."""

FAST = InstanceTimeouts(
    provisioning=60,
    loading=120,
    running=300,
    host_lost_grace=30,
    poll_interval=5,
    destroy=120,
    machine_block=3600,
)
"""Deadlines well above the emulator's phase timings below (10 s + 30 s)."""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emu(clock: ManualClock) -> Iterator[Emulator]:
    with serve(
        seed=0,
        clock=clock,
        offers=600,
        rate_limits=False,
        timings=Timings(provision_s=10, loading_s=30),
    ) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator, clock: ManualClock) -> Iterator[Client]:
    with Client(emu.api_key, base_url=emu.url, clock=clock, max_retries=2) as c:
        yield c


@pytest.fixture
def ledger(tmp_path: Path, clock: ManualClock) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db", clock=clock) as led:
        yield led


@pytest.fixture
def events() -> list[InstanceEvent]:
    return []


@pytest.fixture
def make(
    client: Client, ledger: Ledger, clock: ManualClock, events: list[InstanceEvent]
) -> Callable[..., Instance]:
    """Build an Instance wired to the emulator, the ledger and the event list."""

    def build(profile: GpuProfile = ON_DEMAND, **kwargs: Any) -> Instance:
        hook = kwargs.pop("hook", None)

        def on_event(event: InstanceEvent) -> None:
            events.append(event)
            if hook is not None:
                hook(event)

        options: dict[str, Any] = {
            "client": client,
            "ledger": ledger,
            "clock": clock,
            "timeouts": FAST,
            "progress": False,
            "on_event": on_event,
            "image": "pytorch/pytorch:latest",
        }
        options.update(kwargs)
        return Instance(profile, **options)

    return build


@pytest.fixture
def on_demand() -> GpuProfile:
    return ON_DEMAND


@pytest.fixture
def interruptible() -> GpuProfile:
    return INTERRUPTIBLE

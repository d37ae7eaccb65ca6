"""Fixtures for the job tests: an emulator in virtual time whose "workers" are played by the test.

The world itself (:class:`~tests._support.world.HookedClock`,
:class:`~tests._support.world.FakeWorkers`, the profiles and deadlines) lives in
:mod:`tests._support.world`, shared with the fault matrix; this module wires it into fixtures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pytest

from tests._support.world import BID_PROFILE, FAST, ON_DEMAND, FakeWorkers, HookedClock
from vastkit.api.client import Client
from vastkit.emulator import Emulator, Timings, serve
from vastkit.jobs import Job, JobEvent, JobResult, run_job
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy


@pytest.fixture
def clock() -> HookedClock:
    return HookedClock()


@pytest.fixture
def emu(clock: HookedClock) -> Iterator[Emulator]:
    with serve(
        seed=0,
        clock=clock,
        offers=600,
        rate_limits=False,
        timings=Timings(provision_s=10, loading_s=30),
    ) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator, clock: HookedClock) -> Iterator[Client]:
    """A client on the emulator's in-process transport (same app as over loopback, no sockets:
    the chaos test makes thousands of requests)."""
    with (
        httpx.Client(transport=emu.transport) as http,
        Client(
            emu.api_key,
            base_url=emu.url,
            clock=clock,
            max_retries=2,
            min_intervals={},
            http_client=http,
        ) as c,
    ):
        yield c


@pytest.fixture
def ledger(tmp_path: Path, clock: HookedClock) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db", clock=clock) as led:
        yield led


@pytest.fixture
def store_url() -> Iterator[str]:
    """A fresh in-memory fsspec store (the chaos test writes thousands of small objects)."""
    url = f"memory://jobs-test-{uuid.uuid4().hex[:10]}"
    try:
        yield url
    finally:
        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)


@pytest.fixture
def make_job(store_url: str) -> Callable[..., Job]:
    def build(**overrides: Any) -> Job:
        values: dict[str, Any] = {
            "name": "test-job",
            "command": "python train.py",
            "profile": BID_PROFILE,
            "store_url": store_url,
            "timeouts": FAST,
            "max_attempts": 1000,
            "outbid": OutbidPolicy.raise_bid(then_wait_s=20.0),
        }
        values.update(overrides)
        return Job(**values)

    return build


@pytest.fixture
def workers(emu: Emulator, clock: HookedClock, store_url: str) -> Callable[..., FakeWorkers]:
    def build(**options: Any) -> FakeWorkers:
        fake = FakeWorkers(emu=emu, store_url=store_url, **options)
        clock.hook = fake
        return fake

    return build


@pytest.fixture
def events() -> list[JobEvent]:
    return []


@dataclass
class World:
    """Everything a job test needs, as one fixture."""

    emu: Emulator
    client: Client
    ledger: Ledger
    clock: HookedClock
    store_url: str
    events: list[JobEvent]
    make_job: Callable[..., Job]
    workers: Callable[..., FakeWorkers]

    def run(self, job: Job, **kwargs: Any) -> JobResult:
        """``run_job`` wired to this world, without a progress line."""
        kwargs.setdefault("progress", False)
        return run_job(
            job,
            client=self.client,
            ledger=self.ledger,
            clock=self.clock,
            on_event=self.events.append,
            **kwargs,
        )

    def kinds(self) -> list[str]:
        """The kinds of the events seen so far."""
        return [e.kind for e in self.events]


@pytest.fixture
def world(  # noqa: PLR0917 - pytest passes fixtures by position
    emu: Emulator,
    client: Client,
    ledger: Ledger,
    clock: HookedClock,
    store_url: str,
    events: list[JobEvent],
    make_job: Callable[..., Job],
    workers: Callable[..., FakeWorkers],
) -> World:
    return World(emu, client, ledger, clock, store_url, events, make_job, workers)


__all__ = ["BID_PROFILE", "FAST", "ON_DEMAND", "FakeWorkers", "HookedClock", "World"]

"""Storms: every endpoint answering 429 for a while, a store that fails writes for a while, and
garbled API answers (malformed JSON, a wrong shape).

What a user must see: the job still finishes (none fails on a 429 or on a garbled answer,
nothing leaks, nothing is rented twice); the checkpoint manager retries store failures within
its bounds and never publishes a manifest over a payload it could not verify.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import httpx
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem

from tests._support.fault_matrix import CellRecord, record_cell
from tests.faults.conftest import FaultWorld, reasons, succeeded, torn_checkpoints
from vastkit.checkpoint import PAYLOAD_NAME, CheckpointManager
from vastkit.checkpoint.naming import MANIFEST_NAME
from vastkit.clock import ManualClock
from vastkit.errors import CheckpointError
from vastkit.retry import RetryPolicy

pytestmark = pytest.mark.faults


# --------------------------------------------------------------------------------------------
# 429 storms


def _storm(world: FaultWorld, seconds: float) -> Callable[[], None]:
    """Every endpoint answers 429 from now for ``seconds`` of virtual time."""

    def start() -> None:
        rule = world.emu.inject("rate_limit", "*", count=None)
        until = world.clock.now() + seconds
        hook = world.clock.hook
        assert hook is not None

        def storming(now: float) -> None:
            hook(now)
            if now >= until and rule in world.emu._app.faults:
                world.emu._app.faults.remove(rule)
                world.clock.hook = hook

        world.clock.hook = storming

    return start


STORM_S = 100.0
"""How long a storm lasts: shorter than the cells' destroy deadline (120 s), past which a
``DestroyFailedError`` is the documented outcome."""
STORM_PHASES = [
    "searching",
    "creating",
    "provisioning",
    "running",
    "finishing",
]


@pytest.mark.parametrize("phase", STORM_PHASES)
def test_429_storm_the_job_still_finishes(
    world_factory: Callable[..., FaultWorld], phase: str
) -> None:
    """With the documented rate limits on and the client pacing itself, every endpoint answers
    429 for 100 s from this phase on: no 429 ends an attempt or the job."""
    world = world_factory(rate_limits=True, pacing=True)
    world.workers(total_steps=300)
    world.at(phase, _storm(world, STORM_S))
    result = succeeded(world.run(world.job()))
    storm_429s = sum(1 for _, _, status in world.emu.requests if status == 429)
    assert storm_429s >= 10, storm_429s
    assert reasons(result) == ["succeeded"]
    assert world.creates() <= 3
    world.assert_invariants()


# --------------------------------------------------------------------------------------------
# garbled answers


def _wrong_shape(endpoint_path: str, method: str, count: int) -> Any:
    left = [count]

    def garble(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if left[0] <= 0 or request.method != method or endpoint_path not in request.url.path:
            return None
        left[0] -= 1
        body = {"instances": "not a list", "offers": {"id": "x"}, "new_contract": "abc"}
        return httpx.Response(200, json=body, request=request)

    return garble


GARBLED = [
    ("searching", "malformed", "search"),
    ("searching", "wrong_shape", "search"),
    ("creating", "malformed", "create"),
    ("creating", "wrong_shape", "create"),
    ("provisioning", "malformed", "list"),
    ("provisioning", "wrong_shape", "list"),
    ("running", "malformed", "list"),
    ("running", "wrong_shape", "list"),
    ("finishing", "malformed", "destroy"),
]
PATHS = {
    "search": ("/api/v0/bundles", "POST"),
    "create": ("/api/v0/asks/", "PUT"),
    "list": ("/api/v1/instances", "GET"),
    "destroy": ("/api/v0/instances/", "DELETE"),
}


@pytest.mark.parametrize(
    ("phase", "how", "endpoint"),
    GARBLED,
)
def test_garbled_answer_is_transient_never_a_leak(
    fault_world: FaultWorld, phase: str, how: str, endpoint: str
) -> None:
    """A truncated JSON body or a body of the wrong shape (ResponseValidationError) is met as a
    transient failure: the job finishes on one instance and nothing leaks."""
    world = fault_world
    world.workers(total_steps=100)
    if how == "malformed":
        world.at(phase, lambda: world.emu.inject("malformed", endpoint, count=3))
    else:
        path, method = PATHS[endpoint]

        def arm() -> None:
            world.transport.garble = _wrong_shape(path, method, 3)

        world.at(phase, arm)
    outcome = world.run(world.job())
    record = world.settle()
    assert record.leaked == 0, world.emu.instances
    result = succeeded(outcome)
    assert reasons(result) == ["succeeded"]
    world.assert_invariants()


# --------------------------------------------------------------------------------------------
# a store that fails writes for a while


class FaultyMemoryFileSystem(MemoryFileSystem):  # type: ignore[misc]
    """``faultmem://``: an in-memory store whose writes fail (or are cut short) on demand.

    ``plan`` maps an object name (``state.pt``, ``manifest.json``) to a list of what the next
    writes of that name do: ``"fail"`` (a transient ``OSError``), ``"truncate"`` (store half
    and report success) or ``"ok"``. Like tests/checkpoint's flaky store, under its own name.
    """

    protocol = "faultmem"
    plan: dict[str, list[str]] = {}  # noqa: RUF012
    failures: int = 0

    def pipe_file(self, path: str, value: Any, mode: str = "overwrite", **kwargs: Any) -> None:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        todo = type(self).plan.get(name)
        if todo:
            what = todo.pop(0)
            if what == "fail":
                type(self).failures += 1
                raise OSError(f"store unavailable (injected) writing {name}")
            if what == "truncate":
                value = bytes(value)[: len(value) // 2]
        super().pipe_file(path, value, mode=mode, **kwargs)


fsspec.register_implementation("faultmem", FaultyMemoryFileSystem, clobber=True)


@pytest.fixture
def faulty_url() -> Iterator[str]:
    FaultyMemoryFileSystem.plan = {}
    FaultyMemoryFileSystem.failures = 0
    root = f"faults-store-{uuid.uuid4().hex[:10]}"
    try:
        yield f"faultmem://{root}/run"
    finally:
        FaultyMemoryFileSystem.plan = {}
        fs = fsspec.filesystem("faultmem")
        if fs.exists(f"/{root}"):
            fs.rm(f"/{root}", recursive=True)


def _state(step: int) -> dict[str, Any]:
    return {"w": torch.full((256,), float(step)), "step": step}


def _manifests(url: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(url)
    return sorted(str(p) for p in fs.glob(f"{root}/checkpoints/*/{MANIFEST_NAME}"))


STORE_CASES = [
    ("payload_fails_then_recovers", {PAYLOAD_NAME: ["fail"] * 3}, True),
    ("manifest_fails_then_recovers", {MANIFEST_NAME: ["fail"] * 3}, True),
    ("payload_fails_past_the_bound", {PAYLOAD_NAME: ["fail"] * 10}, False),
    ("manifest_fails_past_the_bound", {MANIFEST_NAME: ["fail"] * 10}, False),
    ("payload_cut_short", {PAYLOAD_NAME: ["truncate"]}, False),
]


@pytest.mark.parametrize(("case", "plan", "commits"), STORE_CASES, ids=[c[0] for c in STORE_CASES])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_store_failing_writes(  # noqa: PLR0917 - pytest passes parameters by position
    faulty_url: str,
    case: str,
    plan: dict[str, list[str]],
    commits: bool,
    is_async: bool,
    request: pytest.FixtureRequest,
) -> None:
    """Transient write failures are retried within the policy (in virtual time); past it the
    save fails loudly; a payload that did not verify never gets a manifest; the previous
    checkpoint stays the latest and the next save after the store recovers commits."""
    clock = ManualClock()
    policy = RetryPolicy(attempts=6, initial_delay=0.5, max_delay=4.0, deadline=60.0)
    mgr = CheckpointManager(
        faulty_url, async_save=is_async, retries=policy, clock=clock, capture_rng=False
    )
    mgr.save(10, _state(10))
    mgr.wait()
    FaultyMemoryFileSystem.plan = {k: list(v) for k, v in plan.items()}
    started = clock.now()
    if commits:
        mgr.save(20, _state(20))
        mgr.wait()
        assert FaultyMemoryFileSystem.failures == 3
        assert clock.now() - started > 0  # it backed off, on the injected clock
        latest = mgr.latest(verify="full")
        assert latest is not None
        assert latest.step == 20
    else:
        if is_async:  # the background failure is raised at the next call
            mgr.save(20, _state(20))
            with pytest.raises(CheckpointError):
                mgr.wait()
        else:
            with pytest.raises(CheckpointError):
                mgr.save(20, _state(20))
        if "past_the_bound" in case:
            assert FaultyMemoryFileSystem.failures == policy.attempts  # bounded retries
            assert clock.now() - started <= policy.deadline * 2
        assert not any("step-000000000020" in m for m in _manifests(faulty_url))
        latest = mgr.latest(verify="full")
        assert latest is not None
        assert latest.step == 10
        FaultyMemoryFileSystem.plan = {}
        mgr.save(30, _state(30))  # the store recovered: the next save commits
        mgr.wait()
        latest = mgr.latest(verify="full")
        assert latest is not None
        assert latest.step == 30
    mgr.close()
    torn = torn_checkpoints(faulty_url)
    record_cell(request.node, CellRecord(cell=request.node.name, torn=torn))
    assert torn == 0

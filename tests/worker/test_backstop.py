"""The self-destroy backstop's decisions and its call, in virtual time."""

from __future__ import annotations

import logging

import httpx
import pytest

from vastkit.clock import ManualClock
from vastkit.errors import ConfigValueError
from vastkit.rundir import AttemptLimits, OrchestratorBeat, ResultStatus
from vastkit.worker._runtime import (
    LivenessWatch,
    attempt_outcome,
    backstop_reason,
    destroy_self,
)


def test_deadline_and_silence_decisions() -> None:
    assert backstop_reason(now=100, deadline=None, silent_for=10, timeout=None) is None
    assert backstop_reason(now=100, deadline=101, silent_for=59, timeout=60) is None
    status, reason = backstop_reason(now=100, deadline=None, silent_for=60, timeout=60) or (
        None,
        "",
    )
    assert status is ResultStatus.ABANDONED
    assert reason == (
        "no sign of the orchestrator for 60 s (backstop timeout 60 s) and the job has no "
        "deadline or cost cap to run on alone"
    )
    status, reason = backstop_reason(now=130, deadline=100, silent_for=90, timeout=60) or (None, "")
    assert status is ResultStatus.TIMED_OUT  # the deadline wins
    assert reason == "the job's max-duration deadline passed 30 s ago"


def test_a_silent_orchestrator_alone_no_longer_ends_an_attempt_with_limits() -> None:
    limits = AttemptLimits(rate_dph=3.6, billed_since=0.0, max_cost_usd=10.0)  # 1 cent a 10 s
    # An orchestrator asleep for 10 hours, far past its 900 s timeout: the job's limits rule.
    for deadline, lim in ((100_000.0, None), (None, limits), (100_000.0, limits)):
        assert (
            backstop_reason(now=9000, deadline=deadline, silent_for=36_000, timeout=900, limits=lim)
            is None
        )
    # ... unless an explicit away_limit says otherwise
    status, reason = backstop_reason(
        now=9000, deadline=100_000, silent_for=36_000, timeout=900, away_limit=36_000
    ) or (None, "")
    assert status is ResultStatus.ABANDONED
    assert reason == "no sign of the orchestrator for 36000 s (away_limit 36000 s)"


def test_the_cost_cap_stops_before_the_cap_by_the_margin() -> None:
    limits = AttemptLimits(rate_dph=3.6, billed_since=1000.0, max_cost_usd=10.0)  # $0.001/s
    # $10 at $0.001/s is reached 10,000 s after the instance was created.
    assert (
        backstop_reason(
            now=10_959, deadline=None, silent_for=0, timeout=900, limits=limits, margin=40
        )
        is None
    )
    status, reason = backstop_reason(
        now=10_960, deadline=None, silent_for=0, timeout=900, limits=limits, margin=40
    ) or (None, "")
    assert status is ResultStatus.BUDGET_EXCEEDED
    assert reason == "the attempt has cost $9.9600 at 3.6 $/h; it may spend $10.0000"
    # the deadline wins over the cost
    status, _ = backstop_reason(
        now=10_960, deadline=10_000, silent_for=0, timeout=900, limits=limits
    ) or (None, "")
    assert status is ResultStatus.TIMED_OUT


def test_limits_travel_in_the_environment_and_bad_ones_are_named() -> None:
    limits = AttemptLimits(rate_dph=0.35, billed_since=1_700_000_000.5, max_cost_usd=4.2)
    env = limits.environ()
    assert env == {
        "VASTKIT_RATE_DPH": "0.35",
        "VASTKIT_BILLED_SINCE": "1700000000.5",
        "VASTKIT_MAX_COST_USD": "4.2",
    }
    assert AttemptLimits.from_environ(env) == limits
    assert AttemptLimits.from_environ({"PATH": "/bin"}) is None
    with pytest.raises(ConfigValueError, match="VASTKIT_MAX_COST_USD not set"):
        AttemptLimits.from_environ({k: v for k, v in env.items() if "COST" not in k})
    with pytest.raises(ConfigValueError, match=r"AttemptLimits.VASTKIT_RATE_DPH must be a number"):
        AttemptLimits.from_environ({**env, "VASTKIT_RATE_DPH": "cheap"})
    with pytest.raises(ConfigValueError, match="max_cost_usd"):
        AttemptLimits(rate_dph=1.0, billed_since=0.0, max_cost_usd=-1.0)


def test_liveness_counts_changes_on_the_workers_clock_not_the_orchestrators() -> None:
    clock = ManualClock()
    watch = LivenessWatch(clock.now())
    clock.advance(50)
    watch.observe(None, clock.now())  # nothing written yet: silence counts from the start
    assert watch.silent_for(clock.now()) == 50
    # The orchestrator's clock is an hour behind: irrelevant, a change is a sign of life.
    watch.observe(OrchestratorBeat(time=clock.now() - 3600, seq=1), clock.now())
    assert watch.silent_for(clock.now()) == 0
    clock.advance(30)
    watch.observe(OrchestratorBeat(time=clock.now() - 3600 - 30, seq=1), clock.now())
    assert watch.silent_for(clock.now()) == 30  # the same object again is no sign of life
    watch.observe(OrchestratorBeat(time=clock.now() - 3600, seq=2), clock.now())
    assert watch.silent_for(clock.now()) == 0


def test_destroy_self_uses_the_container_key_and_never_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[httpx.Request] = []
    answers = iter([httpx.Response(500), httpx.Response(200, json={"success": True})])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    clock = ManualClock()
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        caplog.set_level(logging.DEBUG, logger="vastkit")
        ok = destroy_self(
            base_url="https://console.example/",
            environ={"CONTAINER_ID": "31337", "CONTAINER_API_KEY": "s3cr3t-container-key"},
            clock=clock,
            http=http,
        )
    assert ok
    assert [(r.method, str(r.url)) for r in seen] == [
        ("DELETE", "https://console.example/api/v0/instances/31337/")
    ] * 2
    assert seen[0].headers["Authorization"] == "Bearer s3cr3t-container-key"
    assert len(clock.slept) == 1
    assert 1.0 <= clock.slept[0] <= 2.0  # 2 s, jittered to 50-100 %
    assert "s3cr3t" not in caplog.text
    assert "answered HTTP 500" in caplog.text


def test_destroy_self_treats_404_as_done_and_reports_missing_variables(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(404))) as http:
        assert destroy_self(
            base_url="http://x",
            environ={"CONTAINER_ID": "1", "CONTAINER_API_KEY": "k"},
            clock=ManualClock(),
            http=http,
        )
    caplog.set_level(logging.ERROR, logger="vastkit")
    assert not destroy_self(base_url="http://x", environ={"CONTAINER_ID": "1"}, clock=ManualClock())
    assert "CONTAINER_API_KEY not set" in caplog.text


def test_destroy_self_gives_up_after_its_tries(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    clock = ManualClock()
    with httpx.Client(transport=httpx.MockTransport(refuse)) as http:
        assert not destroy_self(
            base_url="http://x",
            environ={"CONTAINER_ID": "9", "CONTAINER_API_KEY": "k"},
            clock=clock,
            http=http,
            tries=3,
        )
    assert len(clock.slept) == 2  # 2 s then 4 s, jittered to 50-100 %
    assert 1.0 <= clock.slept[0] <= 2.0
    assert 2.0 <= clock.slept[1] <= 4.0
    assert "could not destroy instance 9: it keeps costing money" in caplog.text


@pytest.mark.parametrize(
    ("exit_code", "stop", "expected"),
    [
        (0, None, (ResultStatus.SUCCEEDED, "the command exited 0")),
        (3, None, (ResultStatus.FAILED, "the command exited with exit code 3")),
        (-15, (ResultStatus.PREEMPTED, "SIGTERM received"), None),
        (0, (ResultStatus.CANCELLED, None), (ResultStatus.CANCELLED, "stopped")),
    ],
)
def test_a_stop_the_worker_began_decides_the_outcome_over_the_exit_code(
    exit_code: int,
    stop: tuple[ResultStatus, str | None] | None,
    expected: tuple[ResultStatus, str] | None,
) -> None:
    status, reason = stop if stop is not None else (None, None)
    outcome = attempt_outcome(exit_code, status, reason)
    assert outcome == (expected or (status, reason))

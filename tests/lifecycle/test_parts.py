"""The lifecycle parts that need no server: labels, the phase state machine, the outbid policy,
the cost meter, the progress line and the signal guard."""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vastkit._console import Progress, SignalGuard
from vastkit._owner import owner_alive, owner_metadata
from vastkit._provision import PhaseWaiter
from vastkit.api.models import InstanceInfo, InstanceState
from vastkit.clock import ManualClock
from vastkit.instance import InstanceTimeouts
from vastkit.labels import make_label, new_run_id, parse_label
from vastkit.money import ContractPrice, CostMeter
from vastkit.outbid import OutbidPolicy

# -- labels ------------------------------------------------------------------------------------

run_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)


@given(run_id=run_ids, attempt=st.integers(min_value=1, max_value=10**6))
def test_label_round_trips(run_id: str, attempt: int) -> None:
    label = make_label(run_id, attempt)
    assert label.startswith("vastkit/")
    assert len(label) <= 256
    assert parse_label(label) == (run_id, attempt)
    assert parse_label(f"  {label} ") == (run_id, attempt)


@pytest.mark.parametrize(
    "label",
    [
        None,
        "",
        "vastkit/",
        "vastkit/run",
        "vastkit/run/0",
        "vastkit/run/x",
        "other/run/1",
        "vastkit/a b/1",
        "vastkit/run/1/2",
        "VASTKIT/run/1",
    ],
)
def test_foreign_labels_are_not_ours(label: str | None) -> None:
    assert parse_label(label) is None


@pytest.mark.parametrize(("run_id", "attempt"), [("", 1), ("a/b", 1), ("ok", 0), ("ok", True)])
def test_bad_label_parts_are_refused(run_id: str, attempt: int) -> None:
    with pytest.raises(ValueError):
        make_label(run_id, attempt)


def test_new_run_ids_are_unique_and_valid() -> None:
    clock = ManualClock()
    ids = {new_run_id(clock) for _ in range(50)}
    assert len(ids) == 50
    for run_id in ids:
        assert run_id.startswith("20260101-000000-")
        assert parse_label(make_label(run_id, 3)) == (run_id, 3)


# -- the phase state machine -------------------------------------------------------------------


def view(actual: str | None, **fields: object) -> InstanceInfo:
    return InstanceInfo(id=7, machine_id=1, actual_status=actual, **fields)  # type: ignore[arg-type]


def scripted(clock: ManualClock, timeline: list[tuple[float, InstanceInfo | None]]):  # type: ignore[no-untyped-def]
    """A poll function that returns, at each moment, the last view whose start time passed."""
    start = clock.now()

    def poll() -> InstanceInfo | None:
        elapsed = clock.now() - start
        current: InstanceInfo | None = timeline[0][1]
        for at, item in timeline:
            if elapsed >= at:
                current = item
        return current

    return poll


TIMEOUTS = InstanceTimeouts(
    provisioning=60, loading=120, running=300, host_lost_grace=30, poll_interval=5
)


def test_reaches_running_through_the_phases() -> None:
    clock = ManualClock()
    seen: list[str] = []
    poll = scripted(clock, [(0, view(None)), (20, view("loading")), (50, view("running"))])
    outcome = PhaseWaiter(
        poll, clock=clock, timeouts=TIMEOUTS, on_state=lambda v, phase, t: seen.append(phase)
    ).wait()
    assert outcome.ok
    assert outcome.reason == "running"
    assert outcome.elapsed == 50
    assert seen[0] == "provisioning"
    assert "loading" in seen
    assert seen[-1] == "running"


@pytest.mark.parametrize(
    ("timeline", "reason", "elapsed"),
    [
        ([(0, view(None))], "provisioning_deadline", 60),
        ([(0, view(None)), (10, view("loading"))], "loading_deadline", 130),
        ([(0, view("created", status_msg="Error: OCI runtime create failed: bad"))], "failed", 0),
        ([(0, view(None)), (15, view("exited", status_msg="exit 1"))], "exited", 15),
        ([(0, view(None)), (10, view("offline"))], "host_lost", 40),
        ([(0, view(None)), (10, view("unknown"))], "host_lost", 40),
        ([(0, view(None)), (5, None)], "vanished", 5),
    ],
)
def test_each_failure_is_classified_at_its_deadline(
    timeline: list[tuple[float, InstanceInfo | None]], reason: str, elapsed: float
) -> None:
    clock = ManualClock()
    outcome = PhaseWaiter(scripted(clock, timeline), clock=clock, timeouts=TIMEOUTS).wait()
    assert not outcome.ok
    assert outcome.reason == reason
    assert outcome.elapsed == elapsed
    assert outcome.blame_machine == (reason not in ("vanished",))
    assert outcome.detail


def test_total_deadline_catches_phase_ping_pong() -> None:
    clock = ManualClock()
    timeouts = InstanceTimeouts(provisioning=100, loading=100, running=150, poll_interval=5)
    timeline = [(0, view(None)), (90, view("loading")), (180, view("running"))]
    outcome = PhaseWaiter(scripted(clock, timeline), clock=clock, timeouts=timeouts).wait()
    assert outcome.reason == "running_deadline"
    assert "150" in outcome.detail


def test_outbid_at_start_is_its_own_outcome_for_bids_only() -> None:
    stopped = view(
        "stopped", is_bid=True, cur_state="stopped", intended_status="stopped", next_state="stopped"
    )
    clock = ManualClock()
    outcome = PhaseWaiter(scripted(clock, [(0, stopped)]), clock=clock, timeouts=TIMEOUTS).wait()
    assert outcome.reason == "outbid"
    assert not outcome.blame_machine


def test_offline_that_recovers_within_grace_is_tolerated() -> None:
    clock = ManualClock()
    timeline = [
        (0, view(None)),
        (10, view("offline")),
        (30, view("loading")),
        (40, view("running")),
    ]
    outcome = PhaseWaiter(scripted(clock, timeline), clock=clock, timeouts=TIMEOUTS).wait()
    assert outcome.ok


# -- outbid policy -----------------------------------------------------------------------------


def test_raise_policy_raises_until_the_cap_then_waits_then_gives_up() -> None:
    policy = OutbidPolicy.raise_bid(step=0.5, then_wait_s=100)
    first = policy.decide(outbid_for=0, current_bid=1.0, min_bid=1.2, cap=2.0)
    assert first.action == "raise"
    assert first.bid == pytest.approx(1.8)
    capped = policy.decide(outbid_for=0, current_bid=1.8, min_bid=2.5, cap=2.0)
    assert capped.action == "raise"
    assert capped.bid == 2.0
    at_cap = policy.decide(outbid_for=50, current_bid=2.0, min_bid=2.5, cap=2.0)
    assert at_cap.action == "wait"
    late = policy.decide(outbid_for=100, current_bid=2.0, min_bid=2.5, cap=2.0)
    assert late.action == "give_up"


def test_policy_cap_is_the_lower_of_profile_and_own() -> None:
    policy = OutbidPolicy.raise_bid(step=1.0, max_bid=1.5)
    assert policy.decide(outbid_for=0, current_bid=1.0, min_bid=None, cap=3.0).bid == 1.5


def test_after_a_raise_it_waits_unless_min_bid_passes_the_bid() -> None:
    policy = OutbidPolicy.raise_bid(step=0.1)
    waiting = policy.decide(
        outbid_for=5, current_bid=1.1, min_bid=1.0, cap=5.0, raised_at_current=True
    )
    assert waiting.action == "wait"
    again = policy.decide(
        outbid_for=5, current_bid=1.1, min_bid=1.3, cap=5.0, raised_at_current=True
    )
    assert again.action == "raise"
    assert again.bid is not None
    assert again.bid > 1.3


def test_wait_and_give_up_policies() -> None:
    assert (
        OutbidPolicy.give_up().decide(outbid_for=0, current_bid=1, min_bid=9, cap=9).action
        == "give_up"
    )
    wait = OutbidPolicy.wait(60)
    assert wait.decide(outbid_for=59, current_bid=1, min_bid=9, cap=9).action == "wait"
    assert wait.decide(outbid_for=60, current_bid=1, min_bid=9, cap=9).action == "give_up"


@given(
    bid=st.floats(0.01, 10),
    min_bid=st.floats(0.001, 20),
    cap=st.floats(0.01, 10),
    step=st.floats(0.01, 2),
)
def test_a_raise_never_passes_the_cap(bid: float, min_bid: float, cap: float, step: float) -> None:
    new = OutbidPolicy.raise_bid(step=step).next_bid(current_bid=bid, min_bid=min_bid, cap=cap)
    if new is not None:
        assert new <= cap + 1e-6
        assert new > bid


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="action"):
        OutbidPolicy(action="panic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step"):
        OutbidPolicy(step=0)
    with pytest.raises(ValueError, match="poll_interval"):
        InstanceTimeouts(poll_interval=0)


# -- cost --------------------------------------------------------------------------------------


def test_cost_meter_bills_storage_always_and_gpu_only_running() -> None:
    price = ContractPrice(gpu_dph=3.6, storage_dph=0.36)
    meter = CostMeter(price, start=0.0)
    meter.observe(100.0, InstanceState.LOADING)  # 100 s provisioning: storage
    meter.observe(200.0, InstanceState.RUNNING)  # 100 s loading: storage
    meter.observe(300.0, InstanceState.OFFLINE)  # 100 s running: gpu + storage
    total = meter.close(400.0)  # 100 s offline: nothing
    assert total == pytest.approx(0.01 + 0.01 + 0.11)
    assert meter.cost_at(10_000.0) == total  # closed: no more accrual


# -- progress ----------------------------------------------------------------------------------


def test_progress_writes_plain_lines_only_on_change_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(None, file=out)
    assert not progress.live
    for text in ("searching", "searching", "loading 5 s", "loading 5 s"):
        progress.update(text)
    progress.close("done")
    assert out.getvalue().splitlines() == [
        "vastkit: searching",
        "vastkit: loading 5 s",
        "vastkit: done",
    ]


def test_progress_is_redrawn_in_place_in_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    progress = Progress(None)
    assert progress.live
    progress.update("instance 7 loading 10 s")
    progress.close("instance 7 running")
    err = capsys.readouterr().err
    assert "instance 7 loading 10 s" in err
    assert err.rstrip().endswith("vastkit: instance 7 running")
    assert "vastkit: instance 7 loading" not in err  # not a plain line: drawn by rich


def test_progress_can_be_silenced() -> None:
    out = io.StringIO()
    progress = Progress(False, file=out)
    progress.update("x")
    progress.close("y")
    assert out.getvalue() == ""


# -- signals -----------------------------------------------------------------------------------


@pytest.fixture
def guard() -> Iterator[SignalGuard]:
    before = signal.getsignal(signal.SIGTERM)
    g = SignalGuard()
    yield g
    g.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_becomes_system_exit_and_the_handler_is_restored(guard: SignalGuard) -> None:
    guard.install()
    assert guard.active
    with pytest.raises(SystemExit) as info:
        os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.code == 128 + signal.SIGTERM
    guard.got_sigterm = False  # the default handler would end the test process


def test_signals_are_held_while_destroying(guard: SignalGuard) -> None:
    guard.install()
    done = []
    with pytest.raises(KeyboardInterrupt):  # noqa: PT012
        with guard.deferring():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("destroyed")
    assert done == ["destroyed"]
    guard.got_sigterm = False


def test_no_handler_outside_the_main_thread() -> None:
    result: list[bool] = []
    g = SignalGuard()
    thread = threading.Thread(target=lambda: (g.install(), result.append(g.active)))
    thread.start()
    thread.join()
    assert result == [False]


# -- owners ------------------------------------------------------------------------------------


def test_this_process_is_alive_and_a_dead_one_is_not() -> None:
    me = owner_metadata()
    assert owner_alive({"owner": me}) is True
    assert owner_alive({"owner": {**me, "pid": 2**22 + 12345}}) is False
    assert owner_alive({"owner": {**me, "started": "1"}}) is False  # pid reused
    assert owner_alive({"owner": {**me, "host": "elsewhere"}}) is None
    assert owner_alive({}) is None


def test_next_bid_reaches_a_cap_with_more_than_six_decimals_and_stops() -> None:
    from vastkit.outbid import OutbidPolicy

    policy = OutbidPolicy(action="raise", step=0.5)
    cap = 0.1234564  # rounds down on the 6-decimal grid
    bid: float | None = 0.1
    seen = []
    while bid is not None:
        seen.append(bid)
        assert len(seen) < 20, seen
        bid = policy.next_bid(current_bid=bid, min_bid=None, cap=cap)
    assert seen[-1] == 0.123456
    assert all(b <= cap for b in seen)

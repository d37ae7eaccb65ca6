"""The attempt engine's phase decisions (PhaseTracker) as properties over generated observations."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vastkit._provision import InstanceTimeouts, PhaseOutcome, PhaseTracker, phase_of
from vastkit.api.models import InstanceInfo, InstanceState

TIMEOUTS = InstanceTimeouts(
    provisioning=100.0, loading=200.0, running=500.0, host_lost_grace=30.0, poll_interval=5.0
)

STATES = st.sampled_from(list(InstanceState))


@st.composite
def _steps(draw: st.DrawFn) -> list[tuple[InstanceState, float]]:
    """Polls in runs: a state held for several polls, as real instances do."""
    steps: list[tuple[InstanceState, float]] = []
    for state, polls, dt in draw(
        st.lists(
            st.tuples(STATES, st.integers(1, 30), st.floats(min_value=0.0, max_value=30.0)),
            max_size=8,
        )
    ):
        steps.extend([(state, dt)] * polls)
    return steps


STEPS = _steps()


def _view(state: InstanceState) -> InstanceInfo:
    # The API model derives ``state`` from Vast's three status fields; build views that read as
    # each state through the same converter the client uses.
    fields = {
        InstanceState.PROVISIONING: ("created", "running", "running"),
        InstanceState.LOADING: ("loading", "running", "running"),
        InstanceState.RUNNING: ("running", "running", "running"),
        InstanceState.STOPPED: ("stopped", "stopped", "stopped"),
        InstanceState.OUTBID: ("stopped", "stopped", "stopped"),
        InstanceState.EXITED: ("exited", "running", "running"),
        InstanceState.OFFLINE: ("offline", "running", "running"),
        InstanceState.UNKNOWN: ("unknown", "running", "running"),
        InstanceState.FAILED: ("created", "running", "running"),
    }[state]
    view = InstanceInfo(
        id=1,
        actual_status=fields[0],
        intended_status=fields[1],
        cur_state=fields[2],
        next_state=fields[2],
        is_bid=state is InstanceState.OUTBID,
        status_msg="Error: image pull failed" if state is InstanceState.FAILED else None,
    )
    return view


def _run(steps: list[tuple[InstanceState, float]], *, bid: bool = True):
    tracker = PhaseTracker(TIMEOUTS, 0.0, expect_bid_stop=bid)
    now = 0.0
    seen: list[tuple[float, InstanceInfo]] = []
    for state, dt in steps:
        now += dt
        view = _view(state)
        tracker.see(view, now)
        seen.append((now, view))
        outcome = tracker.decide(now)
        if outcome is not None:
            return outcome, seen, tracker
    return None, seen, tracker


def test_views_read_as_the_generated_state() -> None:
    for state in InstanceState:
        assert _view(state).state is state, state


@given(STEPS)
def test_running_ends_the_wait_at_once_and_nothing_else_is_ok(steps) -> None:
    outcome, seen, _ = _run(steps)
    if outcome is None:
        assert all(v.state is not InstanceState.RUNNING for _, v in seen)
        return
    _, last_view = seen[-1]
    assert outcome.ok == (last_view.state is InstanceState.RUNNING)
    assert all(v.state is not InstanceState.RUNNING for _, v in seen[:-1])


@given(STEPS)
def test_the_wait_never_outlives_the_running_deadline(steps) -> None:
    outcome, seen, _ = _run(steps)
    if outcome is None and seen:
        assert seen[-1][0] < TIMEOUTS.running


@given(STEPS)
def test_a_deadline_is_never_declared_early(steps) -> None:
    outcome, seen, tracker = _run(steps)
    if outcome is None or outcome.ok:
        return
    now = seen[-1][0]
    if outcome.reason == "running_deadline":
        assert now >= TIMEOUTS.running
    elif outcome.reason in ("provisioning_deadline", "loading_deadline"):
        phase = outcome.reason.removesuffix("_deadline")
        limit = TIMEOUTS.provisioning if phase == "provisioning" else TIMEOUTS.loading
        assert phase_of(seen[-1][1].state) == phase
        assert now - tracker.first_seen[phase] >= limit
    elif outcome.reason == "host_lost":
        # lost for the whole grace period: every view in the window was offline or unknown
        window = [v for t, v in seen if t >= now - TIMEOUTS.host_lost_grace]
        assert all(v.state in (InstanceState.OFFLINE, InstanceState.UNKNOWN) for v in window)
    elif outcome.reason in ("exited", "failed"):
        assert seen[-1][1].state.value == outcome.reason
        assert outcome.blame_machine
    elif outcome.reason == "outbid":
        assert seen[-1][1].state is InstanceState.OUTBID
        assert not outcome.blame_machine


@given(STEPS)
def test_without_a_bid_an_outbid_looking_stop_is_just_scheduling(steps) -> None:
    outcome, _, _ = _run(steps, bid=False)
    assert outcome is None or outcome.reason != "outbid"


def test_a_vanished_instance_names_its_last_view() -> None:
    tracker = PhaseTracker(TIMEOUTS, 0.0)
    tracker.see(_view(InstanceState.LOADING), 3.0)
    outcome = tracker.vanished(9.0)
    assert isinstance(outcome, PhaseOutcome)
    assert (outcome.reason, outcome.elapsed, outcome.instance) == ("vanished", 9.0, tracker.last)

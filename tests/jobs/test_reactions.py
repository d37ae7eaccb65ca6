"""run_job's reaction table (vastkit.jobs.reactions.react) as properties over observations."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vastkit.api.models import InstanceState
from vastkit.jobs import JobTimeouts
from vastkit.jobs.reactions import Act, Reaction, Timers, react

T = JobTimeouts(
    worker_ready=100.0,
    heartbeat_stale=60.0,
    host_lost_grace=30.0,
    loading=200.0,
    poll_interval=5.0,
)
LOST = (InstanceState.OFFLINE, InstanceState.UNKNOWN)


@st.composite
def _runs(draw: st.DrawFn) -> list[tuple[InstanceState, float]]:
    """States held over several polls, with the gap between polls."""
    out: list[tuple[InstanceState, float]] = []
    for state, polls, dt in draw(
        st.lists(
            st.tuples(
                st.sampled_from(list(InstanceState)),
                st.integers(1, 20),
                st.floats(min_value=0.0, max_value=20.0),
            ),
            max_size=8,
        )
    ):
        out.extend([(state, dt)] * polls)
    return out


def _watch(
    runs: list[tuple[InstanceState, float]], timers: Timers
) -> tuple[list[tuple[float, InstanceState, Reaction]], Reaction | None]:
    """Feed observations until a reaction other than WATCH (OUTBID counts as watching on)."""
    now = timers.running_at or 0.0
    seen: list[tuple[float, InstanceState, Reaction]] = []
    for state, dt in runs:
        now += dt
        reaction = react(state, timers, now, T, attempt=1, instance_id=7)
        seen.append((now, state, reaction))
        timers = reaction.timers
        if reaction.act in (Act.END, Act.EXITED):
            return seen, reaction
    return seen, None


READY = Timers(running_at=0.0, ready_at=0.0, beat_changed=0.0)


@given(_runs())
def test_every_end_names_a_cause_that_really_held(runs) -> None:
    seen, final = _watch(runs, READY)
    if final is None or final.act is not Act.END:
        return
    now, state, _ = seen[-1]
    if final.reason == "host_lost":
        window = [s for t, s, _ in seen if t >= now - T.host_lost_grace]
        assert all(s in LOST for s in window)
        assert final.blame
    elif final.reason == "heartbeat_stale":
        assert state is InstanceState.RUNNING
        before = seen[-2][2].timers if len(seen) > 1 else READY
        assert now - before.beat_changed >= T.heartbeat_stale
        assert final.blame
        assert [n.kind for n in final.notices][-1] == "heartbeat_stale"
    elif final.reason == "loading_deadline":
        window = [s for t, s, _ in seen if t >= now - T.loading]
        assert all(s is InstanceState.LOADING for s in window)
    elif final.reason == "failed":
        assert state is InstanceState.FAILED
    elif final.reason == "stopped":
        assert not final.blame
        window = [s for t, s, _ in seen if t >= now - T.host_lost_grace]
        assert all(s in (InstanceState.STOPPED, InstanceState.PROVISIONING) for s in window)
    else:
        raise AssertionError(f"unexpected end {final.reason}")


@given(_runs())
def test_a_running_worker_with_a_fresh_heartbeat_is_left_alone(runs) -> None:
    # a heartbeat that changes at every poll: the attempt never ends while it runs
    timers = READY
    now = 0.0
    for state, dt in runs:
        if state is not InstanceState.RUNNING:
            continue
        now += dt
        timers = Timers(running_at=0.0, ready_at=0.0, beat_changed=now)
        reaction = react(state, timers, now, T, attempt=1, instance_id=7)
        assert reaction.act is Act.WATCH


@given(_runs())
def test_timers_of_a_condition_are_cleared_once_it_is_over(runs) -> None:
    seen, _ = _watch(runs, READY)
    for _, state, reaction in seen:
        timers = reaction.timers
        if state not in LOST:
            assert timers.lost_since is None
        if state is not InstanceState.LOADING:
            assert timers.loading_since is None
        if state is not InstanceState.OUTBID:
            assert timers.outbid_since is None


@given(st.sampled_from(list(InstanceState)), st.floats(0, 1e6), st.floats(0, 1e6))
def test_the_table_is_a_pure_function(state, t0, now) -> None:
    timers = Timers(running_at=t0, beat_changed=t0)
    first = react(state, timers, now, T, attempt=2, instance_id=9)
    assert first == react(state, timers, now, T, attempt=2, instance_id=9)


def test_an_outbid_that_ends_is_reported_and_forgotten() -> None:
    timers = Timers(running_at=0.0, ready_at=0.0, outbid_since=10.0, raised_for_outbid=True)
    reaction = react(InstanceState.RUNNING, timers, 50.0, T, attempt=1, instance_id=7)
    assert reaction.act is Act.WATCH
    assert [n.kind for n in reaction.notices] == ["outbid_recovered"]
    assert reaction.timers.outbid_since is None
    assert not reaction.timers.raised_for_outbid
    assert reaction.timers.beat_changed == 50.0


def test_a_worker_that_never_reports_is_blamed_on_the_machine() -> None:
    timers = Timers(running_at=0.0, beat_changed=0.0)
    early = react(InstanceState.RUNNING, timers, 99.0, T, attempt=1, instance_id=7)
    late = react(InstanceState.RUNNING, timers, 100.0, T, attempt=1, instance_id=7)
    assert early.act is Act.WATCH
    assert (late.act, late.reason, late.blame) == (Act.END, "worker_never_started", True)


def test_outbid_and_exited_hand_over_to_the_shell() -> None:
    outbid = react(InstanceState.OUTBID, READY, 5.0, T, attempt=1, instance_id=7)
    exited = react(InstanceState.EXITED, READY, 5.0, T, attempt=1, instance_id=7)
    assert (outbid.act, outbid.timers.beat_changed) == (Act.OUTBID, 5.0)
    assert exited.act is Act.EXITED

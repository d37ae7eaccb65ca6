"""The shared instance list, in virtual time: one list call per poll interval (a queue's drivers,
or separate run_job calls of one process)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vastkit.api.models import InstanceInfo
from vastkit.clock import ManualClock, SystemClock
from vastkit.jobs.polling import SharedInstances, shared_instances

POLL = 10.0


class CountingClient:
    """Records when each list call was made."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    def list_instances(self) -> list[InstanceInfo]:
        self.calls.append(self.clock.now())
        return []


def test_ten_drivers_share_one_list_call_per_poll_interval() -> None:
    clock = ManualClock()
    client = CountingClient(clock)
    shared = SharedInstances(client, clock, max_age=POLL)
    created = clock.now()  # every driver's instance was created before the first look
    clock.advance(1)
    for _ in range(8):  # eight poll intervals
        for _driver in range(10):  # ten drivers look, at slightly different moments
            assert shared(created) == []
            clock.advance(0.1)
        clock.advance(POLL - 1.0)
    assert (len(client.calls), shared.served) == (8, 80)


def test_a_driver_with_a_newer_instance_gets_a_fresh_list() -> None:
    clock = ManualClock()
    client = CountingClient(clock)
    shared = SharedInstances(client, clock, max_age=POLL)
    shared(-math.inf)
    clock.advance(1)
    created = clock.now()  # an instance created after the last list
    clock.advance(1)
    shared(created)
    assert len(client.calls) == 2  # it is never read as vanished
    clock.advance(1)
    shared(created)
    shared(-math.inf)
    assert len(client.calls) == 2  # and then shares the list again


@given(
    looks=st.lists(
        st.tuples(st.floats(min_value=0, max_value=3 * POLL), st.booleans()), max_size=60
    )
)
def test_list_calls_are_a_poll_interval_apart_unless_a_newer_instance_asks(
    looks: list[tuple[float, bool]],
) -> None:
    clock = ManualClock()
    client = CountingClient(clock)
    shared = SharedInstances(client, clock, max_age=POLL)
    previous_call = -math.inf
    for wait, new_instance in looks:
        clock.advance(wait)
        fresh_after = clock.now() if new_instance else -math.inf
        before = len(client.calls)
        shared(fresh_after)
        if len(client.calls) > before:
            assert clock.now() - previous_call >= POLL or fresh_after >= previous_call
            previous_call = clock.now()
    assert shared.served == len(looks)


class Account(CountingClient):
    """A client double that names its account, as ``Client.account_id`` does."""

    def __init__(self, clock: ManualClock, account: str) -> None:
        super().__init__(clock)
        self.account_id = account


def test_separate_run_job_calls_share_one_list_per_account_and_clock() -> None:
    """run_job calls in one process find the same shared list for the same account and clock;
    another account or another (virtual) clock gets its own, and every SystemClock is one."""
    clock = ManualClock()
    a1, a2 = Account(clock, "https://x#aaaa"), Account(clock, "https://x#aaaa")
    b = Account(clock, "https://x#bbbb")
    shared = shared_instances(a1, clock, POLL)
    assert shared_instances(a2, clock, POLL * 2) is shared
    assert shared.max_age == POLL  # only ever shortens
    assert shared_instances(a2, clock, POLL / 2).max_age == POLL / 2
    assert shared_instances(b, clock, POLL) is not shared
    assert shared_instances(a1, ManualClock(), POLL) is not shared
    assert shared_instances(a1, SystemClock(), POLL) is shared_instances(a2, SystemClock(), POLL)

    created = clock.now()
    clock.advance(1)
    for _ in range(3):
        for client in (a1, a2, a1, a2):  # four jobs of one account look in one interval
            shared(created, client=client)
        clock.advance(POLL)
    assert len(a1.calls) + len(a2.calls) == 3  # one list per interval for all of them


def test_a_shared_list_is_made_by_the_client_that_asks() -> None:
    """A finished job closes its client: the next list goes through the asker's own."""
    clock = ManualClock()
    first, second = Account(clock, "acct"), Account(clock, "acct")
    shared = shared_instances(first, clock, POLL)
    clock.advance(POLL)
    shared(clock.now() - 1, client=second)
    assert (first.calls, second.calls) == ([], [clock.now()])


def test_two_clients_of_one_account_share_a_list_and_never_show_the_key() -> None:
    from vastkit.api import Client

    clock = ManualClock()
    with Client("secret-key-1", base_url="http://vast.test", clock=clock) as one:
        with Client("secret-key-1", base_url="http://vast.test", clock=clock) as two:
            with Client("secret-key-2", base_url="http://vast.test", clock=clock) as other:
                assert "secret-key" not in one.account_id
                assert one.account_id == two.account_id != other.account_id
                assert shared_instances(one, clock, POLL) is shared_instances(two, clock, POLL)
                assert shared_instances(other, clock, POLL) is not shared_instances(
                    one, clock, POLL
                )


def test_a_queued_job_at_the_default_interval_polls_at_the_configured_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$VASTKIT_POLL_INTERVAL`` applies to queued jobs as to ``run_job``: the shared list is
    served for the configured interval, not the default 15 s (drivers would look every second
    at a list refreshed every 15 s)."""
    from vastkit.jobs import Job
    from vastkit.queue import JobQueue

    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", "1.5")
    clock = ManualClock()
    job = Job(name="q", command="true", profile="dev-test", store_url=tmp_path.as_uri())
    with JobQueue(tmp_path / "ledger.db", client=CountingClient(clock), clock=clock) as queue:  # type: ignore[arg-type]
        assert queue._shared_instances(job).max_age == 1.5

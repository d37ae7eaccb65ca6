"""Pacing is per account and process: Vast counts its minimum intervals per key, not per client.

Every :class:`~vastkit.api.Client` of the process on the same server and key (in any thread)
shares when each endpoint was last sent to and how long a 429 keeps it quiet. Clients on other
keys, and clients on other virtual clocks (another test's ``ManualClock``), do not wait for them;
every client on real time is one time line (each ``Client()`` makes its own ``SystemClock``).
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
import respx

from tests._support.api_factories import BASE, KEY
from vastkit.api import Client, CreateInstanceRequest
from vastkit.api._transport import PACING_MARGIN
from vastkit.clock import ManualClock, SystemClock
from vastkit.emulator import Emulator, Timings
from vastkit.errors import RateLimitError

LIST = "/api/v1/instances/"
EMPTY_LIST = {"success": True, "instances": [], "next_token": None}


def unique_key() -> str:
    """A key no other test uses (pacing on real time is shared by every test of the process)."""
    return f"vk-{uuid.uuid4().hex}"


@pytest.fixture
def sent(router: respx.Router, clock: ManualClock) -> list[tuple[str, float]]:
    """``(key, virtual time)`` of every list request the fake server answered."""
    times: list[tuple[str, float]] = []

    def record(request: httpx.Request) -> httpx.Response:
        times.append((request.headers["Authorization"].removeprefix("Bearer "), clock.now()))
        return httpx.Response(200, json=EMPTY_LIST)

    router.get(LIST).mock(side_effect=record)
    return times


def two_clients(
    http: httpx.Client, first: tuple[str, object], second: tuple[str, object]
) -> tuple[Client, Client]:
    (key_a, clock_a), (key_b, clock_b) = first, second
    return (
        Client(key_a, base_url=BASE, http_client=http, clock=clock_a),  # type: ignore[arg-type]
        Client(key_b, base_url=BASE, http_client=http, clock=clock_b),  # type: ignore[arg-type]
    )


def test_two_clients_on_one_key_pace_together(
    http: httpx.Client, clock: ManualClock, sent: list[tuple[str, float]]
) -> None:
    one, other = two_clients(http, (KEY, clock), (KEY, clock))
    with one, other:
        start = clock.now()
        one.list_instances()
        other.list_instances()  # waits for the first client's interval
        one.list_instances()
        assert other.stats.waited["list_instances"] == pytest.approx(1.0 * PACING_MARGIN)
    assert [t - start for _, t in sent] == pytest.approx([0.0, 1.1, 2.2])


def test_clients_on_two_keys_pace_apart(
    http: httpx.Client, clock: ManualClock, sent: list[tuple[str, float]]
) -> None:
    other_key = KEY.replace("SECRET", "OTHER")
    one, other = two_clients(http, (KEY, clock), (other_key, clock))
    with one, other:
        start = clock.now()
        one.list_instances()
        other.list_instances()
    assert sent == [(KEY, start), (other_key, start)]  # neither waited
    assert clock.slept == []


def test_one_key_on_another_server_paces_apart(clock: ManualClock) -> None:
    router = respx.Router(assert_all_called=True)
    router.get(f"{BASE}{LIST}").respond(json=EMPTY_LIST)
    router.get(f"https://other.test{LIST}").respond(json=EMPTY_LIST)
    with (
        httpx.Client(transport=httpx.MockTransport(router.handler)) as http,
        Client(KEY, base_url=BASE, http_client=http, clock=clock) as one,
        Client(KEY, base_url="https://other.test", http_client=http, clock=clock) as other,
    ):
        one.list_instances()
        other.list_instances()
    assert clock.slept == []


def test_clients_on_two_virtual_clocks_pace_apart(http: httpx.Client, router: respx.Router) -> None:
    """Two tests on one account, each with its own ManualClock, never wait for each other."""
    router.get(LIST).respond(json=EMPTY_LIST)
    first_clock, second_clock = ManualClock(), ManualClock()
    one, other = two_clients(http, (KEY, first_clock), (KEY, second_clock))
    with one, other:
        one.list_instances()
        other.list_instances()
        other.list_instances()
    assert first_clock.slept == []
    assert second_clock.slept == pytest.approx([1.0 * PACING_MARGIN])  # only its own interval


class _RealTimeNoSleep(SystemClock):
    """Real time (``SystemClock.now``) that records waits instead of sleeping them."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_clients_on_real_time_pace_together_whatever_clock_object_they_hold(
    http: httpx.Client, router: respx.Router
) -> None:
    """Each ``Client()`` makes its own SystemClock: on real time they are still one account."""
    router.get(LIST).respond(json=EMPTY_LIST)
    key = unique_key()
    first_clock, second_clock = _RealTimeNoSleep(), _RealTimeNoSleep()
    one, other = two_clients(http, (key, first_clock), (key, second_clock))
    with one, other:
        one.list_instances()
        other.list_instances()
    assert first_clock.slept == []
    [waited] = second_clock.slept
    assert 0.0 < waited <= 1.0 * PACING_MARGIN  # the first's interval, less the time since


def test_a_429_quiets_the_endpoint_for_every_client_of_the_key(
    http: httpx.Client, router: respx.Router, clock: ManualClock
) -> None:
    """Another client of the key learns the server's Retry-After from the first one's 429."""
    times: list[float] = []
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "slow"})])

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(clock.now())
        return next(answers, httpx.Response(200, json=EMPTY_LIST))

    router.get(LIST).mock(side_effect=answer)
    with (
        Client(KEY, base_url=BASE, http_client=http, clock=clock, max_retries=0) as one,
        Client(KEY, base_url=BASE, http_client=http, clock=clock) as other,
    ):
        start = clock.now()
        with pytest.raises(RateLimitError):
            one.list_instances()  # not retried: the other client is the one that waits
        other.list_instances()
    assert [t - start for t in times] == [0.0, 7.0]  # not 1.1: the server asked for 7


def test_a_create_answered_429_quiets_creates_for_the_key(
    http: httpx.Client, router: respx.Router, clock: ManualClock
) -> None:
    """A create is never retried by the client, but its 429 still keeps every create away."""
    times: list[float] = []
    answers = iter([httpx.Response(429, headers={"Retry-After": "20"}, json={"detail": "slow"})])

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(clock.now())
        return next(answers, httpx.Response(200, json={"success": True, "new_contract": 9}))

    router.put(url__regex=r"/api/v0/asks/\d+/").mock(side_effect=answer)
    request = CreateInstanceRequest(image="img")
    one, other = two_clients(http, (KEY, clock), (KEY, clock))
    with one, other:
        start = clock.now()
        with pytest.raises(RateLimitError):
            one.create_instance(5, request)
        assert other.create_instance(6, request).id == 9
    assert [t - start for t in times] == [0.0, 20.0]  # not 4.95: the server asked for 20


# --- many threads against the emulator's documented limits ------------------------------------


class LockstepClock:
    """Virtual time for several threads: a participant that sleeps waits until every
    participant sleeps (or has left), then the time jumps to the earliest wake-up.

    So threads sleep alongside each other, as on real time, and a request goes out exactly at
    the virtual time its thread woke for, however busy the machine is.
    """

    def __init__(self, participants: int, start: float = 1_767_225_600.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._awake = participants
        self._wakes: dict[int, float] = {}

    def now(self) -> float:
        with self._cond:
            return self._now

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        me = threading.get_ident()
        deadline = time.monotonic() + 60.0  # a hang guard, never reached when all is well
        with self._cond:
            self._wakes[me] = self._now + seconds
            self._awake -= 1
            self._advance()
            while me in self._wakes:
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise AssertionError("lockstep clock: a participant never slept")

    def leave(self) -> None:
        with self._cond:
            self._awake -= 1
            self._advance()

    def _advance(self) -> None:
        if self._awake > 0 or not self._wakes:
            return
        self._now = max(self._now, min(self._wakes.values()))
        for ident in [i for i, wake in self._wakes.items() if wake <= self._now]:
            del self._wakes[ident]
            self._awake += 1
        self._cond.notify_all()


def test_many_threads_on_one_key_never_meet_a_429() -> None:
    """Six threads, each with its own Client on the key, list and show as fast as pacing lets
    them: the emulator (documented limits: list 1 s, show 2 s per key) never answers 429."""
    threads_n, rounds = 6, 3
    clock = LockstepClock(threads_n)
    errors: list[BaseException] = []
    with Emulator(0, offers=50, clock=clock, timings=Timings(provision_s=1, loading_s=1)) as emu:
        with emu.client() as http:
            offer = emu.search({"limit": 1})[0]
            created = http.put(f"/api/v0/asks/{offer['id']}/", json={"image": "x"})
            instance_id = created.json()["new_contract"]
        start, before = clock.now(), len(emu.requests)
        with emu.client() as http:
            clients = [
                Client(emu.api_key, base_url=emu.url, http_client=http, clock=clock)
                for _ in range(threads_n)
            ]

            def work(client: Client) -> None:
                try:
                    for _ in range(rounds):
                        client.list_instances()
                        client.get_instance(instance_id)
                except BaseException as exc:
                    errors.append(exc)
                finally:
                    clock.leave()

            threads = [threading.Thread(target=work, args=(c,)) for c in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            for client in clients:
                client.close()
        answered = emu.requests[before:]
    assert not errors, errors
    assert len(answered) == 2 * threads_n * rounds
    assert [status for _, _, status in answered if status == 429] == []
    assert sum(c.stats.total_rate_limited for c in clients) == 0
    # the slowest endpoint sets the pace: 18 shows at least 2.2 s apart
    assert clock.now() - start >= (threads_n * rounds - 1) * 2.0 * PACING_MARGIN - 1e-6

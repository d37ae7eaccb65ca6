"""Benchmark 2, API economy: Vast API requests to watch N concurrent jobs.

Part A, one watcher for N running instances. Each watcher polls every 15 s for the same
virtual time, against its own emulator (same seed, the documented per-endpoint rate limits ON)
in virtual time (:class:`vastkit.clock.ManualClock`):

* ``vastkit``: one paged ``GET /api/v1/instances/`` per poll through
  :meth:`vastkit.api.client.Client.list_instances`, keeping the instances whose label has the
  ``vastkit/`` prefix (the pattern of the design notes, step 6).
* ``sdk``: the official SDK's own ``VastAI(...).show_instances()`` (``vastai`` 1.9.1, the real
  package code, not a copy): it pages ``GET /api/v1/instances/`` 25 rows at a time with
  ``requests``, retrying 429/502-504 up to 3 tries (0.15 s x1.5, or ``Retry-After``). It talks
  to the emulator served on loopback HTTP; the poll interval is virtual (the emulator's clock
  moves 15 s between polls), and the SDK's own retry waits are real ``time.sleep`` calls that do
  not move the emulator's clock, so a 429 it gets would stay a 429 (a failed poll) here. This is
  the headline baseline.
* secondary, a per-instance loop (what the old baseline was): ``show instance``
  (``GET /api/v0/instances/{id}/``) for each instance on every poll, with the SDK's retry
  schedule and no pacing (``sdk-loop``), and the same loop through vastkit's paced
  ``Client.get_instance`` (``paced-loop``: never a 429, but a round takes N x the endpoint's 2 s
  interval, so each instance is seen less often than the poll interval asks).

Every figure is counted on the wire: requests sent (retries included) and 429 answers, from the
emulator's own request log. In-process watchers' requests take 0.25 virtual seconds each on the
wire, so a loop's requests spread over time as they would against the real API.

Part B, N real :func:`vastkit.run_job` calls in one process (one thread each, each with its own
:class:`~vastkit.api.client.Client` on the same key, as ``run_job(job)`` without ``client=``
makes; one ledger file), against one emulator (rate limits on, in-process transport) in shared
virtual time (:class:`ThreadsClock`: a thread's ``sleep`` returns when every job thread is
asleep and the time has reached its wake-up). A simulated worker writes each attempt's heartbeat
every 10 s. Once every job has seen its worker ready, the window opens; ``GET
/api/v1/instances/`` requests are counted over it from the emulator's request log and timed on
the wire (target: consecutive lists at least one poll interval apart, i.e. at most one list in
any poll interval). Then every job is given its result and ends. The whole run's requests
(start-up and ending included) are reported beside, and the same run with one ``Client`` shared
by all 20 jobs. The only thing changed in vastkit's objects is the shared list's lock, swapped
for one whose waiters wait in virtual time (:class:`_ClockLock`; the list logic is untouched).
All jobs start at the same virtual instant, so their start-up requests collide at once.

Part C (full mode only, real time): the SDK's ``show_instances()`` and vastkit's list with 30
instances (two pages) over loopback HTTP against the emulator's 1 s list limit.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest
from vastkit.clock import ManualClock, SystemClock
from vastkit.emulator import Emulator, Timings
from vastkit.errors import RateLimitError
from vastkit.jobs import Job, JobEvent, JobResult, JobTimeouts, run_job
from vastkit.jobs.polling import shared_instances
from vastkit.labels import parse_label
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile
from vastkit.rundir import AttemptResult, Heartbeat, Phase, ResultStatus, RunDir

SDK_TRIES = 3
SDK_DELAY = 0.15
SDK_MULTIPLIER = 1.5
LATENCY_S = 0.25
"""Virtual seconds each in-process request takes on the wire (applied to every watcher alike)."""
HEARTBEAT_S = 10.0
"""The simulated worker's heartbeat interval (the worker's default)."""
JOB_PROFILE = GpuProfile(
    name="bench-api",
    gpu_name=("RTX_3090", "RTX_4090", "RTX_A5000", "RTX_A6000"),
    max_dph=0.6,
    max_duration_hours=24,
    disk_gb=16,
)
"""An on-demand profile the seed-0 catalog of 2,000 offers has well over 20 offers for."""


class ThreadsClock:
    """Virtual time shared by several threads, each sleeping as if the others ran alongside.

    A participating thread (:meth:`join`) that sleeps waits until every participant sleeps;
    then the time jumps to the earliest wake-up and those threads go on. So 20 jobs that each
    sleep 15 s see 15 s pass, not 300 s (as they would on one :class:`ManualClock`).

    A participant can wait on something other than the clock while another sleeps holding it (a
    lock around a paced request): when no participant has touched the clock for ``stall_s`` real
    seconds and some sleep, the time moves on to the earliest wake-up anyway. Those moves are
    counted in :attr:`stalls` (the run is exact when it stays 0).

    Args:
        start: The initial time in Unix seconds (2026-01-01 UTC).
        stall_s: Real seconds without any clock call after which the time moves on.
    """

    def __init__(self, start: float = 1_767_225_600.0, stall_s: float = 2.0) -> None:
        self._now = float(start)
        self._cond = threading.Condition()
        self._members: set[int] = set()
        self._wakes: dict[int, float] = {}
        self._blocked: dict[int, _ClockLock] = {}
        self._activity = 0
        self.stall_s = stall_s
        self.stalls = 0
        """Times the clock moved on while a participant was not asleep (see the class doc)."""

    def now(self) -> float:
        """The virtual time."""
        with self._cond:
            self._activity += 1
            return self._now

    def join(self) -> None:
        """Make the calling thread a participant (its sleeps wait for the others)."""
        with self._cond:
            self._members.add(threading.get_ident())

    def leave(self) -> None:
        """The calling thread stops participating (the others no longer wait for it)."""
        with self._cond:
            self._members.discard(threading.get_ident())
            self._wakes.pop(threading.get_ident(), None)
            self._activity += 1
            self._advance_if_all_asleep()
            self._cond.notify_all()

    def _advance_to_next(self) -> None:
        self._now = max(self._now, min(self._wakes.values()))
        for ident in [i for i, wake in self._wakes.items() if wake <= self._now]:
            del self._wakes[ident]
        self._activity += 1
        self._cond.notify_all()

    def _advance_if_all_asleep(self) -> None:
        waiting = sum(1 for lock in self._blocked.values() if lock.locked())
        if self._wakes and len(self._wakes) + waiting >= len(self._members):
            self._advance_to_next()

    def blocked(self, lock: _ClockLock, waiting: bool) -> None:
        """The calling thread starts (``waiting``) or stops waiting for ``lock``."""
        with self._cond:
            if waiting:
                self._blocked[threading.get_ident()] = lock
            else:
                self._blocked.pop(threading.get_ident(), None)
            self._activity += 1
            self._advance_if_all_asleep()
            self._cond.notify_all()

    def released(self) -> None:
        """A lock some participant may wait for was released."""
        with self._cond:
            self._activity += 1
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time (a non-participant advances the time itself)."""
        if seconds <= 0:
            return
        me = threading.get_ident()
        with self._cond:
            if me not in self._members:
                self._now += seconds
                self._activity += 1
                self._cond.notify_all()
                return
            self._wakes[me] = self._now + seconds
            self._activity += 1
            self._advance_if_all_asleep()
            while me in self._wakes:
                seen = self._activity
                self._cond.wait(self.stall_s)
                if me not in self._wakes:
                    break
                if self._activity == seen:  # nobody touched the clock: someone is blocked
                    self.stalls += 1
                    self._advance_to_next()
                else:
                    self._advance_if_all_asleep()


class _ClockLock:
    """A lock whose waiters count as asleep for a :class:`ThreadsClock` while it is held.

    Put in place of the shared instance list's lock: a job that holds it while its list request
    waits out a 429 (asleep on the clock) keeps the other jobs waiting for the lock, and they
    wait for virtual time to pass, not for each other.
    """

    def __init__(self, clock: ThreadsClock) -> None:
        self._lock = threading.Lock()
        self._clock = clock

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        if not self._lock.acquire(blocking=False):
            self._clock.blocked(self, True)
            try:
                self._lock.acquire()
            finally:
                self._clock.blocked(self, False)
        return True

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        self._clock.released()


class _Latency(httpx.BaseTransport):
    """The emulator's in-process transport, with each request taking ``latency`` virtual s."""

    def __init__(self, inner: httpx.BaseTransport, clock: ManualClock, latency: float) -> None:
        self.inner, self.clock, self.latency = inner, clock, latency

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.clock.sleep(self.latency / 2)
        response = self.inner.handle_request(request)
        self.clock.sleep(self.latency / 2)
        return response


def _http(emu: Emulator, clock: ManualClock) -> httpx.Client:
    return httpx.Client(
        base_url=emu.url,
        transport=_Latency(emu.transport, clock, LATENCY_S),
        headers={"Authorization": f"Bearer {emu.api_key}"},
    )


def _world(seed: int, jobs: int) -> tuple[Emulator, ManualClock, list[int]]:
    """An emulator with ``jobs`` running instances labelled ``vastkit/<run>/1``."""
    clock = ManualClock()
    emu = Emulator(seed=seed, clock=clock, offers=max(600, jobs * 20))
    with Client(emu.api_key, base_url=emu.url, http_client=emu.client(), clock=clock) as setup:
        offers = setup.search_offers("rentable=true num_gpus=1", order="dph+", limit=jobs * 3)
        ids = []
        for i, offer in enumerate(offers[:jobs]):
            request = CreateInstanceRequest(
                image="pytorch/pytorch", label=f"vastkit/bench{i:03d}/1", disk_gb=16
            )
            ids.append(setup.create_instance(offer.id, request).id)
    if len(ids) != jobs:
        raise RuntimeError(f"the emulator had only {len(ids)} offers for {jobs} jobs")
    clock.sleep(120.0)  # every instance running, every rate-limit window clear
    emu.tick()
    return emu, clock, ids


def _wire(emu: Emulator, since: int) -> tuple[int, int]:
    """Requests answered and 429s among them since index ``since`` of the emulator's log."""
    log = emu.requests[since:]
    return len(log), sum(1 for _, _, status in log if status == 429)


def watch_vastkit(seed: int, jobs: int, hours: float, poll: float) -> dict[str, Any]:
    emu, clock, _ = _world(seed, jobs)
    start_idx = len(emu.requests)
    end = clock.now() + hours * 3600.0
    polls = failed = 0
    seen_per_poll: list[int] = []
    rounds = 0
    wall = time.perf_counter()
    with Client(emu.api_key, base_url=emu.url, http_client=_http(emu, clock), clock=clock) as vast:
        while clock.now() < end:
            t0 = clock.now()
            try:
                ours = [i for i in vast.list_instances() if parse_label(i.label) is not None]
                seen_per_poll.append(len(ours))
            except RateLimitError:
                failed += 1
            polls += 1
            rounds += 1
            clock.sleep(max(0.0, poll - (clock.now() - t0)))
        stats = vast.stats.snapshot()
    requests, limited = _wire(emu, start_idx)
    emu.close()
    return {
        "method": "vastkit: one paged list per poll",
        "polls": polls,
        "requests": requests,
        "requests_per_hour": requests / hours,
        "rate_limited": limited,
        "failed_polls": failed,
        "instances_seen_min": min(seen_per_poll) if seen_per_poll else 0,
        "mean_staleness_s": hours * 3600.0 / max(rounds, 1),
        "client_stats": stats,
        "wall_s": time.perf_counter() - wall,
    }


def watch_sdk_show_instances(seed: int, jobs: int, hours: float, poll: float) -> dict[str, Any]:
    """The official SDK's own ``show_instances()`` once per poll, over loopback HTTP."""
    import requests  # the official SDK's HTTP library, installed with it
    from vastai import VastAI  # type: ignore[import-untyped]  # the dev extra: vastai 1.9.1

    emu, clock, _ = _world(seed, jobs)
    emu.serve()
    start_idx = len(emu.requests)
    end = clock.now() + hours * 3600.0
    polls = failed = 0
    seen_per_poll: list[int] = []
    wall = time.perf_counter()
    sdk = VastAI(api_key=emu.api_key, server_url=emu.url, quiet=True)
    while clock.now() < end:
        try:
            rows = sdk.show_instances()
            seen_per_poll.append(sum(1 for r in rows if parse_label(r.get("label")) is not None))
        except requests.HTTPError:
            failed += 1
        polls += 1
        clock.sleep(poll)
    requests_made, limited = _wire(emu, start_idx)
    emu.close()
    return {
        "method": "official SDK 1.9.1: VastAI.show_instances() per poll",
        "polls": polls,
        "requests": requests_made,
        "requests_per_hour": requests_made / hours,
        "rate_limited": limited,
        "failed_polls": failed,
        "instances_seen_min": min(seen_per_poll) if seen_per_poll else 0,
        "mean_staleness_s": hours * 3600.0 / max(polls, 1),
        "wall_s": time.perf_counter() - wall,
    }


def watch_sdk_loop(seed: int, jobs: int, hours: float, poll: float) -> dict[str, Any]:
    """The per-instance loop with the official SDK's retry schedule (no pacing)."""
    emu, clock, ids = _world(seed, jobs)
    start_idx = len(emu.requests)
    end = clock.now() + hours * 3600.0
    polls = failed = rounds = 0
    wall = time.perf_counter()
    with _http(emu, clock) as http:
        while clock.now() < end:
            t0 = clock.now()
            for instance_id in ids:
                polls += 1
                for attempt in range(SDK_TRIES):
                    response = http.get(f"/api/v0/instances/{instance_id}/", params={"owner": "me"})
                    if response.status_code != 429:
                        break
                    if attempt + 1 < SDK_TRIES:
                        clock.sleep(SDK_DELAY * SDK_MULTIPLIER**attempt)
                else:
                    failed += 1
            rounds += 1
            clock.sleep(max(0.0, poll - (clock.now() - t0)))
    requests, limited = _wire(emu, start_idx)
    emu.close()
    return {
        "method": "official-SDK loop: show instance per job per poll",
        "polls": polls,
        "requests": requests,
        "requests_per_hour": requests / hours,
        "rate_limited": limited,
        "failed_polls": failed,
        "mean_staleness_s": hours * 3600.0 / max(rounds, 1),
        "wall_s": time.perf_counter() - wall,
    }


def watch_paced_loop(seed: int, jobs: int, hours: float, poll: float) -> dict[str, Any]:
    """The per-instance loop through vastkit's paced client (no 429, slower rounds)."""
    emu, clock, ids = _world(seed, jobs)
    start_idx = len(emu.requests)
    end = clock.now() + hours * 3600.0
    polls = failed = rounds = 0
    wall = time.perf_counter()
    with Client(emu.api_key, base_url=emu.url, http_client=_http(emu, clock), clock=clock) as vast:
        while clock.now() < end:
            t0 = clock.now()
            for instance_id in ids:
                polls += 1
                try:
                    vast.get_instance(instance_id)
                except RateLimitError:
                    failed += 1
            rounds += 1
            clock.sleep(max(0.0, poll - (clock.now() - t0)))
    requests, limited = _wire(emu, start_idx)
    emu.close()
    return {
        "method": "per-instance loop, paced by vastkit's client",
        "polls": polls,
        "requests": requests,
        "requests_per_hour": requests / hours,
        "rate_limited": limited,
        "failed_polls": failed,
        "mean_staleness_s": hours * 3600.0 / max(rounds, 1),
        "wall_s": time.perf_counter() - wall,
    }


class _Recorder(httpx.BaseTransport):
    """The emulator's in-process transport, noting the virtual time of every instance list."""

    def __init__(self, inner: httpx.BaseTransport, clock: ThreadsClock, lists: list[float]):
        self.inner, self.clock, self.lists = inner, clock, lists

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.rstrip("/") == "/api/v1/instances":
            self.lists.append(self.clock.now())
        return self.inner.handle_request(request)


class _Workers:
    """Plays the worker of every running attempt: a heartbeat each 10 s, a result on demand."""

    def __init__(self, emu: Emulator, store: str) -> None:
        self.emu, self.store = emu, store
        self.beaten: dict[int, float] = {}
        self.finished = False

    def __call__(self, now: float) -> None:
        self.emu.tick()
        for view in self.emu.instances:
            parsed = parse_label(view.label)
            if parsed is None or view.actual_status != "running":
                continue
            run_id, attempt = parsed
            rundir = RunDir(f"{self.store}/{run_id}")
            if self.finished:
                rundir.write_attempt_result(
                    AttemptResult(
                        attempt=attempt,
                        status=ResultStatus.SUCCEEDED,
                        exit_code=0,
                        ended_at=now,
                        step=100,
                        checkpoint_step=100,
                        reason="the command exited 0",
                    )
                )
            elif now - self.beaten.get(view.id, -math.inf) >= HEARTBEAT_S:
                self.beaten[view.id] = now
                rundir.write_heartbeat(
                    Heartbeat(attempt=attempt, time=now, phase=Phase.RUNNING, step=1)
                )


def pages_real_time(seed: int, instances: int, polls: int) -> dict[str, Any]:
    """The SDK's ``show_instances()`` and vastkit's list with more than one page (25 rows),
    in real time over loopback HTTP against the emulator's 1 s list limit.

    The instances are made with the create and search limits off (setup only); every poll of
    either starts with the list limit's window clear.
    """
    import requests
    from vastai import VastAI

    emu = Emulator(
        seed=seed,
        clock=SystemClock(),
        offers=600,
        timings=Timings(provision_s=0.0, loading_s=0.0),
        rate_limits={"create": 0.0, "search": 0.0},
    )
    with (
        emu.client() as http,
        Client(emu.api_key, base_url=emu.url, http_client=http, min_intervals={}) as setup,
    ):
        offers = setup.search_offers("rentable=true num_gpus=1", order="dph+", limit=instances * 2)
        for i, offer in enumerate(offers[:instances]):
            request = CreateInstanceRequest(
                image="pytorch/pytorch", label=f"vastkit/page{i:03d}/1", disk_gb=16
            )
            setup.create_instance(offer.id, request)
    emu.serve()
    out: dict[str, Any] = {"instances": instances, "polls": polls}
    sdk = VastAI(api_key=emu.api_key, server_url=emu.url, quiet=True)
    with Client(emu.api_key, base_url=emu.url) as vast:
        for name, poll_once, errors in (
            ("sdk", sdk.show_instances, requests.HTTPError),
            ("vastkit", vast.list_instances, RateLimitError),
        ):
            start, failed, seen = len(emu.requests), 0, 0
            for _ in range(polls):
                time.sleep(1.2)  # the list limit's window is clear
                try:
                    seen = len(poll_once())
                except errors:
                    failed += 1
            made, limited = _wire(emu, start)
            out[name] = {"requests": made, "rate_limited": limited, "failed_polls": failed}
            out[name]["instances_seen"] = seen
    emu.close()
    return out


def _count(log: list[tuple[str, str, int]], status: int | None = None) -> dict[str, int]:
    """Requests of the emulator's log by endpoint (only those answered ``status``, if given)."""
    out: dict[str, int] = {}
    for _, endpoint, answered in log:
        if status is None or answered == status:
            out[endpoint] = out.get(endpoint, 0) + 1
    return dict(sorted(out.items()))


def shared_run_jobs(
    seed: int, jobs: int, window_s: float, poll: float, *, one_client: bool = False
) -> dict[str, Any]:
    """``jobs`` real ``run_job`` calls on threads of this process; lists counted over a window
    that opens once every job has seen its worker ready and lasts ``window_s`` virtual s.

    Each job has its own :class:`Client` on the account's key (what ``run_job(job)`` makes
    without ``client=``), or with ``one_client`` all share one (one pacing for all).
    """
    clock = ThreadsClock()
    wall = time.perf_counter()
    lists: list[float] = []
    results: dict[int, JobResult | BaseException] = {}
    ready: set[int] = set()
    ready_lock = threading.Lock()
    window: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vastkit-bench-api-") as tmp:
        store = f"file://{Path(tmp) / 'store'}"
        emu = Emulator(seed=seed, clock=clock, offers=2000, credit=1e6)
        workers = _Workers(emu, store)
        job_spec = Job(
            name="bench-api",
            command="python train.py",
            profile=JOB_PROFILE,
            store_url=store,
            timeouts=JobTimeouts(poll_interval=poll),
        )
        with (
            emu.client() as http,
            Client(emu.api_key, base_url=emu.url, http_client=http, clock=clock) as probe,
        ):
            shared = shared_instances(probe, clock, poll)  # the list every job will share
        # the one change to vastkit's objects: a job waiting for the shared list's lock while
        # another's list request waits out a 429 waits in virtual time (see _ClockLock)
        shared._lock = _ClockLock(clock)  # type: ignore[assignment]

        https: list[httpx.Client] = []

        def new_client() -> Client:
            http = httpx.Client(base_url=emu.url, transport=_Recorder(emu.transport, clock, lists))
            https.append(http)
            return Client(emu.api_key, base_url=emu.url, http_client=http, clock=clock)

        common = new_client()

        def own_client() -> Client:
            return common if one_client else new_client()

        def one(n: int) -> None:
            clock.join()
            try:

                def on_event(event: JobEvent) -> None:
                    if event.kind == "worker_ready":
                        with ready_lock:
                            ready.add(n)

                client = own_client()
                with (
                    contextlib.nullcontext() if one_client else client,
                    Ledger(Path(tmp) / "ledger.db", clock=clock) as ledger,
                ):
                    results[n] = run_job(
                        job_spec,
                        client=client,
                        ledger=ledger,
                        clock=clock,
                        on_event=on_event,
                        progress=False,
                    )
            except BaseException as exc:  # reported in the result, never hangs the others
                results[n] = exc
            finally:
                clock.leave()

        def world() -> None:
            clock.join()
            try:
                while len(results) < jobs:
                    clock.sleep(5.0)
                    now = clock.now()
                    workers(now)
                    with ready_lock:
                        all_ready = len(ready) == jobs
                    if "start" not in window and all_ready:
                        window["start"] = now
                        window["start_idx"] = len(emu.requests)
                        window["start_lists"] = len(lists)
                        window["start_served"] = shared.served
                        window["start_calls"] = shared.calls
                    if (
                        "start" in window
                        and "end" not in window
                        and now >= window["start"] + window_s
                    ):
                        window["end"] = now
                        window["end_idx"] = len(emu.requests)
                        window["end_lists"] = len(lists)
                        window["end_served"] = shared.served
                        workers.finished = True
                    if now - clock_start > 6 * 3600:  # safety: never spin forever
                        workers.finished = True
            finally:
                clock.leave()

        clock_start = clock.now()
        threads = [
            threading.Thread(target=one, args=(n,), name=f"bench-job-{n}") for n in range(jobs)
        ]
        threads.append(threading.Thread(target=world, name="bench-workers"))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        common.close()
        for http in https:
            http.close()
        log = emu.requests
        emu.close()
    failures = {n: repr(r) for n, r in results.items() if isinstance(r, BaseException)}
    statuses = sorted({str(r.status) for r in results.values() if isinstance(r, JobResult)})
    if "end" not in window:
        raise RuntimeError(
            f"the {jobs} jobs never all ran at once (ready: {len(ready)}, failures: {failures}, "
            f"statuses: {statuses})"
        )
    span = window["end"] - window["start"]
    intervals = span / poll
    in_window = lists[int(window["start_lists"]) : int(window["end_lists"])]
    start_idx, end_idx = int(window["start_idx"]), int(window["end_idx"])
    by_endpoint = _count(log[start_idx:end_idx])
    gaps = [b - a for a, b in itertools.pairwise(in_window)]
    looks = window["end_served"] - window["start_served"]
    return {
        "jobs": jobs,
        "poll_interval_s": poll,
        "window_s": span,
        "intervals": intervals,
        "lists_in_window": by_endpoint.get("list", 0),
        "lists_timed": len(in_window),
        "lists_per_interval": by_endpoint.get("list", 0) / intervals,
        "min_gap_s": min(gaps) if gaps else math.inf,
        "looks_in_window": looks,
        "looks_per_interval": looks / intervals,
        "requests_in_window": by_endpoint,
        "requests_before_window": _count(log[:start_idx]),
        "requests_after_window": _count(log[end_idx:]),
        "rate_limited_before_window": _count(log[:start_idx], status=429),
        "rate_limited_after_window": _count(log[end_idx:], status=429),
        "lists_total": sum(1 for _, e, _ in log if e == "list"),
        "requests_total": len(log),
        "rate_limited_total": sum(1 for _, _, s in log if s == 429),
        "statuses": statuses,
        "failures": failures,
        "clock_stalls": clock.stalls,
        "virtual_s": window["end"] - clock_start,
        "wall_s": time.perf_counter() - wall,
        "shared_lists_before_window": window["start_calls"],
    }


def run(*, quick: bool, seed: int = 0, jobs: int = 20, poll: float = 15.0) -> dict[str, Any]:
    """Run the watchers and the shared-poll measurement, and compare them.

    Args:
        quick: Watch 15 virtual minutes instead of one hour, the ``run_job`` calls over a
            10-minute window instead of 30 minutes, and skip the real-time paging check.
        seed: The emulator's seed.
        jobs: Concurrent jobs (instances) to watch.
        poll: Seconds between polls (``JobTimeouts.poll_interval``'s default).
    """
    hours = 0.25 if quick else 1.0
    window = 600.0 if quick else 1800.0
    return summarize(
        vastkit=watch_vastkit(seed, jobs, hours, poll),
        sdk=watch_sdk_show_instances(seed, jobs, hours, poll),
        sdk_loop=watch_sdk_loop(seed, jobs, hours, poll),
        paced_loop=watch_paced_loop(seed, jobs, hours, poll),
        shared=shared_run_jobs(seed, jobs, window, poll),
        one_client=shared_run_jobs(seed, jobs, window, poll, one_client=True),
        pages=None if quick else pages_real_time(seed, 30, 3),  # real time: not in CI
        jobs=jobs,
        poll=poll,
        hours=hours,
    )


def shared_met(shared: dict[str, Any]) -> bool:
    """At most one list in any poll interval (consecutive lists at least one interval apart),
    every job succeeded."""
    return bool(
        shared["min_gap_s"] >= shared["poll_interval_s"] - 1e-6
        and not shared["failures"]
        and shared["statuses"] == ["succeeded"]
    )


def summarize(
    *,
    vastkit: dict[str, Any],
    sdk: dict[str, Any],
    sdk_loop: dict[str, Any],
    paced_loop: dict[str, Any],
    shared: dict[str, Any],
    one_client: dict[str, Any],
    pages: dict[str, Any] | None = None,
    jobs: int,
    poll: float,
    hours: float,
) -> dict[str, Any]:
    """The benchmark's result from its measurements, with the targets of issue 19 judged."""
    ratio = vastkit["requests"] / sdk["requests"]
    watcher_met = ratio <= 1.0 and vastkit["failed_polls"] == 0
    return {
        "jobs": jobs,
        "poll_interval_s": poll,
        "virtual_hours": hours,
        "vastkit": vastkit,
        "sdk": sdk,
        "sdk_loop": sdk_loop,
        "paced_loop": paced_loop,
        "shared_run_job": shared,
        "shared_run_job_one_client": one_client,
        "pages_real_time": pages,
        "ratio_vs_sdk": ratio,
        "ratio_vs_sdk_loop": vastkit["requests"] / sdk_loop["requests"],
        "ratio_vs_paced_loop": vastkit["requests"] / paced_loop["requests"],
        "latency_s": LATENCY_S,
        "targets": {
            "watcher: vastkit requests <= the SDK's show_instances(), no failed poll": watcher_met,
            f"{jobs} run_job calls: one list per poll interval in total": shared_met(shared),
        },
        "target_met": watcher_met and shared_met(shared),
    }


def _verdict(met: bool, missed: str) -> str:
    return "met" if met else f"MISSED: {missed}"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, target/verdict) rows for the runner's table."""
    v, s, lo, p = result["vastkit"], result["sdk"], result["sdk_loop"], result["paced_loop"]
    sh = result["shared_run_job"]
    jobs, poll = result["jobs"], result["poll_interval_s"]
    ratio = result["ratio_vs_sdk"]
    watcher_met = ratio <= 1.0 and v["failed_polls"] == 0
    extra_lists = sh["lists_in_window"] - math.floor(sh["intervals"])
    return [
        (f"requests/h, {jobs} jobs: vastkit list", f"{v['requests_per_hour']:.0f}", ""),
        (f"requests/h, {jobs} jobs: SDK show_instances()", f"{s['requests_per_hour']:.0f}", ""),
        (
            "vastkit / SDK show_instances()",
            f"{ratio:.3f}x",
            "<= 1.0x, 0 failed polls: "
            + _verdict(watcher_met, f"{ratio:.2f}x, {v['failed_polls']} failed polls"),
        ),
        (
            "secondary: requests/h, per-instance show loop (SDK retries / paced)",
            f"{lo['requests_per_hour']:.0f} / {p['requests_per_hour']:.0f}",
            f"vastkit = {result['ratio_vs_sdk_loop']:.3f}x / {result['ratio_vs_paced_loop']:.3f}x",
        ),
        (
            "429s: vastkit / SDK / loop / paced",
            f"{v['rate_limited']} / {s['rate_limited']} / {lo['rate_limited']} / "
            f"{p['rate_limited']}",
            "",
        ),
        (
            "failed polls: vastkit / SDK / loop / paced",
            f"{v['failed_polls']} / {s['failed_polls']} / {lo['failed_polls']} / "
            f"{p['failed_polls']}",
            "",
        ),
        (
            f"{jobs} run_job calls: lists per {poll:g} s interval",
            f"{sh['lists_per_interval']:.3f}",
            "<= 1 (+1 at the window's edge): "
            + _verdict(
                sh["lists_in_window"] <= math.floor(sh["intervals"]) + 1,
                f"{extra_lists} extra",
            )
            + f"; {sh['lists_in_window']} lists in {sh['intervals']:.1f} intervals",
        ),
        (
            f"{jobs} run_job calls: shortest gap between lists",
            f"{sh['min_gap_s']:.1f} s",
            f">= {poll:g} s: "
            + _verdict(
                shared_met(sh),
                f"{sh['min_gap_s']:.1f} s, statuses {sh['statuses']}, failures {sh['failures']}",
            ),
        ),
        (
            f"{jobs} run_job calls: job looks per interval (lists without sharing)",
            f"{sh['looks_per_interval']:.1f}",
            "",
        ),
        *[
            (
                f"{jobs} run_job calls, {how}: whole run",
                f"{r['requests_total']} req",
                f"window {r['lists_per_interval']:.2f} lists/interval; "
                f"{r['lists_total']} lists, {r['rate_limited_total']} 429s; before the window "
                f"{sum(r['requests_before_window'].values())} req "
                f"({sum(r['rate_limited_before_window'].values())} 429s)",
            )
            for how, r in (
                ("a Client each", sh),
                ("one Client", result["shared_run_job_one_client"]),
            )
        ],
        *_page_rows(result.get("pages_real_time")),
    ]


def _page_rows(pages: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    if pages is None:
        return []
    s, v = pages["sdk"], pages["vastkit"]
    return [
        (
            f"{pages['instances']} instances (2 pages), real time: failed polls SDK / vastkit",
            f"{s['failed_polls']} / {v['failed_polls']} of {pages['polls']}",
            f"requests {s['requests']} / {v['requests']}, "
            f"429s {s['rate_limited']} / {v['rate_limited']}",
        )
    ]


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1, default=str))

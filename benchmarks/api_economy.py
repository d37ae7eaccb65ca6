"""Benchmark 2, API economy: Vast API requests per hour to watch N concurrent jobs.

Three ways to watch the same N running instances for the same virtual time, each against its own
emulator (same seed, the documented per-endpoint rate limits ON) in virtual time
(:class:`vastkit.clock.ManualClock`):

* ``vastkit``: one paged ``GET /api/v1/instances/`` per poll through
  :meth:`vastkit.api.client.Client.list_instances`, keeping the instances whose label has the
  ``vastkit/`` prefix (the pattern of the design notes, step 6).
* ``sdk-loop``: what the official SDK invites: ``show instance`` (``GET /api/v0/instances/{id}/``)
  for each instance on every poll, with the SDK's own retry schedule on 429 (3 tries, 0.15 s x1.5
  backoff, no pacing). A poll of an instance that still gets 429 after its tries is a failed poll
  (in a script, an exception).
* ``paced-loop``: the same per-instance loop through vastkit's paced ``Client.get_instance``
  (never a 429, but each round takes N x the endpoint's 2 s interval, so instances are seen less
  often than the poll interval asks).

Every figure is counted on the wire: requests sent (retries included) and 429 answers, from the
emulator's own request log. Each request takes 0.25 virtual seconds on the wire (for all three
alike), so a loop's requests spread over time as they would against the real API.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator
from vastkit.errors import RateLimitError
from vastkit.labels import parse_label

SDK_TRIES = 3
SDK_DELAY = 0.15
SDK_MULTIPLIER = 1.5
LATENCY_S = 0.25
"""Virtual seconds each request takes on the wire (applied to every watcher alike)."""


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


def run(*, quick: bool, seed: int = 0, jobs: int = 20, poll: float = 15.0) -> dict[str, Any]:
    """Run the three watchers and compare them.

    Args:
        quick: Watch 15 virtual minutes instead of one hour.
        seed: The emulator's seed.
        jobs: Concurrent jobs (instances) to watch.
        poll: Seconds between polls (``JobTimeouts.poll_interval``'s default).
    """
    hours = 0.25 if quick else 1.0
    ours = watch_vastkit(seed, jobs, hours, poll)
    sdk = watch_sdk_loop(seed, jobs, hours, poll)
    paced = watch_paced_loop(seed, jobs, hours, poll)
    ratio = ours["requests"] / sdk["requests"]
    return {
        "jobs": jobs,
        "poll_interval_s": poll,
        "virtual_hours": hours,
        "vastkit": ours,
        "sdk_loop": sdk,
        "paced_loop": paced,
        "ratio_vs_sdk_loop": ratio,
        "ratio_vs_paced_loop": ours["requests"] / paced["requests"],
        "latency_s": LATENCY_S,
        "target": "vastkit requests <= 0.1x the SDK loop, and no poll failing on a 429",
        "target_met": ratio <= 0.1 and ours["failed_polls"] == 0,
        "note": (
            "Client-level polling pattern (the pattern run_job's monitor uses per job). "
            "run_job watches one job per call, so N separate run_job calls make N lists per "
            "poll; sharing one list across jobs needs the job queue, which has not landed."
        ),
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, target/verdict) rows for the runner's table."""
    v, s, p = result["vastkit"], result["sdk_loop"], result["paced_loop"]
    jobs = result["jobs"]
    verdict = (
        "met"
        if result["target_met"]
        else (
            f"MISSED by {result['ratio_vs_sdk_loop'] / 0.1:.1f}x"
            if result["ratio_vs_sdk_loop"] > 0.1
            else f"MISSED: {v['failed_polls']} failed polls"
        )
    )
    return [
        (f"requests/h, {jobs} jobs: vastkit list", f"{v['requests_per_hour']:.0f}", ""),
        (f"requests/h, {jobs} jobs: SDK loop", f"{s['requests_per_hour']:.0f}", ""),
        (f"requests/h, {jobs} jobs: paced loop", f"{p['requests_per_hour']:.0f}", ""),
        ("vastkit / SDK loop", f"{result['ratio_vs_sdk_loop']:.3f}x", f"<= 0.1x: {verdict}"),
        (
            "429s: vastkit / SDK / paced",
            f"{v['rate_limited']} / {s['rate_limited']} / {p['rate_limited']}",
            "",
        ),
        (
            "failed polls: vastkit / SDK / paced",
            f"{v['failed_polls']} / {s['failed_polls']} / {p['failed_polls']}",
            "vastkit 0: " + ("met" if v["failed_polls"] == 0 else "MISSED"),
        ),
        (
            "seen every (s): vastkit / paced",
            f"{v['mean_staleness_s']:.0f} / {p['mean_staleness_s']:.0f}",
            "",
        ),
    ]


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))

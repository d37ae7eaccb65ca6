"""A queue driver that stops itself (SIGSTOP) once, at a chosen point of its first job.

Usage: python _stall_process.py EMULATOR_URL API_KEY LEDGER_PATH CONCURRENCY LEASE_TTL [POINT]

Like ``_queue_process.py``; it prints ``driver ended <job id>`` when a job's driver thread ends
(the job ended, or the driver stopped acting for it). With POINT it prints ``paused <POINT>``
(flushed) the first time it reaches POINT and sends itself SIGSTOP, so the test can let its lease
lapse, start a second driver and SIGCONT it. Points (see :data:`POINTS`), in the order a job
reaches them:

- ``before_intent``: the create intent and attempt row not written yet;
- ``after_intent``: they are written, the create not sent;
- ``sending``: the fencing token was seen to hold, the create request is about to be sent (not
  in :data:`POINTS`: a create sent from here after a takeover is the race that cannot be
  prevented, only cleaned up);
- ``after_create``: the create returned, the ledger does not know the instance;
- ``after_recording``: the ledger knows the instance, the wait for ``running`` not begun;
- ``waiting``: about to wait for ``running``;
- ``watching``: the first poll of a running attempt;
- ``watching_later``: the third poll of a running attempt;
- ``before_retire``: the attempt is over, its destroy not sent;
- ``after_destroy``: the instance is confirmed gone, its end not recorded;
- ``after_retire``: the end is recorded, the job's end in the queue not yet.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from vastkit._provision import Provisioner
from vastkit.api.client import Client
from vastkit.jobs import JobRunner
from vastkit.ledger import Ledger
from vastkit.queue import JobQueue
from vastkit.queue._drivers import Driver, DriverPool

POINTS = (
    "before_intent",
    "after_intent",
    "after_create",
    "after_recording",
    "waiting",
    "watching",
    "watching_later",
    "before_retire",
    "after_destroy",
    "after_retire",
)

_paused: list[str] = []
_LEDGERS: list[Ledger] = []
"""The queue's ledger (for a stall in the API client, which knows no ledger)."""
_running_polls: list[int] = []


def stall(point: str, at: str | None, ledger: Ledger | None) -> None:
    """Stop this process (once) when ``point`` is the chosen one.

    It stops holding the ledger's lock of this process, so no other thread of it is inside a
    write transaction (a process frozen mid-transaction holds the database's write lock: that
    is another failure than the one tested here).
    """
    if point != at or _paused:
        return
    _paused.append(point)
    with _LEDGERS[0]._db._lock if ledger is None else ledger._db._lock:  # type: ignore[attr-defined]
        print(f"paused {point}", flush=True)
        signal.raise_signal(signal.SIGSTOP)  # this thread stops before the call returns


def around(
    owner: Any, name: str, at: str | None, before: str | None = None, after: str | None = None
) -> None:
    """Wrap ``owner.name`` so it stalls at ``before`` (entry) and ``after`` (return)."""
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        ledger = self if isinstance(self, Ledger) else getattr(self, "ledger", None)
        if before is not None:
            stall(before, at, ledger)
        result = original(self, *args, **kwargs)
        if after is not None and not (name == "create" and not isinstance(result, int)):
            stall(after, at, ledger)
        return result

    setattr(owner, name, wrapper)


def install(at: str | None) -> None:
    around(Provisioner, "begin", at, before="before_intent", after="after_intent")
    around(Provisioner, "create", at, after="after_create")
    around(Client, "create_instance", at, before="sending")
    around(Provisioner, "created", at, after="after_recording")
    around(Provisioner, "wait_running", at, before="waiting")
    around(Provisioner, "retire", at, before="before_retire", after="after_retire")
    around(Ledger, "settle_attempt", at, before="after_destroy")
    poll = JobRunner.poll

    def polled(self: JobRunner, live: Any) -> Any:
        if live.running_at is not None:
            _running_polls.append(1)
            if len(_running_polls) == 1:
                stall("watching", at, self.ledger)
            elif len(_running_polls) == 3:
                stall("watching_later", at, self.ledger)
        return poll(self, live)

    JobRunner.poll = polled  # type: ignore[method-assign]
    drive = DriverPool._drive

    def driven(self: DriverPool, driver: Driver) -> None:
        try:
            drive(self, driver)
        finally:
            print(f"driver ended {driver.job_id}", flush=True)

    DriverPool._drive = driven  # type: ignore[method-assign]


def main() -> None:
    url, key, ledger_path, concurrency, ttl = sys.argv[1:6]
    at = sys.argv[6] if len(sys.argv) > 6 else None
    if at is not None and at not in (*POINTS, "sending"):
        raise SystemExit(f"unknown point {at!r}; points: {', '.join(POINTS)}")
    install(at)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    with (
        Client(key, base_url=url, min_intervals={}) as client,
        JobQueue(
            ledger_path,
            client=client,
            concurrency=int(concurrency),
            lease_ttl=float(ttl),
            claim_interval=0.1,
        ) as queue,
    ):
        _LEDGERS.append(queue.ledger)
        print(f"owner {queue.owner}", flush=True)
        finished = queue.run()
    print(f"done {len(finished)}", flush=True)


if __name__ == "__main__":
    main()

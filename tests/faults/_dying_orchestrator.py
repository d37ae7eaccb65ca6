"""An orchestrator that SIGKILLs itself when its job reaches a phase: no cleanup at all.

Usage: python _dying_orchestrator.py EMULATOR_URL API_KEY STORE_URL LEDGER_PATH PHASE START

It runs the restart tests' job (``tests/jobs/_restart_job.py``) in the test's virtual time,
which starts at START (see :class:`LockstepClock`), prints ``RUN <run_id>`` when the job starts,
and kills itself with SIGKILL at PHASE: ``searching``, ``creating_before``
(intent written, create not sent), ``creating_after`` (instance created, the ledger does not
know its id), ``provisioning``, ``loading``, ``worker_starting``, ``running``,
``checkpointing``, ``finishing_before_destroy`` (result read, destroy not sent) or
``finishing_after_destroy`` (destroyed, the ledger not updated).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from tests.jobs._restart_job import make_job
from vastkit.api.client import Client
from vastkit.api.models import CreatedInstance, CreateInstanceRequest
from vastkit.jobs import JobEvent, run_job
from vastkit.ledger import Ledger

URL, KEY, STORE, LEDGER, PHASE, START = sys.argv[1:7]


class LockstepClock:
    """Virtual time that belongs to the test: ``sleep(s)`` prints ``SLEEP s`` and waits for the
    test to move its world (the emulator's clock, the workers) by ``s`` and answer with the new
    time on stdin. So the job sees exactly the same world however busy the machine is."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            print(f"SLEEP {seconds!r}", flush=True)
            answer = sys.stdin.readline()
            if not answer:  # the test is gone
                os._exit(2)
            self._now = float(answer)


CLOCK = LockstepClock(float(START))

ORDER = (
    "searching",
    "creating_before",
    "creating_after",
    "provisioning",
    "loading",
    "worker_starting",
    "running",
    "checkpointing",
    "finishing_before_destroy",
    "finishing_after_destroy",
)

EVENT_PHASES = {
    "searching": "searching",
    "offer_chosen": "creating_before",
    "created": "provisioning",
    "running": "worker_starting",
    "worker_ready": "running",
    "checkpoint": "checkpointing",
}


def reached(point: str) -> None:
    """Die at PHASE, or at the first point after it when a fast phase was not seen (a poll
    can miss ``loading``): the test checks where it died."""
    if ORDER.index(point) >= ORDER.index(PHASE):
        print(f"DIED {point}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class DyingClient(Client):
    def create_instance(self, offer_id: int, request: CreateInstanceRequest) -> CreatedInstance:
        created = super().create_instance(offer_id, request)
        reached("creating_after")
        return created

    def destroy_instance(self, instance_id: int) -> bool:
        reached("finishing_before_destroy")
        gone = super().destroy_instance(instance_id)
        reached("finishing_after_destroy")
        return gone


def on_event(event: JobEvent) -> None:
    if event.kind == "started":
        print(f"RUN {event.run_id}", flush=True)
    phase = EVENT_PHASES.get(event.kind)
    if event.kind == "phase" and event.message.endswith(": loading"):
        phase = "loading"
    if event.kind == "checkpoint" and not event.step:
        phase = None  # the first heartbeat reports step 0: not a checkpoint yet
    if phase is not None:
        reached(phase)


def main() -> None:
    with (
        DyingClient(KEY, base_url=URL, min_intervals={}, clock=CLOCK) as client,
        Ledger(LEDGER, clock=CLOCK) as ledger,
    ):
        run_job(
            make_job(STORE),
            client=client,
            ledger=ledger,
            clock=CLOCK,
            on_event=on_event,
            progress=False,
        )
    sys.exit(1)  # the job should never end here


if __name__ == "__main__":
    main()

"""A run cancelled from outside (`vastkit cancel`) ends as cancelled, leaving nothing."""

from __future__ import annotations

from vastkit.jobs.cancel import CancelOutcome, cancel_run

from .conftest import World


def test_a_cancel_from_another_process_stops_the_job_at_its_next_poll(world: World) -> None:
    fleet = world.workers(total_steps=10**9)
    outcomes: list[CancelOutcome] = []

    def cancel_once_running(now: float) -> None:
        fleet(now)
        started = [e for e in world.events if e.kind == "worker_ready"]
        if started and not outcomes:
            run_id = started[0].run_id
            # what `vastkit cancel RUN` does from another shell: the owner (this process) lives
            result = cancel_run(run_id, ledger=world.ledger, client=world.client, reason="enough")
            outcomes.append(result.outcome)

    world.clock.hook = cancel_once_running
    result = world.run(world.make_job())
    assert outcomes == [CancelOutcome.REQUESTED]
    assert result.status == "cancelled", result.summary()
    assert result.reason == "enough"
    assert world.emu.instances == []
    run = world.ledger.get_run(result.run_id)
    assert run is not None
    assert run.status == "cancelled"

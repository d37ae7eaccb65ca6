"""A relaunch never returns to a machine that failed the job or was stopped under it (issue 15)."""

from __future__ import annotations

from vastkit.labels import parse_label

from .conftest import ON_DEMAND, World


def test_a_relaunch_after_a_stop_goes_to_another_machine(world: World) -> None:
    fleet = world.workers(total_steps=400, checkpoint_every=50)
    stopped: list[int] = []
    http = world.emu.client()

    def stop_the_first_running_instance(now: float) -> None:
        fleet(now)
        if stopped or "worker_ready" not in world.kinds():
            return
        for view in world.emu.instances:
            if view.actual_status == "running" and parse_label(view.label) is not None:
                # what `vastkit stop ID` (or a colleague) does to the running instance
                answer = http.put(f"/api/v0/instances/{view.id}/", json={"state": "stopped"})
                assert answer.status_code == 200, answer.text
                stopped.append(view.machine_id)
                return

    world.clock.hook = stop_the_first_running_instance
    try:
        result = world.run(world.make_job(profile=ON_DEMAND))
    finally:
        http.close()
    assert result.status == "succeeded", result.summary()
    assert stopped, "the test never stopped an instance"
    first, *later = result.attempts
    assert first.machine_id == stopped[0]
    assert first.end_reason == "stopped"
    assert later, "the job did not relaunch"
    assert all(a.machine_id != stopped[0] for a in later), [a.machine_id for a in later]
    # blocked in the ledger, so every driver on it stays off that machine too
    assert stopped[0] in world.ledger.blocked_machines(now=world.clock.now())
    assert world.emu.instances == []

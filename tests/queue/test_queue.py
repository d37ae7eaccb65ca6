"""JobQueue in one process, on the emulator over loopback HTTP (the fleet plays the workers)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support.processes import HANG_S
from tests._support.waiting import wait_until
from vastkit.api.client import Client
from vastkit.emulator import Emulator
from vastkit.jobs import JobEvent, JobTimeouts
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile
from vastkit.queue import JobQueue, QueuedJob, job_from_dict, job_to_dict
from vastkit.rundir import CheckpointSettings

from .conftest import FAST, Fleet, make_job


@pytest.fixture
def client(emu: Emulator) -> Iterator[Client]:
    with Client(emu.api_key, base_url=emu.url, min_intervals={}) as c:
        yield c


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


def creates(emu: Emulator) -> int:
    return sum(
        1 for method, endpoint, _ in emu.requests if method == "PUT" and "create" in endpoint
    )


def test_ten_jobs_run_three_at_a_time_and_all_finish(
    emu: Emulator, fleet: Fleet, client: Client, ledger_path: Path, store_url: str
) -> None:
    fleet.gate = 3  # the first three run at once before any ends, however busy the machine
    with JobQueue(ledger_path, client=client, concurrency=3, claim_interval=0.2) as queue:
        ids = [queue.submit(make_job(store_url, f"job-{n}")) for n in range(10)]
        assert [r.status for r in queue.list()] == ["queued"] * 10
        finished = queue.run()
        records = queue.list()
    assert sorted(r.job_id for r in finished) == sorted(ids)
    assert [r.status for r in records] == ["succeeded"] * 10, [r.reason for r in records]
    assert fleet.max_live == 3  # three at once, never more
    assert creates(emu) == 10  # one instance per job
    assert all(r.claims == 1 and r.attempts == 1 for r in records)
    assert all(r.cost_usd > 0 for r in records)
    assert emu.instances == []
    with Ledger(ledger_path) as ledger:
        assert ledger.pending_intents() == []
        for job_id in ids:
            run = ledger.get_run(job_id)
            assert run is not None
            assert run.status == "succeeded"
            (attempt,) = ledger.attempts(job_id)
            assert attempt.destroyed_at is not None


def test_one_list_call_per_poll_whatever_the_number_of_jobs(
    emu: Emulator, fleet: Fleet, client: Client, ledger_path: Path, store_url: str
) -> None:
    fleet.gate = 10  # the work goes on until all ten run at once
    with JobQueue(ledger_path, client=client, concurrency=10, claim_interval=0.2) as queue:
        for n in range(10):
            queue.submit(make_job(store_url, f"job-{n}"))
        started = queue.clock.now()
        queue.run()
        polls = (queue.clock.now() - started) / FAST.poll_interval
        assert {r.status for r in queue.list()} == {"succeeded"}
    # A list call is made a poll interval after the previous one, or for the first look of a
    # driver whose instance is newer than the last list: never once per driver and poll. The
    # bound holds however slowly the machine runs (test_shared_instances.py counts exactly).
    assert fleet.max_live == 10
    assert creates(emu) == 10
    assert queue.list_calls <= 1 + polls + creates(emu)


def test_higher_priority_runs_first(
    fleet: Fleet, client: Client, ledger_path: Path, store_url: str
) -> None:
    fleet.work_s = 0.2
    with JobQueue(ledger_path, client=client, concurrency=1, claim_interval=0.2) as queue:
        low = queue.submit(make_job(store_url, "low"), priority=-1)
        first = queue.submit(make_job(store_url, "mid-1"))
        high = queue.submit(make_job(store_url, "high"), priority=5)
        second = queue.submit(make_job(store_url, "mid-2"))
        queue.run()
        order = [r.job_id for r in sorted(queue.list(), key=lambda r: r.started_at or 0.0)]
    assert order == [high, first, second, low]


def test_a_project_cap_holds_across_the_queue(
    fleet: Fleet, client: Client, ledger_path: Path, store_url: str
) -> None:
    fleet.gate = 4  # one vision job and the three text jobs run at once before any ends
    with JobQueue(
        ledger_path,
        client=client,
        concurrency=4,
        project_caps={"vision": 1},
        claim_interval=0.2,
    ) as queue:
        for n in range(3):
            fleet.project_of[queue.submit(make_job(store_url, f"v{n}", project="vision"))] = (
                "vision"
            )
        for n in range(3):
            fleet.project_of[queue.submit(make_job(store_url, f"t{n}", project="text"))] = "text"
        queue.run()
        assert {r.status for r in queue.list()} == {"succeeded"}
    assert fleet.max_live_by_project["vision"] == 1
    assert fleet.max_live_by_project["text"] == 3  # the other project was not held back
    assert fleet.max_live == 4


def test_cancel_stops_a_running_job_destroys_its_instance_and_records_the_cost(
    emu: Emulator, fleet: Fleet, client: Client, ledger_path: Path, store_url: str
) -> None:
    events: list[JobEvent] = []
    queue = JobQueue(
        ledger_path, client=client, concurrency=2, claim_interval=0.2, on_event=events.append
    )
    forever = queue.submit(make_job(store_url, "forever"))
    fleet.hold.add(forever)
    waiting = queue.submit(make_job(store_url, "never-started"), priority=-10)
    other = queue.submit(make_job(store_url, "other"), priority=-10)
    cancelled_queued = queue.cancel(waiting)
    assert cancelled_queued.status == "cancelled"
    assert cancelled_queued.attempts == 0
    runner = threading.Thread(target=queue.run)
    runner.start()
    try:
        wait_until(
            lambda: any(e.kind == "worker_ready" and e.run_id == forever for e in events),
            "the job ran",
        )
        record = queue.cancel(forever)
    finally:
        runner.join()
    assert record.status == "cancelled", record.reason
    assert record.cost_usd > 0  # what it ran for is in the ledger
    assert record.attempts == 1
    assert [v.label for v in emu.instances] == []
    assert queue.get(other) is not None
    assert queue.get(other).status == "succeeded"
    with Ledger(ledger_path) as ledger:
        (attempt,) = ledger.attempts(forever)
        assert attempt.destroyed_at is not None
        assert attempt.cost_usd == pytest.approx(record.cost_usd)
        assert ledger.attempts(waiting) == []
    queue.close()


def test_a_job_over_its_budget_ends_as_budget_exceeded(
    fleet: Fleet, client: Client, ledger_path: Path, store_url: str, emu: Emulator
) -> None:
    with JobQueue(ledger_path, client=client, concurrency=2, claim_interval=0.2) as queue:
        poor = queue.submit(make_job(store_url, "poor", max_cost_usd=0.001))
        fine = queue.submit(make_job(store_url, "fine"))
        queue.run()
        assert queue.get(poor).status == "budget_exceeded"  # type: ignore[union-attr]
        assert queue.get(fine).status == "succeeded"  # type: ignore[union-attr]
    assert creates(emu) == 1  # the job that could not afford its worst case rented nothing


def test_wait_returns_the_ended_job(
    fleet: Fleet, client: Client, ledger_path: Path, store_url: str
) -> None:
    with JobQueue(ledger_path, client=client, concurrency=1, claim_interval=0.2) as queue:
        job_id = queue.submit(make_job(store_url))
        runner = threading.Thread(target=queue.run)
        runner.start()
        record = queue.wait(job_id)
        runner.join()
    assert isinstance(record, QueuedJob)
    assert record.ok
    assert record.done
    assert record.run_url is not None
    assert record.run_url.endswith(job_id)


def test_a_job_survives_the_round_trip_through_the_ledger(tmp_path: Path) -> None:
    job = make_job(
        "s3://bucket/runs",
        "round-trip",
        command=["python", "train.py", "--lr", "0.1"],
        profile=GpuProfile(
            name="bid",
            gpu_name=["RTX_3090", "RTX_4090"],
            max_dph=0.3,
            max_duration_hours=2,
            disk_gb=20,
            rental="interruptible",
            regions=("EU",),
        ),
        env={"A": "1"},
        storage_options={"anon": True},
        checkpoint=CheckpointSettings(every_steps=50, keep_last=2),
        outbid=OutbidPolicy.give_up(),
        timeouts=JobTimeouts(poll_interval=3, max_duration=600),
        project="vision",
        team="ml",
        max_cost_usd=2.5,
        workdir=".",
    )
    back = job_from_dict(job_to_dict(job))
    assert back.workdir == str(Path.cwd())  # stored absolute: run() may run elsewhere
    assert back == attr_evolve_workdir(job, str(Path.cwd()))
    with JobQueue(tmp_path / "ledger.db") as queue:  # submitting needs no API key
        job_id = queue.submit(job, priority=3)
        record = queue.get(job_id)
    assert record is not None
    assert record.job == back
    assert (record.priority, record.project, record.status) == (3, "vision", "queued")


def attr_evolve_workdir(job: object, workdir: str) -> object:
    import attrs

    return attrs.evolve(job, workdir=workdir)  # type: ignore[misc]


def test_a_stored_job_names_no_class_and_a_bad_one_names_its_field() -> None:
    data = job_to_dict(make_job("memory://x"))
    data["timeouts"]["__class__"] = "subprocess:Popen"  # nothing is ever imported by name
    assert job_from_dict(data) == make_job("memory://x")
    data["timeouts"]["poll_interval"] = "soon"
    with pytest.raises(ValueError, match=r"\$\.timeouts\.poll_interval"):
        job_from_dict(data)


def test_a_job_queued_by_an_older_vastkit_reads_back() -> None:
    old = {
        "__class__": "vastkit.jobs:Job",
        "name": "old",
        "command": {"__tuple__": ["python", "train.py"]},
        "profile": "dev-test",
        "store_url": "memory://x",
        "timeouts": {"__class__": "vastkit.jobs:JobTimeouts", "poll_interval": 3},
        "outputs": {"__tuple__": ["out/"]},
    }
    job = job_from_dict(old)
    assert (job.command, job.profile, job.outputs) == (
        ("python", "train.py"),
        "dev-test",
        ("out/",),
    )
    assert job.timeouts.poll_interval == 3


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        JobQueue(tmp_path / "l.db", concurrency=0)
    with pytest.raises(ValueError, match="cap of project"):
        JobQueue(tmp_path / "l.db", project_caps={"p": 0})
    with JobQueue(tmp_path / "l.db") as queue:
        with pytest.raises(TypeError):
            queue.submit("python train.py")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="until"):
            queue.run(until="never")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown status"):
            queue.list("done")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="no job"):
            queue.cancel("nope")
        assert queue.get("nope") is None


def test_claims_are_atomic_between_connections(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        for n in range(60):
            ledger.enqueue(f"job-{n}", name="j", spec={}, priority=n % 3)
    claimed: list[list[str]] = [[], [], []]

    def claimer(index: int) -> None:
        with Ledger(path) as mine:
            while True:
                entry = mine.claim_queued(owner=f"p{index}", token=f"t{index}", ttl_s=60)
                if entry is None:
                    return
                claimed[index].append(entry.job_id)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [job for mine in claimed for job in mine]
    assert len(every) == 60
    assert len(set(every)) == 60  # no job claimed twice
    with Ledger(path) as ledger:
        # an expired lease is claimable again, a live one is not
        assert ledger.claim_queued(owner="x", token="y", ttl_s=60) is None
        entry = ledger.claim_queued(owner="x", token="y", ttl_s=60, at=10**12)
        assert entry is not None
        assert entry.claims == 2
        assert not ledger.renew_lease(entry.job_id, "t0", ttl_s=60)  # the old token lost it
        assert ledger.renew_lease(entry.job_id, "y", ttl_s=60)


def test_an_old_ledger_gains_the_queue_table(tmp_path: Path) -> None:
    import sqlite3

    from vastkit.ledger._schema import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Ledger(path) as ledger:
        # migrated all the way up; the queue table came with migration 2 (later ones add more)
        assert ledger.schema_version == SCHEMA_VERSION >= 2
        ledger.enqueue("j1", name="j", spec={"a": 1})
        (entry,) = ledger.queue_entries("queued")
        assert entry.spec == {"a": 1}


def test_a_driver_whose_lease_was_taken_over_lets_go_without_touching_the_instance(
    emu: Emulator, fleet: Fleet, client: Client, ledger_path: Path, store_url: str
) -> None:
    import sqlite3

    events: list[JobEvent] = []
    stalled = JobQueue(ledger_path, client=client, claim_interval=0.2, on_event=events.append)
    job_id = stalled.submit(make_job(store_url))
    fleet.hold.add(job_id)
    first_done: list[QueuedJob] = []
    first = threading.Thread(target=lambda: first_done.extend(stalled.run()))
    first.start()
    wait_until(lambda: any(e.kind == "worker_ready" for e in events), "the job ran")
    # As if the first driver had stalled past its lease: it expires, and another queue adopts.
    conn = sqlite3.connect(ledger_path)
    conn.execute("UPDATE queue_jobs SET lease_expires_at = 0")
    conn.commit()
    conn.close()
    with Client(emu.api_key, base_url=emu.url, min_intervals={}) as other_client:
        taker = JobQueue(ledger_path, client=other_client, claim_interval=0.2)
        done: list[QueuedJob] = []
        second = threading.Thread(target=lambda: done.extend(taker.run()))
        second.start()
        wait_until(
            lambda: taker.get(job_id).claims >= 2,  # type: ignore[union-attr]
            "the expired job was claimed",
        )
        # the first driver lets go at its next poll
        wait_until(lambda: job_id not in stalled.driving, "the first driver let go")
        assert len(emu.instances) == 1  # it left the instance to the new driver
        fleet.hold.clear()
        second.join(timeout=HANG_S)
        first.join(timeout=HANG_S)  # its run() waited for the job to end elsewhere
        assert not second.is_alive()
        assert not first.is_alive()
        taker.close()
    stalled.close()
    assert first_done == []
    assert [r.job_id for r in done] == [job_id]
    assert done[0].status == "succeeded"
    assert done[0].claims == 2
    assert done[0].attempts == 1  # adopted, not rented again
    assert creates(emu) == 1
    assert emu.instances == []

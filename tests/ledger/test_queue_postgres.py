"""The queue's tests of claims, leases, caps and cancellation, on a PostgreSQL ledger.

They are the tests of ``tests/queue/test_queue.py`` (imported, so written once), with the
``ledger_path`` fixture giving a fresh PostgreSQL ledger's URL instead of a SQLite file.
"""

from __future__ import annotations

import pytest

from tests.queue.conftest import emu, fleet, store_url
from tests.queue.test_queue import (
    client,
    test_a_job_over_its_budget_ends_as_budget_exceeded,
    test_a_project_cap_holds_across_the_queue,
    test_cancel_stops_a_running_job_destroys_its_instance_and_records_the_cost,
    test_higher_priority_runs_first,
    test_ten_jobs_run_three_at_a_time_and_all_finish,
    test_wait_returns_the_ended_job,
)

__all__ = [
    "client",
    "emu",
    "fleet",
    "store_url",
    "test_a_job_over_its_budget_ends_as_budget_exceeded",
    "test_a_project_cap_holds_across_the_queue",
    "test_cancel_stops_a_running_job_destroys_its_instance_and_records_the_cost",
    "test_higher_priority_runs_first",
    "test_ten_jobs_run_three_at_a_time_and_all_finish",
    "test_wait_returns_the_ended_job",
]


@pytest.fixture
def ledger_path(postgres_url: str) -> str:
    """A fresh PostgreSQL ledger (the queue tests' fixture, by its name)."""
    return postgres_url

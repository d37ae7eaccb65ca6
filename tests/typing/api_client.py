"""Type-checked, never run: the API client's public signatures under ``mypy --strict``."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx

from vastkit.api import (
    Charge,
    Client,
    CreatedInstance,
    CreateInstanceRequest,
    InstanceInfo,
    Offer,
    OfferQuery,
    User,
    parse_order,
    parse_query,
)
from vastkit.clock import ManualClock
from vastkit.errors import APIStatusError, ResponseValidationError, SearchQuotaExceededError
from vastkit.retry import RetryPolicy

wire: dict[str, object] = parse_query("gpu_name=RTX_4090 num_gpus>=1")
order: list[list[str]] = parse_order("dph+")
query: OfferQuery = (
    OfferQuery()
    .where("num_gpus", "gte", 2)
    .where("gpu_name", "in", ["RTX 4090"])
    .order_by("dph_total", ("score", "desc"))
    .with_type("interruptible")
    .with_limit(10)
    .with_storage(20.0)
    .with_defaults()
)
same: OfferQuery = OfferQuery.from_dict(query.to_dict())

with Client(
    "key",
    base_url="https://vast.test",
    timeout=None,
    max_retries=0,
    http_client=httpx.Client(),
    clock=ManualClock(),
    min_intervals={},
    rng=random.Random(0),
) as vast:
    offers: list[Offer] = vast.search_offers(query)
    offers = vast.search_offers("num_gpus=1", type="bid", order="dph+", limit=5)
    offers = vast.search_offers({"num_gpus": {"eq": 1}}, allocated_storage=10.0)
    created: CreatedInstance = vast.create_instance(1, CreateInstanceRequest(image="img"))
    one: InstanceInfo | None = vast.get_instance(created.id)
    many: list[InstanceInfo] = vast.list_instances(label="x", filters={"actual_status": {"eq": "x"}})
    vast.stop_instance(1)
    vast.start_instance(1)
    vast.label_instance(1, "y")
    vast.change_bid(1, 0.2)
    vast.change_bid(1, None)
    gone: bool = vast.destroy_instance(1)
    log: str = vast.instance_logs(1, tail=10, timeout=5.0, poll_interval=0.5)
    user: User = vast.current_user()
    charges: list[Charge] = vast.charges(0, datetime(2026, 1, 1, tzinfo=UTC))
    requests: int = vast.stats.total_requests


with Client("key", retry=RetryPolicy(attempts=2, deadline=30.0)) as patient:
    policy: RetryPolicy = patient.retry


def handle(exc: Exception) -> object:
    if isinstance(exc, SearchQuotaExceededError):
        return exc.resets_at
    if isinstance(exc, APIStatusError):
        return exc.new_contract
    if isinstance(exc, ResponseValidationError):
        return exc.errors
    return None

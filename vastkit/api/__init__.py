"""The typed Vast.ai REST API client: models, the query language, the transport and the client.

This layer knows the Vast API and nothing else: no profiles, budgets or jobs.
"""

from __future__ import annotations

from vastkit.api.client import Client
from vastkit.api.models import (
    Charge,
    ChargeItem,
    CreatedInstance,
    CreateInstanceRequest,
    InstanceInfo,
    InstanceState,
    Offer,
    PortBinding,
    User,
)
from vastkit.api.query import OfferQuery, parse_order, parse_query

__all__ = [
    "Charge",
    "ChargeItem",
    "Client",
    "CreateInstanceRequest",
    "CreatedInstance",
    "InstanceInfo",
    "InstanceState",
    "Offer",
    "OfferQuery",
    "PortBinding",
    "User",
    "parse_order",
    "parse_query",
]

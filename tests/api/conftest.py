"""Fixtures for the API client tests: a respx router behind an injected httpx client."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

from tests._support.api_factories import BASE, KEY
from vastkit.api import Client
from vastkit.clock import ManualClock


@pytest.fixture(autouse=True)
def _isolated_key_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may see the developer's real key or server."""
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.delenv("VAST_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE, assert_all_called=False)


@pytest.fixture
def http(router: respx.Router) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.MockTransport(router.handler)) as client:
        yield client


@pytest.fixture
def client(http: httpx.Client, clock: ManualClock) -> Iterator[Client]:
    with Client(KEY, base_url=BASE, http_client=http, clock=clock, rng=random.Random(7)) as c:
        yield c

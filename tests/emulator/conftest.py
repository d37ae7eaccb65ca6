"""Fixtures for the emulator suite: a small seeded emulator on a manual clock, and a raw httpx
client that sends requests shaped the way the official CLI sends them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest

from vastkit.clock import ManualClock
from vastkit.emulator import Emulator, Timings

CLI_HEADERS = {"User-Agent": "vastai-cli/1.9.1", "Content-Type": "application/json"}


class CLI:
    """Raw HTTP in the official CLI's shapes (reference sections 1-5, verified wire formats)."""

    def __init__(self, client: httpx.Client, clock: ManualClock, api_key: str) -> None:
        self.http = client
        self.clock = clock
        self.api_key = api_key

    def request(self, method: str, url: str, body: Any = None, **kw: Any) -> httpx.Response:
        """Send with ``Authorization: Bearer``; JSON body ``{}`` when none (like the CLI)."""
        headers = {"Authorization": f"Bearer {self.api_key}", **kw.pop("headers", {})}
        content = None
        if method in ("POST", "PUT", "DELETE"):
            content = json.dumps({} if body is None else body).encode()
        return self.http.request(method, url, content=content, headers=headers, **kw)

    def search(self, **query: Any) -> httpx.Response:
        q: dict[str, Any] = {
            "verified": {"eq": True},
            "external": {"eq": False},
            "rentable": {"eq": True},
            "order": [["score", "desc"]],
            "type": "on-demand",
            "allocated_storage": 5.0,
        }
        q.update(query)
        return self.request("POST", "/api/v0/bundles/", q)

    def create(self, offer_id: int, **fields: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "client_id": "me",
            "image": "pytorch/pytorch:latest",
            "env": {},
            "price": None,
            "disk": 10,
            "label": None,
            "extra": None,
            "onstart": None,
            "image_login": None,
            "python_utf8": False,
            "lang_utf8": False,
            "use_jupyter_lab": False,
            "jupyter_dir": None,
            "force": False,
            "cancel_unavail": False,
            "template_hash_id": None,
            "user": None,
            "runtype": "ssh",
        }
        body.update(fields)
        return self.request("PUT", f"/api/v0/asks/{offer_id}/", body)

    def list(self, select_filters: Any = None, **params: str) -> httpx.Response:
        query = "select_filters=" + quote_plus(json.dumps(select_filters or {}))
        for name, value in params.items():
            query += f"&{name}={quote_plus(value)}"
        return self.request("GET", f"/api/v1/instances/?{query}")

    def show(self, instance_id: int) -> httpx.Response:
        return self.request("GET", f"/api/v0/instances/{instance_id}/?owner=me")

    def set_state(self, instance_id: int, state: str) -> httpx.Response:
        return self.request("PUT", f"/api/v0/instances/{instance_id}/", {"state": state})

    def destroy(self, instance_id: int) -> httpx.Response:
        return self.request("DELETE", f"/api/v0/instances/{instance_id}/")

    def instance(self, instance_id: int) -> dict[str, Any]:
        answer = self.show(instance_id)
        assert answer.status_code == 200, answer.text
        inst = answer.json()["instances"]
        assert inst is not None
        return dict(inst)

    def rent(self, **fields: Any) -> int:
        """Rent the cheapest verified on-demand offer (or ``offer_id``); the instance id."""
        offer_id = fields.pop("offer_id", None)
        if offer_id is None:
            offers = self.search(order=[["dph_total", "asc"]], limit=1).json()["offers"]
            offer_id = offers[0]["id"]
        answer = self.create(offer_id, **fields)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["new_contract"])


FAST = Timings(provision_s=5.0, loading_s=20.0, reboot_s=5.0, recycle_s=10.0, log_ready_s=1.0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emu(clock: ManualClock) -> Iterator[Emulator]:
    with Emulator(0, offers=300, clock=clock, timings=FAST, rate_limits=False) as emulator:
        yield emulator


@pytest.fixture(params=["in-process", "loopback"])
def cli(request: pytest.FixtureRequest, emu: Emulator, clock: ManualClock) -> Iterator[CLI]:
    """The CLI-shaped client, over the in-process transport and over loopback HTTP."""
    if request.param == "loopback":
        emu.serve()
        client = httpx.Client(base_url=emu.url, headers=CLI_HEADERS, timeout=10)
    else:
        client = httpx.Client(base_url=emu.url, transport=emu.transport, headers=CLI_HEADERS)
    with client:
        yield CLI(client, clock, emu.api_key)


@pytest.fixture
def api(emu: Emulator, clock: ManualClock) -> Iterator[CLI]:
    """The CLI-shaped client over the in-process transport only (behaviour tests)."""
    with httpx.Client(base_url=emu.url, transport=emu.transport, headers=CLI_HEADERS) as client:
        yield CLI(client, clock, emu.api_key)

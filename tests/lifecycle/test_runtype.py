"""Direct SSH only where the host has open ports (issue 17).

Vast gives direct SSH and Jupyter only on hosts whose router has ports (``direct_port_count``);
elsewhere a create asking for ``ssh_direc`` gets the proxy or nothing. The engine drops the
direct modes on such hosts, as the official CLI's ``--direct`` assumes, for every rental.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests._support.api_factories import offer_json
from vastkit._provision import Provisioner
from vastkit.access import direct_only_where_open
from vastkit.api import CreateInstanceRequest
from vastkit.api._converter import structure
from vastkit.api.models import CreatedInstance, Offer
from vastkit.clock import ManualClock
from vastkit.ledger import Ledger


def offer(ports: int | None) -> Offer:
    return structure(offer_json(7, direct_port_count=ports), Offer)


@pytest.mark.parametrize(
    ("runtype", "ports", "expected"),
    [
        ("ssh_direc ssh_proxy", 0, "ssh_proxy"),
        ("ssh_direc ssh_proxy", None, "ssh_proxy"),
        ("ssh_direc ssh_proxy", -1, "ssh_proxy"),
        ("ssh_direc ssh_proxy", 20, "ssh_direc ssh_proxy"),
        ("jupyter_direc ssh_direc ssh_proxy", 0, "ssh_proxy jupyter_proxy"),
        ("ssh_direct", 0, "ssh_proxy"),
        ("ssh_proxy", 0, "ssh_proxy"),
        ("args", 0, "args"),
        (None, 0, None),
    ],
)
def test_direct_modes_only_on_hosts_with_open_ports(
    runtype: str | None, ports: int | None, expected: str | None
) -> None:
    assert direct_only_where_open(runtype, offer(ports)) == expected


class Recorder:
    """A client that records what the engine asks to create."""

    def __init__(self) -> None:
        self.requests: list[CreateInstanceRequest] = []

    def create_instance(self, offer_id: int, request: CreateInstanceRequest) -> CreatedInstance:
        self.requests.append(request)
        return CreatedInstance(id=41)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected call {name}")


@pytest.mark.parametrize(("ports", "sent"), [(0, "ssh_proxy"), (50, "ssh_direc ssh_proxy")])
def test_the_engine_sends_what_the_host_can_give(tmp_path: Any, ports: int, sent: str) -> None:
    client = Recorder()
    with Ledger(tmp_path / "l.db", clock=ManualClock()) as ledger:
        engine = Provisioner(client, ledger, ManualClock())  # type: ignore[arg-type]
        created = engine.create(
            offer(ports), CreateInstanceRequest(image="img", label="vastkit/x/y/1")
        )
    assert created == 41
    assert [r.runtype for r in client.requests] == [sent]

"""Every rental gets the user's SSH key: the engine attaches it after each create.

The key is resolved once, before anything is searched or rented: a key that is named but wrong
is a ConfigError before any API call; no key at all is one warning, and the rental goes ahead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests._support.access import make_key
from vastkit._provision import Provisioner
from vastkit.access import AccessPlan, RentalAccess, resolve_access
from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator
from vastkit.errors import ConfigError
from vastkit.instance import Instance
from vastkit.ledger import Ledger
from vastkit.money import ContractPrice

from .conftest import ON_DEMAND


@pytest.fixture
def engine_for(client: Client, ledger: Ledger, clock: ManualClock) -> Callable[..., Provisioner]:
    """A Provisioner over the emulator's client, the ledger and the clock."""

    def build(**options: Any) -> Provisioner:
        return Provisioner(client, ledger, clock, **options)

    return build


def _rent(engine: Provisioner, attempt: int = 1) -> int:
    """One engine-level rental, as Instance and run_job make it: search, intent, create."""
    if engine.ledger.get_run("sshtest") is None:
        engine.ledger.record_run("sshtest", name="ssh", profile=ON_DEMAND.name, status="running")
    label = f"vastkit/sshtest/{attempt}"
    candidate = engine.candidates(ON_DEMAND)[attempt - 1]
    price = ContractPrice.from_offer(candidate.offer, disk_gb=16.0, bid=None)
    ticket = engine.begin(
        "sshtest", attempt, offer=candidate.offer, label=label, bid=None, price=price, disk_gb=16.0
    )
    created = engine.create(
        candidate.offer, CreateInstanceRequest(image="pytorch/pytorch", disk_gb=16, label=label)
    )
    assert isinstance(created, int), created
    engine.created(ticket, created, price)
    return created


def test_the_engine_attaches_the_default_key_file_after_a_create(
    home: Path, emu: Emulator, engine_for: Callable[..., Provisioner]
) -> None:
    (home / ".ssh").mkdir()
    key = make_key()
    (home / ".ssh" / "id_ed25519.pub").write_text(key + "\n", encoding="utf-8")
    engine = engine_for()
    instance_id = _rent(engine)
    assert emu.instance(instance_id).ssh_keys == (key,)
    engine.destroy(instance_id)


def test_an_instance_rental_gets_the_key_named_by_the_environment(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    emu: Emulator,
    make: Callable[..., Instance],
) -> None:
    key = make_key("from-env")
    monkeypatch.setenv("VASTKIT_SSH_KEY", key)
    with make() as inst:
        assert emu.instance(inst.id).ssh_keys == (key,)


def test_no_key_at_all_warns_once_and_still_rents(
    home: Path,
    emu: Emulator,
    engine_for: Callable[..., Provisioner],
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = engine_for()
    with caplog.at_level(logging.WARNING, logger="vastkit"):
        first = _rent(engine, 1)
        second = _rent(engine, 2)
    warnings = [r.getMessage() for r in caplog.records if "SSH public key" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert str(home / ".ssh" / "id_ed25519.pub") in warnings[0]
    assert "ssh-keygen -t ed25519" in warnings[0]
    assert emu.instance(first).ssh_keys == ()
    assert emu.instance(second).ssh_keys == ()
    assert not any(ep.startswith("instance_ssh") for _, ep, _ in emu.requests)


@pytest.mark.parametrize(
    "content",
    ["-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n", "not a key at all\n"],
    ids=["private-key", "garbage"],
)
def test_a_malformed_key_file_fails_before_any_api_call(
    home: Path, emu: Emulator, engine_for: Callable[..., Provisioner], content: str
) -> None:
    bad = home / "bad.pub"
    bad.write_text(content, encoding="utf-8")
    engine = engine_for(access=AccessPlan(ssh_key=str(bad)))
    before = len(emu.requests)
    with pytest.raises(ConfigError) as caught:
        engine.candidates(ON_DEMAND)
    assert caught.value.path == str(bad)
    assert len(emu.requests) == before
    assert emu.instances == []


def test_a_missing_named_key_file_fails_with_its_path(home: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the SSH public key file"):
        resolve_access(ssh_key=str(home / "nope.pub"))


def test_a_failed_attach_is_logged_and_the_rental_kept(
    home: Path,
    emu: Emulator,
    engine_for: Callable[..., Provisioner],
    caplog: pytest.LogCaptureFixture,
) -> None:
    emu.inject("status", "instance_ssh_attach", status=500)
    engine = engine_for(access=AccessPlan(ssh_key=make_key()))
    with caplog.at_level(logging.WARNING, logger="vastkit"):
        instance_id = _rent(engine)
    assert emu.instance(instance_id).ssh_keys == ()
    lines = [r.getMessage() for r in caplog.records if "could not attach" in r.getMessage()]
    assert len(lines) == 1
    assert f"vastai attach ssh {instance_id}" in lines[0]
    engine.destroy(instance_id)


def test_no_access_on_purpose_sends_no_attach(
    home: Path, emu: Emulator, engine_for: Callable[..., Provisioner]
) -> None:
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa.pub").write_text(make_key(), encoding="utf-8")
    engine = engine_for(access=RentalAccess.none())
    instance_id = _rent(engine)
    assert emu.instance(instance_id).ssh_keys == ()
    engine.destroy(instance_id)


def test_an_instance_takes_its_own_key_and_a_bad_one_fails_before_any_api_call(
    home: Path, emu: Emulator, make: Callable[..., Instance]
) -> None:
    key = make_key("argument")
    with make(ssh_key=key) as inst:
        assert emu.instance(inst.id).ssh_keys == (key,)
    bad = home / "bad.pub"
    bad.write_text("not a key at all\n", encoding="utf-8")
    before = len(emu.requests)
    with pytest.raises(ConfigError) as caught, make(ssh_key=str(bad)):
        pass
    assert caught.value.path == str(bad)
    assert len(emu.requests) == before  # not even the reconcile before renting

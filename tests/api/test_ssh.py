"""SSH keys, execute and the SSH address, with the client against the emulator in-process, and
the public-key search with a fake home folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vastkit.api import Client, CreateInstanceRequest
from vastkit.api.ssh import attach_public_key, find_public_key, ssh_address
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator, ProcessRunner, Timings
from vastkit.errors import AuthenticationError, ConfigError, NotFoundError

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MDEyMzQ1Njc4 me@laptop"
RSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQDx0aXRsZXN0cmluZw== other@host"
FAST = Timings(provision_s=1, loading_s=1, log_ready_s=0)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Emulator, Client, ManualClock]]:
    clock = ManualClock(1_760_000_000.0)
    runner = ProcessRunner(tmp_path / "emu", grace_s=0)
    with (
        Emulator(0, offers=60, clock=clock, timings=FAST, rate_limits=False, runner=runner) as emu,
        Client(emu.api_key, base_url=emu.url, http_client=emu.client(), clock=clock) as vast,
    ):
        yield emu, vast, clock


def _running(emu: Emulator, vast: Client, clock: ManualClock, *, direct: bool) -> int:
    ops = "gt" if direct else "eq"
    offer = vast.search_offers({"direct_port_count": {ops: 0}, "rentable": {"eq": True}})[0]
    created = vast.create_instance(
        offer.id,
        CreateInstanceRequest(image="pytorch/pytorch"),
    )
    clock.advance(5)
    emu.tick()
    return created.id


def test_account_keys_reach_new_instances_and_attach_is_idempotent(
    world: tuple[Emulator, Client, ManualClock],
) -> None:
    emu, vast, clock = world
    made = vast.create_ssh_key(ED)
    assert [k.id for k in vast.ssh_keys()] == [made.id]
    assert vast.ssh_keys()[0].public_key == ED
    instance_id = _running(emu, vast, clock, direct=True)
    assert emu.instance(instance_id).ssh_keys == (ED,)  # copied at creation, like Vast
    vast.attach_ssh_key(instance_id, RSA)
    attach_public_key(vast, instance_id, find_public_key(RSA))  # already there: no second
    assert emu.instance(instance_id).ssh_keys == (ED, RSA)
    keys = vast.instance_ssh_keys(instance_id)
    assert [k.public_key for k in keys] == [ED, RSA]
    vast.detach_ssh_key(instance_id, keys[1].id)
    assert emu.instance(instance_id).ssh_keys == (ED,)
    vast.delete_ssh_key(made.id)
    assert vast.ssh_keys() == []
    assert emu.instance(instance_id).ssh_keys == (ED,)  # instances keep their keys
    with pytest.raises(NotFoundError):
        vast.attach_ssh_key(999, ED)
    with pytest.raises(ValueError, match="private"):
        vast.attach_ssh_key(instance_id, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc")


def test_execute_returns_the_commands_output_from_the_container(
    world: tuple[Emulator, Client, ManualClock],
) -> None:
    emu, vast, clock = world
    instance_id = _running(emu, vast, clock, direct=False)
    assert isinstance(emu.runner, ProcessRunner)
    data = emu.runner.folder(instance_id) / "data"  # the container's /workspace/data
    data.mkdir(parents=True)
    (data / "a.txt").write_text("hi")
    assert vast.execute(instance_id, "ls /workspace/data").split() == ["a.txt"]
    vast.execute(instance_id, "rm data/a.txt")
    assert vast.execute(instance_id, "ls data") == ""
    with pytest.raises(ValueError, match="ls, rm, du"):
        vast.execute(instance_id, "cat /etc/passwd")
    with pytest.raises(Exception, match="outside /workspace"):
        vast.execute(instance_id, "rm -rf /etc")


def test_ssh_address_is_direct_only_where_the_host_has_direct_ports(
    world: tuple[Emulator, Client, ManualClock],
) -> None:
    emu, vast, clock = world
    proxied = vast.get_instance(_running(emu, vast, clock, direct=False))
    assert proxied is not None
    assert proxied.ports == {}
    address = ssh_address(proxied)
    assert address is not None
    assert not address.direct
    assert address.host.endswith(".vast.ai")
    assert address.port == proxied.ssh_port
    assert address.command("nvidia-smi")[-2:] == [f"root@{address.host}", "nvidia-smi"]
    direct = vast.get_instance(_running(emu, vast, clock, direct=True))
    assert direct is not None
    address = ssh_address(direct)
    assert address is not None
    assert address.direct
    assert address.port == int(direct.ports["22/tcp"][0].host_port)
    assert address.url == f"ssh://root@127.0.0.1:{address.port}"


def test_a_bad_key_is_an_authentication_error_on_404_and_401_endpoints(
    world: tuple[Emulator, Client, ManualClock],
) -> None:
    emu, vast, clock = world
    instance_id = _running(emu, vast, clock, direct=False)
    with Client("wrong" * 8, base_url=emu.url, http_client=emu.client(), clock=clock) as bad:
        with pytest.raises(AuthenticationError):
            bad.get_instance(instance_id)  # 404 auth_error on the wire
        with pytest.raises(AuthenticationError):
            bad.stop_instance(instance_id)  # 401
        with pytest.raises(AuthenticationError):
            bad.ssh_keys()
    assert ("GET", "show", 404) in emu.requests
    assert ("PUT", "manage", 401) in emu.requests


# ---------------------------------------------------------------------- find_public_key


def test_find_public_key_order(tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "id_rsa.pub").write_text(RSA + "\n")
    assert find_public_key(home=tmp_path, environ={}).line == RSA
    (ssh / "id_ed25519.pub").write_text(ED + "\n")
    found = find_public_key(home=tmp_path, environ={})
    assert found.line == ED
    assert found.source == str(ssh / "id_ed25519.pub")
    other = tmp_path / "work.pub"
    other.write_text(RSA)
    assert find_public_key(home=tmp_path, environ={}, configured=str(other)).line == RSA
    env = {"VASTKIT_SSH_KEY": str(other)}
    assert find_public_key(home=tmp_path, environ=env, configured="nope").line == RSA
    assert find_public_key(ED, home=tmp_path, environ=env).source == "ssh_key="
    assert find_public_key("~/work.pub", home=tmp_path, environ={}).line == RSA


def test_no_key_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        find_public_key(home=tmp_path, environ={})
    message = str(caught.value)
    assert str(tmp_path / ".ssh/id_ed25519.pub") in message
    assert str(tmp_path / ".ssh/id_rsa.pub") in message
    assert "ssh-keygen -t ed25519" in message


def test_unreadable_or_private_keys_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as caught:
        find_public_key(str(tmp_path / "missing.pub"), home=tmp_path, environ={})
    assert caught.value.path == str(tmp_path / "missing.pub")
    private = tmp_path / "id_ed25519"
    private.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nxyz\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigError, match="private SSH key"):
        find_public_key(str(private), home=tmp_path, environ={})
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    with pytest.raises(ConfigError, match="not an OpenSSH public key"):
        find_public_key(str(junk), home=tmp_path, environ={})

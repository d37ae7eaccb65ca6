"""A job's access to its instance and its image (issue 17).

- The registry login of a private image comes from the environment (or the config file) and
  reaches Vast only as the create request's ``image_login``: never the run directory, a log, a
  repr or an event.
- The user's SSH key is attached to the job's instance; with none, one ``no_ssh_key`` event and
  the job runs anyway; a wrong key file fails the job before any API call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pytest

from tests._support.access import make_key
from tests._support.world import ON_DEMAND
from tests.jobs.conftest import World
from vastkit.api.client import Client
from vastkit.errors import ConfigError
from vastkit.jobs import Job, JobResult, run_job
from vastkit.outbid import OutbidPolicy

TOKEN = "ghp_s3cretTOKEN0123456789"


@pytest.fixture
def creates(world: World) -> Iterator[tuple[Client, list[dict[str, Any]]]]:
    """A client on the emulator that keeps the body of every create it sends."""
    bodies: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        if request.method == "PUT" and "/asks/" in request.url.path:
            bodies.append(json.loads(request.content))

    with (
        httpx.Client(transport=world.emu.transport, event_hooks={"request": [record]}) as http,
        Client(
            world.emu.api_key,
            base_url=world.emu.url,
            clock=world.clock,
            max_retries=2,
            min_intervals={},
            http_client=http,
        ) as client,
    ):
        yield client, bodies


def _run(world: World, client: Client, **job: Any) -> tuple[Job, JobResult]:
    world.workers(total_steps=10)
    spec = world.make_job(profile=ON_DEMAND, outbid=OutbidPolicy.give_up(), **job)
    result = run_job(
        spec,
        client=client,
        ledger=world.ledger,
        clock=world.clock,
        on_event=world.events.append,
        progress=False,
    )
    return spec, result


def _store_text(url: str) -> str:
    fs, root = fsspec.core.url_to_fs(url)
    return "\n".join(fs.cat_file(path).decode("utf-8", errors="replace") for path in fs.find(root))


def test_the_registry_login_reaches_the_create_and_nothing_else(
    home: Path,
    world: World,
    creates: tuple[Client, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, bodies = creates
    monkeypatch.setenv("VASTKIT_REGISTRY_USER", "octo")
    monkeypatch.setenv("VASTKIT_REGISTRY_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG):
        job, result = _run(world, client, image="ghcr.io/octo/private-train:1")

    assert result.status == "succeeded", result.summary()
    assert bodies, "no create was sent"
    assert {b["image_login"] for b in bodies} == {f"-u octo -p {TOKEN} ghcr.io"}
    job_json = _store_text(f"{world.store_url}/{result.run_id}")
    assert "job.json" in str(fsspec.core.url_to_fs(world.store_url)[0].find(world.store_url))
    assert TOKEN not in job_json
    assert TOKEN not in caplog.text
    assert all(TOKEN not in e.message for e in world.events)
    assert TOKEN not in repr(job) + result.summary() + repr(result)


def test_a_registry_given_apart_from_the_image_is_used(
    home: Path,
    world: World,
    creates: tuple[Client, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, bodies = creates
    monkeypatch.setenv("VASTKIT_REGISTRY_USER", "octo")
    monkeypatch.setenv("VASTKIT_REGISTRY_TOKEN", TOKEN)
    monkeypatch.setenv("VASTKIT_REGISTRY", "registry.example.com:5000")
    _, result = _run(world, client, image="team/private-train:1")
    assert result.status == "succeeded", result.summary()
    assert {b["image_login"] for b in bodies} == {f"-u octo -p {TOKEN} registry.example.com:5000"}


def test_the_registry_token_from_the_config_file(
    home: Path,
    world: World,
    creates: tuple[Client, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    client, bodies = creates
    config = tmp_path / "vastkit.yaml"
    config.write_text(
        "registry: ghcr.io\nregistry_user: octo\nregistry_token: ${GHCR_TOKEN}\n", encoding="utf-8"
    )
    monkeypatch.setenv("VASTKIT_CONFIG", str(config))
    monkeypatch.setenv("GHCR_TOKEN", TOKEN)
    _, result = _run(world, client, image="octo/train")
    assert result.status == "succeeded", result.summary()
    assert {b["image_login"] for b in bodies} == {f"-u octo -p {TOKEN} ghcr.io"}


def test_without_a_login_no_image_login_is_sent(
    home: Path, world: World, creates: tuple[Client, list[dict[str, Any]]]
) -> None:
    client, bodies = creates
    _, result = _run(world, client)
    assert result.status == "succeeded", result.summary()
    assert bodies
    assert all(b.get("image_login") is None for b in bodies)


def test_half_a_login_fails_before_any_api_call(
    home: Path,
    world: World,
    creates: tuple[Client, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, _ = creates
    monkeypatch.setenv("VASTKIT_REGISTRY_TOKEN", TOKEN)
    before = len(world.emu.requests)
    with pytest.raises(ConfigError, match="registry_user is not set") as caught:
        _run(world, client)
    assert TOKEN not in str(caught.value)
    assert len(world.emu.requests) == before


def test_the_jobs_ssh_key_is_attached_to_its_instance(
    home: Path, world: World, creates: tuple[Client, list[dict[str, Any]]]
) -> None:
    client, _ = creates
    key = make_key("job-key")
    seen: list[tuple[str, ...]] = []
    world.events.clear()

    def on_created(event: Any) -> None:
        if event.kind == "created" and event.instance_id is not None:
            seen.append(world.emu.instance(event.instance_id).ssh_keys)

    world.workers(total_steps=10)
    job = world.make_job(profile=ON_DEMAND, outbid=OutbidPolicy.give_up(), ssh_key=key)
    result = run_job(
        job, client=client, ledger=world.ledger, clock=world.clock, on_event=on_created
    )
    assert result.status == "succeeded", result.summary()
    assert seen == [(key,)] * len(result.attempts)


def test_a_key_file_named_by_the_job_is_read_once_before_renting(
    home: Path, world: World, creates: tuple[Client, list[dict[str, Any]]]
) -> None:
    client, _ = creates
    key_file = home / "work.pub"
    key_file.write_text(make_key("file-key") + "\n", encoding="utf-8")
    ids: list[int] = []

    def on_event(event: Any) -> None:
        if event.kind == "created" and event.instance_id is not None:
            ids.append(event.instance_id)
            assert world.emu.instance(event.instance_id).ssh_keys == (make_key("file-key"),)

    world.workers(total_steps=10)
    job = world.make_job(profile=ON_DEMAND, outbid=OutbidPolicy.give_up(), ssh_key=key_file)
    result = run_job(
        job,
        client=client,
        ledger=world.ledger,
        clock=world.clock,
        on_event=on_event,
        progress=False,
    )
    assert result.status == "succeeded", result.summary()
    assert ids


def test_no_key_is_said_once_and_the_job_runs(
    home: Path, world: World, creates: tuple[Client, list[dict[str, Any]]]
) -> None:
    client, _ = creates
    _, result = _run(world, client)
    assert result.status == "succeeded", result.summary()
    said = [e for e in world.events if e.kind == "no_ssh_key"]
    assert len(said) == 1
    assert "ssh-keygen -t ed25519" in said[0].message
    assert str(home / ".ssh" / "id_ed25519.pub") in said[0].message


def test_a_malformed_key_file_fails_the_job_before_any_api_call(
    home: Path, world: World, creates: tuple[Client, list[dict[str, Any]]]
) -> None:
    client, bodies = creates
    bad = home / "id_ed25519"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n", encoding="utf-8")
    before = len(world.emu.requests)
    with pytest.raises(ConfigError, match="private SSH key"):
        _run(world, client, ssh_key=str(bad))
    assert len(world.emu.requests) == before
    assert bodies == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [("ssh-ed25519 not*base64", "not an OpenSSH public key"), ("", "non-empty")],
)
def test_a_bad_key_line_is_refused_when_the_job_is_made(
    make_job: Callable[..., Job], value: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        make_job(ssh_key=value)

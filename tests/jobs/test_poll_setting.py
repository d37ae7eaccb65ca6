"""The configured poll interval ($VASTKIT_POLL_INTERVAL, the config file's poll_interval_s)
paces a job that leaves ``JobTimeouts.poll_interval`` at its default; a job's own wins."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from vastkit.errors import ConfigError
from vastkit.jobs import JobTimeouts

from .conftest import ON_DEMAND, World

DEFAULT_POLL = attrs.fields(JobTimeouts).poll_interval.default


@pytest.fixture
def no_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No poll interval from the environment or a config file; the working directory is
    ``tmp_path`` (where a ``vastkit.yaml`` is looked for)."""
    for var in ("VASTKIT_POLL_INTERVAL", "VASTKIT_CONFIG", "VASTKIT_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_default_poll_job(world: World) -> list[float]:
    world.workers(total_steps=120, checkpoint_every=40)
    timeouts = attrs.evolve(world.make_job().timeouts, poll_interval=DEFAULT_POLL)
    start = len(world.clock.slept)
    result = world.run(world.make_job(profile=ON_DEMAND, timeouts=timeouts))
    assert result.status == "succeeded", result.summary()
    return world.clock.slept[start:]


def test_the_environment_variable_paces_a_job_left_at_the_default(
    world: World, no_setting: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", "3")
    slept = run_default_poll_job(world)
    assert slept.count(3.0) >= 30, slept  # ~120 s of work looked at every 3 s
    assert DEFAULT_POLL not in slept, slept


def test_the_config_file_paces_a_job_left_at_the_default(world: World, no_setting: Path) -> None:
    (no_setting / "vastkit.yaml").write_text("poll_interval_s: 4\n")
    slept = run_default_poll_job(world)
    assert slept.count(4.0) >= 25, slept
    assert DEFAULT_POLL not in slept, slept


def test_without_a_setting_the_default_applies(world: World, no_setting: Path) -> None:
    slept = run_default_poll_job(world)
    assert slept.count(DEFAULT_POLL) >= 5, slept


def test_a_job_that_sets_its_poll_interval_keeps_it(
    world: World, no_setting: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", "3")
    world.workers(total_steps=120, checkpoint_every=40)
    job = world.make_job(profile=ON_DEMAND)  # FAST: poll_interval=10
    assert job.timeouts.poll_interval == 10
    result = world.run(job)
    assert result.status == "succeeded", result.summary()
    assert world.clock.slept.count(10.0) >= 10, world.clock.slept
    assert 3.0 not in world.clock.slept


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_a_bad_setting_fails_before_any_request(
    world: World, no_setting: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", value)
    with pytest.raises(ConfigError, match=r"VASTKIT_POLL_INTERVAL must be a positive number"):
        world.run(world.make_job(profile=ON_DEMAND))
    assert world.emu.requests == []


def test_an_interval_too_long_for_the_job_names_its_source(
    world: World, no_setting: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", "600")  # orchestrator_timeout is 900 s
    timeouts = JobTimeouts(orchestrator_timeout=900)
    with pytest.raises(ConfigError) as info:
        world.run(world.make_job(profile=ON_DEMAND, timeouts=timeouts))
    message = str(info.value)
    assert "$VASTKIT_POLL_INTERVAL" in message, message
    assert "orchestrator_timeout" in message, message
    assert world.emu.requests == []


def test_fifteen_seconds_set_by_hand_is_the_jobs_choice(
    no_setting: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the default gives way to the configured interval, not the same number given."""
    from vastkit.jobs.launch import job_timeouts
    from vastkit.jobs.spec import JobTimeouts, poll_interval_is_default

    monkeypatch.setenv("VASTKIT_POLL_INTERVAL", "2")
    assert poll_interval_is_default(JobTimeouts())
    assert job_timeouts(JobTimeouts()).poll_interval == 2.0
    chosen = JobTimeouts(poll_interval=15)
    assert not poll_interval_is_default(chosen)
    assert job_timeouts(chosen).poll_interval == 15.0
    evolved = attrs.evolve(JobTimeouts(), provisioning=60.0)  # other fields keep the default's
    assert job_timeouts(evolved).poll_interval == 2.0

"""The Job value and its YAML form."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastkit.errors import ConfigError
from vastkit.jobs import Job, JobTimeouts
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile
from vastkit.rundir import CheckpointSettings

GOOD = """\
name: mnist
command: [python, train.py, --epochs, "3"]
profile: training-standard
store_url: s3://bucket/runs
workdir: .
env: {SEED: 1}
checkpoint: {every_steps: 200, keep_last: 2}
timeouts: {poll_interval: 20, heartbeat_stale: 600}
outbid: give_up
restarts_on_error: 1
max_cost_usd: 5
project: vision
"""


def test_from_yaml_reads_every_section(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD)
    job = Job.from_yaml(path)
    assert job.name == "mnist"
    assert job.command == ("python", "train.py", "--epochs", "3")
    assert job.profile == "training-standard"
    assert job.env == {"SEED": "1"}
    assert job.checkpoint == CheckpointSettings(every_steps=200, keep_last=2)
    assert job.timeouts == JobTimeouts(poll_interval=20, heartbeat_stale=600)
    assert job.outbid == OutbidPolicy(action="give_up") == OutbidPolicy.give_up()
    assert job.restarts_on_error == 1
    assert job.max_cost_usd == 5
    assert job.project == "vision"


@pytest.mark.parametrize(
    ("line", "policy"),
    [
        ("", OutbidPolicy.cheapest_expected()),
        ("outbid: cheapest_expected\n", OutbidPolicy.cheapest_expected()),
        (
            "outbid: {action: cheapest_expected, wait_s: 1800, time_value_dph: 0.5}\n",
            OutbidPolicy.cheapest_expected(max_wait_s=1800, time_value_dph=0.5),
        ),
        (
            "outbid:\n  action: cheapest_expected\n  max_bid: 0.4\n  prior_hold_s: 120\n",
            OutbidPolicy.cheapest_expected(max_bid=0.4, prior_hold_s=120),
        ),
        ("outbid: give_up\n", OutbidPolicy.give_up()),
        ("outbid: {action: wait, wait_s: 300}\n", OutbidPolicy.wait(300)),
        ("outbid: raise\n", OutbidPolicy.raise_bid()),
    ],
    ids=["default", "named", "mapping", "block", "give_up", "wait", "raise"],
)
def test_a_job_file_names_the_price_aware_policy_or_a_fixed_one(
    line: str, policy: OutbidPolicy
) -> None:
    head = "name: x\ncommand: python a.py\nprofile: test-4090\nstore_url: /tmp/runs\n"
    assert Job.from_yaml(head + line).outbid == policy


def test_from_yaml_accepts_an_inline_profile() -> None:
    job = Job.from_yaml(
        "name: x\ncommand: python a.py\nstore_url: /tmp/runs\n"
        "profile: {gpu_name: RTX_4090, max_dph: 0.5, rental: interruptible}\n"
    )
    assert isinstance(job.profile, GpuProfile)
    assert job.profile.gpu_name == ("RTX 4090",)
    assert job.profile.rental == "interruptible"


def test_a_misspelt_key_names_file_line_and_the_nearest_key(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD.replace("restarts_on_error", "restart_on_error"))
    with pytest.raises(ConfigError) as info:
        Job.from_yaml(path)
    err = info.value
    assert err.path == str(path)
    assert err.line == 10
    assert err.key == "restart_on_error"
    assert "did you mean 'restarts_on_error'" in str(err)


def test_a_misspelt_nested_key_is_named_with_its_section(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(GOOD.replace("poll_interval", "poll_intervall"))
    with pytest.raises(ConfigError) as info:
        Job.from_yaml(path)
    assert info.value.key == "timeouts.poll_intervall"
    assert info.value.line == 8
    assert "did you mean 'poll_interval'" in str(info.value)


def test_missing_required_keys_are_listed() -> None:
    with pytest.raises(ConfigError, match="'command', 'profile'"):
        Job.from_yaml("name: x\nstore_url: s3://b\n")


def test_a_wrong_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        Job.from_yaml("name: x\ncommand: a\nprofile: p\nstore_url: s\nmax_attempts: 0\n")


def test_repr_never_shows_storage_options() -> None:
    job = Job(
        name="x",
        command="a",
        profile="dev-test",
        store_url="s3://b",
        storage_options={"secret": "hunter2"},
    )
    assert "hunter2" not in repr(job)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", " "),
        ("command", ""),
        ("store_url", ""),
        ("max_attempts", 0),
        ("restarts_on_error", -1),
        ("max_cost_usd", -1.0),
    ],
)
def test_bad_values_are_refused_at_construction(field: str, value: object) -> None:
    values: dict[str, object] = {"name": "x", "command": "a", "profile": "p", "store_url": "s"}
    values[field] = value
    with pytest.raises(ValueError, match=field if field != "command" else "command"):
        Job(**values)  # type: ignore[arg-type]

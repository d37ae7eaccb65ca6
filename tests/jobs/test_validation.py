"""Bad input never costs money (issue 16): every job field is checked where it is made.

Each case of the issue is a test here, by name. Before, these values were accepted and failed
after a GPU was rented (``orchestrator_timeout: -5`` rented 4 times; ``keep_last: 0`` failed in
the worker), were never checked, or failed before renting with a bare builtin error.

From a YAML file each gives a :class:`ConfigError` naming the file, the line and the key and
saying what is allowed; from Python an ``ConfigValueError`` that is a ``VastkitError``, a
``ConfigError`` and a ``ValueError`` (``ConfigTypeError``: also a ``TypeError``) naming the
class and the field. Run through ``run_job`` against the emulator, none reaches the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from tests._support.world import BID_PROFILE, FAST, ON_DEMAND, HookedClock
from tests.jobs.conftest import World
from vastkit.api.client import Client
from vastkit.errors import ConfigError, ConfigTypeError, ConfigValueError, VastkitError
from vastkit.jobs import Job, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile
from vastkit.rundir import AttemptSettings, CheckpointSettings, JobSpec

HEAD = "name: bad\ncommand: python train.py\nprofile: test-4090\nstore_url: {store}\n"
"""The first four lines of every job file here; the bad key is on line 5."""

FOUR_HUNDRED_DIGITS = "9" * 400

# (case id, the YAML line, the key, a phrase of the allowed values, the type error or not)
YAML_CASES: list[tuple[str, str, str, str, bool]] = [
    (
        "orchestrator_timeout_negative",
        "timeouts: {orchestrator_timeout: -5}",
        "timeouts.orchestrator_timeout",
        "greater than 0",
        False,
    ),
    (
        "orchestrator_timeout_soon",
        "timeouts: {orchestrator_timeout: soon}",
        "timeouts.orchestrator_timeout",
        "or null (never)",
        True,
    ),
    (
        "poll_interval_inf",
        "timeouts: {poll_interval: .inf}",
        "timeouts.poll_interval",
        "at most",
        False,
    ),
    (
        "poll_interval_true",
        "timeouts: {poll_interval: true}",
        "timeouts.poll_interval",
        "seconds",
        True,
    ),
    ("destroy_inf", "timeouts: {destroy: .inf}", "timeouts.destroy", "at most 31622400", False),
    ("keep_last_zero", "checkpoint: {keep_last: 0}", "checkpoint.keep_last", "1 or more", False),
    (
        "every_seconds_negative",
        "checkpoint: {every_seconds: -1}",
        "checkpoint.every_seconds",
        "greater than 0",
        False,
    ),
    (
        "keep_best_without_metric",
        "checkpoint: {keep_best: 2}",
        "checkpoint.keep_best",
        "needs best_metric",
        False,
    ),
    (
        "async_save_maybe",
        "checkpoint: {async_save: maybe}",
        "checkpoint.async_save",
        "true or false",
        True,
    ),
    ("team_list", "team: [a]", "team", "non-empty team name", True),
    ("image_number", "image: 5", "image", "non-empty image name", True),
    (
        "max_cost_usd_400_digits",
        f"max_cost_usd: {FOUR_HUNDRED_DIGITS}",
        "max_cost_usd",
        "number",
        False,
    ),
    (
        "storage_options_list",
        "storage_options: [1, 2]",
        "storage_options",
        "mapping of option",
        True,
    ),
    ("disk_gb_negative", "disk_gb: -5", "disk_gb", "at least 8", False),
    ("disk_gb_big", "disk_gb: big", "disk_gb", "at least 8", True),
    (
        "outbid_wait_nan",
        "outbid: {action: wait, wait_s: .nan}",
        "outbid.wait_s",
        "seconds from 0",
        False,
    ),
    (
        "outbid_action_misspelt",
        "outbid: cheapest",
        "outbid.action",
        "one of 'cheapest_expected', 'give_up', 'raise', 'wait'",
        False,
    ),
    (
        "outbid_max_wait_key",
        "outbid: {action: cheapest_expected, max_wait_s: 1800}",
        "outbid.max_wait_s",
        "did you mean 'wait_s'?",
        False,
    ),
    (
        "outbid_cheapest_wait_negative",
        "outbid: {action: cheapest_expected, wait_s: -1}",
        "outbid.wait_s",
        "seconds from 0",
        False,
    ),
    (
        "outbid_time_value_text",
        "outbid: {action: cheapest_expected, time_value_dph: lots}",
        "outbid.time_value_dph",
        "number",
        True,
    ),
    (
        "outbid_list",
        "outbid: [cheapest_expected]",
        "outbid",
        "one of cheapest_expected, give_up, raise, wait or a mapping",
        True,
    ),
    ("env_nested", "env: {SEED: [1]}", "env.SEED", "must be text", True),
    (
        "heartbeat_stale_below_interval",
        "timeouts: {heartbeat_stale: 5, heartbeat_interval: 10}",
        "timeouts.heartbeat_stale",
        "longer than heartbeat_interval",
        False,
    ),
]


def bad_yaml(line: str, store: str = "memory://validation") -> str:
    return HEAD.format(store=store) + line + "\n"


@pytest.mark.parametrize(
    ("line", "key", "allowed"),
    [pytest.param(c[1], c[2], c[3], id=c[0]) for c in YAML_CASES],
)
def test_a_bad_field_in_a_job_file_names_file_line_key_and_allowed_values(
    tmp_path: Path, line: str, key: str, allowed: str
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(bad_yaml(line))

    with pytest.raises(ConfigError) as info:
        Job.from_yaml(path)

    err = info.value
    assert (err.path, err.line, err.key) == (str(path), 5, key)
    assert str(err).startswith(f"{path}:5: {key}: ")
    assert allowed in str(err)
    assert not isinstance(err, ConfigValueError)  # a file's error, not a Python argument's


def test_a_400_digit_number_is_shown_short() -> None:
    with pytest.raises(ConfigError) as info:
        Job.from_yaml(bad_yaml(f"max_cost_usd: {FOUR_HUNDRED_DIGITS}"))
    assert len(str(info.value)) < 200
    assert "(400 characters)" in str(info.value)


# (case id, the class, its keyword arguments, the field named, a TypeError too)
PY_CASES: list[tuple[str, type[Any], dict[str, Any], str, bool]] = [
    (
        "orchestrator_timeout_negative",
        JobTimeouts,
        {"orchestrator_timeout": -5},
        "orchestrator_timeout",
        False,
    ),
    (
        "orchestrator_timeout_soon",
        JobTimeouts,
        {"orchestrator_timeout": "soon"},
        "orchestrator_timeout",
        True,
    ),
    (
        "orchestrator_timeout_one_poll",
        JobTimeouts,
        {"orchestrator_timeout": 20},
        "orchestrator_timeout",
        False,
    ),
    ("poll_interval_inf", JobTimeouts, {"poll_interval": float("inf")}, "poll_interval", False),
    ("poll_interval_nan", JobTimeouts, {"poll_interval": float("nan")}, "poll_interval", False),
    ("poll_interval_true", JobTimeouts, {"poll_interval": True}, "poll_interval", True),
    ("destroy_inf", JobTimeouts, {"destroy": float("inf")}, "destroy", False),
    ("max_duration_zero", JobTimeouts, {"max_duration": 0}, "max_duration", False),
    ("keep_last_zero", CheckpointSettings, {"keep_last": 0}, "keep_last", False),
    ("every_seconds_negative", CheckpointSettings, {"every_seconds": -1}, "every_seconds", False),
    ("keep_best_without_metric", CheckpointSettings, {"keep_best": 2}, "keep_best", False),
    ("async_save_maybe", CheckpointSettings, {"async_save": "maybe"}, "async_save", True),
    ("every_steps_true", CheckpointSettings, {"every_steps": True}, "every_steps", True),
    ("best_mode_median", CheckpointSettings, {"best_mode": "median"}, "best_mode", False),
    ("url_suffix_escapes", CheckpointSettings, {"url_suffix": "../other"}, "url_suffix", False),
    ("team_list", Job, {"team": ["a"]}, "team", True),
    ("image_number", Job, {"image": 5}, "image", True),
    (
        "max_cost_usd_400_digits",
        Job,
        {"max_cost_usd": int(FOUR_HUNDRED_DIGITS)},
        "max_cost_usd",
        False,
    ),
    ("max_cost_usd_nan", Job, {"max_cost_usd": float("nan")}, "max_cost_usd", False),
    ("storage_options_list", Job, {"storage_options": [1, 2]}, "storage_options", True),
    (
        "storage_options_not_json",
        Job,
        {"storage_options": {"key": object()}},
        "storage_options",
        True,
    ),
    ("disk_gb_negative", Job, {"disk_gb": -5}, "disk_gb", False),
    ("disk_gb_below_vast_minimum", Job, {"disk_gb": 4}, "disk_gb", False),
    ("disk_gb_big", Job, {"disk_gb": "big"}, "disk_gb", True),
    ("command_nul", Job, {"command": "echo \x00"}, "command", False),
    ("command_empty_argv0", Job, {"command": ["", "x"]}, "command", False),
    ("env_nested", Job, {"env": {"SEED": [1]}}, "env.SEED", True),
    ("env_name_with_equals", Job, {"env": {"A=B": "1"}}, "env", False),
    ("timeouts_not_timeouts", Job, {"timeouts": {"poll_interval": 5}}, "timeouts", True),
    ("max_attempts_true", Job, {"max_attempts": True}, "max_attempts", True),
    ("outbid_step_inf", OutbidPolicy, {"step": float("inf")}, "step", False),
    ("outbid_action_unknown", OutbidPolicy, {"action": "panic"}, "action", False),
    (
        "attempt_log_flush_zero",
        AttemptSettings,
        {"log_flush_seconds": 0},
        "log_flush_seconds",
        False,
    ),
]

_JOB_BASE = {"name": "x", "command": "a", "profile": "dev-test", "store_url": "s3://b/runs"}


@pytest.mark.parametrize(
    ("cls", "kwargs", "field", "type_error"),
    [pytest.param(*c[1:], id=c[0]) for c in PY_CASES],
)
def test_a_bad_argument_raises_a_vastkit_value_error_naming_the_field(
    cls: type[Any], kwargs: dict[str, Any], field: str, type_error: bool
) -> None:
    values = {**_JOB_BASE, **kwargs} if cls is Job else kwargs

    with pytest.raises(ConfigValueError) as info:
        cls(**values)

    err = info.value
    assert isinstance(err, VastkitError)
    assert isinstance(err, ConfigError)
    assert isinstance(err, ValueError)
    assert isinstance(err, TypeError) is type_error
    assert isinstance(err, ConfigTypeError) is type_error
    assert (err.owner, err.field, err.key) == (cls.__name__, field, field)
    assert str(err).startswith(f"{cls.__name__}.{field} ")


def test_a_bad_value_is_refused_by_evolve_too() -> None:
    with pytest.raises(ConfigValueError, match=r"JobTimeouts\.poll_interval"):
        attrs.evolve(JobTimeouts(), poll_interval=-1)


def test_a_job_spec_for_the_worker_is_checked_too() -> None:
    with pytest.raises(ConfigValueError, match=r"JobSpec\.command"):
        JobSpec(run_id="r", command=())
    with pytest.raises(ConfigTypeError, match=r"JobSpec\.has_code_bundle"):
        JobSpec(run_id="r", command="a", has_code_bundle="yes")  # type: ignore[arg-type]


def test_an_error_never_shows_env_or_storage_option_values() -> None:
    with pytest.raises(ConfigTypeError) as info:
        Job(**_JOB_BASE, env={"TOKEN": ["hunter2"]})  # type: ignore[dict-item]
    assert "hunter2" not in str(info.value)
    assert "env.TOKEN" in str(info.value)
    with pytest.raises(ConfigTypeError) as info:
        Job(**_JOB_BASE, storage_options={"secret": {"x": float("nan")}, "key": "hunter2"})
    assert "hunter2" not in str(info.value)


def test_repr_hides_environment_values() -> None:
    job = Job(
        **_JOB_BASE,
        env={"WANDB_API_KEY": "sk-env-secret"},
        storage_options={"key": "AKIA", "secret": "store-secret"},
    )
    text = repr(job)
    assert "sk-env-secret" not in text
    assert "store-secret" not in text
    assert "AKIA" not in text
    assert "'WANDB_API_KEY': ***" in text
    assert "'secret': ***" in text


def test_an_inline_profile_error_names_the_job_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: x\ncommand: a\nstore_url: s3://b\nprofile:\n  gpu_name: RTX_4090\n  max_dph: .nan\n"
    )
    with pytest.raises(ConfigError) as info:
        Job.from_yaml(path)
    assert (info.value.path, info.value.line, info.value.key) == (str(path), 6, "profile.max_dph")


def test_good_values_still_load(tmp_path: Path) -> None:
    """The checks refuse only what is wrong: the documented forms load."""
    path = tmp_path / "job.yaml"
    path.write_text(
        bad_yaml(
            "timeouts: {poll_interval: 20, orchestrator_timeout: null, max_duration: 3600}\n"
            "checkpoint: {every_steps: auto, keep_best: 1, best_metric: loss, async_save: false}\n"
            "outbid: {action: raise, step: 0.5, max_bid: 0.3}\n"
            "env: {SEED: 1, RATE: 0.5}\n"
            "storage_options: {anon: true, client_kwargs: {endpoint_url: 'http://x'}}\n"
            f"disk_gb: 8\nmax_cost_usd: 0\nimage: pytorch/pytorch\nteam: ml\nworkdir: {tmp_path}"
        )
    )
    job = Job.from_yaml(path)
    assert job.timeouts.orchestrator_timeout is None
    assert job.checkpoint.every_steps == "auto"
    assert job.env == {"SEED": "1", "RATE": "0.5"}
    assert job.disk_gb == 8
    assert job.workdir == str(tmp_path)
    assert Job(**_JOB_BASE, workdir=tmp_path).workdir == str(tmp_path)


# -- through run_job, on the emulator -----------------------------------------------------------


def fast_timeouts_yaml() -> str:
    values = attrs.asdict(FAST)
    return "timeouts: {" + ", ".join(f"{k}: {v}" for k, v in values.items() if v is not None) + "}"


@pytest.mark.parametrize(("line", "key"), [pytest.param(c[1], c[2], id=c[0]) for c in YAML_CASES])
def test_run_job_on_a_bad_job_file_makes_no_api_call(world: World, line: str, key: str) -> None:
    text = bad_yaml(line, world.store_url)
    if not line.startswith("timeouts"):
        text += fast_timeouts_yaml() + "\n"

    with pytest.raises(ConfigError) as info:
        world.run(Job.from_yaml(text), profiles={"test-4090": ON_DEMAND})

    assert info.value.key == key
    assert world.emu.requests == []
    assert world.emu.instances == []


def test_the_same_job_file_without_the_bad_line_runs(world: World) -> None:
    """The harness above is not vacuous: the good form of that file rents and succeeds."""
    world.workers(total_steps=20)
    text = bad_yaml("outbid: give_up", world.store_url) + fast_timeouts_yaml() + "\n"

    result = world.run(Job.from_yaml(text), profiles={"test-4090": ON_DEMAND})

    assert result.status == "succeeded", result.summary()
    assert any(name == "create" for _, name, _ in world.emu.requests)


# -- garbled prices from the API ------------------------------------------------------------------


class GarblingTransport(httpx.BaseTransport):
    """The emulator's transport, with a garbled twin of every searched offer added to the answer:
    a cheaper copy whose price is NaN, infinite or negative (as a broken API might send it),
    under the negated id."""

    GARBAGE: tuple[tuple[str, Any], ...] = (
        ("dph_base", -0.05),
        ("dph_base", "NaN"),
        ("storage_cost", -5.0),
        ("min_bid", "-Infinity"),
        ("dph_total", "NaN"),
        ("inet_down_cost", -1.0),
    )

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.added = 0
        self.twin_ids: set[int | None] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method != "POST" or not request.url.path.endswith("/bundles/"):
            return response
        response.read()
        body = json.loads(response.content)
        twins = []
        for n, offer in enumerate(body.get("offers", [])):
            field, value = self.GARBAGE[n % len(self.GARBAGE)]
            twin = {**offer, "id": -offer["id"], "ask_contract_id": None}
            self.twin_ids.add(twin["id"])
            twin["dph_base"] = offer["dph_base"] / 10
            twin["dph_total"] = offer["dph_total"] / 10
            twin[field] = value
            twins.append(twin)
        self.added += len(twins)
        body["offers"] = twins + body.get("offers", [])
        # NaN and Infinity as the bare tokens a Python JSON encoder writes
        text = json.dumps(body).replace('"NaN"', "NaN").replace('"-Infinity"', "-Infinity")
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(response.status_code, headers=headers, content=text.encode())


@pytest.mark.parametrize("profile", [ON_DEMAND, BID_PROFILE], ids=["on-demand", "interruptible"])
def test_run_job_never_rents_an_offer_with_a_garbled_price(
    world: World, ledger: Ledger, clock: HookedClock, profile: GpuProfile
) -> None:
    garbling = GarblingTransport(world.emu.transport)
    world.workers(total_steps=20)
    job = world.make_job(profile=profile, outbid=OutbidPolicy.give_up())
    with (
        httpx.Client(transport=garbling) as http,
        Client(
            world.emu.api_key,
            base_url=world.emu.url,
            clock=clock,
            max_retries=2,
            min_intervals={},
            http_client=http,
        ) as client,
    ):
        result = run_job(job, client=client, ledger=ledger, clock=clock, progress=False)

    assert garbling.added > 0
    assert result.status == "succeeded", result.summary()
    rented = {a.offer_id for a in result.attempts}
    assert rented
    assert not rented & garbling.twin_ids

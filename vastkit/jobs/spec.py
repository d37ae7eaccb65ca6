"""What a job is: :class:`Job` and :class:`JobTimeouts`, validated where they are made."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from vastkit._provision import (
    InstanceTimeouts,
)
from vastkit._validate import (
    check_choice,
    check_command,
    check_int,
    check_json_options,
    check_number,
    check_seconds,
    check_text,
    check_text_map,
    check_type,
    fspath_or_none,
    short_repr,
)
from vastkit._yaml import Document, did_you_mean, load_document, read_source
from vastkit.api.ssh import find_public_key
from vastkit.artifacts import (
    check_inputs,
    check_outputs,
)
from vastkit.errors import ConfigError, ConfigValueError
from vastkit.outbid import OUTBID_RULES, OutbidPolicy
from vastkit.profiles import MIN_DISK_GB, GpuProfile, load_profiles
from vastkit.rundir import (
    CheckpointSettings,
)

logger = logging.getLogger("vastkit.jobs")

__all__ = ["Job", "JobStatus", "JobTimeouts"]

JobStatus = Literal["succeeded", "failed", "budget_exceeded", "timed_out", "cancelled"]
"""How a job ended."""

Launcher = Literal["torchrun"]
"""How the worker starts the command: ``torchrun`` starts one process per GPU."""

LAUNCHERS: tuple[str, ...] = ("torchrun",)
"""The values :attr:`Job.launcher` accepts (besides ``None``)."""

ENV_LAUNCHER = "VASTKIT_LAUNCHER"
"""The job spec variable that tells the worker which launcher to use (see
:meth:`Job.launcher_env`)."""
ENV_NPROC_PER_NODE = "VASTKIT_NPROC_PER_NODE"
"""The job spec variable that fixes the number of processes the launcher starts."""

_KEY_TYPES: tuple[str, ...] = ("ssh-", "ecdsa-", "sk-")
"""How an ``ssh_key`` given as the key line itself starts (else it is a file)."""

_STATUSES: tuple[str, ...] = ("succeeded", "failed", "budget_exceeded", "timed_out", "cancelled")


# --------------------------------------------------------------------------------------------
# Settings and the job


class _DefaultSeconds(float):
    """A default number of seconds: equal to its value, and known not to be the user's choice."""

    __slots__ = ()


def poll_interval_is_default(timeouts: JobTimeouts) -> bool:
    """Whether ``timeouts`` left ``poll_interval`` at its default (not even set to 15 by hand),
    so the configured interval (``$VASTKIT_POLL_INTERVAL``, ``poll_interval_s``) may apply."""
    return isinstance(timeouts.poll_interval, _DefaultSeconds)


@attrs.frozen(kw_only=True)
class JobTimeouts:
    """Deadlines and pacing of a job, in seconds of the orchestrator's clock.

    Every duration is a finite number of seconds greater than 0 and at most a year (booleans are
    not numbers); ``max_duration`` and ``orchestrator_timeout`` may be ``None``. Two rules bind
    fields together: ``heartbeat_stale`` is longer than ``heartbeat_interval``, and
    ``orchestrator_timeout`` longer than two ``poll_interval``s (the orchestrator shows it is
    alive once a poll; a worker that hears nothing for that long notes it away).

    Raises:
        ConfigValueError: A value out of range (a ``ConfigError`` and a ``ValueError``).
        ConfigTypeError: A value of the wrong type (also a ``TypeError``).
    """

    poll_interval: float = attrs.field(default=_DefaultSeconds(15.0))
    """Time between two looks at the job (one instance list, one heartbeat read). Left at its
    default, the configured interval applies (``$VASTKIT_POLL_INTERVAL``, the config file's
    ``poll_interval_s``); a value given here, 15 included, always wins."""
    provisioning: float = attrs.field(default=600.0)
    """Longest an instance may wait for its container, per offer tried."""
    loading: float = attrs.field(default=1200.0)
    """Longest the image pull and container start may take, per offer tried."""
    running: float = attrs.field(default=1800.0)
    """Longest from create to ``running``, per offer tried."""
    worker_ready: float = attrs.field(default=900.0)
    """Longest from ``running`` to the worker's first heartbeat (installing vastkit included)."""
    heartbeat_stale: float = attrs.field(default=300.0)
    """A running attempt whose heartbeat has not changed for this long counts as lost."""
    host_lost_grace: float = attrs.field(default=120.0)
    """How long ``offline``/``unknown`` is tolerated before the host counts as lost."""
    stop_grace: float = attrs.field(default=60.0)
    """How long to wait for the worker to save and report after a stop, before destroying."""
    destroy: float = attrs.field(default=900.0)
    """How long a destroy keeps retrying before it raises."""
    machine_block: float = attrs.field(default=6 * 3600.0)
    """How long a machine that failed the job stays blocked (in the ledger)."""
    relaunch_delay: float = attrs.field(default=5.0)
    """Pause before looking for offers again when none qualified or every one failed."""
    no_offer_wait: float = attrs.field(default=900.0)
    """How long a relaunch keeps looking for a qualifying offer before the job fails."""
    max_duration: float | None = attrs.field(default=None)
    """The job's wall-clock limit (default: the profile's ``max_duration_hours``)."""
    heartbeat_interval: float = attrs.field(default=10.0)
    """How often the worker writes its heartbeat."""
    worker_grace: float = attrs.field(default=30.0)
    """How long the command gets to save after SIGTERM before the worker kills it."""
    orchestrator_timeout: float | None = attrs.field(default=900.0)
    """Silence of the orchestrator after which the worker counts it away: the attempt runs on
    within the job's own limits (its deadline and cost cap, which the worker enforces and then
    destroys its own instance); only an attempt with neither ends here, ``abandoned``."""
    log_flush_seconds: float = attrs.field(default=5.0)
    """How often the worker uploads the command's output."""

    def __attrs_post_init__(self) -> None:
        owner = "JobTimeouts"
        for field in attrs.fields(JobTimeouts):
            if field.name == "max_duration":
                check_seconds(owner, field.name, self.max_duration, none_means="the profile's")
            elif field.name == "orchestrator_timeout":
                check_seconds(owner, field.name, self.orchestrator_timeout, none_means="never")
            else:
                check_seconds(owner, field.name, getattr(self, field.name))
        if self.heartbeat_stale <= self.heartbeat_interval:
            raise ConfigValueError.of(
                owner,
                "heartbeat_stale",
                f"must be longer than heartbeat_interval ({self.heartbeat_interval:g} s), or "
                f"every attempt counts as lost (got {self.heartbeat_stale:g})",
                allowed="seconds greater than heartbeat_interval",
            )
        if (
            self.orchestrator_timeout is not None
            and self.orchestrator_timeout <= 2 * self.poll_interval
        ):
            raise ConfigValueError.of(
                owner,
                "orchestrator_timeout",
                f"must be longer than two poll intervals ({2 * self.poll_interval:g} s): the "
                "orchestrator shows it is alive once a poll, and a worker that hears nothing "
                f"for this long destroys its own instance (got {self.orchestrator_timeout:g})",
                allowed="seconds greater than 2 x poll_interval, or null (never)",
            )

    def instance_timeouts(self) -> InstanceTimeouts:
        """The per-phase deadlines as the lifecycle layer takes them."""
        return InstanceTimeouts(
            provisioning=self.provisioning,
            loading=self.loading,
            running=self.running,
            host_lost_grace=self.host_lost_grace,
            poll_interval=self.poll_interval,
            destroy=self.destroy,
            machine_block=self.machine_block,
        )


def _command(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    return value


def _str_map(value: Any) -> Any:
    """YAML scalars (``SEED: 1``) become text; anything else is left for the checks."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return value
    return {
        k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
        for k, v in value.items()
    }


def _paths(value: Any) -> Any:
    if value is None:
        return ()
    if isinstance(value, str | os.PathLike):
        return (os.fspath(value),)
    if isinstance(value, list | tuple):
        return tuple(fspath_or_none(v) for v in value)
    return value


def _path_map(value: Any) -> Any:
    value = _str_map(value)
    if isinstance(value, Mapping):
        return {k: fspath_or_none(v) for k, v in value.items()}
    return value


@attrs.frozen(kw_only=True)
class Job:
    """What to run, where, and within which limits.

    Every field is checked when the job is made (:meth:`from_yaml` turns the errors into a
    ``ConfigError`` with the file, the line and the key): a bad value raises
    ``ConfigValueError`` (a ``ConfigError`` and a ``ValueError``), a wrong type
    ``ConfigTypeError`` (also a ``TypeError``), naming the field and what it accepts. The repr
    shows the names of ``env`` and ``storage_options``, never their values.

    Example::

        job = vastkit.Job(
            name="resnet",
            command=["python", "train.py", "--epochs", "10"],
            profile="training-standard",
            workdir="./src",
            store_url="s3://my-bucket/runs",
            checkpoint=CheckpointSettings(every_steps=500),
            max_cost_usd=20.0,
        )
    """

    name: str = attrs.field()
    """A human name (shown in events, the ledger and the cost report)."""
    command: str | tuple[str, ...] = attrs.field(converter=_command)
    """The command the worker runs: an argv list, or a string run by ``/bin/sh -c``."""
    profile: str | GpuProfile
    """A profile name (built-in, or from ``run_job(profiles=...)``) or a
    :class:`~vastkit.profiles.GpuProfile`."""
    store_url: str = attrs.field()
    """Where run directories go (``s3://bucket/runs``, ``gs://...``, a local folder). The run
    directory is ``<store_url>/<run_id>``."""
    image: str | None = None
    """The Docker image (default: the profile's image, else Vast's base image)."""
    workdir: str | None = attrs.field(default=None, converter=fspath_or_none)
    """A local directory to bundle and run the command in on the worker (None: no bundle)."""
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map)
    """Environment variables for the command (written to ``job.json``; not for secrets)."""
    storage_options: Mapping[str, Any] = attrs.field(factory=dict)
    """fsspec options for the store (credentials, endpoint). They reach the worker as the
    ``VASTKIT_STORAGE_OPTIONS`` variable of the create request, never in ``job.json``."""
    checkpoint: CheckpointSettings = attrs.field(factory=CheckpointSettings)
    """How the worker's :class:`~vastkit.checkpoint.CheckpointManager` is set up."""
    project: str | None = None
    """The project (budgets and cost reports group by it)."""
    team: str | None = None
    """The team (default: the project's team in ``budgets.yaml``)."""
    restarts_on_error: int = 0
    """How many times a command that exits non-zero is started again (from its checkpoint)."""
    max_attempts: int = 20
    """The most instances the job may create in all (offers that failed to start included)."""
    outbid: OutbidPolicy = attrs.field(factory=OutbidPolicy.cheapest_expected)
    """What to do when an interruptible instance is outbid. The default,
    ``OutbidPolicy.cheapest_expected()``, prices waiting for the machine, raising the bid and
    moving to the next offer at each outbid and takes the cheapest, counting only the bill;
    it waits at most an hour for one outbid, then moves (each wait is reported as an
    ``outbid_waiting`` event saying when it will move). Measured in ``benchmarks/``: 1.005x
    the no-preemption cost at one preemption per 2 h (moving at once 1.09x, raising 1.29x),
    at 1.07x its wall time, as it mostly waits outbids out. The fixed policies remain:
    ``OutbidPolicy.give_up()`` (move at once: least wall time), ``OutbidPolicy.wait(s)`` and
    ``OutbidPolicy.raise_bid(...)``; ``cheapest_expected(time_value_dph=...)`` values idle
    hours too."""
    timeouts: JobTimeouts = attrs.field(factory=JobTimeouts)
    """Deadlines and pacing."""
    max_cost_usd: float | None = None
    """A cap on this job's spend in dollars (on top of ``budgets.yaml``)."""
    disk_gb: float | None = None
    """Disk in GB (default: the profile's ``disk_gb``)."""
    max_offers: int = 5
    """Offers tried per search before searching again."""
    worker_requirement: str | None = None
    """What the onstart pip-installs when the image lacks this vastkit version (default
    ``vastkit[s3]==<version>``; a wheel URL works too)."""
    inputs: Mapping[str, str] = attrs.field(factory=dict, converter=_path_map)
    """Name to location: a URL the worker fetches, or a local folder (or file) that is uploaded
    once into the content-addressed dataset cache. The worker fetches each before the command
    starts and sets ``VASTKIT_INPUT_<NAME>`` to its local path (see :mod:`vastkit.artifacts`)."""
    outputs: tuple[str, ...] = attrs.field(factory=tuple, converter=_paths)
    """Paths (folders, files, glob patterns) relative to the command's working directory,
    uploaded to ``<run>/outputs/`` when the command ends or is stopped."""
    dataset_cache_url: str | None = None
    """Where local inputs are cached (default: a ``datasets`` folder beside ``store_url``)."""
    ssh_key: str | None = attrs.field(default=None, converter=fspath_or_none)
    """The SSH public key attached to each instance: a ``.pub`` file or the key line (default:
    ``$VASTKIT_SSH_KEY``, the config file's ``ssh_key``, ``~/.ssh/id_ed25519.pub``,
    ``~/.ssh/id_rsa.pub``). The file is read once before anything is rented; with no key at
    all the job runs without one (a ``no_ssh_key`` event). Private images need no field: the
    registry login comes from ``$VASTKIT_REGISTRY_USER``/``$VASTKIT_REGISTRY_TOKEN`` or the
    config file, and is never written into the job or its run directory."""
    launcher: Launcher | None = None
    """How the worker starts the command. ``None`` (the default) runs it once. ``"torchrun"``
    runs it under ``python -m torch.distributed.run --standalone`` with one process per GPU of
    the rental (``--nproc-per-node`` from the container's ``GPU_COUNT``, else ``nvidia-smi
    -L``), each with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
    ``MASTER_PORT``; the worker supervises the whole group (see the multi-GPU guide). A
    command that is its own launcher (``accelerate launch ...``, ``deepspeed ...``) needs
    none: leave this ``None``."""
    nproc_per_node: int | None = None
    """With a launcher: how many processes to start, instead of one per GPU (``None``). Useful
    to run fewer ranks than GPUs, or CPU ranks (gloo) on a machine without GPUs."""

    def __attrs_post_init__(self) -> None:
        owner = "Job"
        check_text(owner, "name", self.name)
        check_command(owner, self.command)
        if not isinstance(self.profile, GpuProfile):
            check_text(owner, "profile", self.profile, what="profile name or a GpuProfile")
        check_text(owner, "store_url", self.store_url, what="URL or folder")
        check_text(owner, "image", self.image, none_ok=True, what="image name")
        check_text(owner, "workdir", self.workdir, none_ok=True, what="folder")
        check_text_map(owner, "env", self.env, secret=True)
        check_json_options(owner, "storage_options", self.storage_options)
        check_type(owner, "checkpoint", self.checkpoint, CheckpointSettings)
        check_text(owner, "project", self.project, none_ok=True)
        check_text(owner, "team", self.team, none_ok=True, what="team name")
        check_int(owner, "restarts_on_error", self.restarts_on_error, minimum=0)
        check_int(owner, "max_attempts", self.max_attempts, minimum=1)
        check_type(owner, "outbid", self.outbid, OutbidPolicy)
        check_type(owner, "timeouts", self.timeouts, JobTimeouts)
        check_number(owner, "max_cost_usd", self.max_cost_usd, minimum=0.0, none_ok=True)
        check_number(
            owner,
            "disk_gb",
            self.disk_gb,
            minimum=MIN_DISK_GB,
            none_ok=True,
            allowed=f"a number of GB of at least {MIN_DISK_GB:g}, or null (the profile's)",
        )
        check_int(owner, "max_offers", self.max_offers, minimum=1)
        check_text(owner, "worker_requirement", self.worker_requirement, none_ok=True)
        check_text_map(owner, "inputs", self.inputs)
        check_type(owner, "outputs", self.outputs, tuple, "a path or a list of paths")
        for path in self.outputs:
            check_text(owner, "outputs", path, what="path")
        check_text(owner, "dataset_cache_url", self.dataset_cache_url, none_ok=True)
        check_text(owner, "ssh_key", self.ssh_key, none_ok=True, what="public key file or key line")
        if self.launcher is not None:
            check_choice(owner, "launcher", self.launcher, LAUNCHERS)
        check_int(owner, "nproc_per_node", self.nproc_per_node, minimum=1, none_ok=True)
        if self.nproc_per_node is not None and self.launcher is None:
            raise ConfigValueError.of(
                owner,
                "nproc_per_node",
                f"needs a launcher (got {self.nproc_per_node} with launcher null): without one "
                "the command runs once; set launcher: torchrun",
                allowed="null without a launcher",
            )
        if self.ssh_key is not None and self.ssh_key.lstrip().startswith(_KEY_TYPES):
            try:  # a key line is checked now; a file is read once before renting
                find_public_key(self.ssh_key)
            except ConfigError:
                raise ConfigValueError.of(
                    owner,
                    "ssh_key",
                    "is not an OpenSSH public key line ('ssh-ed25519 AAAA... comment')",
                    allowed="a public key file (.pub) or its key line",
                ) from None
        for field, check in (("inputs", check_inputs), ("outputs", check_outputs)):
            try:
                check(getattr(self, field))
            except ValueError as exc:
                raise ConfigValueError.of(owner, field, f"is wrong: {exc}") from None

    def __repr__(self) -> str:
        # env and storage_options may hold credentials: only their names are shown.
        profile = self.profile if isinstance(self.profile, str) else self.profile.name
        hidden = ""
        for field in ("env", "storage_options"):
            names = sorted(str(k) for k in getattr(self, field))
            if names:
                hidden += f", {field}={{{', '.join(f'{n!r}: ***' for n in names)}}}"
        return (
            f"Job(name={self.name!r}, command={self.command!r}, profile={profile!r}, "
            f"store_url={self.store_url!r}{hidden})"
        )

    def launcher_env(self) -> dict[str, str]:
        """The job spec variables that tell the worker how to start the command.

        The orchestrator adds them to the spec's ``env``; the worker reads them back
        (``VASTKIT_LAUNCHER``, ``VASTKIT_NPROC_PER_NODE``). Empty without a launcher.
        """
        env: dict[str, str] = {}
        if self.launcher is not None:
            env[ENV_LAUNCHER] = self.launcher
            if self.nproc_per_node is not None:
                env[ENV_NPROC_PER_NODE] = str(self.nproc_per_node)
        return env

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> Job:
        """Load a job from a YAML file (or YAML text).

        The keys are the field names of :class:`Job`; ``checkpoint`` and ``timeouts`` are
        mappings of :class:`~vastkit.rundir.CheckpointSettings` and :class:`JobTimeouts` fields,
        ``outbid`` is an action (``cheapest_expected``, ``give_up``, ``raise`` or ``wait``) or
        a mapping of :class:`~vastkit.outbid.OutbidPolicy` fields such as
        ``{action: wait, wait_s: 300}`` or ``{action: cheapest_expected, wait_s: 1800}``, and
        ``profile`` may be a name or an inline profile mapping::

            name: mnist
            command: python train.py --epochs 3
            profile: training-standard
            store_url: s3://my-bucket/runs
            workdir: .
            checkpoint: {every_steps: 200, keep_last: 2}
            timeouts: {poll_interval: 20}
            max_cost_usd: 5

        Raises:
            ConfigError: The file is missing, not valid YAML, has an unknown key (the message
                suggests the nearest) or a wrong value; it names the file, line and key.
        """
        text, name = read_source(source, what="job")
        doc = load_document(text, name)
        return _job_from_document(doc)


_JOB_KEYS = tuple(a.name for a in attrs.fields(Job))
_REQUIRED_KEYS = ("name", "command", "profile", "store_url")


def _config_error(doc: Document, exc: Exception, *prefix: str) -> ConfigError:
    """A setting's error as the file's: its problem at the line of its key."""
    if isinstance(exc, ConfigValueError):
        return doc.error(exc.problem, *prefix, *exc.field.split("."))
    return doc.error(f"'{'.'.join(prefix) or 'job'}': {exc}", *prefix)


def _sub(doc: Document, key: str, cls: type[Any], value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise doc.error(
            f"must be a mapping of {cls.__name__} fields (got {short_repr(value)})", key
        )
    names = [a.name for a in attrs.fields(cls)]
    for sub in value:
        if sub not in names:
            raise doc.error(
                f"unknown key '{sub}' in '{key}'{did_you_mean(str(sub), names)}", key, sub
            )
    try:
        return cls(**dict(value))
    except (TypeError, ValueError) as exc:
        raise _config_error(doc, exc, key) from None


def _outbid_from(doc: Document, value: Any) -> OutbidPolicy:
    if isinstance(value, str):
        value = {"action": value}
    if not isinstance(value, Mapping):
        raise doc.error(
            f"must be one of {', '.join(OUTBID_RULES)} or a mapping of OutbidPolicy fields "
            f"(got {short_repr(value)})",
            "outbid",
        )
    return _sub(doc, "outbid", OutbidPolicy, value)  # type: ignore[no-any-return]


def _inline_profile(doc: Document, data: Mapping[str, Any], value: Mapping[Any, Any]) -> GpuProfile:
    """A ``profile:`` mapping written in the job file; its errors name the job file's line."""
    pname = str(data.get("name", "job")).strip() or "job"
    try:
        return load_profiles({"profiles": {pname: dict(value)}})[pname]
    except ConfigError as exc:
        # load_profiles saw a bare mapping ("<dict>"): point at the key in this file instead.
        prefix = f"profiles.{pname}"
        rest = (
            (exc.key or "")[len(prefix) :].strip(".") if (exc.key or "").startswith(prefix) else ""
        )
        raise doc.error(exc.message, "profile", *([rest] if rest else [])) from None


def _job_from_document(doc: Document) -> Job:
    data = doc.data
    if not isinstance(data, Mapping):
        raise doc.error("a job file must be a mapping with name, command, profile and store_url")
    for key in data:
        if key not in _JOB_KEYS:
            raise doc.error(f"unknown key '{key}'{did_you_mean(str(key), _JOB_KEYS)}", key)
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise doc.error("missing required key(s): " + ", ".join(f"'{k}'" for k in missing))
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "checkpoint":
            kwargs[key] = _sub(doc, key, CheckpointSettings, value)
        elif key == "timeouts":
            kwargs[key] = _sub(doc, key, JobTimeouts, value)
        elif key == "outbid":
            kwargs[key] = _outbid_from(doc, value)
        elif key == "profile" and isinstance(value, Mapping):
            kwargs[key] = _inline_profile(doc, data, value)
        else:
            kwargs[key] = value
    try:
        return Job(**kwargs)
    except (TypeError, ValueError) as exc:
        raise _config_error(doc, exc) from None


# --------------------------------------------------------------------------------------------
# Results and events

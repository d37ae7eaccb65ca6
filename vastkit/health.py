"""Health checks: is everything ready to run a job?

::

    report = vastkit.health_check()          # or vastkit.health_check("prod")
    print(report)                     # plain text; report.render() prints a rich table
    if not report.ok:
        raise SystemExit(1)

What is checked, in order (each failing item says how to fix it):

=====================  ===========================================================================
item                   passes when
=====================  ===========================================================================
``config``             the config file (if any) parses and the environment exists
``api key``            the key is accepted (``current_user``); the balance is shown
``clock``              the local clock is within ``max_clock_skew_s`` of the API's ``Date``
``store``              a probe object can be written, read back and deleted under a run prefix
``worker credentials`` the same, in a separate process that has only what a worker receives
``profiles``           the profiles file parses
``budgets``            the budgets file parses
``ledger``             the ledger opens
``reconcile``          a dry-run reconcile finds nothing to destroy
=====================  ===========================================================================

With ``live=True`` (``vastkit doctor --live``), what a first real rental needs on top:

=====================  ===========================================================================
``ssh key``            the public key attached to rentals reads (a warning when there is none)
``registry``           the registry login of private images is whole (or there is none)
``offers: <profile>``  a search for the profile finds an offer it would rent now
=====================  ===========================================================================

Every check is read-only against the API (the store probe writes and deletes one object): it
creates, changes and destroys nothing, so it is safe with a real account.

:func:`check_store_writable` is the store probe on its own; ``run_job`` calls it before renting
anything, so a permissions mistake costs nothing.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import attrs

from vastkit.clock import Clock, SystemClock
from vastkit.config import Settings, load_config
from vastkit.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConfigError,
    LedgerError,
    PermissionDeniedError,
    VastkitError,
)

if TYPE_CHECKING:
    from rich.console import Console

    from vastkit.api.client import Client
    from vastkit.profiles import GpuProfile

__all__ = [
    "CheckItem",
    "CheckStatus",
    "HealthReport",
    "check_store_writable",
    "health_check",
]

logger = logging.getLogger("vastkit.health")

PROBE_DIR: Final = ".vastkit-probe"
"""The folder (under a run prefix) that probe objects are written to and deleted from."""

_HINTS: Final[Mapping[str, str]] = {
    "AccessDenied": "the credentials may not write or read this bucket/prefix "
    "(s3:PutObject, s3:GetObject and s3:DeleteObject are needed)",
    "AllAccessDisabled": "all access to this bucket is disabled",
    "NoSuchBucket": "the bucket does not exist: create it, or fix store_url",
    "InvalidAccessKeyId": "the access key id is wrong (storage_options 'key')",
    "SignatureDoesNotMatch": "the secret key is wrong (storage_options 'secret')",
    "ExpiredToken": "the session token has expired: get fresh credentials",
    "InvalidToken": "the session token is invalid",
    "NoCredentialsError": "no credentials were found: put them in storage_options "
    "(a worker receives only storage_options, not your local environment or ~/.aws)",
    "EndpointConnectionError": "the endpoint cannot be reached: check the endpoint_url and the "
    "network",
}


class CheckStatus(enum.StrEnum):
    """The outcome of one health check item."""

    OK = "ok"
    """Ready."""
    WARN = "warn"
    """Works, but something deserves attention."""
    FAIL = "fail"
    """Broken: jobs will fail (or cost money for nothing) until it is fixed."""
    SKIP = "skip"
    """Not checked, because something it needs failed."""


@attrs.frozen(kw_only=True)
class CheckItem:
    """One line of a :class:`HealthReport`."""

    name: str
    """What was checked (``"api key"``, ``"store"``...)."""
    status: CheckStatus
    """ok, warn, fail or skip."""
    detail: str
    """What was found."""
    fix: str | None = None
    """How to fix it (set for every warn and fail)."""

    def to_dict(self) -> dict[str, Any]:
        """The item as plain data."""
        return {
            "name": self.name,
            "status": str(self.status),
            "detail": self.detail,
            "fix": self.fix,
        }


_MARKS: Final[Mapping[CheckStatus, str]] = {
    CheckStatus.OK: "ok",
    CheckStatus.WARN: "WARN",
    CheckStatus.FAIL: "FAIL",
    CheckStatus.SKIP: "skip",
}
_STYLES: Final[Mapping[CheckStatus, str]] = {
    CheckStatus.OK: "green",
    CheckStatus.WARN: "yellow",
    CheckStatus.FAIL: "bold red",
    CheckStatus.SKIP: "dim",
}


@attrs.frozen(kw_only=True)
class HealthReport:
    """The result of :func:`check`: one :class:`CheckItem` per thing checked."""

    items: tuple[CheckItem, ...]
    """The items, in the order they were checked."""
    env: str | None = None
    """The environment checked."""
    config_path: str | None = None
    """The config file read (None: none)."""

    @property
    def ok(self) -> bool:
        """True when no item failed (warnings and skips allowed)."""
        return not any(item.status is CheckStatus.FAIL for item in self.items)

    @property
    def failures(self) -> tuple[CheckItem, ...]:
        """The failed items."""
        return tuple(i for i in self.items if i.status is CheckStatus.FAIL)

    @property
    def warnings(self) -> tuple[CheckItem, ...]:
        """The items with a warning."""
        return tuple(i for i in self.items if i.status is CheckStatus.WARN)

    def __getitem__(self, name: str) -> CheckItem:
        """The item called ``name``.

        Raises:
            KeyError: No such item.
        """
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (for JSON)."""
        return {
            "ok": self.ok,
            "env": self.env,
            "config_path": self.config_path,
            "items": [item.to_dict() for item in self.items],
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def _heading(self) -> str:
        where = self.config_path or "no config file"
        env = f"environment {self.env!r}" if self.env else "no environment"
        verdict = "ready" if self.ok else f"{len(self.failures)} problem(s)"
        return f"vastkit check ({env}, {where}): {verdict}"

    def to_text(self) -> str:
        """The report as plain text, one line per item and an indented fix under each."""
        width = max((len(i.name) for i in self.items), default=0)
        lines = [self._heading()]
        for item in self.items:
            lines.append(f"  [{_MARKS[item.status]:>4}] {item.name:<{width}}  {item.detail}")
            if item.fix and item.status in (CheckStatus.FAIL, CheckStatus.WARN):
                lines.append(f"  {'':>6} {'':<{width}}  fix: {item.fix}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def render(self, console: Console | None = None) -> None:
        """Print the report as a rich table.

        Args:
            console: Where to print (default: a new stdout console).
        """
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=self._heading(), title_justify="left", show_lines=False)
        table.add_column("check", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_column("detail / fix", overflow="fold")
        for item in self.items:
            body = Text(item.detail)
            if item.fix and item.status in (CheckStatus.FAIL, CheckStatus.WARN):
                body.append("\nfix: ", style="bold")
                body.append(item.fix)
            table.add_row(item.name, Text(_MARKS[item.status], style=_STYLES[item.status]), body)
        (console or Console()).print(table)


# -- the store probe -------------------------------------------------------------------------------


def describe_store_error(exc: BaseException) -> str:
    """Name the cause of a storage failure: ``"AccessDenied (Access Denied)"`` and a hint.

    Looks through the exception chain for a botocore-style error code (without importing
    botocore), else uses the innermost exception's class and message.

    Args:
        exc: What fsspec (s3fs, gcsfs...) raised.

    Returns:
        One line for an error message.
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for item in chain:
        response = getattr(item, "response", None)
        if isinstance(response, Mapping):
            error = response.get("Error") or {}
            code = error.get("Code") if isinstance(error, Mapping) else None
            if code:
                message = error.get("Message") or str(item)
                hint = _HINTS.get(str(code))
                return f"{code} ({message})" + (f": {hint}" if hint else "")
    for item in chain:
        name = type(item).__name__
        if name in _HINTS:
            return f"{name} ({item}): {_HINTS[name]}"
    if isinstance(exc, PermissionError):
        return f"access denied ({exc}): {_HINTS['AccessDenied']}"
    if isinstance(exc, FileNotFoundError):
        return f"not found ({exc}): the bucket or folder does not exist"
    return f"{type(exc).__name__}: {exc}"


def check_store_writable(
    store_url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
) -> None:
    """Write, read back and delete a probe object under a run prefix of the store.

    The options go through JSON first, exactly as a worker receives them
    (``VASTKIT_STORAGE_OPTIONS``), and a fresh filesystem instance is used (no fsspec cache).
    ``run_job`` calls this before renting anything.

    Args:
        store_url: The store (``s3://bucket/runs``, ``gs://...``, a local folder).
        storage_options: fsspec options (credentials, endpoint).
        run_id: The run prefix to probe under (default: a throwaway ``probe-<hex>`` prefix).

    Raises:
        ConfigError: The store cannot be written, read back or cleaned up; the message names
            the URL, the step and the cause (``AccessDenied``, ``NoSuchBucket``, no credentials,
            an unreachable endpoint...). Its ``key`` is ``"store_url"``.
        ValueError: ``store_url`` is empty.
    """
    if not store_url or not store_url.strip():
        raise ValueError("store_url must not be empty")
    options = _as_worker_gets_them(storage_options)
    prefix = run_id or f"probe-{uuid.uuid4().hex[:12]}"
    name = f"{PROBE_DIR}/{uuid.uuid4().hex}"
    url = f"{store_url.rstrip('/')}/{prefix}/{name}"
    payload = f"vastkit store probe {uuid.uuid4().hex}\n".encode()
    step = "open"
    try:
        import fsspec

        step = "open"
        fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
        step = "write"
        parent = path.rsplit("/", 1)[0]
        if _is_local(fs):
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, payload)
        step = "read back"
        if fs.cat_file(path) != payload:
            raise OSError("the object read back differs from the one written")
        step = "delete"
        fs.rm_file(path)
        if _is_local(fs):
            _remove_empty_dirs(fs, parent, stop=path.rsplit("/", 3)[0])
    except Exception as exc:
        cause = describe_store_error(exc)
        raise ConfigError(
            f"cannot {step} a probe object at {url}: {cause}", key="store_url"
        ) from exc
    logger.debug("store probe passed at %s", url)


def _as_worker_gets_them(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    if not storage_options:
        return {}
    try:
        decoded: dict[str, Any] = json.loads(json.dumps(dict(storage_options)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"storage_options must be JSON-serialisable (workers receive them as JSON): {exc}",
            key="storage_options",
        ) from exc
    return decoded


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return "file" in protocols or "local" in protocols


def _remove_empty_dirs(fs: Any, start: str, *, stop: str) -> None:
    current = start
    while current and current != stop and current.startswith(stop):
        try:
            if fs.ls(current):
                return
            fs.rmdir(current)
        except OSError:
            return
        current = current.rsplit("/", 1)[0]


_WORKER_PROBE: Final = """
import json, os, sys
try:
    from vastkit.health import check_store_writable
    check_store_writable(sys.argv[1], json.loads(os.environ.get("VASTKIT_STORAGE_OPTIONS") or "{}"))
except Exception as exc:
    print(str(exc), file=sys.stderr)
    sys.exit(1)
"""


def check_worker_store_access(
    store_url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    timeout_s: float = 120.0,
) -> None:
    """Run :func:`check_store_writable` in a new process that has only what a worker receives.

    The process gets ``VASTKIT_STORAGE_OPTIONS`` (JSON) and ``PATH``, an empty home directory and
    no other variables: credentials that work here only because of ``AWS_*`` variables,
    ``~/.aws`` or instance metadata fail, as they would on the GPU host.

    Args:
        store_url: The store.
        storage_options: The options the worker will receive.
        timeout_s: The most seconds to wait for the process.

    Raises:
        ConfigError: The probe failed in that process; the message names the cause.
    """
    options = _as_worker_gets_them(storage_options)
    with tempfile.TemporaryDirectory(prefix="vastkit-worker-home-") as home:
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.path.join(home, "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "aws-credentials"),
            "VASTKIT_STORAGE_OPTIONS": json.dumps(options),
        }
        pythonpath = os.pathsep.join(p for p in sys.path if p)
        environ["PYTHONPATH"] = pythonpath
        try:
            done = subprocess.run(
                [sys.executable, "-c", _WORKER_PROBE, store_url],
                env=environ,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                cwd=home,
            )
        except subprocess.TimeoutExpired as exc:
            raise ConfigError(
                f"the worker-side store probe did not finish in {timeout_s:g} s", key="store_url"
            ) from exc
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["the probe process failed"])[-1]
        raise ConfigError(f"with only the worker's credentials: {message}", key="storage_options")


# -- check() ------------------------------------------------------------------------------------


def health_check(
    env: str | None = None,
    *,
    settings: Settings | None = None,
    client: Client | None = None,
    clock: Clock | None = None,
    max_clock_skew_s: float = 30.0,
    worker_probe: bool = True,
    live: bool = False,
) -> HealthReport:
    """Check that vastkit is ready to run jobs with the settings of ``env``.

    Args:
        env: The environment (default: ``$VASTKIT_ENV``, else the config file's default).
        settings: Settings to check instead of loading the config file.
        client: The API client to use (default: one built from the settings, closed at the end).
        clock: The local clock compared with the API's (default: real time).
        max_clock_skew_s: A difference above this many seconds is a warning.
        worker_probe: Also probe the store from a separate process with only the worker's
            credentials (about a second).
        live: Also check the SSH key and registry login rentals get, and search offers for
            each profile (one read-only search per profile).

    Returns:
        The report; ``report.ok`` is False when any item failed. It never raises for a
        failed check: each problem becomes an item with a fix.
    """
    local_clock = clock or SystemClock()
    items: list[CheckItem] = []
    if settings is None:
        loaded = _load_settings(env)
        if isinstance(loaded, CheckItem):
            return HealthReport(items=(loaded,), env=env)
        settings = loaded
    items.append(_config_item(settings))

    secret: str | None = None
    own_client = client is None
    api: Client | None = client
    if api is None:
        opened = _open_client(settings)
        if isinstance(opened, CheckItem):
            items.append(opened)
        else:
            secret, api = opened
    try:
        key_ok = False
        if api is not None:
            key_ok = _run(items, "api key", lambda: _key_item(api, settings))
            if key_ok:
                _run(items, "clock", lambda: _clock_item(api, local_clock, max_clock_skew_s))
            else:
                items.append(_skipped("clock", "needs a working API connection"))
        else:
            items.append(_skipped("clock", "needs an API key"))
        _store_items(items, settings, worker_probe=worker_probe, api=api)
        _run(items, "profiles", lambda: _profiles_item(settings))
        _run(items, "budgets", lambda: _budgets_item(settings))
        ledger_ok = _run(items, "ledger", lambda: _ledger_item(settings))
        if api is not None and key_ok and ledger_ok:
            _run(items, "reconcile", lambda: _reconcile_item(api, settings))
        else:
            items.append(_skipped("reconcile", "needs a working API key and ledger"))
        if live:
            items.extend(_access_items())
            _offer_items(items, settings, api if key_ok else None, local_clock)
    finally:
        if own_client and api is not None:
            api.close()
    if secret:
        items = [_redact(item, secret) for item in items]
    return HealthReport(items=tuple(items), env=settings.env, config_path=settings.config_path)


def _load_settings(env: str | None) -> Settings | CheckItem:
    """The settings of ``env``, or the failed "config" item that says why there are none."""
    try:
        return load_config(env=env)
    except ConfigError as exc:
        return CheckItem(
            name="config",
            status=CheckStatus.FAIL,
            detail=str(exc),
            fix="correct the config file at the line shown (or unset VASTKIT_ENV / "
            "VASTKIT_CONFIG if they point at the wrong place)",
        )


def _open_client(settings: Settings) -> tuple[str, Client] | CheckItem:
    """The API key and a client built with it, or the failed "api key" item."""
    try:
        secret = settings.api_key()
        return secret, settings.client(secret)
    except ConfigError as exc:
        return CheckItem(
            name="api key",
            status=CheckStatus.FAIL,
            detail=str(exc),
            fix="export VAST_API_KEY, or set api_key_env/api_key_file in vastkit.yaml "
            "(create a key at https://cloud.vast.ai/manage-keys/)",
        )


def _skipped(name: str, why: str) -> CheckItem:
    return CheckItem(name=name, status=CheckStatus.SKIP, detail=f"not checked: {why}")


def _redact(item: CheckItem, secret: str) -> CheckItem:
    if secret in item.detail or (item.fix and secret in item.fix):
        return attrs.evolve(
            item,
            detail=item.detail.replace(secret, "[redacted]"),
            fix=item.fix.replace(secret, "[redacted]") if item.fix else None,
        )
    return item


def _run(items: list[CheckItem], name: str, make: Callable[[], CheckItem]) -> bool:
    """Append ``make()``; an unexpected vastkit error becomes a failed item. True unless failed."""
    try:
        item = make()
    except VastkitError as exc:
        item = CheckItem(
            name=name,
            status=CheckStatus.FAIL,
            detail=f"{type(exc).__name__}: {exc}",
            fix="see the error above",
        )
    items.append(item)
    return item.status is not CheckStatus.FAIL


def _config_item(settings: Settings) -> CheckItem:
    where = settings.config_path or "no config file (defaults and environment variables)"
    env = f", environment {settings.env!r}" if settings.env else ""
    key_source = settings.source("api_key")
    if key_source == "$VAST_API_KEY" and (
        settings.api_key_env is not None or settings.api_key_file is not None
    ):
        configured = "api_key_env" if settings.api_key_env is not None else "api_key_file"
        return CheckItem(
            name="config",
            status=CheckStatus.WARN,
            detail=f"{where}{env}; VAST_API_KEY is set and overrides the {configured} of "
            f"{settings.source(configured)}",
            fix="unset VAST_API_KEY to use the key this environment names",
        )
    return CheckItem(name="config", status=CheckStatus.OK, detail=f"{where}{env}")


def _key_item(api: Client, settings: Settings) -> CheckItem:
    try:
        user = api.current_user()
    except AuthenticationError as exc:
        return CheckItem(
            name="api key",
            status=CheckStatus.FAIL,
            detail=f"the key was rejected by {api.base_url} ({exc.status_code})",
            fix=f"the key comes from {settings.source('api_key')}: check it, or create a new "
            "one at https://cloud.vast.ai/manage-keys/",
        )
    except PermissionDeniedError as exc:
        return CheckItem(
            name="api key",
            status=CheckStatus.FAIL,
            detail=f"the key may not read the account ({exc.status_code}): {exc.message}",
            fix="use a key with account permissions (create one at "
            "https://cloud.vast.ai/manage-keys/)",
        )
    except APIConnectionError as exc:
        return CheckItem(
            name="api key",
            status=CheckStatus.FAIL,
            detail=f"cannot reach {api.base_url}: {exc.message}",
            fix=f"check the network and base_url (from {settings.source('base_url')})",
        )
    except APIError as exc:
        return CheckItem(
            name="api key",
            status=CheckStatus.FAIL,
            detail=f"{type(exc).__name__}: {exc}",
            fix="retry later; if it persists check https://status.vast.ai/",
        )
    who = user.email or user.username or f"user {user.id}"
    detail = f"accepted: {who}, credit ${user.credit:,.2f}"
    if user.balance is not None:
        detail += f", balance ${user.balance:,.2f}"
    if user.credit <= 0:
        return CheckItem(
            name="api key",
            status=CheckStatus.WARN,
            detail=detail + " (no credit: instances cannot be created)",
            fix="add credit at https://cloud.vast.ai/billing/",
        )
    return CheckItem(name="api key", status=CheckStatus.OK, detail=detail)


def _clock_item(api: Client, clock: Clock, max_skew_s: float) -> CheckItem:
    reading = api.server_time()
    if reading is None:
        return CheckItem(
            name="clock",
            status=CheckStatus.WARN,
            detail="the API's answer carried no Date header; clocks not compared",
            fix="none needed unless heartbeats look stale; keep the clock synced (NTP)",
        )
    sent, server, received = reading
    # The client's clock may be a virtual one; compare the given local clock instead.
    local = clock.now()
    elapsed = max(0.0, received - sent)
    skew = local - elapsed / 2 - server
    # Date has whole seconds: up to 1 s of the difference is the header's rounding.
    error = max(0.0, abs(skew) - 1.0)
    direction = "ahead of" if skew > 0 else "behind"
    detail = f"local clock is {abs(skew):.1f} s {direction} the API's"
    if error > max_skew_s:
        return CheckItem(
            name="clock",
            status=CheckStatus.WARN,
            detail=detail + f" (more than {max_skew_s:g} s)",
            fix="sync the clock (e.g. `sudo timedatectl set-ntp true`); heartbeat staleness "
            "and budget periods depend on it",
        )
    return CheckItem(name="clock", status=CheckStatus.OK, detail=detail)


def _store_items(
    items: list[CheckItem], settings: Settings, *, worker_probe: bool, api: Client | None
) -> None:
    store = settings.store_url
    if store is None:
        items.append(
            CheckItem(
                name="store",
                status=CheckStatus.WARN,
                detail="no store_url configured (jobs need one)",
                fix="set store_url in vastkit.yaml or VASTKIT_STORE_URL (e.g. s3://bucket/runs)",
            )
        )
        items.append(_skipped("worker credentials", "no store configured"))
        return
    try:
        check_store_writable(store, settings.storage_options)
    except ConfigError as exc:
        items.append(
            CheckItem(
                name="store",
                status=CheckStatus.FAIL,
                detail=exc.message,
                fix=f"fix store_url (from {settings.source('store_url')}) or the credentials "
                f"in storage_options (from {settings.source('storage_options')})",
            )
        )
        items.append(_skipped("worker credentials", "the store itself failed"))
        return
    local = "://" not in store or store.startswith("file://")
    remote_api = api is not None and not _loopback(api.base_url)
    if local and remote_api:
        items.append(
            CheckItem(
                name="store",
                status=CheckStatus.WARN,
                detail=f"{store} is writable, but it is a local folder: a rented GPU host "
                "cannot reach it",
                fix="use a cloud store (s3://, gs://, ...) for real jobs; local folders work "
                "with the emulator only",
            )
        )
    else:
        items.append(
            CheckItem(
                name="store",
                status=CheckStatus.OK,
                detail=f"{store}: probe written, read back and deleted",
            )
        )
    if not worker_probe:
        items.append(_skipped("worker credentials", "worker_probe=False"))
        return
    try:
        check_worker_store_access(store, settings.storage_options)
    except ConfigError as exc:
        items.append(
            CheckItem(
                name="worker credentials",
                status=CheckStatus.FAIL,
                detail=exc.message,
                fix="a worker receives only storage_options: put the credentials (key, secret, "
                "endpoint) there, not only in your environment or ~/.aws",
            )
        )
        return
    items.append(
        CheckItem(
            name="worker credentials",
            status=CheckStatus.OK,
            detail="the probe passed in a process with only the worker's storage_options",
        )
    )


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _profiles_item(settings: Settings) -> CheckItem:
    try:
        profiles = settings.profiles()
    except ConfigError as exc:
        return CheckItem(
            name="profiles",
            status=CheckStatus.FAIL,
            detail=str(exc),
            fix="correct the profiles file at the line shown (`vastkit profiles validate FILE`)",
        )
    origin = settings.profiles_file or "built-in"
    return CheckItem(
        name="profiles",
        status=CheckStatus.OK,
        detail=f"{origin}: {len(profiles)} profile(s) ({', '.join(profiles)})",
    )


def _budgets_item(settings: Settings) -> CheckItem:
    try:
        budgets = settings.budgets()
    except ConfigError as exc:
        return CheckItem(
            name="budgets",
            status=CheckStatus.FAIL,
            detail=str(exc),
            fix="correct the budgets file at the line shown (`vastkit budgets validate FILE`)",
        )
    if budgets is None:
        return CheckItem(
            name="budgets", status=CheckStatus.OK, detail="no budgets file: no spending limits"
        )
    count = len(budgets.teams) + len(budgets.projects) + (budgets.job is not None)
    return CheckItem(
        name="budgets", status=CheckStatus.OK, detail=f"{settings.budgets_file}: {count} limit(s)"
    )


def _ledger_item(settings: Settings) -> CheckItem:
    try:
        with settings.ledger() as ledger:
            version = ledger.schema_version
            where = ledger.path  # a database URL with its password hidden
    except (LedgerError, ConfigError) as exc:
        return CheckItem(
            name="ledger",
            status=CheckStatus.FAIL,
            detail=str(exc),
            fix="check the ledger path (VASTKIT_LEDGER or ledger_path) is in a writable folder",
        )
    return CheckItem(
        name="ledger",
        status=CheckStatus.OK,
        detail=f"{where} opens (schema {version})",
    )


def _reconcile_item(api: Client, settings: Settings) -> CheckItem:
    from vastkit.reconcile import reconcile

    with settings.ledger() as ledger:
        report = reconcile(api, ledger, dry_run=True)
    summary = (
        f"{report.listed} instance(s) on the account, {report.ours} with a vastkit label; "
        f"{len(report.adopted)} accounted for"
        + (f", {len(report.foreign)} of other ledgers (left alone)" if report.foreign else "")
    )
    if report.destroyed or report.left:
        return CheckItem(
            name="reconcile",
            status=CheckStatus.WARN,
            detail=f"{summary}; {len(report.destroyed)} orphaned (billing, unaccounted for), "
            f"{len(report.left)} owned by another host",
            fix="run `vastkit reconcile` to destroy the orphans (add --dry-run to see them)",
        )
    return CheckItem(name="reconcile", status=CheckStatus.OK, detail=summary)


def _access_items() -> list[CheckItem]:
    """The SSH key and the registry login every rental would get."""
    from vastkit.access import resolve_access

    try:
        access = resolve_access()
    except ConfigError as exc:
        name = "registry" if exc.key in ("registry_user", "registry_token") else "ssh key"
        failed = CheckItem(
            name=name,
            status=CheckStatus.FAIL,
            detail=str(exc),
            fix="fix the file or setting named above (ssh_key / VASTKIT_SSH_KEY, or "
            "registry_user and registry_token)",
        )
        return [failed, _skipped("registry" if name == "ssh key" else "ssh key", "see above")]
    key = access.public_key
    login = access.image_login
    return [
        CheckItem(
            name="ssh key",
            status=CheckStatus.OK if key else CheckStatus.WARN,
            detail=f"{key.kind} from {key.source}: attached to every rental"
            if key
            else access.missing,
            fix=None if key else "create one with `ssh-keygen -t ed25519` (jobs run without it)",
        ),
        CheckItem(
            name="registry",
            status=CheckStatus.OK,
            detail=f"login {login.user}@{login.registry or 'the image registry'} sent with "
            "each create"
            if login
            else "no registry login (public images only)",
        ),
    ]


def _offer_items(
    items: list[CheckItem], settings: Settings, api: Client | None, clock: Clock
) -> None:
    """One read-only search per profile: would a job on it find an offer now?"""
    try:
        profiles = settings.profiles()
    except ConfigError:
        items.append(_skipped("offers", "the profiles file failed"))
        return
    if api is None:
        items.append(_skipped("offers", "needs a working API key"))
        return
    for name, profile in profiles.items():
        _run(items, f"offers: {name}", functools.partial(_offer_item, api, profile, clock))


def _offer_item(api: Client, profile: GpuProfile, clock: Clock) -> CheckItem:
    from vastkit.errors import NoOfferError
    from vastkit.selector import build_query, select_offers

    name = f"offers: {profile.name}"
    found = api.search_offers(build_query(profile))
    try:
        ranked = select_offers(profile, found, now=clock.now(), blocked=set())
    except NoOfferError as exc:
        return CheckItem(
            name=name,
            status=CheckStatus.FAIL,
            detail=f"no offer qualifies now ({len(found)} found by the search): {exc}",
            fix="a job on this profile would fail now: raise max_dph, lower min_reliability, "
            "allow more GPU types or regions, or try again later",
        )
    best = ranked[0].offer
    return CheckItem(
        name=name,
        status=CheckStatus.OK,
        detail=f"{len(ranked)} offer(s); cheapest {best.gpu_name} x{best.num_gpus} at "
        f"${best.dph_total:.3f}/h (machine {best.machine_id})",
    )

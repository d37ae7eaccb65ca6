"""One configuration file for vastkit, with named environments.

vastkit reads one file: ``$VASTKIT_CONFIG`` when set, else ``vastkit.yaml`` in the working
directory, else ``$XDG_CONFIG_HOME/vastkit/config.yaml`` (``XDG_CONFIG_HOME`` defaults to
``~/.config``). The first that exists is used; files are never merged::

    default: dev                       # the environment used when none is chosen
    project: vision                    # top-level settings apply to every environment
    environments:
      dev:
        base_url: http://127.0.0.1:8765
        api_key_env: VAST_DEV_KEY      # the key is read from this variable
        store_url: ./runs
      prod:
        api_key_file: ~/.config/vastai/prod_key
        store_url: s3://ml-artifacts/runs
        storage_options:
          key: ${AWS_ACCESS_KEY_ID}    # ${NAME} is replaced from the environment
          secret: ${AWS_SECRET_ACCESS_KEY}
        budgets_file: budgets.yaml     # relative paths are relative to this file
        team: ml-research
        ssh_key: ~/.ssh/work_ed25519.pub   # attached to every rental
        registry: ghcr.io              # private images: Vast's image_login on every create
        registry_user: me
        registry_token: ${GHCR_TOKEN}  # always a ${VARIABLE}, never the token itself

Every setting resolves in one order: an argument, else an environment variable, else the config
file (the active environment, then the top level), else the default. The table is in
``docs/concepts/configuration.md``. The API key itself never goes in the file: ``api_key_env``
names a variable and ``api_key_file`` a file that hold it.

::

    settings = vastkit.load_config(env="prod")
    with settings.client() as client:
        print(client.current_user().credit)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vastkit._settings import (
    DEFAULT_BASE_URL,
    ENV_VARS,
    SETTING_KEYS,
    config_file,
    configured_key,
    explicit_key,
    official_key,
    read_settings,
    redact_url,
)
from vastkit._yaml import did_you_mean

if TYPE_CHECKING:
    from vastkit.api.client import Client
    from vastkit.budget import Budgets
    from vastkit.ledger import Ledger
    from vastkit.profiles import GpuProfile

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_VARS",
    "SETTING_KEYS",
    "Settings",
    "config_file",
    "load_config",
]

logger = logging.getLogger("vastkit.config")


def _shown_ledger(value: str | None) -> str | None:
    """The ledger setting as it may be shown: a URL without its password."""
    return None if value is None else redact_url(value)


@attrs.frozen(kw_only=True)
class Settings:
    """Resolved vastkit settings: every value already passed through the resolution order.

    Build one with :func:`load_config`. Each value came from an environment variable, the
    config file or the default; :attr:`sources` says which. Apply the last layer, an explicit
    argument, with :meth:`resolve` (one value) or :meth:`override` (a new ``Settings``).
    """

    env: str | None = None
    """The active environment's name (None: the file has no environments, or there is no file)."""
    config_path: str | None = None
    """The config file read (None: no file)."""
    base_url: str = DEFAULT_BASE_URL
    """The Vast API server."""
    api_key_env: str | None = None
    """The variable the config file names for the API key (the key is read by :meth:`api_key`)."""
    api_key_file: str | None = None
    """The file the config file names for the API key."""
    store_url: str | None = None
    """Where run directories go (``s3://bucket/runs``, ``gs://...``, a local folder)."""
    storage_options: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    """fsspec options for the store (credentials, endpoint); never shown in a repr."""
    profiles_file: str | None = None
    """A ``gpu_profiles.yaml`` (None: the built-in profiles)."""
    budgets_file: str | None = None
    """A ``budgets.yaml`` (None: no budgets)."""
    ledger_path: str | None = attrs.field(default=None, repr=lambda v: repr(_shown_ledger(v)))
    """The ledger: a SQLite file or a ``postgresql://`` URL (None:
    :func:`vastkit.ledger.default_ledger`). A repr and :meth:`to_dict` hide the URL's password."""
    project: str | None = None
    """The default project of jobs."""
    team: str | None = None
    """The default team of jobs."""
    poll_interval_s: float | None = None
    """Seconds between monitor polls (None: the job's own default, 15 s)."""
    ssh_key: str | None = None
    """The SSH public key attached to every rental: a ``.pub`` file or the key line (None:
    ``~/.ssh/id_ed25519.pub``, else ``~/.ssh/id_rsa.pub``). ``$VASTKIT_SSH_KEY`` overrides it."""
    registry: str | None = None
    """The registry of private images (``ghcr.io``; None: the image's own registry)."""
    registry_user: str | None = None
    """The registry login's user name (with :attr:`registry_token`, every create sends Vast's
    ``image_login``)."""
    registry_token: str | None = attrs.field(default=None, repr=False)
    """The registry login's token or password; never shown in a repr or by :meth:`to_dict`.
    In the file it is written as ``${VARIABLE}``, never as the token itself."""
    sources: Mapping[str, str] = attrs.field(factory=dict)
    """Where each value came from: ``"argument"``, ``"$VASTKIT_STORE_URL"``,
    ``"vastkit.yaml:7"`` or ``"default"``."""

    def source(self, name: str) -> str:
        """Where setting ``name`` came from (``"default"`` when not recorded)."""
        return self.sources.get(name, "default")

    def resolve(self, name: str, argument: Any = None) -> Any:
        """Apply the argument layer to one setting.

        Args:
            name: A setting (:data:`SETTING_KEYS`, e.g. ``"store_url"``).
            argument: The caller's explicit value; None means "not given".

        Returns:
            ``argument`` when it is not None, else this setting's value.

        Raises:
            ValueError: ``name`` is not a setting.
        """
        if name not in SETTING_KEYS:
            raise ValueError(f"unknown setting {name!r}{did_you_mean(name, SETTING_KEYS)}")
        return argument if argument is not None else getattr(self, name)

    def override(self, **values: Any) -> Settings:
        """Return a copy with explicit arguments applied (None values are ignored).

        Args:
            **values: Settings by name, e.g. ``store_url="s3://other/runs"``.

        Returns:
            The new settings; :attr:`sources` says ``"argument"`` for each value given.

        Raises:
            ValueError: A name is not a setting.
        """
        given = {k: v for k, v in values.items() if v is not None}
        for name in given:
            if name not in SETTING_KEYS:
                raise ValueError(f"unknown setting {name!r}{did_you_mean(name, SETTING_KEYS)}")
        if not given:
            return self
        if "api_key_env" in given or "api_key_file" in given:
            given.setdefault("api_key_env", None)
            given.setdefault("api_key_file", None)
        sources = {**self.sources, **dict.fromkeys(given, "argument")}
        return attrs.evolve(self, sources=sources, **given)

    def api_key(self, argument: str | None = None) -> str:
        """Find the API key.

        The order: ``argument``, else ``VAST_API_KEY``, else the config file's ``api_key_env``
        (that variable) or ``api_key_file`` (that file), else the official key files
        (``$XDG_CONFIG_HOME/vastai/vast_api_key``, then ``~/.vast_api_key``).

        Args:
            argument: An explicit key.

        Returns:
            The key.

        Raises:
            ConfigError: No key anywhere, or the variable or file the config file names is unset,
                missing or empty (vastkit does not fall back to another account's key then).
        """
        explicit = explicit_key(argument)
        if explicit is not None:
            return explicit
        configured = configured_key(self.api_key_env, self.api_key_file, self.sources)
        return configured if configured is not None else official_key()

    def client(self, api_key: str | None = None, **kwargs: Any) -> Client:
        """Build an API client from these settings.

        Args:
            api_key: An explicit key (see :meth:`api_key`).
            **kwargs: Any other :class:`~vastkit.api.Client` argument (``base_url`` overrides
                :attr:`base_url`).

        Returns:
            The client; close it (or use it as a context manager).

        Raises:
            ConfigError: No API key was found.
        """
        from vastkit.api.client import Client

        kwargs.setdefault("base_url", self.base_url)
        return Client(self.api_key(api_key), **kwargs)

    def ledger(self, **kwargs: Any) -> Ledger:
        """Open the ledger at :attr:`ledger_path` (or the default path).

        Args:
            **kwargs: Any other :class:`~vastkit.ledger.Ledger` argument.

        Returns:
            The open ledger; close it.

        Raises:
            LedgerError: It cannot be opened.
        """
        from vastkit.ledger import Ledger

        return Ledger(self.ledger_path, **kwargs)

    def profiles(self) -> dict[str, GpuProfile]:
        """Load :attr:`profiles_file`, or the built-in profiles when it is None.

        Raises:
            ConfigError: The file is wrong (file, line, key and a suggestion).
        """
        from vastkit.profiles import builtin_profiles, load_profiles

        if self.profiles_file is None:
            return builtin_profiles()
        return load_profiles(Path(self.profiles_file))

    def budgets(self) -> Budgets | None:
        """Load :attr:`budgets_file`, or return None when there is none.

        Raises:
            ConfigError: The file is wrong (file, line, key and a suggestion).
        """
        from vastkit.budget import load_budgets

        if self.budgets_file is None:
            return None
        return load_budgets(Path(self.budgets_file))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data, storage options masked (for ``vastkit doctor``/JSON).

        Returns:
            Every setting, plus ``env``, ``config_path`` and ``sources``.
        """
        data: dict[str, Any] = {"env": self.env, "config_path": self.config_path}
        for name in SETTING_KEYS:
            data[name] = getattr(self, name)
        data["storage_options"] = sorted(self.storage_options)  # names only: values may be secrets
        data["registry_token"] = "***" if self.registry_token else None
        data["ledger_path"] = _shown_ledger(self.ledger_path)
        data["sources"] = dict(self.sources)
        return data


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: str | None = None,
) -> Settings:
    """Read the config file and the environment into :class:`Settings`.

    Args:
        path: The config file (default: see :func:`config_file`; no file is fine).
        env: The environment to use; default ``$VASTKIT_ENV``, else the file's ``default:``,
            else its only environment.

    Returns:
        The settings, each resolved as environment variable > config file > default.

    Raises:
        ConfigError: The file is missing (when named), not valid YAML, has an unknown or misspelt
            key (the nearest valid one is suggested), holds a raw API key, or names an
            environment it does not define. The error names the file, the line and the key.
    """
    read = read_settings(path, env)
    values = dict(read.values)
    if "ledger_path" not in values:
        from vastkit.ledger import default_ledger

        values["ledger_path"] = default_ledger()
    return Settings(
        env=read.env, config_path=read.config_path, sources=dict(read.sources), **values
    )

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
import re
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from vastkit._yaml import Document, did_you_mean, load_document, read_source
from vastkit.errors import ConfigError

if TYPE_CHECKING:
    from vastkit.api.client import Client
    from vastkit.budget import Budgets
    from vastkit.ledger import Ledger
    from vastkit.profiles import GpuProfile

__all__ = [
    "ENV_VARS",
    "SETTING_KEYS",
    "Settings",
    "config_file",
    "configured_api_key",
    "configured_base_url",
    "load_config",
]

logger = logging.getLogger("vastkit.config")

DEFAULT_BASE_URL: Final = "https://console.vast.ai"

SETTING_KEYS: Final[tuple[str, ...]] = (
    "api_key_env",
    "api_key_file",
    "base_url",
    "store_url",
    "storage_options",
    "profiles_file",
    "budgets_file",
    "ledger_path",
    "project",
    "team",
    "poll_interval_s",
)
"""The keys an environment (or the top level of the file) may set."""

_TOP_KEYS: Final[tuple[str, ...]] = ("default", "environments", *SETTING_KEYS)

ENV_VARS: Final[Mapping[str, str]] = {
    "base_url": "VAST_URL",
    "store_url": "VASTKIT_STORE_URL",
    "profiles_file": "VASTKIT_PROFILES",
    "budgets_file": "VASTKIT_BUDGETS",
    "ledger_path": "VASTKIT_LEDGER",
    "project": "VASTKIT_PROJECT",
    "team": "VASTKIT_TEAM",
    "poll_interval_s": "VASTKIT_POLL_INTERVAL",
}
"""The environment variable that overrides each setting (the API key's is ``VAST_API_KEY``)."""

_RAW_KEY_NAMES: Final = frozenset({"api_key", "vast_api_key", "key", "apikey", "api-key"})
_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOKS_LIKE_KEY: Final = re.compile(r"^[A-Za-z0-9]{32,}$")
_PLACEHOLDER: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH_KEYS: Final = frozenset({"api_key_file", "profiles_file", "budgets_file", "ledger_path"})
_STRING_KEYS: Final = frozenset(
    {"api_key_file", "store_url", "profiles_file", "budgets_file", "ledger_path", "project", "team"}
)


def config_file(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the config file vastkit would read, or None when there is none.

    Args:
        path: An explicit file; it must exist.

    Returns:
        ``path``, else ``$VASTKIT_CONFIG``, else ``./vastkit.yaml``, else
        ``$XDG_CONFIG_HOME/vastkit/config.yaml``: the first that exists (an explicit one always).

    Raises:
        ConfigError: ``path`` or ``$VASTKIT_CONFIG`` names a file that does not exist.
    """
    explicit = path if path is not None else (os.environ.get("VASTKIT_CONFIG") or None)
    if explicit is not None:
        chosen = Path(explicit).expanduser()
        if not chosen.is_file():
            origin = "" if path is not None else " ($VASTKIT_CONFIG)"
            raise ConfigError(f"config file{origin} not found", path=str(chosen))
        return chosen
    local = Path("vastkit.yaml")
    if local.is_file():
        return local
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    user = Path(xdg).expanduser() / "vastkit" / "config.yaml"
    return user if user.is_file() else None


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
    ledger_path: str | None = None
    """The ledger database (None: :func:`vastkit.ledger.default_ledger_path`)."""
    project: str | None = None
    """The default project of jobs."""
    team: str | None = None
    """The default team of jobs."""
    poll_interval_s: float | None = None
    """Seconds between monitor polls (None: the job's own default, 15 s)."""
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
        from vastkit.api.client import resolve_api_key

        if argument is not None or os.environ.get("VAST_API_KEY", "").strip():
            return resolve_api_key(argument)
        configured = self._configured_key()
        return configured if configured is not None else resolve_api_key(None, config=False)

    def _configured_key(self) -> str | None:
        if self.api_key_env is not None:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                raise ConfigError(
                    f"the API key should come from ${self.api_key_env} "
                    f"({self._where('api_key_env')}), but it is not set",
                    key="api_key_env",
                )
            return value
        if self.api_key_file is not None:
            return _read_key_file(Path(self.api_key_file), where=self._where("api_key_file"))
        return None

    def _where(self, name: str) -> str:
        return f"set in {self.source(name)}"

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
        data["sources"] = dict(self.sources)
        return data


def _read_key_file(path: Path, *, where: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"the API key file does not exist ({where})", path=str(path), key="api_key_file"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read the API key file: {exc.strerror} ({where})",
            path=str(path),
            key="api_key_file",
        ) from exc
    if not text:
        raise ConfigError(
            f"the API key file is empty ({where})", path=str(path), key="api_key_file"
        )
    if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(
            f"the Vast API key file {path} is readable by other users; run `chmod 600 {path}`",
            UserWarning,
            stacklevel=4,
        )
    return text


# -- loading ------------------------------------------------------------------------------------


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
    chosen = config_file(path)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    active: str | None = None
    config_path: str | None = None
    if chosen is not None:
        text, name = read_source(chosen, what="vastkit config")
        doc = load_document(text, name)
        config_path = name
        active, values, sources = _from_document(doc, chosen.absolute().parent, env)
    elif env is not None or os.environ.get("VASTKIT_ENV"):
        wanted = env if env is not None else os.environ["VASTKIT_ENV"]
        origin = "" if env is not None else " ($VASTKIT_ENV)"
        raise ConfigError(
            f"environment {wanted!r}{origin} was asked for, but there is no config file "
            "(vastkit.yaml here or $XDG_CONFIG_HOME/vastkit/config.yaml)",
            key="env",
        )
    for name, var in ENV_VARS.items():
        raw = os.environ.get(var)
        if raw is None or not raw.strip():
            continue
        values[name] = _env_value(name, var, raw.strip())
        sources[name] = f"${var}"
    values.setdefault("base_url", DEFAULT_BASE_URL)
    values["base_url"] = str(values["base_url"]).rstrip("/")
    if "ledger_path" not in values:
        from vastkit.ledger import default_ledger_path

        values["ledger_path"] = str(default_ledger_path())
    if os.environ.get("VAST_API_KEY", "").strip():
        sources["api_key"] = "$VAST_API_KEY"
    elif "api_key_env" in values or "api_key_file" in values:
        which = "api_key_env" if "api_key_env" in values else "api_key_file"
        sources["api_key"] = sources[which]
    return Settings(env=active, config_path=config_path, sources=sources, **values)


def _env_value(name: str, var: str, raw: str) -> Any:
    if name == "poll_interval_s":
        try:
            number = float(raw)
        except ValueError:
            number = -1.0
        if not number > 0:
            raise ConfigError(f"${var} must be a positive number of seconds, got {raw!r}", key=var)
        return number
    if name == "base_url" and not raw.startswith(("http://", "https://")):
        raise ConfigError(f"${var} must start with http:// or https://, got {raw!r}", key=var)
    if name in _PATH_KEYS or (name == "store_url" and "://" not in raw):
        return str(Path(raw).expanduser())
    return raw


def _from_document(
    doc: Document, base: Path, env: str | None
) -> tuple[str | None, dict[str, Any], dict[str, str]]:
    data = doc.data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise doc.error("the config file must be a mapping of settings")
    for key in data:
        if key not in _TOP_KEYS:
            _unknown(doc, str(key), _TOP_KEYS, (str(key),))
    environments = data.get("environments")
    if environments is not None and (not isinstance(environments, Mapping) or not environments):
        raise doc.error("'environments' must map environment names to settings", "environments")
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise doc.error("'default' must be the name of an environment", "default")
    if default is not None and environments is None:
        raise doc.error(
            "'default' names an environment, but there is no 'environments:'", "default"
        )

    wanted = env
    origin = "the env argument"
    if wanted is None and os.environ.get("VASTKIT_ENV"):
        wanted, origin = os.environ["VASTKIT_ENV"], "$VASTKIT_ENV"
    if wanted is None and default is not None:
        wanted, origin = default, "default"
    names = [str(n) for n in environments] if environments else []
    if wanted is None and len(names) == 1:
        wanted = names[0]
    if wanted is None and len(names) > 1:
        raise doc.error(
            f"several environments ({', '.join(names)}) and no 'default:'; add one, set "
            "VASTKIT_ENV, or pass env=",
            "environments",
        )
    if wanted is not None and wanted not in names:
        if origin == "default":
            raise doc.error(
                f"the default environment {wanted!r} is not defined{did_you_mean(wanted, names)}",
                "default",
            )
        known = ", ".join(names) if names else "none"
        raise ConfigError(
            f"environment {wanted!r} (from {origin}) is not defined in the file "
            f"(defined: {known}){did_you_mean(wanted, names)}",
            path=doc.path,
            line=doc.line("environments"),
            key="env",
        )

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    _apply(doc, base, data, (), values=values, sources=sources, skip=("default", "environments"))
    if wanted is not None:
        body = environments[wanted] if environments is not None else None
        path = ("environments", wanted)
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise doc.error(f"environment {wanted!r} must be a mapping of settings", *path)
        if "api_key_env" in body or "api_key_file" in body:
            for key in ("api_key_env", "api_key_file"):  # the environment's key source wins whole
                values.pop(key, None)
                sources.pop(key, None)
        _apply(doc, base, body, path, values=values, sources=sources, skip=())
    # Check the other environments too, so a typo in 'prod' is found while using 'dev'.
    for other in names:
        if other != wanted and environments is not None:
            body = environments[other]
            if body is not None and not isinstance(body, Mapping):
                raise doc.error(
                    f"environment {other!r} must be a mapping of settings", "environments", other
                )
            _apply(
                doc,
                base,
                body or {},
                ("environments", other),
                values={},
                sources={},
                skip=(),
                check_only=True,
            )
    return wanted, values, sources


def _unknown(doc: Document, key: str, valid: tuple[str, ...], path: tuple[str, ...]) -> None:
    if key.lower() in _RAW_KEY_NAMES:
        raise doc.error(
            "do not put the API key itself in the config file (it gets committed, shared and "
            "copied); name where it is instead: 'api_key_env: VAR' (an environment variable) or "
            "'api_key_file: PATH' (a file only you can read)",
            *path,
        )
    raise doc.error(f"unknown key '{key}'{did_you_mean(key, valid)}", *path)


def _apply(
    doc: Document,
    base: Path,
    body: Mapping[str, Any],
    path: tuple[str, ...],
    *,
    values: dict[str, Any],
    sources: dict[str, str],
    skip: tuple[str, ...],
    check_only: bool = False,
) -> None:
    valid = SETTING_KEYS if path else _TOP_KEYS
    if path and "api_key_env" in body and "api_key_file" in body:
        raise doc.error(
            "give one API key source: 'api_key_env' or 'api_key_file', not both",
            *path,
            "api_key_file",
        )
    if not path and "api_key_env" in body and "api_key_file" in body:
        raise doc.error(
            "give one API key source: 'api_key_env' or 'api_key_file', not both", "api_key_file"
        )
    for raw_key, value in body.items():
        key = str(raw_key)
        if key in skip:
            continue
        key_path = (*path, key)
        if key not in SETTING_KEYS:
            _unknown(doc, key, valid, key_path)
        checked = _check_value(doc, base, key, value, key_path, expand=not check_only)
        if not check_only:
            values[key] = checked
            line = doc.line(*key_path)
            sources[key] = f"{doc.path}:{line}" if line is not None else doc.path


def _check_value(
    doc: Document,
    base: Path,
    key: str,
    value: Any,
    key_path: tuple[str, ...],
    *,
    expand: bool,
) -> Any:
    if key == "api_key_env":
        if not isinstance(value, str) or not value:
            raise doc.error("'api_key_env' must be the name of an environment variable", *key_path)
        if _LOOKS_LIKE_KEY.match(value) and not value.isupper():
            raise doc.error(
                "this looks like an API key, not a variable name: never put the key in the "
                "config file; export it (e.g. VAST_API_KEY) and write 'api_key_env: VAST_API_KEY'",
                *key_path,
            )
        if not _ENV_NAME.match(value):
            raise doc.error(f"{value!r} is not a valid environment variable name", *key_path)
        return value
    if key == "base_url":
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise doc.error(
                f"'base_url' must start with http:// or https://, got {value!r}", *key_path
            )
        return value.rstrip("/")
    if key == "poll_interval_s":
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise doc.error(
                f"'poll_interval_s' must be a positive number of seconds, got {value!r}", *key_path
            )
        return float(value)
    if key == "storage_options":
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise doc.error("'storage_options' must be a mapping of fsspec options", *key_path)
        return _expand(doc, value, key_path) if expand else dict(value)
    if key in _STRING_KEYS:
        if not isinstance(value, str) or not value.strip():
            raise doc.error(f"'{key}' must be a non-empty string, got {value!r}", *key_path)
        if key in _PATH_KEYS or (key == "store_url" and "://" not in value):
            return str(_relative_to(base, value))
        return value
    raise AssertionError(key)  # pragma: no cover - SETTING_KEYS and the checks above agree


def _relative_to(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _expand(doc: Document, value: Any, key_path: tuple[str | int, ...]) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _expand(doc, v, (*key_path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(doc, v, (*key_path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        found = os.environ.get(name)
        if found is None:
            raise doc.error(f"${{{name}}} is used here but the variable is not set", *key_path)
        return found

    return _PLACEHOLDER.sub(substitute, value)


def configured_api_key() -> str | None:
    """The API key the config file's active environment names, or None when it names none.

    Used by :func:`vastkit.api.client.resolve_api_key` between ``VAST_API_KEY`` and the
    official key files.

    Raises:
        ConfigError: The config file is wrong, or the variable/file it names gives no key.
    """
    if config_file() is None:
        return None
    return load_config()._configured_key()


def configured_base_url() -> str | None:
    """The ``base_url`` the config file sets for the active environment, or None.

    Used by :class:`vastkit.api.Client` between ``VAST_URL`` and the default.

    Raises:
        ConfigError: The config file is wrong.
    """
    if config_file() is None:
        return None
    settings = load_config()
    source = settings.source("base_url")
    return settings.base_url if source not in ("default", "$VAST_URL") else None

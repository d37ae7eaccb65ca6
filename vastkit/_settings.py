"""Settings resolution below the API client: the config file, the environment, the API key.

This module reads; it knows nothing of what the settings are for. :mod:`vastkit.config` builds
the public :class:`~vastkit.config.Settings` from :func:`read_settings`, and the API client
(:mod:`vastkit.api.client`) calls :func:`resolve_connection` once per ``Client`` to find its key
and server. It imports only :mod:`vastkit.errors` and :mod:`vastkit._yaml`, so both can use it
without an import cycle.

Every value resolves in one order: an argument, else an environment variable, else the config
file (the active environment, then the top level), else the default. The API key:

1. the argument;
2. ``VAST_API_KEY``;
3. the variable (``api_key_env``) or file (``api_key_file``) the config file's active environment
   names (vastkit does not fall back to another key when that source is empty);
4. ``$XDG_CONFIG_HOME/vastai/vast_api_key`` (``XDG_CONFIG_HOME`` defaults to ``~/.config``), then
   ``~/.vast_api_key``, the official SDK's files.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from vastkit._yaml import Document, did_you_mean, load_document, read_source
from vastkit.errors import ConfigError

__all__ = [
    "DATABASE_SCHEMES",
    "DEFAULT_BASE_URL",
    "ENV_VARS",
    "SETTING_KEYS",
    "Connection",
    "SettingValues",
    "config_file",
    "configured_key",
    "explicit_key",
    "is_database_url",
    "official_key",
    "poll_interval_setting",
    "read_settings",
    "redact_url",
    "resolve_api_key",
    "resolve_connection",
    "validate_key",
]

DEFAULT_BASE_URL: Final = "https://console.vast.ai"
"""Where the client talks to unless ``base_url``, ``VAST_URL`` or the config file says otherwise."""

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
    "ssh_key",
    "registry",
    "registry_user",
    "registry_token",
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
    "ssh_key": "VASTKIT_SSH_KEY",
    "registry": "VASTKIT_REGISTRY",
    "registry_user": "VASTKIT_REGISTRY_USER",
    "registry_token": "VASTKIT_REGISTRY_TOKEN",
}
"""The environment variable that overrides each setting (the API key's is ``VAST_API_KEY``)."""

_RAW_KEY_NAMES: Final = frozenset({"api_key", "vast_api_key", "key", "apikey", "api-key"})
_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOKS_LIKE_KEY: Final = re.compile(r"^[A-Za-z0-9]{32,}$")
_PLACEHOLDER: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH_KEYS: Final = frozenset({"api_key_file", "profiles_file", "budgets_file", "ledger_path"})
_STRING_KEYS: Final = frozenset(
    {
        "api_key_file",
        "store_url",
        "profiles_file",
        "budgets_file",
        "ledger_path",
        "project",
        "team",
        "registry",
        "registry_user",
    }
)
_SECRET_KEYS: Final = frozenset({"registry_token"})
"""Settings whose values are secrets: never shown, and written as ``${VAR}`` in the file."""


DATABASE_SCHEMES: Final[tuple[str, ...]] = ("postgresql://", "postgres://")
"""What a ledger setting starts with when it names a PostgreSQL server instead of a file."""

_URL_AUTHORITY: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/?#]*)")
_QUERY_PASSWORD: Final = re.compile(r"(?i)([?&]password=)[^&#]*")


def is_database_url(value: str | os.PathLike[str]) -> bool:
    """Whether a ledger setting names a database server (``postgresql://...``), not a file."""
    return isinstance(value, str) and value.strip().lower().startswith(DATABASE_SCHEMES)


def redact_url(url: str) -> str:
    """``url`` with its password (``user:PASSWORD@`` or ``?password=``) replaced by ``***``:
    what a repr, a log line or an error may show."""
    match = _URL_AUTHORITY.match(url)
    if match is not None and "@" in match["authority"]:
        userinfo, _, host = match["authority"].rpartition("@")
        if ":" in userinfo:
            user = userinfo.partition(":")[0]
            url = f"{match['scheme']}{user}:***@{host}{url[match.end() :]}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


def _ledger_value(value: str, base: Path | None) -> str:
    """A ledger setting: a URL as given (the ledger refuses one it cannot open), a path
    expanded (relative to ``base``)."""
    if "://" in value:
        return value.strip()
    if base is None:
        return str(Path(value).expanduser())
    return str(_relative_to(base, value))


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
class SettingValues:
    """What the config file and the environment variables say, before any argument.

    Attributes:
        env: The active environment's name (None: no environments, or no file).
        config_path: The config file read (None: no file).
        values: Each setting that was set, by name (:data:`SETTING_KEYS`); ``base_url`` always.
        sources: Where each value came from: ``"$VASTKIT_STORE_URL"``, ``"vastkit.yaml:7"``;
            ``"api_key"`` names where the key will come from, when known.
    """

    env: str | None = None
    config_path: str | None = None
    values: Mapping[str, Any] = attrs.field(factory=dict)
    sources: Mapping[str, str] = attrs.field(factory=dict)

    def from_file(self, name: str) -> Any:
        """The value of setting ``name`` when the config file set it, else None."""
        source = self.sources.get(name, "default")
        if source == "default" or source.startswith("$"):
            return None
        return self.values.get(name)


def read_settings(
    path: str | os.PathLike[str] | None = None, env: str | None = None
) -> SettingValues:
    """Read the config file and the environment variables (one read of the file).

    Args:
        path: The config file (default: see :func:`config_file`; no file is fine).
        env: The environment to use; default ``$VASTKIT_ENV``, else the file's ``default:``,
            else its only environment.

    Returns:
        Every setting that is set, each resolved as environment variable > config file, plus
        ``base_url`` (default :data:`DEFAULT_BASE_URL`).

    Raises:
        ConfigError: The file is missing (when named), not valid YAML, has an unknown or misspelt
            key, holds a raw API key, or names an environment it does not define; or an
            environment variable holds a wrong value.
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
    if os.environ.get("VAST_API_KEY", "").strip():
        sources["api_key"] = "$VAST_API_KEY"
    elif "api_key_env" in values or "api_key_file" in values:
        which = "api_key_env" if "api_key_env" in values else "api_key_file"
        sources["api_key"] = sources[which]
    return SettingValues(env=active, config_path=config_path, values=values, sources=sources)


def poll_interval_setting() -> tuple[float, str] | None:
    """The configured poll interval and where it came from, or None when nothing sets it.

    ``$VASTKIT_POLL_INTERVAL`` beats the config file's ``poll_interval_s``; the file is read
    only when the variable is unset. ``run_job`` uses it for a job whose ``JobTimeouts``
    leaves ``poll_interval`` at its default, and ``Instance`` for its waits when no
    ``timeouts`` are given.

    Returns:
        ``(seconds, source)``, the source being ``"$VASTKIT_POLL_INTERVAL"`` or
        ``"vastkit.yaml:7"``; None when neither sets it.

    Raises:
        ConfigError: The variable is not a positive number, or the config file is wrong.
    """
    name = "poll_interval_s"
    var = ENV_VARS[name]
    raw = os.environ.get(var, "").strip()
    if raw:
        return float(_env_value(name, var, raw)), f"${var}"
    values = read_settings()
    value = values.from_file(name)
    if value is None:
        return None
    return float(value), values.sources[name]


# -- the API key and the server -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Connection:
    """Where the API client sends its requests, and with which key.

    Attributes:
        api_key: The key (never shown in a repr).
        base_url: The server, without a trailing slash.
    """

    api_key: str = attrs.field(repr=False)
    base_url: str


def _key_flaw(key: str) -> str | None:
    """What makes a (trimmed) key unusable in an HTTP header, in words; None when it is fine."""
    for char in key:
        code = ord(char)
        if char in "\r\n":
            return "a line break inside it"
        if code > 0x7E:
            return "a non-ASCII character"
        if code < 0x20 or code == 0x7F:
            return "a control character"
        if char.isspace():
            return "a space inside it"
    return None


def validate_key(raw: str, *, source: str, path: str | None = None, key: str | None = None) -> str:
    """The key ``raw`` read from ``source``, trimmed of surrounding whitespace, when it is a
    usable key: printable ASCII without whitespace inside (what an HTTP header can carry).

    Args:
        raw: The key as read.
        source: Where it was read, for the message (``"$VAST_API_KEY"``, ``"the api_key
            argument"``, ``"the API key file"``); never the value.
        path: The file it was read from, when it was.
        key: The setting that named the source, when one did.

    Returns:
        The trimmed key.

    Raises:
        ConfigError: The key is empty, or has a line break, a control character, a space or a
            non-ASCII character inside; the message names ``source``, never the value.
    """
    trimmed = raw.strip()
    if not trimmed:
        raise ConfigError(f"the API key from {source} is empty", path=path, key=key)
    flaw = _key_flaw(trimmed)
    if flaw is not None:
        raise ConfigError(
            f"the API key from {source} has {flaw} ({len(trimmed)} characters after trimming); "
            "a Vast API key is printable ASCII on one line: copy it again from "
            "https://cloud.vast.ai/manage-keys/",
            path=path,
            key=key,
        )
    return trimmed


def explicit_key(api_key: str | None) -> str | None:
    """The key from the argument, else from ``VAST_API_KEY``, else None.

    Raises:
        ConfigError: The argument is given but empty, or either holds an unusable key (see
            :func:`validate_key`).
    """
    if api_key is not None:
        if not isinstance(api_key, str):
            raise ConfigError(
                f"the api_key argument must be a string, got {type(api_key).__name__}",
                key="api_key",
            )
        if not api_key.strip():
            raise ConfigError("the api_key argument is empty", key="api_key")
        return validate_key(api_key, source="the api_key argument", key="api_key")
    raw = os.environ.get("VAST_API_KEY", "")
    if not raw.strip():
        return None
    return validate_key(raw, source="$VAST_API_KEY", key="VAST_API_KEY")


def configured_key(
    api_key_env: str | None, api_key_file: str | None, sources: Mapping[str, str]
) -> str | None:
    """The key from the variable or file a config file names, or None when it names neither.

    Args:
        api_key_env: The variable the config file names.
        api_key_file: The file the config file names.
        sources: Where each setting came from (for the message).

    Raises:
        ConfigError: The named variable is unset, or the named file is missing or empty
            (vastkit does not fall back to another account's key then).
    """
    if api_key_env is not None:
        where = sources.get("api_key_env", "default")
        value = os.environ.get(api_key_env, "")
        if not value.strip():
            raise ConfigError(
                f"the API key should come from ${api_key_env} (set in {where}), but it is not set",
                key="api_key_env",
            )
        return validate_key(
            value, source=f"${api_key_env} (named by api_key_env in {where})", key="api_key_env"
        )
    if api_key_file is not None:
        where = f"set in {sources.get('api_key_file', 'default')}"
        return _read_key_file(Path(api_key_file), where=where)
    return None


def _key_files() -> list[Path]:
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path(xdg) / "vastai" / "vast_api_key", Path.home() / ".vast_api_key"]


def official_key() -> str:
    """The key from the official SDK's files (``$XDG_CONFIG_HOME/vastai/vast_api_key``, then
    ``~/.vast_api_key``); an empty file is skipped, one that others can read warns.

    Raises:
        ConfigError: No key in either file.
    """
    for path in _key_files():
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(
                f"cannot read the API key file: {exc.strerror}", path=str(path)
            ) from exc
        if not data.strip():
            continue
        text = _key_text(data, path, key=None)
        _warn_if_shared(path)
        return text
    tried = ", ".join(str(path) for path in _key_files())
    raise ConfigError(
        "no Vast API key: pass api_key=, set VAST_API_KEY, name a key source in vastkit.yaml "
        "(api_key_env or api_key_file), or write the key to one of "
        f"{tried} (get a key at https://cloud.vast.ai/manage-keys/)",
        key="api_key",
    )


def _key_from(api_key: str | None, values: SettingValues | None) -> str:
    explicit = explicit_key(api_key)
    if explicit is not None:
        return explicit
    if values is not None:
        found = configured_key(
            values.values.get("api_key_env"), values.values.get("api_key_file"), values.sources
        )
        if found is not None:
            return found
    return official_key()


def resolve_api_key(api_key: str | None = None, *, config: bool = True) -> str:
    """Find the API key: the argument, ``VAST_API_KEY``, the config file's key source, the
    official key files (see the module docstring).

    Args:
        api_key: An explicit key.
        config: Look at vastkit's config file (False: skip it).

    Returns:
        The key, stripped of surrounding whitespace.

    Raises:
        ConfigError: No key anywhere (or only empty ones), the config file is wrong, or the
            variable or file it names gives no key.
    """
    if explicit_key(api_key) is not None or not config or config_file() is None:
        return _key_from(api_key, None)
    return _key_from(None, read_settings())


def resolve_connection(api_key: str | None = None, base_url: str | None = None) -> Connection:
    """Resolve the API key and the server together, reading the config file at most once.

    Each is the argument, else its environment variable (``VAST_API_KEY``, ``VAST_URL``), else
    the config file, else the default (the official key files; :data:`DEFAULT_BASE_URL`). The
    file is not read when the arguments and the environment already give both.

    Raises:
        ConfigError: No key was found, the config file is wrong, or the URL is not http(s).
    """
    key = explicit_key(api_key)
    url = base_url or os.environ.get("VAST_URL") or None
    values = None
    if (key is None or url is None) and config_file() is not None:
        values = read_settings()
    if key is None:
        key = _key_from(None, values)
    if url is None:
        from_file = values.from_file("base_url") if values is not None else None
        url = from_file or DEFAULT_BASE_URL
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"base URL must start with http:// or https://, got {url!r}")
    return Connection(api_key=key, base_url=url)


def _warn_if_shared(path: Path) -> None:
    if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(
            f"the Vast API key file {path} is readable by other users; run `chmod 600 {path}`",
            UserWarning,
            stacklevel=5,
        )


def _key_text(data: bytes, path: Path, *, key: str | None, where: str = "") -> str:
    """The key in a key file's bytes: ASCII, trimmed and validated; never quoted in an error."""
    suffix = f" ({where})" if where else ""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        # not chained: the decoding error holds the file's bytes, i.e. the key
        raise ConfigError(
            f"the API key file holds non-ASCII bytes{suffix}; a Vast API key is printable ASCII "
            "on one line: copy it again from https://cloud.vast.ai/manage-keys/",
            path=str(path),
            key=key,
        ) from None
    return validate_key(text, source=f"the API key file{suffix}", path=str(path), key=key)


def _read_key_file(path: Path, *, where: str) -> str:
    try:
        data = path.read_bytes()
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
    if not data.strip():
        raise ConfigError(
            f"the API key file is empty ({where})", path=str(path), key="api_key_file"
        )
    text = _key_text(data, path, key="api_key_file", where=where)
    _warn_if_shared(path)
    return text


# -- reading the file ---------------------------------------------------------------------------


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
    if name == "ledger_path":
        return _ledger_value(raw, None)
    if name in ("ssh_key", "registry_token"):
        return raw  # a key line or a path (vastkit.api.ssh reads it); a secret as given
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

    names = [str(n) for n in environments] if environments else []
    wanted = _choose_environment(doc, env, default, names)

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


def _choose_environment(
    doc: Document, env: str | None, default: str | None, names: list[str]
) -> str | None:
    """The environment to use: ``env``, ``$VASTKIT_ENV``, ``default:``, else the only one."""
    wanted = env
    origin = "the env argument"
    if wanted is None and os.environ.get("VASTKIT_ENV"):
        wanted, origin = os.environ["VASTKIT_ENV"], "$VASTKIT_ENV"
    if wanted is None and default is not None:
        wanted, origin = default, "default"
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
    return wanted


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
    if key == "ssh_key":
        if not isinstance(value, str) or not value.strip():
            raise doc.error(
                "'ssh_key' must be a public key file (~/.ssh/id_ed25519.pub) or the key line",
                *key_path,
            )
        if value.strip().startswith(("ssh-", "ecdsa-", "sk-")):
            return value.strip()  # the key line itself
        return str(_relative_to(base, value))
    if key in _SECRET_KEYS:
        if not isinstance(value, str) or not _PLACEHOLDER.fullmatch(value.strip()):
            # The value is never echoed: it may be the token itself.
            raise doc.error(
                f"'{key}' must name an environment variable as ${{NAME}} (e.g. "
                f"'{key}: ${{GHCR_TOKEN}}'), never hold the token itself",
                *key_path,
            )
        return _expand(doc, value.strip(), key_path) if expand else value
    if key in _STRING_KEYS:
        if not isinstance(value, str) or not value.strip():
            raise doc.error(f"'{key}' must be a non-empty string, got {value!r}", *key_path)
        if key == "ledger_path":
            return _ledger_value(value, base)
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

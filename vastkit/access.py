"""Getting into a rental and pulling its image: the SSH key and the registry login.

Every rental, :class:`vastkit.Instance` and ``run_job`` alike, is made by one engine
(:class:`vastkit._provision.Provisioner`), which resolves a :class:`RentalAccess` once, before it
rents anything:

- the SSH public key attached to each instance after its create (``ssh_key=``, else
  ``$VASTKIT_SSH_KEY``, else the config file's ``ssh_key``, else ``~/.ssh/id_ed25519.pub``, else
  ``~/.ssh/id_rsa.pub``). A key that is named but cannot be read, or is not a public key, is a
  :class:`~vastkit.errors.ConfigError` before any money is spent; no key at all is a warning,
  and the rental goes ahead (jobs do not need SSH);
- the registry login of private images (``image_login=``, else ``$VASTKIT_REGISTRY_USER`` and
  ``$VASTKIT_REGISTRY_TOKEN`` with ``$VASTKIT_REGISTRY``, else the config file's ``registry_user``,
  ``registry_token: ${VAR}`` and ``registry``), sent as Vast's ``image_login`` on each create
  and nowhere else: not in the run directory, a log, a repr or an event.

::

    access = resolve_access(ssh_key="~/.ssh/work.pub")
    print(access)  # RentalAccess(ssh_key='ssh-ed25519 from ~/.ssh/work.pub', image_login=None)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from vastkit._settings import SettingValues, read_settings
from vastkit.api.models import Offer
from vastkit.api.ssh import (
    DEFAULT_KEY_FILES,
    SSH_KEY_ENV,
    PublicKey,
    attach_public_key,
    find_public_key,
)
from vastkit.errors import ConfigError, ConfigValueError

if TYPE_CHECKING:
    from vastkit.api.client import Client
    from vastkit.api.models import CreateInstanceRequest

__all__ = [
    "REGISTRY_ENV",
    "REGISTRY_TOKEN_ENV",
    "REGISTRY_USER_ENV",
    "AccessPlan",
    "RegistryLogin",
    "RentalAccess",
    "attach_quietly",
    "direct_only_where_open",
    "image_registry",
    "resolve_access",
]

logger = logging.getLogger("vastkit.instance")

REGISTRY_ENV: Final = "VASTKIT_REGISTRY"
"""The registry host of private images (default: the image's own)."""
REGISTRY_USER_ENV: Final = "VASTKIT_REGISTRY_USER"
"""The registry login's user name."""
REGISTRY_TOKEN_ENV: Final = "VASTKIT_REGISTRY_TOKEN"
"""The registry login's token or password."""

_NO_SPACE: Final = re.compile(r"^\S+$")


def image_registry(image: str) -> str:
    """The registry an image is pulled from: its first path part when that names a host
    (``ghcr.io/org/img`` -> ``ghcr.io``, ``localhost:5000/img``), else ``docker.io``."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _login_part(owner: str, field: str, value: Any) -> None:
    if not isinstance(value, str) or not _NO_SPACE.match(value):
        # Never echo the value: it may be the token.
        raise ConfigValueError.of(owner, field, "must be non-empty text without spaces")


@attrs.frozen(kw_only=True)
class RegistryLogin:
    """A docker login for private images, sent as Vast's ``image_login`` on each create.

    The token never appears in a repr, an error, a log or an event; only :meth:`argument`
    (the create request's field) holds it.

    Raises:
        ConfigValueError: A part is empty or holds a space.
    """

    user: str
    """The registry user name."""
    token: str = attrs.field(repr=False)
    """The token or password."""
    registry: str | None = None
    """The registry host (``ghcr.io``); None: the image's own (see :func:`image_registry`)."""

    def __attrs_post_init__(self) -> None:
        _login_part("RegistryLogin", "user", self.user)
        _login_part("RegistryLogin", "token", self.token)
        if self.registry is not None:
            _login_part("RegistryLogin", "registry", self.registry)

    def argument(self, image: str) -> str:
        """Vast's ``image_login`` for ``image``: ``"-u USER -p TOKEN REGISTRY"``."""
        return f"-u {self.user} -p {self.token} {self.registry or image_registry(image)}"

    @classmethod
    def parse(cls, text: str) -> RegistryLogin:
        """Read Vast's own form, ``"-u USER -p TOKEN [REGISTRY]"``.

        Raises:
            ConfigValueError: Not that form (the text itself is never shown).
        """
        parts = text.split() if isinstance(text, str) else []
        if len(parts) in (4, 5) and parts[0] == "-u" and parts[2] == "-p":
            return cls(
                user=parts[1], token=parts[3], registry=parts[4] if len(parts) == 5 else None
            )
        raise ConfigValueError.of(
            "image_login", "image_login", "must read '-u USER -p TOKEN [REGISTRY]'"
        )


@attrs.frozen(kw_only=True)
class RentalAccess:
    """What the engine attaches to every rental, resolved once before renting."""

    public_key: PublicKey | None = attrs.field(default=None, repr=False)
    """The SSH key attached after each create (None: none was found; see :attr:`missing`)."""
    image_login: RegistryLogin | None = None
    """The registry login sent with each create (None: public images only)."""
    missing: str = ""
    """When there is no key: where it was looked for and how to make one (for the warning)."""

    def __repr__(self) -> str:
        key = f"{self.public_key.kind} from {self.public_key.source}" if self.public_key else None
        login = (
            f"{self.image_login.user}@{self.image_login.registry or '<image registry>'}"
            if self.image_login
            else None
        )
        return f"RentalAccess(ssh_key={key!r}, image_login={login!r})"

    @classmethod
    def none(cls) -> RentalAccess:
        """No key and no login, on purpose (no warning either)."""
        return cls()


def _key_named(ssh_key: str | None, configured: str | None, env: Mapping[str, str]) -> bool:
    return ssh_key is not None or bool(env.get(SSH_KEY_ENV, "").strip()) or bool(configured)


def _public_key(
    ssh_key: str | None, configured: str | None, env: Mapping[str, str], home: Path
) -> tuple[PublicKey | None, str]:
    looked = [home / name for name in DEFAULT_KEY_FILES]
    if not _key_named(ssh_key, configured, env) and not any(p.is_file() for p in looked):
        where = ", ".join(str(p) for p in looked)
        return None, (
            f"no SSH public key to attach (looked for ${SSH_KEY_ENV}, the config file's ssh_key, "
            f"{where}): the instance is rented without one, so `vastkit ssh` will be refused. "
            "Create one with `ssh-keygen -t ed25519`, or pass ssh_key="
        )
    return find_public_key(ssh_key, configured=configured, home=home, environ=env), ""


def _login(
    image_login: RegistryLogin | str | None, values: SettingValues, env: Mapping[str, str]
) -> RegistryLogin | None:
    if isinstance(image_login, RegistryLogin):
        return image_login
    if isinstance(image_login, str):
        return RegistryLogin.parse(image_login)
    if image_login is not None:
        raise ConfigValueError.of(
            "image_login", "image_login", "must be a RegistryLogin or '-u USER -p TOKEN REGISTRY'"
        )
    settings = values.values
    user = env.get(REGISTRY_USER_ENV, "").strip() or settings.get("registry_user")
    token = env.get(REGISTRY_TOKEN_ENV, "").strip() or settings.get("registry_token")
    registry = env.get(REGISTRY_ENV, "").strip() or settings.get("registry")
    if not user and not token:
        return None
    if not user or not token:
        missing = "registry_user" if not user else "registry_token"
        var = REGISTRY_USER_ENV if not user else REGISTRY_TOKEN_ENV
        raise ConfigError(
            f"a registry login needs a user and a token: {missing} is not set "
            f"(set ${var} or '{missing}' in the config file)",
            key=missing,
        )
    return RegistryLogin(user=str(user), token=str(token), registry=registry or None)


def resolve_access(
    ssh_key: str | os.PathLike[str] | None = None,
    image_login: RegistryLogin | str | None = None,
    *,
    settings: SettingValues | None = None,
    environ: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> RentalAccess:
    """Find the SSH key and the registry login that every rental gets.

    Args:
        ssh_key: A ``.pub`` file or the key line (default: ``$VASTKIT_SSH_KEY``, the config
            file's ``ssh_key``, ``~/.ssh/id_ed25519.pub``, ``~/.ssh/id_rsa.pub``).
        image_login: A :class:`RegistryLogin` or ``"-u USER -p TOKEN [REGISTRY]"`` (default:
            ``$VASTKIT_REGISTRY_USER``/``$VASTKIT_REGISTRY_TOKEN``/``$VASTKIT_REGISTRY``, else the
            config file's ``registry_user``/``registry_token``/``registry``).
        settings: What the config file says (default: :func:`vastkit._settings.read_settings`).
        environ: The environment (default ``os.environ``).
        home: The home folder (default ``~``).

    Returns:
        The access; ``public_key`` is None (and ``missing`` says why) when there is no key at
        all. Nothing is logged here: the engine warns once.

    Raises:
        ConfigError: A key that was named cannot be read or is not a public key, or half a
            registry login is set (the token is never shown).
    """
    env = os.environ if environ is None else environ
    values = settings if settings is not None else read_settings()
    configured = values.from_file("ssh_key")
    home_dir = Path(home) if home is not None else Path.home()
    key, missing = _public_key(
        os.fspath(ssh_key) if ssh_key is not None else None,
        str(configured) if configured else None,
        env,
        home_dir,
    )
    return RentalAccess(
        public_key=key, image_login=_login(image_login, values, env), missing=missing
    )


def attach_quietly(client: Client, instance_id: int, key: PublicKey | None) -> bool:
    """Attach ``key`` to an instance just rented, never raising: the instance exists and
    bills, so a failed attach is logged (with the command that attaches it by hand) and the
    rental goes on.

    Returns:
        True when the key is attached (or already was); False with no key or on failure.
    """
    if key is None:
        return False
    try:
        attach_public_key(client, instance_id, key)
    except Exception as exc:  # never lose a rental over its SSH key
        by_hand = key.source if key.source.endswith(".pub") else "KEY.pub"
        logger.warning(
            "could not attach the SSH key %s to instance %s (%s: %s); SSH logins are refused "
            'until it is: vastai attach ssh %s "$(cat %s)"',
            key.source,
            instance_id,
            type(exc).__name__,
            exc,
            instance_id,
            by_hand,
        )
        return False
    logger.info("attached the SSH key %s to instance %s", key.source, instance_id)
    return True


class AccessPlan:
    """Where the engine's :class:`RentalAccess` comes from, resolved once on first use.

    Args:
        ssh_key: A ``.pub`` file or the key line (see :func:`resolve_access`).
        image_login: A :class:`RegistryLogin` or ``"-u USER -p TOKEN [REGISTRY]"``.
        resolved: An access already resolved (nothing is looked up or warned then).
    """

    def __init__(
        self,
        ssh_key: str | os.PathLike[str] | None = None,
        image_login: RegistryLogin | str | None = None,
        *,
        resolved: RentalAccess | None = None,
    ) -> None:
        self._args = (ssh_key, image_login)
        self._resolved = resolved

    def __repr__(self) -> str:
        return f"AccessPlan({self._resolved!r})"

    @property
    def resolved(self) -> RentalAccess | None:
        """The access, once resolved (None before)."""
        return self._resolved

    def resolve(self) -> RentalAccess:
        """Resolve once (later calls return the same); no key at all is one WARNING.

        Raises:
            ConfigError: See :func:`resolve_access`.
        """
        if self._resolved is None:
            self._resolved = resolve_access(*self._args)
            if self._resolved.public_key is None:
                logger.warning("%s", self._resolved.missing)
        return self._resolved

    def request_for(self, request: CreateInstanceRequest) -> CreateInstanceRequest:
        """``request`` with the registry login (unless it has its own); resolves first."""
        login = self.resolve().image_login
        if login is None or request.image_login is not None:
            return request
        return attrs.evolve(request, image_login=login.argument(request.image))


def direct_only_where_open(runtype: str | None, offer: Offer) -> str | None:
    """``runtype`` without its direct modes when the offer's host has no open ports.

    Direct SSH and Jupyter need ports on the host's router (``direct_port_count``); on a host
    without them Vast can only give the proxied modes, as the official CLI's ``--direct`` also
    assumes. ``"ssh_direc ssh_proxy"`` becomes ``"ssh_proxy"``; a runtype with only direct modes
    falls back to their proxied twins.
    """
    if runtype is None or (offer.direct_port_count or 0) > 0:
        return runtype
    modes = runtype.split()
    kept = [m for m in modes if not m.endswith(("_direc", "_direct"))]
    if kept == modes:
        return runtype
    for mode in modes:
        if mode.endswith(("_direc", "_direct")):
            proxied = mode.rsplit("_", 1)[0] + "_proxy"
            if proxied not in kept:
                kept.append(proxied)
    return " ".join(kept)

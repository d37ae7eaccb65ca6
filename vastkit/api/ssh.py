"""Getting into an instance: which public key to attach, and the SSH address to reach.

::

    from vastkit.api import Client
    from vastkit.api.ssh import attach_public_key, find_public_key, ssh_address

    key = find_public_key()  # ~/.ssh/id_ed25519.pub, else ~/.ssh/id_rsa.pub
    with Client() as vast:
        attach_public_key(vast, 12345, key)
        print(ssh_address(vast.get_instance(12345)).command)

The address follows the official CLI's ``vastai ssh-url``: the instance's direct port 22 when
it has one, else Vast's SSH proxy (one port up for Jupyter run types).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from vastkit.errors import ConfigError

if TYPE_CHECKING:
    from vastkit.api.client import Client
    from vastkit.api.models import InstanceInfo

__all__ = [
    "DEFAULT_KEY_FILES",
    "SSH_KEY_ENV",
    "PublicKey",
    "SshAddress",
    "attach_public_key",
    "find_public_key",
    "ssh_address",
]

SSH_KEY_ENV: Final = "VASTKIT_SSH_KEY"
"""The environment variable naming a public key file (or holding the key line itself)."""

DEFAULT_KEY_FILES: Final = (".ssh/id_ed25519.pub", ".ssh/id_rsa.pub")
"""Where a public key is looked for under the home folder, in order."""

_PUBLIC_KEY: Final = re.compile(
    r"(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)"
    r"@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\n]*)?"
)


@attrs.frozen(kw_only=True)
class PublicKey:
    """An OpenSSH public key and where it was found."""

    line: str = attrs.field(repr=False)
    """The key line, ``type base64 [comment]``."""
    source: str
    """Where it came from: a file path, ``ssh_key=``, or ``$VASTKIT_SSH_KEY``."""

    @property
    def kind(self) -> str:
        """The key type, e.g. ``ssh-ed25519``."""
        return self.line.split()[0]


@attrs.frozen(kw_only=True)
class SshAddress:
    """Where to reach an instance with SSH."""

    host: str
    """The host name or IP address."""
    port: int
    """The TCP port."""
    user: str = "root"
    """The login user (Vast's containers log in as root)."""
    direct: bool = False
    """True for the machine's own mapped port 22, False for Vast's SSH proxy."""

    @property
    def url(self) -> str:
        """``ssh://root@host:port``, as ``vastai ssh-url`` prints it."""
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @property
    def target(self) -> str:
        """``user@host``."""
        return f"{self.user}@{self.host}"

    def command(self, *extra: str, identity: str | None = None) -> list[str]:
        """The ``ssh`` command line, with ``extra`` arguments (a remote command) at the end."""
        argv = ["ssh", "-p", str(self.port)]
        if identity:
            argv += ["-i", identity]
        return [*argv, self.target, *extra]


def ssh_address(info: InstanceInfo) -> SshAddress | None:
    """The SSH address of an instance, as ``vastai ssh-url`` computes it; None when the
    instance has none yet (not running, or no SSH run type)."""
    direct = info.ports.get("22/tcp")
    if direct and info.public_ipaddr:
        return SshAddress(host=info.public_ipaddr, port=int(direct[0].host_port), direct=True)
    if info.ssh_host and info.ssh_port:
        jupyter = "jupyter" in (info.image_runtype or "")
        return SshAddress(host=info.ssh_host, port=info.ssh_port + (1 if jupyter else 0))
    return None


def _parse(text: str, source: str) -> PublicKey:
    line = text.strip()
    if "PRIVATE KEY" in line:
        raise ConfigError(
            "this is a private SSH key; give the public one (the .pub file next to it)",
            path=source,
        )
    if _PUBLIC_KEY.fullmatch(line) is None:
        raise ConfigError(
            "not an OpenSSH public key line ('ssh-ed25519 AAAA... comment')", path=source
        )
    return PublicKey(line=line, source=source)


def _from_spec(spec: str, source: str, home: Path) -> PublicKey:
    """A key given as the key line itself or as a path to a ``.pub`` file."""
    text = spec.strip()
    if _PUBLIC_KEY.fullmatch(text):
        return PublicKey(line=text, source=source)
    path = Path(os.path.expanduser(text)) if not text.startswith("~/") else home / text[2:]
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the SSH public key file ({source}): {exc.strerror or exc}",
            path=str(path),
        ) from exc
    return _parse(content, str(path))


def find_public_key(
    ssh_key: str | None = None,
    *,
    configured: str | None = None,
    home: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PublicKey:
    """The public key to attach to instances.

    Looked for in this order: ``ssh_key`` (a key line or a path), ``$VASTKIT_SSH_KEY`` (the
    same), ``configured`` (a path from the config file), ``~/.ssh/id_ed25519.pub``,
    ``~/.ssh/id_rsa.pub``.

    Args:
        ssh_key: A key line or a path to a ``.pub`` file.
        configured: The path the configuration names, if any.
        home: The home folder (default ``~``).
        environ: The environment (default ``os.environ``).

    Returns:
        The key and where it came from.

    Raises:
        ConfigError: A key that was named cannot be read or is not a public key, or no key
            was found anywhere (the message lists where it looked and how to make one).
    """
    env = os.environ if environ is None else environ
    home_dir = Path(home) if home is not None else Path.home()
    if ssh_key is not None:
        return _from_spec(ssh_key, "ssh_key=", home_dir)
    if env.get(SSH_KEY_ENV, "").strip():
        return _from_spec(env[SSH_KEY_ENV], f"${SSH_KEY_ENV}", home_dir)
    if configured:
        return _from_spec(configured, "the configured ssh_key", home_dir)
    looked = [home_dir / name for name in DEFAULT_KEY_FILES]
    for path in looked:
        if path.is_file():
            return _from_spec(str(path), str(path), home_dir)
    raise ConfigError(
        "no SSH public key to attach: looked for "
        + ", ".join(str(p) for p in looked)
        + f" (and ${SSH_KEY_ENV}); create one with `ssh-keygen -t ed25519` or pass ssh_key=",
        key="ssh_key",
    )


def attach_public_key(client: Client, instance_id: int, key: PublicKey) -> None:
    """Attach ``key`` to an instance unless it is already attached (one list, at most one
    attach).

    Raises:
        NotFoundError: No such instance.
        APIError: Anything else that went wrong.
    """
    wanted = key.line.split()[:2]
    for attached in client.instance_ssh_keys(instance_id):
        if attached.public_key.split()[:2] == wanted:
            return
    client.attach_ssh_key(instance_id, key.line)

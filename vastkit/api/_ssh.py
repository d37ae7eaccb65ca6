"""The SSH and execute endpoints of :class:`vastkit.api.Client`: the account's SSH keys, the
keys attached to an instance, and Vast's constrained ``execute``."""

from __future__ import annotations

from typing import Any

from vastkit.api._converter import structure, structure_list
from vastkit.api._responses import check_id, expect_field, raise_if_unsuccessful
from vastkit.api._transport import Transport
from vastkit.api.models import SshKey
from vastkit.clock import Clock
from vastkit.errors import APITimeoutError, ResponseValidationError

__all__ = ["EXECUTE_COMMANDS", "SshEndpoints", "poll_result_url"]

EXECUTE_COMMANDS = ("ls", "rm", "du")
"""The programs Vast's ``execute`` runs (reference section 5)."""


def _key_rows(rows: list[Any]) -> list[Any]:
    """Key rows with ``public_key`` filled from ``key`` where an answer uses that name."""
    out: list[Any] = []
    for row in rows:
        if isinstance(row, dict) and "public_key" not in row and "key" in row:
            row = {**row, "public_key": row["key"]}
        out.append(row)
    return out


def poll_result_url(
    transport: Transport,
    clock: Clock,
    result_url: str,
    *,
    body: Any,
    what: str,
    endpoint: str,
    timeout: float,
    poll_interval: float,
) -> str:
    """GET a ``result_url`` (without the key) until it answers 200; its text.

    Raises:
        ResponseValidationError: ``result_url`` is not an http(s) URL.
        APITimeoutError: Not ready within ``timeout``.
        APIStatusError: The URL answered something other than 200, 403 or 404.
    """
    if not result_url.startswith(("https://", "http://")):
        raise ResponseValidationError(
            f"the {what} request returned an unusable result_url",
            errors=["not an http(s) URL @ $.result_url"],
            body=body,
        )
    deadline = clock.now() + timeout
    polls = 0
    while True:
        response = transport.get_plain(result_url, endpoint=endpoint)
        polls += 1
        if response.status_code == 200:
            return response.text
        if response.status_code not in (403, 404):
            raise transport.status_error(response, "GET", "(result_url)")
        if clock.now() + poll_interval > deadline:
            raise APITimeoutError(
                f"the {what} was not ready after {polls} polls ({timeout:g}s)",
                request=response.request,
            )
        clock.sleep(poll_interval)


class SshEndpoints:
    """The SSH key and execute calls of :class:`vastkit.api.Client` (a mixin: the client
    provides the transport and the clock)."""

    _transport: Transport
    _clock: Clock

    # -- the account's keys -------------------------------------------------------------------

    def ssh_keys(self) -> list[SshKey]:
        """The account's SSH public keys (``GET /api/v0/ssh/``).

        New instances get these keys when they are created; an existing instance gets a key
        only through :meth:`attach_ssh_key`.

        Raises:
            APIError: Anything that went wrong.
        """
        body = self._transport.request("GET", "/api/v0/ssh/", endpoint="ssh_keys")
        rows = body if isinstance(body, list) else expect_field(body, "ssh_keys", list)
        return structure_list(_key_rows(rows), SshKey, path="$")

    def create_ssh_key(self, public_key: str) -> SshKey:
        """Add a public key to the account (``POST /api/v0/ssh/``).

        Args:
            public_key: One OpenSSH public key line (``ssh-ed25519 AAAA... me@host``).

        Raises:
            ValueError: ``public_key`` is empty or a private key.
            APIError: The server refused it, or anything else that went wrong.
        """
        text = _checked_public_key(public_key)
        path = "/api/v0/ssh/"
        body = self._transport.request(
            "POST", path, endpoint="ssh_key_create", json_body={"ssh_key": text}
        )
        raise_if_unsuccessful(self._transport, body, "POST", path)
        key = expect_field(body, "key", dict)
        return structure(_key_rows([key])[0], SshKey, path="$.key")

    def delete_ssh_key(self, key_id: int) -> None:
        """Remove a key from the account (``DELETE /api/v0/ssh/{id}/``); instances keep it.

        Raises:
            NotFoundError: No such key.
            APIError: Anything else that went wrong.
        """
        check_id(key_id, "ssh key id")
        path = f"/api/v0/ssh/{key_id}/"
        body = self._transport.request("DELETE", path, endpoint="ssh_key_delete")
        raise_if_unsuccessful(self._transport, body, "DELETE", path)

    # -- an instance's keys -------------------------------------------------------------------

    def attach_ssh_key(self, instance_id: int, public_key: str) -> None:
        """Let ``public_key`` log in to an instance (``POST /api/v0/instances/{id}/ssh/``).

        Attaching a key that is already attached succeeds.

        Raises:
            ValueError: ``public_key`` is empty or a private key.
            NotFoundError: No such instance.
            APIError: The server refused the key, or anything else that went wrong.
        """
        check_id(instance_id)
        text = _checked_public_key(public_key)
        path = f"/api/v0/instances/{instance_id}/ssh/"
        body = self._transport.request(
            "POST", path, endpoint="instance_ssh_attach", json_body={"ssh_key": text}
        )
        raise_if_unsuccessful(self._transport, body, "POST", path)

    def instance_ssh_keys(self, instance_id: int) -> list[SshKey]:
        """The keys that may log in to an instance (``GET /api/v0/instances/{id}/ssh/``).

        Raises:
            NotFoundError: No such instance.
            APIError: Anything else that went wrong.
        """
        check_id(instance_id)
        path = f"/api/v0/instances/{instance_id}/ssh/"
        body = self._transport.request("GET", path, endpoint="instance_ssh_keys")
        raise_if_unsuccessful(self._transport, body, "GET", path)
        rows = expect_field(body, "ssh_keys", list)
        return structure_list(_key_rows(rows), SshKey, path="$.ssh_keys")

    def detach_ssh_key(self, instance_id: int, key_id: int) -> None:
        """Stop a key from logging in (``DELETE /api/v0/instances/{id}/ssh/{key_id}/``).

        Raises:
            NotFoundError: No such instance, or the key is not attached.
            APIError: Anything else that went wrong.
        """
        check_id(instance_id)
        check_id(key_id, "ssh key id")
        path = f"/api/v0/instances/{instance_id}/ssh/{key_id}/"
        body = self._transport.request("DELETE", path, endpoint="instance_ssh_detach")
        raise_if_unsuccessful(self._transport, body, "DELETE", path)

    # -- execute ------------------------------------------------------------------------------

    def execute(
        self,
        instance_id: int,
        command: str,
        *,
        timeout: float = 30.0,
        poll_interval: float = 0.5,
    ) -> str:
        """Run ``ls``, ``rm`` or ``du`` in a running instance (``PUT
        /api/v0/instances/command/{id}/``) and return its output.

        Vast runs the command in ``/workspace`` and writes the output to a ``result_url``,
        which this polls without the key, like :meth:`instance_logs`. The ``writeable_path``
        prefix is removed from the output, as the official CLI does.

        Args:
            instance_id: The instance.
            command: The command line, at most 512 characters, starting with ``ls``, ``rm``
                or ``du``.
            timeout: Seconds to wait for the output.
            poll_interval: Seconds between polls.

        Raises:
            ValueError: An empty or too long command, or another program.
            APITimeoutError: The output did not appear within ``timeout``.
            APIStatusError: The server refused (e.g. the container is not running).
            APIError: Anything else that went wrong.
        """
        check_id(instance_id)
        words = command.split()
        if not words or words[0] not in EXECUTE_COMMANDS or len(command) > 512:
            raise ValueError(
                f"execute runs only {', '.join(EXECUTE_COMMANDS)} (at most 512 characters), "
                f"not {command[:40]!r}"
            )
        path = f"/api/v0/instances/command/{instance_id}/"
        body = self._transport.request(
            "PUT", path, endpoint="command", json_body={"command": command}
        )
        raise_if_unsuccessful(self._transport, body, "PUT", path)
        result_url = expect_field(body, "result_url", str)
        text = poll_result_url(
            self._transport,
            self._clock,
            result_url,
            body=body,
            what=f"output of {words[0]!r} on instance {instance_id}",
            endpoint="command_result",
            timeout=timeout,
            poll_interval=poll_interval,
        )
        writeable = body.get("writeable_path") if isinstance(body, dict) else None
        return text.replace(writeable, "") if isinstance(writeable, str) and writeable else text


def _checked_public_key(public_key: str) -> str:
    """``public_key`` stripped.

    Raises:
        ValueError: Empty, or a private key.
    """
    text = public_key.strip()
    if not text:
        raise ValueError("the SSH public key is empty")
    if "PRIVATE KEY" in text:
        raise ValueError("that is a private SSH key; give the public one (the .pub file)")
    return text

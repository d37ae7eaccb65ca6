"""SSH keys: the account's keys (``/api/v0/ssh/``) and the keys attached to each instance
(``/api/v0/instances/{id}/ssh/``), as in reference sections 5 and 7.

The account's keys are copied onto every instance created afterwards (so that a key added with
``vastai create ssh-key`` reaches new instances); a key added later reaches an existing instance
only when it is attached to it.
"""

from __future__ import annotations

import re
from typing import Any, Final

from vastkit.emulator._http import Response, error, json_response
from vastkit.emulator._model import SshKey
from vastkit.emulator._routes import Call, Handler
from vastkit.emulator._state import State

__all__ = ["PUBLIC_KEY", "KeyEndpoints", "check_public_key"]

PUBLIC_KEY: Final = re.compile(
    r"(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)"
    r"@openssh\.com) [A-Za-z0-9+/]+={0,3}( .*)?"
)
"""An OpenSSH public key line: type, base64 blob, optional comment."""


def check_public_key(raw: Any) -> str:
    """The public key line in a request, stripped.

    Raises:
        ApiError: 400 ``invalid_args`` for a missing key, a private key, or anything that is
            not one OpenSSH public key line.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise error(400, "invalid_args", "ssh_key is required")
    text = raw.strip()
    if "PRIVATE KEY" in text:
        raise error(400, "invalid_args", "That is a private key; send the public key (.pub).")
    if "\n" in text or PUBLIC_KEY.fullmatch(text) is None:
        raise error(400, "invalid_args", "ssh_key is not an OpenSSH public key line.")
    return text


def _key_row(key: SshKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "user_id": 1,
        "public_key": key.public_key,
        "key": key.public_key,
        "created_at": key.created_at,
        "deleted_at": None,
    }


class KeyEndpoints:
    """The SSH key endpoints over the market ``state``."""

    def __init__(self, state: State) -> None:
        self.state = state

    def endpoints(self) -> dict[str, Handler]:
        """Endpoint name -> handler."""
        return {
            "ssh_keys": self.account_keys,
            "ssh_key_create": self.create,
            "ssh_key_update": self.update,
            "ssh_key_delete": self.delete,
            "instance_ssh_keys": self.instance_keys,
            "instance_ssh_attach": self.attach,
            "instance_ssh_detach": self.detach,
        }

    # ------------------------------------------------------------------ the account's keys

    def account_keys(self, call: Call) -> Response:
        """``GET /api/v0/ssh/``: a JSON list of the account's keys."""
        return json_response(200, [_key_row(k) for k in self.state.ssh_keys.values()])

    def create(self, call: Call) -> Response:
        """``POST /api/v0/ssh/`` ``{"ssh_key"}``: add a key to the account."""
        public_key = check_public_key(call.request.json_body().get("ssh_key"))
        for key in self.state.ssh_keys.values():
            if key.public_key == public_key:
                return json_response(200, {"success": True, "key": _key_row(key)})
        key = self.state.new_ssh_key(public_key)
        self.state.ssh_keys[key.id] = key
        return json_response(200, {"success": True, "key": _key_row(key)})

    def update(self, call: Call) -> Response:
        """``PUT /api/v0/ssh/{id}/`` ``{"id", "ssh_key"}``: replace a key's text."""
        old = self._account_key(call.path_id)
        public_key = check_public_key(call.request.json_body().get("ssh_key"))
        key = SshKey(id=old.id, public_key=public_key, created_at=old.created_at)
        self.state.ssh_keys[key.id] = key
        return json_response(200, {"success": True, "key": _key_row(key)})

    def delete(self, call: Call) -> Response:
        """``DELETE /api/v0/ssh/{id}/``: remove a key from the account (instances keep it)."""
        self._account_key(call.path_id)
        del self.state.ssh_keys[call.path_id]
        return json_response(200, {"success": True})

    def _account_key(self, key_id: int) -> SshKey:
        key = self.state.ssh_keys.get(key_id)
        if key is None:
            raise error(404, "not_found", f"No ssh key with id {key_id}.")
        return key

    # ------------------------------------------------------------------ an instance's keys

    def instance_keys(self, call: Call) -> Response:
        """``GET /api/v0/instances/{id}/ssh/``: ``{"success", "ssh_keys"}``."""
        inst = self.state.instance(call.path_id)
        return json_response(
            200, {"success": True, "ssh_keys": [_key_row(k) for k in inst.ssh_keys]}
        )

    def attach(self, call: Call) -> Response:
        """``POST /api/v0/instances/{id}/ssh/`` ``{"ssh_key"}``: attach a key (idempotent)."""
        inst = self.state.instance(call.path_id)
        public_key = check_public_key(call.request.json_body().get("ssh_key"))
        if any(k.public_key == public_key for k in inst.ssh_keys):
            return json_response(
                200, {"success": True, "msg": f"Key already attached to instance {inst.id}."}
            )
        inst.ssh_keys.append(self.state.new_ssh_key(public_key))
        return json_response(
            200, {"success": True, "msg": f"Successfully attached ssh key to instance {inst.id}."}
        )

    def detach(self, call: Call) -> Response:
        """``DELETE /api/v0/instances/{id}/ssh/{key_id}/``."""
        inst = self.state.instance(call.path_id)
        key_id = int(call.match.group(2))
        kept = [k for k in inst.ssh_keys if k.id != key_id]
        if len(kept) == len(inst.ssh_keys):
            raise error(404, "not_found", f"Key {key_id} is not attached to instance {inst.id}.")
        inst.ssh_keys = kept
        return json_response(
            200, {"success": True, "msg": f"Detached ssh key {key_id} from instance {inst.id}."}
        )

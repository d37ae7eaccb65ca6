"""Endpoints that answer later through a ``result_url``: container logs and file commands,
and the result store that serves those URLs."""

from __future__ import annotations

import hashlib
import shlex

from vastkit.emulator._http import Request, Response, error, json_response, text_response
from vastkit.emulator._routes import Call, Handler
from vastkit.emulator._runners import Executes
from vastkit.emulator._state import State

__all__ = ["LogEndpoints"]

_NO_SUCH_KEY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey'
    "</Code><Message>The specified key does not exist.</Message>"
    "</Error>"
)
"""What the result bucket answers before a result exists (an S3 error document)."""

COMMANDS = (["ls"], ["rm"], ["du"])
"""The programs ``execute`` may run."""


class LogEndpoints:
    """``request_logs``, ``command`` and ``result`` over the market ``state``.

    A result is published under a token derived from the seed and becomes readable
    :attr:`~vastkit.emulator.Timings.log_ready_s` after it is requested, like the live bucket.
    """

    def __init__(self, state: State) -> None:
        self.state = state
        self._results: dict[str, tuple[float, str]] = {}
        self._counter = 0

    def endpoints(self) -> dict[str, Handler]:
        """Endpoint name -> handler."""
        return {
            "request_logs": self.request_logs,
            "command": self.command,
            "result": self.result,
        }

    def publish(self, request: Request, text: str) -> str:
        """Store ``text`` as a result; its ``result_url``."""
        self._counter += 1
        state = self.state
        token = hashlib.sha256(f"{state.seed}:{self._counter}:{state.now}".encode()).hexdigest()
        token = token[:32]
        self._results[token] = (state.now + state.timings.log_ready_s, text)
        return f"{request.base_url}/emulator/results/{token}.log"

    def request_logs(self, call: Call) -> Response:
        """``PUT /api/v0/instances/request_logs/{id}/`` (``tail``, ``filter``)."""
        inst = self.state.instances.get(call.path_id)
        if inst is None:
            raise error(404, "invalid_id", "Invalid instance id.")
        body = call.request.json_body()
        lines = self.state.runner.logs(inst.id).splitlines(keepends=True)
        grep = body.get("filter")
        if grep:
            lines = [line for line in lines if str(grep) in line]
        tail = body.get("tail")
        if tail is not None:
            try:
                count = int(tail)
            except (TypeError, ValueError):
                raise error(400, "invalid_args", "tail must be a number") from None
            lines = lines[-count:] if count > 0 else []
        url = self.publish(call.request, "".join(lines))
        return json_response(
            200,
            {
                "success": True,
                "result_url": url,
                "msg": "Logs requested; fetch result_url in a few seconds.",
            },
        )

    def command(self, call: Call) -> Response:
        """``PUT /api/v0/instances/command/{id}/``: ``ls``, ``rm`` or ``du`` in the running
        container's ``/workspace``; the ``result_url`` serves what the runner answered."""
        inst = self.state.instances.get(call.path_id)
        if inst is None:
            raise error(400, "invalid_container_id", "Invalid container id.")
        command = str(call.request.json_body().get("command") or "")
        try:
            argv = shlex.split(command)
        except ValueError:
            argv = []
        if len(command) > 512 or argv[:1] not in COMMANDS:
            raise error(400, "invalid_args", "Only ls, rm and du are allowed (<=512 chars).")
        if inst.actual != "running":
            raise error(400, "invalid_container", f"Instance {inst.id} is not running.")
        runner = self.state.runner
        output = ""
        if isinstance(runner, Executes):
            try:
                output = runner.execute(inst.id, argv)
            except ValueError as exc:
                raise error(400, "invalid_args", str(exc)) from None
        url = self.publish(call.request, output)
        return json_response(
            200,
            {
                "success": True,
                "writeable_path": "/workspace",
                "result_url": url,
                "msg": "Command is executing, wait a few seconds and then view the result_url",
            },
        )

    def result(self, call: Call) -> Response:
        """``GET /emulator/results/{token}.log``: 404 until the result is ready."""
        entry = self._results.get(call.match.group(1))
        if entry is None or self.state.now < entry[0]:
            return text_response(404, _NO_SUCH_KEY, "application/xml")
        return text_response(200, entry[1])

"""Serving the application: a threaded loopback HTTP server and an in-process httpx transport."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from vastkit.emulator._app import App
from vastkit.emulator._http import Request, Response, parse_query_string

__all__ = ["EmulatorTransport", "LoopbackServer"]

logger = logging.getLogger("vastkit.emulator")

_KEY_IN_URL = re.compile(r"(api_key=)[^&\s]+")


def redact(text: str) -> str:
    """Hide ``api_key=`` values in a URL or log line."""
    return _KEY_IN_URL.sub(r"\1***", text)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), redact(format % args))

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, raw_query = self.path.partition("?")
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        request = Request(
            method=self.command,
            path=path,
            query=parse_query_string(raw_query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=f"http://{host}",
            client_ip=self.client_address[0],
        )
        response = self.server.app.handle(request)
        if response.delay_s > 0:
            time.sleep(response.delay_s)
        if response.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        super().__init__(address, _Handler)
        self.app = app


class LoopbackServer:
    """The application served over real HTTP on a thread.

    Args:
        app: The application.
        host: The address to bind (127.0.0.1 by default).
        port: The port (0: a free one).
    """

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), app)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"vastkit-emulator-http-{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class EmulatorTransport(httpx.BaseTransport):
    """An httpx transport that answers from the emulator in-process, without sockets.

    Behaves like the loopback server: a dropped connection raises
    :class:`httpx.RemoteProtocolError`, a slow answer longer than the request's read timeout
    raises :class:`httpx.ReadTimeout` (shorter ones sleep for real).
    """

    def __init__(self, app: App) -> None:
        self._app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer ``request`` from the emulator."""
        body = request.read()
        url = request.url
        port = f":{url.port}" if url.port else ""
        app_request = Request(
            method=request.method,
            path=url.path,
            query=parse_query_string(url.query.decode()),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            base_url=f"{url.scheme}://{url.host}{port}",
        )
        response: Response = self._app.handle(app_request)
        if response.delay_s > 0:
            timeout = request.extensions.get("timeout", {}).get("read")
            if timeout is not None and response.delay_s >= timeout:
                raise httpx.ReadTimeout("The emulator answered too slowly", request=request)
            time.sleep(response.delay_s)
        if response.drop:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx.Response(
            response.status, headers=response.headers, content=response.body, request=request
        )

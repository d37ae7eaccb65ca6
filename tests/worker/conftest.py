"""Helpers for the worker tests: job specs, a worker subprocess, a fake Vast API server."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vastkit.rundir import AttemptSettings, JobSpec, RunDir

TRAIN = Path(__file__).with_name("_train.py")
REPO = Path(__file__).resolve().parents[2]


def fast_settings(**overrides: Any) -> AttemptSettings:
    """Attempt settings with short intervals so a worker run takes about a second."""
    values: dict[str, Any] = {
        "heartbeat_interval": 0.2,
        "grace_period": 5.0,
        "orchestrator_timeout": None,
        "log_flush_seconds": 0.2,
        "log_flush_bytes": 64 * 1024,
    }
    values.update(overrides)
    return AttemptSettings(**values)


def train_spec(run_id: str = "run1", mode: str = "ok", **fields: Any) -> JobSpec:
    """A job whose command is ``_train.py`` in the given mode."""
    env = {"MODE": mode, **fields.pop("env", {})}
    fields.setdefault("attempt", fast_settings())
    return JobSpec(run_id=run_id, command=(sys.executable, str(TRAIN)), env=env, **fields)


def start_worker(
    run_url: str, attempt: int = 1, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """``python -m vastkit.worker`` as a subprocess (its own session, like on a host)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VASTKIT_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vastkit.worker",
            "--run-url",
            run_url,
            "--attempt",
            str(attempt),
            "--tick",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> tuple[int, str, str]:
    """Wait for a worker subprocess; return (exit status, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"worker did not finish:\n{out.decode()}\n{err.decode()}") from None
    return proc.returncode, out.decode(), err.decode()


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll a subprocess-driven condition (real time: a subprocess has no virtual clock)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture
def run_dir(tmp_path: Path) -> RunDir:
    """A run directory in a local folder, addressed with a file:// URL."""
    return RunDir((tmp_path / "store" / "run1").as_uri())


class FakeVast:
    """A tiny HTTP server on 127.0.0.1 that records DELETE requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_DELETE(self) -> None:
                outer.requests.append(("DELETE", self.path, self.headers.get("Authorization")))
                body = b'{"success": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def fake_vast() -> Iterator[FakeVast]:
    """A fake Vast API that records the self-destroy call."""
    server = FakeVast()
    try:
        yield server
    finally:
        server.close()


class Tools:
    """The helpers above, handed to tests as the ``tools`` fixture (tests cannot import
    conftest under ``--import-mode=importlib``). Workers still running when the test ends are
    killed with their commands."""

    fast_settings = staticmethod(fast_settings)
    train_spec = staticmethod(train_spec)
    finish = staticmethod(finish)
    wait_for = staticmethod(wait_for)
    train_script = TRAIN

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start_worker(
        self, run_url: str, attempt: int = 1, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start a worker subprocess (see :func:`start_worker`)."""
        proc = start_worker(run_url, attempt, **kwargs)
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:  # a failed test: let the worker stop its command first
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.communicate(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.fixture
def tools() -> Iterator[Tools]:
    """Helpers to build jobs and run the worker as a subprocess."""
    helpers = Tools()
    try:
        yield helpers
    finally:
        helpers.cleanup()

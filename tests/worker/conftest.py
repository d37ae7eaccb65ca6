"""Helpers for the worker tests: job specs, a worker subprocess, a fake Vast API server."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._support.processes import HANG_S, ProcessGroups, child_env, kill_group
from tests._support.waiting import wait_until
from vastkit.rundir import AttemptSettings, JobSpec, RunDir

TRAIN = Path(__file__).with_name("_train.py")


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
    processes: ProcessGroups,
    run_url: str,
    attempt: int = 1,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m vastkit.worker`` as a subprocess in its own session (like on a host), killed
    with its process group when ``processes`` closes."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VASTKIT_")}
    full_env.update(env or {})
    return processes.popen(
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
        env=child_env(full_env),
        cwd=cwd,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = HANG_S) -> tuple[int, str, str]:
    """Wait for a worker subprocess; return (exit status, stdout, stderr). ``timeout`` is a
    hang guard: a worker that has not ended by then is killed and fails the test."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a grandchild holds the pipes: no output to show
            kill_group(proc)
            out = err = b""
        raise AssertionError(
            f"worker did not finish within {timeout:g} s:\n{out.decode()}\n{err.decode()}"
        ) from None
    return proc.returncode, out.decode(), err.decode()


def wait_for(predicate: Callable[[], bool], timeout: float = HANG_S) -> None:
    """Poll a subprocess-driven condition (real time: a subprocess has no virtual clock);
    ``timeout`` is a hang guard."""
    wait_until(predicate, "condition reached", timeout=timeout)


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

    def __init__(self, processes: ProcessGroups) -> None:
        self.processes = processes

    def start_worker(
        self, run_url: str, attempt: int = 1, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start a worker subprocess (see :func:`start_worker`)."""
        return start_worker(self.processes, run_url, attempt, **kwargs)

    def cleanup(self) -> None:
        """Stop what still runs (a failed test): SIGTERM first, so a worker stops the command
        it started in a session of its own, then SIGKILL every worker's group."""
        running = [p for p in self.processes.started if p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        self.processes.close()


@pytest.fixture
def tools() -> Iterator[Tools]:
    """Helpers to build jobs and run the worker as a subprocess."""
    helpers = Tools(ProcessGroups())
    try:
        yield helpers
    finally:
        helpers.cleanup()

"""``python -m vastkit.emulator`` serves standalone and prints its URL and key."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest


@pytest.mark.slow
def test_standalone_server_prints_url_and_key() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vastkit.emulator",
            "--port",
            "0",
            "--offers",
            "50",
            "--runner",
            "scripted",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url_line = proc.stdout.readline()
        key_line = proc.stdout.readline()
        assert url_line.startswith("Vast emulator listening on http://127.0.0.1:")
        url = url_line.rsplit(" ", 1)[1].strip()
        key = key_line.split(": ", 1)[1].strip()
        headers = {"Authorization": f"Bearer {key}"}
        user = httpx.get(f"{url}/api/v0/users/current", headers=headers, timeout=10)
        assert user.status_code == 200
        assert httpx.get(f"{url}/api/v0/users/current", timeout=10).status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()

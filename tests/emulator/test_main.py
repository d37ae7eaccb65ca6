"""``python -m vastkit.emulator`` serves standalone and prints its URL and key."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests._support.processes import HANG_S, Lines, ProcessGroups


@pytest.mark.slow
def test_standalone_server_prints_url_and_key(processes: ProcessGroups) -> None:
    proc = processes.popen(
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
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, _err = Lines(proc.stdout), Lines(proc.stderr)  # read on threads: no wait can hang
    try:
        url_line = out.next() or ""
        key_line = out.next() or ""
        assert url_line.startswith("Vast emulator listening on http://127.0.0.1:")
        url = url_line.rsplit(" ", 1)[1].strip()
        key = key_line.split(": ", 1)[1].strip()
        headers = {"Authorization": f"Bearer {key}"}
        user = httpx.get(f"{url}/api/v0/users/current", headers=headers, timeout=HANG_S)
        assert user.status_code == 200
        assert httpx.get(f"{url}/api/v0/users/current", timeout=HANG_S).status_code == 401
    finally:
        proc.terminate()
        proc.wait(HANG_S)

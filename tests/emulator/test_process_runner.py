"""The process runner: onstart runs with bash, with a Vast container's environment only."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.emulator.conftest import CLI, CLI_HEADERS, FAST
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator, ProcessRunner

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Wait for a real process to do something (real time: no clock can advance a process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("the process did not get there in time")


@pytest.fixture
def runner(tmp_path: Path) -> ProcessRunner:
    return ProcessRunner(tmp_path / "emu", grace_s=5.0, extra_env={"STORE_URL": "memory://x"})


@pytest.fixture
def papi(runner: ProcessRunner, clock: ManualClock) -> Iterator[tuple[CLI, Emulator]]:
    with (
        Emulator(0, offers=50, clock=clock, timings=FAST, rate_limits=False, runner=runner) as emu,
        httpx.Client(base_url=emu.url, transport=emu.transport, headers=CLI_HEADERS) as http,
    ):
        yield CLI(http, clock, emu.api_key), emu


SCRIPT = """
env > env.txt
echo "hello from $CONTAINER_ID"
echo "to stderr" >&2
trap 'echo got-term > term.txt; exit 0' TERM
while true; do sleep 0.05; done
"""


def test_onstart_env_logs_sigterm_and_destroy(
    papi: tuple[CLI, Emulator],
    runner: ProcessRunner,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAST_API_KEY", "account-secret-must-not-leak")
    api, emu = papi
    # a host with direct ports: only those map ``-p`` options (VAST_TCP_PORT_8080 below)
    offer = api.search(direct_port_count={"gt": 0}, limit=1).json()["offers"][0]
    created = api.create(
        offer["id"],
        onstart=SCRIPT,
        env={"FOO": "bar baz", "-p 8080:8080": "1"},
        label="proc",
    ).json()
    instance_id = created["new_contract"]
    folder = runner.folder(instance_id)
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.tick()
    wait_for(lambda: (folder / "env.txt").exists() and "hello" in runner.logs(instance_id))
    time.sleep(0.05)
    env = dict(
        line.split("=", 1) for line in (folder / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["CONTAINER_ID"] == str(instance_id)
    assert env["VAST_CONTAINERLABEL"] == f"C.{instance_id}"
    assert env["CONTAINER_API_KEY"] == created["instance_api_key"]
    assert env["PUBLIC_IPADDR"] == "127.0.0.1"
    assert env["GPU_COUNT"] == str(api.instance(instance_id)["num_gpus"])
    assert env["FOO"] == "bar baz"
    assert env["HOME"] == str(folder)
    assert env["STORE_URL"] == "memory://x"
    assert str(Path(sys.executable).parent) in env["PATH"].split(os.pathsep)
    assert "VAST_TCP_PORT_8080" in env
    assert not any(k.startswith("-") for k in env)
    assert "VAST_API_KEY" not in env
    assert "account-secret-must-not-leak" not in (folder / "env.txt").read_text()
    # request_logs serves the process's stdout and stderr.
    url = api.request("PUT", f"/api/v0/instances/request_logs/{instance_id}/").json()["result_url"]
    clock.advance(FAST.log_ready_s)
    log = api.http.get(url).text
    assert f"hello from {instance_id}" in log
    assert "to stderr" in log
    # Stop: SIGTERM to the process group, the trap runs.
    api.set_state(instance_id, "stopped")
    assert runner.wait(instance_id, 10) == 0
    assert (folder / "term.txt").read_text().strip() == "got-term"
    # Destroy removes the folder.
    api.destroy(instance_id)
    assert not folder.exists()


def test_sigkill_after_the_grace_period(
    papi: tuple[CLI, Emulator], runner: ProcessRunner, clock: ManualClock
) -> None:
    api, emu = papi
    script = "trap '' TERM\necho ready\nwhile true; do sleep 0.05; done\n"
    instance_id = api.rent(onstart=script)
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.tick()
    wait_for(lambda: "ready" in runner.logs(instance_id))
    api.set_state(instance_id, "stopped")
    assert runner.wait(instance_id, 0.3) is None  # it ignores SIGTERM
    clock.advance(runner.grace_s)
    emu.tick()
    assert runner.wait(instance_id, 10) == -signal.SIGKILL


def test_outbid_sends_sigterm_and_restart_reruns_onstart(
    papi: tuple[CLI, Emulator], runner: ProcessRunner, clock: ManualClock
) -> None:
    api, emu = papi
    offer = api.search(type="bid", limit=1).json()["offers"][0]
    script = "echo start >> starts.txt\ntrap 'exit 0' TERM\nwhile true; do sleep 0.05; done\n"
    instance_id = api.rent(offer_id=offer["id"], price=offer["min_bid"] + 0.01, onstart=script)
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.tick()
    starts = runner.folder(instance_id) / "starts.txt"
    wait_for(starts.exists)
    competitor = emu.preempt(instance_id)
    assert runner.wait(instance_id, 10) == 0
    emu.remove_competitor(competitor)
    clock.advance(FAST.loading_s)
    emu.tick()
    wait_for(lambda: starts.read_text().count("start") == 2)


def test_args_runtype_exits(
    papi: tuple[CLI, Emulator], runner: ProcessRunner, clock: ManualClock
) -> None:
    api, emu = papi
    instance_id = api.rent(runtype="args", args=["bash", "-c", "echo done; exit 3"])
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.tick()
    assert runner.wait(instance_id, 10) == 3
    emu.tick()
    inst = api.instance(instance_id)
    assert inst["actual_status"] == "exited"
    assert "done" in runner.logs(instance_id)


def test_host_offline_freezes_the_process(
    papi: tuple[CLI, Emulator], runner: ProcessRunner, clock: ManualClock
) -> None:
    api, emu = papi
    instance_id = api.rent(onstart="while true; do date +%s%N >> beat.txt; sleep 0.02; done")
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.tick()
    beat = runner.folder(instance_id) / "beat.txt"
    wait_for(lambda: beat.exists() and beat.stat().st_size > 0)
    emu.set_host_status("offline", instance_id=instance_id)
    time.sleep(0.1)
    size = beat.stat().st_size
    time.sleep(0.2)
    assert beat.stat().st_size == size
    emu.set_host_status("online", instance_id=instance_id)
    wait_for(lambda: beat.stat().st_size > size)


def test_close_kills_processes_and_removes_its_own_root(clock: ManualClock) -> None:
    emu = Emulator(0, offers=20, clock=clock, timings=FAST, rate_limits=False, runner="process")
    assert isinstance(emu.runner, ProcessRunner)
    root = emu.runner.root
    with emu.client() as http:
        offer = emu.search({"limit": 1})[0]
        created = http.put(
            f"/api/v0/asks/{offer['id']}/", json={"image": "x", "onstart": "sleep 60"}
        ).json()
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.tick()
    pid = emu.runner.pid(created["new_contract"])
    assert pid is not None
    emu.close()
    assert not root.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_what_the_onstart_left_in_the_background_dies_with_the_container(
    papi: tuple[CLI, Emulator], runner: ProcessRunner, clock: ManualClock
) -> None:
    """The onstart's bash exits at once, leaving a background loop (as a rental's backstop
    does); destroying the instance must end that loop too (it outlived the container)."""
    api, emu = papi
    offer = api.search(limit=1).json()["offers"][0]
    script = "(while true; do sleep 0.05; done) &\necho $! > bg.pid\n"
    instance_id = api.create(offer["id"], onstart=script, label="bg").json()["new_contract"]
    folder = runner.folder(instance_id)
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.tick()
    wait_for(lambda: (folder / "bg.pid").exists() and (folder / "bg.pid").read_text().strip())
    pid = int((folder / "bg.pid").read_text())
    assert runner.wait(instance_id, 10) == 0  # the leader is gone, its child is not
    os.kill(pid, 0)
    api.destroy(instance_id)

    wait_for(lambda: _gone(pid))


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("how", ["kill", "destroy"])
def test_a_process_in_a_session_of_its_own_dies_with_the_container(
    papi: tuple[CLI, Emulator], runner: ProcessRunner, clock: ManualClock, how: str
) -> None:
    """The worker starts the command in a session of its own (so its signals reach the ranks),
    out of the onstart's process group. A real container's processes all die with it (one PID
    namespace): a SIGKILL of the container, or its destroy, must end that command too (it ran
    on, writing checkpoints, after the no-SIGTERM preemption of the fault tests)."""
    api, emu = papi
    offer = api.search(limit=1).json()["offers"][0]
    script = "setsid sh -c 'echo $$ > own.pid; while true; do sleep 0.05; done' &\nwait\n"
    instance_id = api.create(offer["id"], onstart=script, label="own").json()["new_contract"]
    folder = runner.folder(instance_id)
    clock.advance(FAST.provision_s + FAST.loading_s)
    emu.tick()
    wait_for(lambda: (folder / "own.pid").exists() and (folder / "own.pid").read_text().strip())
    pid = int((folder / "own.pid").read_text())
    assert os.getsid(pid) != os.getsid(runner.pid(instance_id) or 0)  # not in the group
    if how == "kill":
        runner.kill(instance_id)
    else:
        api.destroy(instance_id)

    wait_for(lambda: _gone(pid))


def _gone(pid: int) -> bool:
    """Whether ``pid`` ended (a zombie until its parent, init, reaps it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True

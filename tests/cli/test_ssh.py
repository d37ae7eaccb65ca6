"""``vastkit ssh``, ``exec``, ``copy`` and ``start`` against the emulator on loopback, and the
cross-check with the official ``vastai`` 1.9.1 CLI (``attach ssh``, ``show ssh-keys``,
``execute``, ``ssh-url``) run as a subprocess against the same emulator."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._support.processes import ProcessGroups
from vastkit.api import Client, CreateInstanceRequest
from vastkit.clock import ManualClock
from vastkit.emulator import Emulator, ProcessRunner, Timings
from vastkit.ledger import Ledger

from .conftest import Result

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MDEyMzQ1Njc4 me@laptop"
VASTAI = Path(sys.executable).parent / "vastai"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_760_000_000.0)


@pytest.fixture
def emu(tmp_path: Path, clock: ManualClock) -> Iterator[Emulator]:
    """The CLI fixture's emulator, here on a manual clock with a process runner (overrides
    the conftest's real-time one)."""
    runner = ProcessRunner(tmp_path / "emu", grace_s=0)
    timings = Timings(provision_s=1, loading_s=1, log_ready_s=0)
    with Emulator(
        0, offers=80, clock=clock, timings=timings, rate_limits=False, runner=runner
    ) as emulator:
        emulator.serve()
        yield emulator


def _rent(emu: Emulator, clock: ManualClock, *, direct: bool, runtype: str = "ssh") -> int:
    with Client(emu.api_key, base_url=emu.url, clock=clock) as vast:
        op = "gt" if direct else "eq"
        offer = vast.search_offers({"direct_port_count": {op: 0}, "rentable": {"eq": True}})[0]
        created = vast.create_instance(
            offer.id, CreateInstanceRequest(image="pytorch/pytorch", runtype=runtype)
        )
    clock.advance(5)
    emu.tick()
    return created.id


def test_ssh_print_proxy_and_direct(
    emu: Emulator, clock: ManualClock, cli: Callable[..., Result]
) -> None:
    proxied = _rent(emu, clock, direct=False, runtype="ssh_direc ssh_proxy")
    shown = emu.instance_json(proxied)
    assert shown["ports"] == {}  # the host has no direct ports: proxy SSH only
    done = cli("ssh", str(proxied), "--print")
    assert done.code == 0, done.err
    assert done.out == f"ssh -p {shown['ssh_port']} root@{shown['ssh_host']}\n"
    direct = _rent(emu, clock, direct=True, runtype="ssh_direc ssh_proxy")
    port = emu.instance_json(direct)["ports"]["22/tcp"][0]["HostPort"]
    done = cli("ssh", str(direct), "--print", "-i", "~/.ssh/k", "--", "nvidia-smi", "-L")
    assert done.out == f"ssh -p {port} -i '~/.ssh/k' root@127.0.0.1 nvidia-smi -L\n"
    as_json = cli("--json", "ssh", str(direct)).json()
    assert as_json["url"] == f"ssh://root@127.0.0.1:{port}"
    assert as_json["direct"] is True


def test_ssh_resolves_a_run_to_its_live_instance(
    emu: Emulator, clock: ManualClock, cli: Callable[..., Result], ledger_path: Path
) -> None:
    instance_id = _rent(emu, clock, direct=False)
    with Ledger(ledger_path) as ledger:
        ledger.record_run("r-ssh", project="p", team="t", profile="dev-test")
        ledger.record_attempt("r-ssh", 1, instance_id=instance_id, offer_id=1)
        ledger.record_run("r-done", project="p", team="t", profile="dev-test")
    done = cli("ssh", "r-ssh", "--print")
    assert done.code == 0, done.err
    assert done.out.startswith("ssh -p ")
    assert done.out == cli("ssh", str(instance_id), "--print").out
    none = cli("ssh", "r-done", "--print")
    assert none.code == 1
    assert "run r-done has no live instance" in none.err


def test_unknown_targets_are_errors_with_exit_codes(
    emu: Emulator, cli: Callable[..., Result]
) -> None:
    missing = cli("ssh", "424242", "--print")
    assert missing.code == 9  # no such instance: the exit code of every unknown id
    assert "no instance 424242 on this account" in missing.err
    word = cli("ssh", "no-such-run", "--print")
    assert word.code == 2
    assert "'no-such-run' is neither a run in the ledger nor an instance id" in word.err
    assert cli("start", "424242").code == 9  # 404 no_such_instance, like `stop`
    assert cli("exec", "424242", "--", "ls").code == 9
    assert cli("exec", "0", "--", "ls").code == 2


def test_exec_prints_the_commands_output(
    emu: Emulator, clock: ManualClock, cli: Callable[..., Result]
) -> None:
    instance_id = _rent(emu, clock, direct=False)
    assert isinstance(emu.runner, ProcessRunner)
    (emu.runner.folder(instance_id) / "ckpt").mkdir(parents=True)
    (emu.runner.folder(instance_id) / "ckpt" / "step-10.pt").write_text("w")
    done = cli("exec", str(instance_id), "--", "ls", "/workspace/ckpt")
    assert done.code == 0, done.err
    assert done.out == "step-10.pt\n"
    refused = cli("exec", str(instance_id), "--", "cat", "x")
    assert refused.code == 2
    assert "execute runs only ls, rm, du" in refused.err


def test_copy_builds_rsync_and_scp_commands(
    emu: Emulator, clock: ManualClock, cli: Callable[..., Result]
) -> None:
    instance_id = _rent(emu, clock, direct=False)
    shown = emu.instance_json(instance_id)
    host, port = shown["ssh_host"], shown["ssh_port"]
    up = cli("copy", "./data", f"{instance_id}:/workspace/data", "--print", "--tool", "rsync")
    assert up.code == 0, up.err
    assert shlex.split(up.out) == [
        "rsync",
        "-az",
        "--partial",
        "-e",
        f"ssh -p {port}",
        "./data",
        f"root@{host}:/workspace/data",
    ]
    down = cli("copy", f"{instance_id}:/workspace/out.txt", ".", "--print", "--tool", "scp")
    assert shlex.split(down.out) == [
        "scp",
        "-r",
        "-P",
        str(port),
        f"root@{host}:/workspace/out.txt",
        ".",
    ]
    both = cli("copy", "a", "b", "--print")
    assert both.code == 2
    assert "give exactly one remote side" in both.err


def test_start_a_stopped_instance(
    emu: Emulator, clock: ManualClock, cli: Callable[..., Result]
) -> None:
    instance_id = _rent(emu, clock, direct=False)
    assert cli("stop", str(instance_id)).code == 0
    assert emu.instance(instance_id).intended_status == "stopped"
    done = cli("start", str(instance_id))
    assert done.code == 0, done.err
    assert f"starting instance {instance_id}" in done.out
    assert emu.instance(instance_id).intended_status == "running"


# ------------------------------------------------------------------ the official CLI


def _vastai(
    processes: ProcessGroups, emu: Emulator, home: Path, *args: str
) -> tuple[int, str, str]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "VASTAI_NO_UPDATE_CHECK": "1"}
    done = processes.run(
        [str(VASTAI), *args, "--url", emu.url, "--api-key", emu.api_key],
        env=env,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("direct", [False, True], ids=["proxy", "direct"])
def test_official_cli_attach_show_ssh_url_agree_with_vastkit(
    *,
    emu: Emulator,
    clock: ManualClock,
    cli: Callable[..., Result],
    processes: ProcessGroups,
    tmp_path: Path,
    direct: bool,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    instance_id = _rent(emu, clock, direct=direct, runtype="ssh_direc ssh_proxy")
    code, out, err = _vastai(processes, emu, home, "attach", "ssh", str(instance_id), ED)
    assert code == 0, err
    assert "'success': True" in out
    assert emu.instance(instance_id).ssh_keys == (ED,)
    code, out, err = _vastai(processes, emu, home, "create", "ssh-key", ED)
    assert code == 0, err
    code, out, err = _vastai(processes, emu, home, "show", "ssh-keys")
    assert code == 0, err
    assert ED in out
    code, out, err = _vastai(processes, emu, home, "ssh-url", str(instance_id))
    assert code == 0, err
    official = out.strip()
    ours = cli("--json", "ssh", str(instance_id)).json()["url"]
    assert ours == official
    assert official.endswith(":" + str(emu.instance_json(instance_id)["ssh_port"])) != direct


def test_official_execute_and_vastkit_exec_see_the_same_output(
    emu: Emulator,
    clock: ManualClock,
    cli: Callable[..., Result],
    processes: ProcessGroups,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    instance_id = _rent(emu, clock, direct=False)
    assert isinstance(emu.runner, ProcessRunner)
    (emu.runner.folder(instance_id) / "a.txt").write_text("x")
    (emu.runner.folder(instance_id) / "b.txt").write_text("y")
    # vastai 1.9.1's `execute` command fetches the output, then crashes reading it as a dict
    # (api.execute returns the text; the command calls .get on it) with any server: the
    # request and the fetch are what it can check. Its SDK returns the text.
    code, _, err = _vastai(processes, emu, home, "execute", str(instance_id), "ls")
    assert code == 1
    assert ("PUT", "command", 200) in emu.requests
    assert ("GET", "result", 200) in emu.requests
    assert "AttributeError: 'str' object has no attribute 'get'" in err
    script = (
        "import sys; from vastai import VastAI; "
        "print(VastAI(api_key=sys.argv[2], server_url=sys.argv[1]).execute(int(sys.argv[3]), 'ls'),"
        " end='')"
    )
    done = processes.run(
        [sys.executable, "-c", script, emu.url, emu.api_key, str(instance_id)],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "VASTAI_NO_UPDATE_CHECK": "1"},
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["a.txt", "b.txt"]
    ours = cli("exec", str(instance_id), "--", "ls")
    assert ours.out.split() == done.stdout.split()

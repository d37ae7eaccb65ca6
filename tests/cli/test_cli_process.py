"""``vastkit`` as a separate process (``python -m vastkit.cli``, ``python -m vastkit``, the
installed script), the ``launch`` command, and ``emulator serve``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests._support.processes import HANG_S, Lines, ProcessGroups
from tests._support.waiting import wait_until
from vastkit.emulator import Emulator
from vastkit.ledger import Ledger

from .conftest import Result

Cli = Callable[..., Result]


def _env(emu: Emulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "VASTKIT_"))}
    env["VAST_API_KEY"] = emu.api_key
    env.update(extra)
    return env


def _run(
    processes: ProcessGroups, args: list[str], env: dict[str, str], timeout: float = HANG_S
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in its own process group (killed whole when it returns); ``timeout`` is a
    hang guard."""
    return processes.run(args, env=env, text=True, timeout=timeout)


def test_python_m_vastkit_cli_json_and_exit_codes(
    emu: Emulator, tmp_path: Path, processes: ProcessGroups
) -> None:
    env = _env(emu, VAST_URL=emu.url, VASTKIT_LEDGER=str(tmp_path / "ledger.db"))
    ok = _run(
        processes,
        [sys.executable, "-m", "vastkit.cli", "offers", "gpu_name=RTX_3090", "--json"],
        env,
    )
    assert ok.returncode == 0, ok.stderr
    offers = json.loads(ok.stdout)["offers"]
    assert offers
    assert {o["gpu_name"] for o in offers} == {"RTX 3090"}
    bad = _run(
        processes,
        [sys.executable, "-m", "vastkit", "ps"],
        {**env, "VAST_API_KEY": "definitely-wrong"},
    )
    assert bad.returncode == 3
    assert bad.stdout == ""
    assert bad.stderr.startswith("vastkit: error: the API refused the key in $VAST_API_KEY")
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "definitely-wrong" not in bad.stderr


def test_installed_script(emu: Emulator, tmp_path: Path, processes: ProcessGroups) -> None:
    script = Path(sys.executable).parent / "vastkit"
    if not script.exists():
        found = shutil.which("vastkit")
        if found is None:
            pytest.skip("the vastkit console script is not installed")
        script = Path(found)
    env = _env(emu)
    result = _run(
        processes,
        [str(script), "--url", emu.url, "--ledger", str(tmp_path / "l.db"), "ps", "--json"],
        env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"instances": []}
    bad = tmp_path / "profiles.yaml"
    bad.write_text("profiles:\n  x:\n    gpu_name: RTX_4090\n    max_dph: cheap\n")
    result = _run(processes, [str(script), "profiles", "validate", str(bad)], env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"vastkit: error: {bad}:4")


# -- launch -------------------------------------------------------------------------------


def _too_cheap(tmp_path: Path) -> Path:
    """A profiles file whose ``too-cheap`` profile no offer of the seed-0 market satisfies."""
    path = tmp_path / "gpu_profiles.yaml"
    path.write_text("profiles:\n  too-cheap:\n    gpu_name: RTX_4090\n    max_dph: 0.05\n")
    return path


def _job(tmp_path: Path, **overrides: object) -> Path:
    body = {
        "name": "cli-test",
        "command": "echo hello",
        "profile": "training-standard",
        "store_url": str(tmp_path / "store"),
        **overrides,
    }
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(body), encoding="utf-8")  # JSON is YAML
    return path


def test_launch_refuses_a_job_the_budget_cannot_cover(
    cli: Cli, tmp_path: Path, emu: Emulator, ledger_path: Path
) -> None:
    job = _job(tmp_path, max_cost_usd=0.01)
    result = cli("launch", str(job))
    assert result.code == 5
    assert "budget" in result.err.splitlines()[-1].lower()
    assert result.err.splitlines()[-1].startswith("vastkit: error: ")
    assert emu.instances == []


def test_launch_with_no_qualifying_offer_exits_4(cli: Cli, tmp_path: Path, emu: Emulator) -> None:
    job = _job(tmp_path, profile="too-cheap")
    result = cli("launch", str(job), "--json", "--profiles", str(_too_cheap(tmp_path)))
    assert result.code == 4
    assert "on demand; cheapest is" in result.err.splitlines()[-1]  # says what would rent
    assert emu.instances == []


def test_launch_bad_job_file_exits_2(cli: Cli, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: x\ncomand: echo\nprofile: dev-test\nstore_url: /tmp/x\n")
    result = cli("launch", str(job))
    assert result.code == 2
    line = result.err.strip()
    assert line.startswith(f"vastkit: error: {job}:2")
    assert "command" in line


def test_launch_detach_returns_at_once_and_the_orchestrator_runs_on(
    emu: Emulator, tmp_path: Path, processes: ProcessGroups
) -> None:
    ledger = tmp_path / "state" / "ledger.db"
    job = _job(tmp_path, profile="too-cheap")  # no offer qualifies: the orchestrator exits 4
    env = _env(emu)
    result = _run(
        processes,
        [
            sys.executable,
            "-m",
            "vastkit.cli",
            "--url",
            emu.url,
            "--ledger",
            str(ledger),
            "launch",
            str(job),
            "--profiles",
            str(_too_cheap(tmp_path)),
            "--detach",
            "--json",
        ],
        env,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["name"] == "cli-test"
    log = Path(doc["log"])
    assert log.parent == ledger.parent / "orchestrators"
    try:
        wait_until(
            lambda: "vastkit: error:" in (log.read_text() if log.exists() else ""),
            "the detached orchestrator logged its error",
            poll=0.2,
        )
    finally:
        # It left the CLI's process group (a session of its own): end it should it still run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(doc["pid"], signal.SIGKILL)
    text = log.read_text()
    assert "vastkit: error: no RTX 4090 at <= $0.05/h on demand; cheapest is" in text
    with Ledger(ledger) as led:
        run = led.get_run(doc["run_id"])
    assert run is not None
    assert run.status == "failed"


# -- emulator serve -------------------------------------------------------------------------


def test_emulator_serve_then_use_it(tmp_path: Path, processes: ProcessGroups) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "VASTKIT_"))}
    proc = processes.popen(
        [
            sys.executable,
            "-m",
            "vastkit.cli",
            "emulator",
            "serve",
            "--port",
            "0",
            "--runner",
            "scripted",
            "--offers",
            "100",
            "--no-rate-limits",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        first = out.next() or ""
        second = out.next() or ""
        assert first.startswith("Vast emulator listening on http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1].strip()
        key = second.split(": ", 1)[1].strip()
        result = _run(
            processes,
            [
                sys.executable,
                "-m",
                "vastkit.cli",
                "--url",
                url,
                "--ledger",
                str(tmp_path / "l.db"),
                "offers",
                "--limit",
                "3",
                "--json",
            ],
            {**env, "VAST_API_KEY": key},
        )
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["offers"]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=HANG_S)
    assert proc.returncode == 0, err.seen


# -- a real job, end to end ---------------------------------------------------------------

FAST_TIMEOUTS = {
    "poll_interval": 1.0,
    "provisioning": 60,
    "loading": 60,
    "running": 120,
    "worker_ready": 90,
    "heartbeat_stale": 60,
    "host_lost_grace": 10,
    "stop_grace": 15,
    "heartbeat_interval": 1.0,
    "worker_grace": 10,
    "orchestrator_timeout": 120,
    "log_flush_seconds": 0.5,
    "relaunch_delay": 1.0,
    "destroy": 60,
}


def test_launch_runs_a_job_and_logs_reads_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vastkit.cli import main
    from vastkit.emulator import Emulator, ProcessRunner, Timings

    with Emulator(
        0,
        offers=300,
        runner=ProcessRunner(tmp_path / "containers", grace_s=10.0),
        timings=Timings(provision_s=1.0, loading_s=1.0),
        rate_limits=False,
    ) as emu:
        emu.serve()
        monkeypatch.setenv("VAST_API_KEY", emu.api_key)
        job = _job(
            tmp_path,
            command=[sys.executable, "-c", "print('hello from the GPU worker')"],
            project="cli",
            timeouts=FAST_TIMEOUTS,
        )
        base = ["--url", emu.url, "--ledger", str(tmp_path / "ledger.db")]
        code = main([*base, "launch", str(job), "--json"])
        out, err = capsys.readouterr()
        assert code == 0, out + err
        events = [line.split(" ", 2)[1] for line in err.splitlines()]
        for kind in ("started:", "offer_chosen:", "created:", "running:", "finished:"):
            assert kind in events, err
        result = json.loads(out)
        assert result["status"] == "succeeded"
        assert result["exit_code"] == 0
        assert len(result["attempts"]) == 1
        assert result["total_cost_usd"] > 0
        assert emu.instances == []
        run_id = result["run_id"]

        assert main([*base, "logs", run_id]) == 0
        assert "hello from the GPU worker" in capsys.readouterr().out
        assert main([*base, "cost-report", "--by", "job", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert [row["job"] for row in report["rows"]] == [run_id]
        assert report["total_usd"] == pytest.approx(result["total_cost_usd"], rel=0.05)


@pytest.mark.slow
def test_vastkit_demo(tmp_path: Path, processes: ProcessGroups) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "VASTKIT_"))}
    result = _run(processes, [sys.executable, "-m", "vastkit.cli", "demo"], env, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo OK: succeeded, 1 preemption(s)" in result.stdout

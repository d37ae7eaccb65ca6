"""The ``vastkit`` command, through its real entry point, against the emulator on loopback."""

from __future__ import annotations

import argparse
import csv
import io
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest
from vastkit.cli import EXIT_CODES, ExitCode, build_parser, main
from vastkit.emulator import Emulator, ScriptedRunner
from vastkit.ledger import Ledger
from vastkit.rundir import AttemptResult, ResultStatus, RunDir

from .conftest import Result

Cli = Callable[..., Result]


def _rent(client: Client, label: str) -> int:
    offer = client.search_offers("gpu_name=RTX_4090", order="dph+", limit=5)[0]
    return client.create_instance(offer.id, CreateInstanceRequest(image="img", label=label)).id


def _one_error_line(result: Result) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("vastkit: error: ")
    assert "Traceback" not in result.err
    return lines[0]


# -- help and usage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["offers"],
        ["launch"],
        ["ps"],
        ["logs"],
        ["stop"],
        ["destroy"],
        ["reap"],
        ["cost-report"],
        ["profiles"],
        ["profiles", "list"],
        ["profiles", "validate"],
        ["budgets"],
        ["budgets", "validate"],
        ["emulator"],
        ["emulator", "serve"],
        ["doctor"],
        ["demo"],
    ],
)
def test_help_on_every_level(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The global options and the exit codes are in ``vastkit --help`` only; a subcommand's
    help shows its own options and one line pointing there."""
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vastkit")
    top = not argv
    assert ("exit codes:" in out) is top
    assert ("--api-key-file" in out) is top
    assert ("--retries" in out) is top
    if top:
        for code in EXIT_CODES:
            assert f"\n  {code:>3}  " in out
    else:
        assert out.rstrip().endswith("`vastkit --help` lists them and the exit codes.")


def test_stop_help_is_short_and_global_options_still_work_after_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["stop", "--help"]) == 0
    out = capsys.readouterr().out
    assert out == (
        "usage: vastkit stop [-h] ID\n\n"
        "stop an instance (GPU billing stops; storage keeps billing)\n\n"
        "positional arguments:\n"
        "  ID          the instance id\n\n"
        "options:\n"
        "  -h, --help  show this help message and exit\n\n"
        "global options (--json, --url, --ledger, --log-level, --debug...) work here too;\n"
        "`vastkit --help` lists them and the exit codes.\n"
    )
    args = build_parser().parse_args(["stop", "7", "--json", "--retries", "0"])
    assert (args.json, args.retries, args.id) == (True, 0, "7")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` (or of a command group), in the order --help lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_runs_a_handler_and_help_lists_them_in_working_order() -> None:
    parser = build_parser()
    top = _commands(parser)
    assert list(top) == [
        "offers",
        "launch",
        "ps",
        "logs",
        "ssh",
        "exec",
        "copy",
        "start",
        "stop",
        "destroy",
        "reap",
        "runs",
        "status",  # an alias of runs
        "cancel",
        "queue",
        "cost-report",
        "profiles",
        "budgets",
        "emulator",
        "doctor",
        "demo",
    ]
    leaves = []
    for name, sub in top.items():
        actions = _commands(sub)
        leaves += [(f"{name} {a}", p) for a, p in actions.items()] if actions else [(name, sub)]
    for name, leaf in leaves:
        assert callable(leaf.get_default("handler")), name
    assert top["status"] is top["runs"]
    assert [name for name, _ in leaves if " " in name] == [
        "queue status",
        "profiles list",
        "profiles validate",
        "budgets validate",
        "emulator serve",
    ]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "required: COMMAND" in _one_error_line(Result(2, "", capsys.readouterr().err))
    assert main(["profiles"]) == 2
    capsys.readouterr()
    assert main(["offers", "--limit", "many"]) == 2
    err = capsys.readouterr().err
    assert "invalid int value: 'many'" in err
    assert main(["cost-report", "--by", "planet"]) == 2
    assert "invalid choice: 'planet'" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from vastkit import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vastkit {__version__}"


# -- offers -----------------------------------------------------------------------------------


def test_offers_for_a_profile_are_ranked_and_within_the_cap(cli: Cli) -> None:
    result = cli("offers", "--profile", "training-standard", "--limit", "5", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["profile"] == "training-standard"
    assert doc["considered"] >= doc["qualifying"] >= 1
    offers = doc["offers"]
    assert 1 <= len(offers) <= 5
    assert [o["rank"] for o in offers] == list(range(1, len(offers) + 1))
    prices = [o["effective_dph"] for o in offers]
    assert prices == sorted(prices)
    for offer in offers:
        assert offer["gpu_name"] in ("RTX 4090", "RTX 5090", "A100 PCIE", "A100 SXM4")
        assert offer["effective_dph"] <= 1.0
        assert offer["reliability"] >= 0.97
        assert offer["effective_dph"] == pytest.approx(
            offer["gpu_dph"] + offer["storage_dph"], abs=1e-5
        )
        assert offer["perf_per_dollar"] == pytest.approx(
            (offer["dlperf"] or 0) / offer["effective_dph"], rel=1e-3
        )


def test_offers_table_is_plain_text_when_piped(cli: Cli) -> None:
    result = cli("offers", "--profile", "training-standard", "--limit", "3")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("Profile 'training-standard' (on-demand, max $1/h")
    assert lines[1].split() == [
        "#",
        "offer",
        "machine",
        "gpus",
        "$/h",
        "eff",
        "bid",
        "perf/$",
        "reliab",
        "location",
    ]
    assert len(lines) == 5
    assert "1x " in lines[2]
    assert not any(ch in result.out for ch in "┃━│")


TOO_CHEAP = "profiles:\n  too-cheap:\n    gpu_name: RTX_4090\n    max_dph: 0.05\n"
"""A profile that no offer of the seed-0 market satisfies (its cheapest RTX 4090 is ~$0.26/h)."""


def test_offers_explain_counts_rejections_and_exits_4_when_none_qualify(
    cli: Cli, tmp_path: Path
) -> None:
    profiles = tmp_path / "gpu_profiles.yaml"
    profiles.write_text(TOO_CHEAP)
    result = cli(
        "offers", "--profiles", str(profiles), "--profile", "too-cheap", "--explain", "--json"
    )
    assert result.code == 4
    doc = result.json()
    assert doc["qualifying"] == 0
    assert doc["offers"] == []
    assert doc["considered"] == len(doc["rejections"]) > 0
    counts = doc["rejected_by_reason"]
    assert counts["price"] == sum(1 for r in doc["rejections"] if "price" in r["reasons"]) > 0
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    line = _one_error_line(result)
    assert f"profile 'too-cheap': 0 of {doc['considered']} offers qualify" in line
    assert f"too expensive ({counts['price']})" in line


def test_offers_explain_text_lists_reasons(cli: Cli, tmp_path: Path) -> None:
    result = cli("offers", "--profile", "training-standard", "--explain", "--limit", "2")
    assert result.code == 0, result.err
    out = result.out
    assert "Profile 'training-standard'" in out
    assert "Rejected offers per reason" in out
    assert "reliability" in out
    assert "first 10 of " in out
    assert "offer " in out
    profiles = tmp_path / "gpu_profiles.yaml"
    profiles.write_text(TOO_CHEAP)
    no_explain = cli("offers", "--profiles", str(profiles), "--profile", "too-cheap")
    assert no_explain.code == 4
    assert "set `max_dph: 0.26`" in _one_error_line(no_explain)  # the change that would rent


def test_offers_by_query(cli: Cli) -> None:
    result = cli("offers", "gpu_name=RTX_4090", "num_gpus=1", "--limit", "4", "--json")
    assert result.code == 0, result.err
    offers = result.json()["offers"]
    assert 1 <= len(offers) <= 4
    assert {o["gpu_name"] for o in offers} == {"RTX 4090"}
    prices = [o["effective_dph"] for o in offers]
    assert prices == sorted(prices)


def test_offers_bad_query_and_conflicting_options_exit_2(cli: Cli) -> None:
    result = cli("offers", "gpu_name", "--json")
    assert result.code == 2
    assert "bad query" in _one_error_line(result)
    result = cli("offers", "--profile", "dev-test", "gpu_name=RTX_4090")
    assert result.code == 2
    assert "not both" in _one_error_line(result)
    result = cli("offers", "--explain")
    assert result.code == 2
    assert "--explain needs --profile" in _one_error_line(result)


def test_unknown_profile_lists_the_known_ones(cli: Cli) -> None:
    result = cli("offers", "--profile", "dev-tset")
    assert result.code == 2
    line = _one_error_line(result)
    assert "unknown profile 'dev-tset'" in line
    for name in ("dev-test", "training-standard", "training-distributed", "inference-batch"):
        assert name in line


# -- errors: key, reachability, debug --------------------------------------------------------


def test_bad_key_exits_3(cli: Cli, monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    monkeypatch.setenv("VAST_API_KEY", "not-the-key")
    result = cli("ps")
    assert result.code == 3
    line = _one_error_line(result)
    assert "the API refused the key in $VAST_API_KEY" in line
    assert "not-the-key" not in result.err


def test_missing_key_exits_2(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VAST_API_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    result = cli("ps")
    assert result.code == 2
    assert "no Vast API key" in _one_error_line(result)


def test_key_from_file_and_from_named_env(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emu: Emulator
) -> None:
    monkeypatch.delenv("VAST_API_KEY")
    key_file = tmp_path / "key"
    key_file.write_text(emu.api_key + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    result = cli("--api-key-file", str(key_file), "ps", "--json")
    assert result.code == 0, result.err
    assert result.json() == {"instances": []}
    assert result.err == ""
    key_file.chmod(0o644)
    result = cli("ps", "--api-key-file", str(key_file), "--json")
    assert result.code == 0
    assert "readable by other users" in result.err
    monkeypatch.setenv("MY_VAST_KEY", emu.api_key)
    assert cli("--api-key-env", "MY_VAST_KEY", "ps").code == 0
    result = cli("--api-key-env", "NOT_SET_ANYWHERE", "ps")
    assert result.code == 2
    assert "NOT_SET_ANYWHERE" in _one_error_line(result)
    result = cli("--api-key-file", str(tmp_path / "missing"), "ps")
    assert result.code == 2
    assert "missing" in _one_error_line(result)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_api_exits_6(cli: Cli) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = cli("--url", url, "--retries", "0", "ps", url=False)
    assert result.code == 6
    assert f"cannot reach the API at {url}" in _one_error_line(result)


def test_debug_prints_the_traceback(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_API_KEY", "wrong")
    result = cli("--debug", "ps")
    assert result.code == 3
    assert "Traceback (most recent call last)" in result.err
    assert "AuthenticationError" in result.err
    assert result.err.strip().splitlines()[-1].startswith("vastkit: error: ")


# -- instances -------------------------------------------------------------------------------


def test_ps_lists_ours_and_others(cli: Cli, client: Client) -> None:
    ours = _rent(client, "vastkit/run-a/1")
    other = _rent(client, "someone-elses")
    result = cli("ps", "--json")
    assert result.code == 0, result.err
    rows = {r["id"]: r for r in result.json()["instances"]}
    assert set(rows) == {ours, other}
    assert rows[ours]["ours"] is True
    assert rows[ours]["run_id"] == "run-a"
    assert rows[ours]["attempt"] == 1
    assert rows[other]["ours"] is False
    assert rows[ours]["gpu"] == "1x RTX 4090"
    assert rows[ours]["dph_total"] > 0
    assert rows[ours]["state"] in ("provisioning", "loading", "running")
    before = cli("--json", "ps").json()["instances"]  # global options go before or after
    assert [r["id"] for r in before] == [ours, other]
    only = cli("ps", "--ours", "--json").json()["instances"]
    assert [r["id"] for r in only] == [ours]
    table = cli("ps")
    assert table.code == 0
    assert "someone-elses (not vastkit)" in table.out
    assert "vastkit/run-a/1" in table.out


def test_stop_and_destroy_never_prompt(cli: Cli, client: Client, emu: Emulator) -> None:
    first = _rent(client, "a")
    second = _rent(client, "b")
    result = cli("stop", str(first))
    assert result.code == 0, result.err
    assert emu.instance(first).intended_status == "stopped"
    result = cli("destroy", str(second), "--json")
    assert result.code == 0, result.err
    assert result.json() == {"id": second, "destroyed": True}
    assert [v.id for v in emu.instances] == [first]
    again = cli("destroy", str(second))  # one rule for ids the account does not have
    assert again.code == ExitCode.NOT_FOUND == 9
    assert again.out == ""
    assert _one_error_line(again) == (
        f"vastkit: error: no instance {second} on this account (unknown id, or already "
        "destroyed; `vastkit ps` lists the instances)"
    )
    bad = cli("destroy", "abc")
    assert bad.code == 2
    assert "whole number" in _one_error_line(bad)


def test_reap_destroys_only_orphans_with_our_label(
    cli: Cli, client: Client, emu: Emulator, ledger_path: Path
) -> None:
    with Ledger(ledger_path) as ledger:
        ours = ledger.ledger_id
    orphan = _rent(client, f"vastkit/{ours}/lost-run/1")
    foreign = _rent(client, "not-ours")
    dry = cli("reap", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    doc = dry.json()
    assert doc["dry_run"] is True
    assert doc["ours"] == 1
    assert [(a["action"], a["instance_id"]) for a in doc["actions"]] == [("would_destroy", orphan)]
    assert {v.id for v in emu.instances} == {orphan, foreign}
    real = cli("reap")
    assert real.code == 0, real.err
    assert "destroyed 1" in real.out
    assert f"destroyed: instance {orphan}" in real.out
    assert {v.id for v in emu.instances} == {foreign}


def test_reap_leaves_other_ledgers_alone_unless_told(
    cli: Cli, client: Client, emu: Emulator
) -> None:
    theirs = _rent(client, "vastkit/0badf00d/their-run/1")
    report = cli("reap", "--json")
    assert report.code == 0, report.err
    assert report.json()["foreign"] == 1
    assert {v.id for v in emu.instances} == {theirs}
    refused = cli("reap", "--foreign")  # nobody to ask: standard input is not a terminal
    assert refused.code != 0
    assert "--yes" in refused.err
    assert {v.id for v in emu.instances} == {theirs}
    done = cli("reap", "--foreign", "--yes")
    assert done.code == 0, done.err
    assert f"destroyed: instance {theirs}" in done.out
    assert emu.instances == []


# -- logs ------------------------------------------------------------------------------------


def _run_with_logs(tmp_path: Path, ledger_path: Path) -> tuple[str, str]:
    store = tmp_path / "store"
    run_url = str(store / "run-1")
    rundir = RunDir(run_url)
    rundir.write_log_chunk(1, 0, b"attempt one line 1\n")
    rundir.write_log_chunk(1, 1, b"attempt one line 2\n")
    rundir.write_attempt_result(
        AttemptResult(attempt=1, status=ResultStatus.PREEMPTED, exit_code=None, ended_at=1.0)
    )
    rundir.write_log_chunk(2, 0, b"resumed\nstep 10\nstep 20\n")
    rundir.write_attempt_result(
        AttemptResult(attempt=2, status=ResultStatus.SUCCEEDED, exit_code=0, ended_at=2.0)
    )
    with Ledger(ledger_path) as ledger:
        ledger.record_run("run-1", name="j", metadata={"run_url": run_url})
    return run_url, str(store)


def test_logs_of_a_run_from_its_store(cli: Cli, tmp_path: Path, ledger_path: Path) -> None:
    _, store = _run_with_logs(tmp_path, ledger_path)
    result = cli("logs", "run-1")
    assert result.code == 0, result.err
    assert result.out == (
        "=== attempt 1 ===\nattempt one line 1\nattempt one line 2\n"
        "=== attempt 2 ===\nresumed\nstep 10\nstep 20\n"
    )
    tail = cli("logs", "run-1", "--attempt", "2", "--tail", "1")
    assert tail.out == "step 20\n"
    followed = cli("logs", "run-1", "-f", "--interval", "0.01")
    assert followed.code == 0
    assert followed.out == "=== attempt 2 ===\nresumed\nstep 10\nstep 20\n"
    # Without the ledger, --store names the store.
    other = cli("--ledger", str(tmp_path / "empty.db"), "logs", "run-1", "--store", store)
    assert other.code == 0
    assert "step 20" in other.out


def test_logs_of_an_unknown_run_exits_2(cli: Cli) -> None:
    result = cli("logs", "no-such-run")
    assert result.code == 2
    assert "neither a run in the ledger" in _one_error_line(result)


def test_logs_of_an_instance_through_the_api(cli: Cli, client: Client, emu: Emulator) -> None:
    instance = _rent(client, "x")
    assert isinstance(emu.runner, ScriptedRunner)
    emu.runner.write_log(instance, "hello from the container\nsecond line\n")
    result = cli("logs", str(instance))
    assert result.code == 0, result.err
    assert result.out == "hello from the container\nsecond line\n"
    tail = cli("logs", str(instance), "--tail", "1")
    assert tail.out == "second line\n"
    gone = cli("logs", "999999")
    assert gone.code == ExitCode.NOT_FOUND
    assert "no instance 999999 on this account" in _one_error_line(gone)


# -- cost report, profiles, budgets ----------------------------------------------------------

NOW = 1767225600.0  # 2026-01-01T00:00:00Z


def _spend(ledger_path: Path) -> None:
    with Ledger(ledger_path) as ledger:
        ledger.record_run("v1", project="vision", team="ml", at=NOW)
        ledger.record_run("n1", project="nlp", team="research", at=NOW)
        a = ledger.record_attempt("v1", 1, gpu_name="RTX 4090", num_gpus=1, instance_id=101)
        b = ledger.record_attempt("n1", 1, gpu_name="H100 SXM", num_gpus=4, instance_id=102)
        ledger.add_cost_sample(a, state="running", rate_dph=0.9, at=NOW)
        ledger.add_cost_sample(a, state="destroyed", rate_dph=0, at=NOW + 4 * 3600)  # 3.60
        ledger.add_cost_sample(b, state="running", rate_dph=8.0, at=NOW + 86400)
        ledger.add_cost_sample(b, state="destroyed", rate_dph=0, at=NOW + 86400 + 900)  # 2.00


def test_cost_report_formats(cli: Cli, ledger_path: Path, tmp_path: Path) -> None:
    _spend(ledger_path)
    result = cli("cost-report", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["total_usd"] == pytest.approx(5.6)
    assert [(r["project"], r["cost_usd"]) for r in doc["rows"]] == [
        ("vision", pytest.approx(3.6)),
        ("nlp", pytest.approx(2.0)),
    ]
    rows = list(csv.DictReader(io.StringIO(cli("cost-report", "--by", "gpu", "--csv").out)))
    assert [(r["gpu"], float(r["cost_usd"])) for r in rows] == [
        ("1x RTX 4090", pytest.approx(3.6)),
        ("4x H100 SXM", pytest.approx(2.0)),
    ]
    day = cli("cost-report", "--by", "day", "--since", "2026-01-02", "--json").json()
    assert [(r["day"], r["cost_usd"]) for r in day["rows"]] == [("2026-01-02", pytest.approx(2.0))]
    until = cli("cost-report", "--by", "team", "--until", "2026-01-01", "--json").json()
    assert [r["team"] for r in until["rows"]] == ["ml"]
    text = cli("cost-report", "--by", "job")
    assert text.code == 0
    assert "Spend by job" in text.out
    assert "total" in text.out
    assert "5.60" in text.out


def test_cost_report_bad_date_and_plot(cli: Cli, ledger_path: Path, tmp_path: Path) -> None:
    _spend(ledger_path)
    bad = cli("cost-report", "--since", "last tuesday")
    assert bad.code == 2
    assert "cannot read 'last tuesday' as a date" in _one_error_line(bad)
    both = cli("cost-report", "--csv", "--json")
    assert both.code == 2
    pytest.importorskip("matplotlib")
    png = tmp_path / "spend.png"
    result = cli("cost-report", "--by", "day", "--plot", str(png), "--json")
    assert result.code == 0, result.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.json()["total_usd"] == pytest.approx(5.6)


def test_profiles_list_and_validate(cli: Cli, tmp_path: Path) -> None:
    builtin = cli("profiles", "list", "--json").json()
    assert list(builtin["profiles"]) == [
        "dev-test",
        "training-standard",
        "training-distributed",
        "inference-batch",
    ]
    good = tmp_path / "good.yaml"
    good.write_text(
        "profiles:\n  small:\n    gpu_name: RTX_3090\n    max_dph: 0.2\n", encoding="utf-8"
    )
    result = cli("profiles", "validate", str(good))
    assert result.code == 0
    assert result.out == f"{good}: OK, 1 profile(s): small\n"
    listed = cli("profiles", "list", str(good))
    assert "RTX 3090" in listed.out
    assert cli("profiles", "validate", str(good), "--json").json()["profiles"] == ["small"]


def test_malformed_profiles_file_names_file_and_line(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "profiles:\n  small:\n    gpu_name: RTX_3090\n    max_dhp: 0.2\n", encoding="utf-8"
    )
    result = cli("profiles", "validate", str(bad))
    assert result.code == 2
    line = _one_error_line(result)
    assert f"{bad}:4" in line
    assert "max_dhp" in line
    assert "max_dph" in line  # the suggestion
    broken = tmp_path / "broken.yaml"
    broken.write_text("profiles:\n  small: [unclosed\n", encoding="utf-8")
    result = cli("profiles", "validate", str(broken))
    assert result.code == 2
    assert str(broken) in _one_error_line(result)
    missing = cli("profiles", "validate", str(tmp_path / "nope.yaml"))
    assert missing.code == 2


def test_budgets_validate(cli: Cli, tmp_path: Path) -> None:
    good = tmp_path / "budgets.yaml"
    good.write_text(
        "teams:\n  ml: {limit_usd: 2000, period: monthly}\n"
        "projects:\n  vision: {limit_usd: 500, team: ml}\n"
        "job: {limit_usd: 50}\n",
        encoding="utf-8",
    )
    result = cli("budgets", "validate", str(good), "--json")
    assert result.code == 0, result.err
    budgets = {(b["scope"], b["name"]): b for b in result.json()["budgets"]}
    assert budgets[("team", "ml")]["limit_usd"] == 2000
    assert budgets[("project", "vision")]["team"] == "ml"
    assert budgets[("job", "*")]["limit_usd"] == 50
    bad = tmp_path / "bad.yaml"
    bad.write_text("teams:\n  ml: {limit_usd: -5}\n", encoding="utf-8")
    result = cli("budgets", "validate", str(bad))
    assert result.code == 2
    assert str(bad) in _one_error_line(result)


def test_ctrl_c_exits_130(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: Client, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "list_instances", interrupted)
    result = cli("ps")
    assert result.code == 130
    assert result.err == "vastkit: interrupted\n"


def test_an_unexpected_exception_is_one_line_without_debug(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Client, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(Client, "list_instances", broken)
    result = cli("ps")
    assert result.code == 1
    assert _one_error_line(result) == (
        "vastkit: error: internal error: RuntimeError: boom second line "
        "(run with --debug for the traceback)"
    )
    debug = cli("ps", "--debug")
    assert debug.code == 1
    assert "Traceback (most recent call last)" in debug.err


def test_cost_report_compared_with_vast_charges(cli: Cli, ledger_path: Path) -> None:
    _spend(ledger_path)
    result = cli(
        "cost-report", "--since", "2026-01-01", "--until", "2026-01-02", "--compare-vast", "--json"
    )
    assert result.code == 0, result.err
    rows = {r["project"]: r for r in result.json()["rows"]}
    # The emulator never rented instances 101 and 102, so Vast billed nothing for them.
    assert rows["vision"]["vast_usd"] == 0
    assert rows["vision"]["difference_usd"] == pytest.approx(-3.6)
    assert rows["nlp"]["difference_usd"] == pytest.approx(-2.0)

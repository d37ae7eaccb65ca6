"""vastkit.health_check() against the emulator (loopback HTTP) and moto S3."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from rich.console import Console

from vastkit.api import Client
from vastkit.api.models import CreateInstanceRequest
from vastkit.clock import ManualClock
from vastkit.config import Settings
from vastkit.emulator import Emulator, serve
from vastkit.errors import ConfigError
from vastkit.health import CheckStatus, HealthReport, check_store_writable, health_check
from vastkit.ledger import Ledger

PROFILES = """\
profiles:
  small:
    gpu_name: RTX_4090
    max_dph: 0.5
    max_duration_hours: 2
"""

BUDGETS = """\
projects:
  vision: {limit_usd: 100, period: monthly}
job:
  limit_usd: 10
"""


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with serve(seed=0, clock=ManualClock(), offers=50, rate_limits=False) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> Iterator[Client]:
    with Client(emu.api_key, base_url=emu.url, clock=ManualClock(), max_retries=0) as c:
        yield c


@pytest.fixture
def settings(tmp_path: Path, emu: Emulator, s3_bucket: tuple[str, dict[str, Any]]) -> Settings:
    store, options = s3_bucket
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    return Settings(
        base_url=emu.url,
        store_url=f"{store}/runs",
        storage_options=options,
        profiles_file=str(profiles),
        budgets_file=str(budgets),
        ledger_path=str(tmp_path / "ledger.db"),
    )


def _bucket_objects(store: str, options: dict[str, Any]) -> list[str]:
    fs, path = fsspec.core.url_to_fs(store, skip_instance_cache=True, **options)
    return [str(p) for p in fs.find(path)]


@pytest.mark.s3
def test_all_green(
    settings: Settings, client: Client, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    report = health_check(settings=settings, client=client)
    assert [(i.name, i.status) for i in report.items] == [
        ("config", CheckStatus.OK),
        ("api key", CheckStatus.OK),
        ("clock", CheckStatus.OK),
        ("store", CheckStatus.OK),
        ("worker credentials", CheckStatus.OK),
        ("profiles", CheckStatus.OK),
        ("budgets", CheckStatus.OK),
        ("ledger", CheckStatus.OK),
        ("reconcile", CheckStatus.OK),
    ], report.to_text()
    assert report.ok
    assert "credit $100.00" in report["api key"].detail
    assert "1 profile(s) (small)" in report["profiles"].detail
    assert "2 limit(s)" in report["budgets"].detail
    assert _bucket_objects(*s3_bucket) == []  # the probes cleaned up after themselves

    text = report.to_text()
    assert text.splitlines()[0].endswith(": ready")
    assert "[  ok] api key" in text
    data = json.loads(report.to_json())
    assert data["ok"] is True
    assert [i["name"] for i in data["items"]][:2] == ["config", "api key"]
    console = Console(record=True, width=140)
    report.render(console)
    assert "worker credentials" in console.export_text()


@pytest.mark.s3
def test_check_builds_its_client_from_the_settings(
    settings: Settings, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAST_API_KEY", emu.api_key)
    report = health_check(settings=settings, worker_probe=False)
    assert report.ok, report.to_text()
    assert report["worker credentials"].status is CheckStatus.SKIP
    assert emu.api_key not in report.to_json()


@pytest.mark.s3
def test_a_bad_key_fails_with_a_fix(settings: Settings, emu: Emulator) -> None:
    with Client("wrong-key", base_url=emu.url, clock=ManualClock(), max_retries=0) as bad:
        report = health_check(settings=settings, client=bad, worker_probe=False)
    assert not report.ok
    item = report["api key"]
    assert item.status is CheckStatus.FAIL
    assert "rejected" in item.detail
    assert item.fix is not None
    assert "https://cloud.vast.ai/manage-keys/" in item.fix
    assert report["reconcile"].status is CheckStatus.SKIP
    assert report["store"].status is CheckStatus.OK  # the other checks still ran
    assert [i.name for i in report.failures] == ["api key"]
    assert "fix: " in report.to_text()


def test_no_key_at_all_fails_with_a_fix(tmp_path: Path) -> None:
    report = health_check(settings=Settings(ledger_path=str(tmp_path / "l.db")))
    item = report["api key"]
    assert item.status is CheckStatus.FAIL
    assert "no Vast API key" in item.detail
    assert item.fix is not None
    assert "VAST_API_KEY" in item.fix
    assert report["store"].status is CheckStatus.WARN  # no store configured
    assert report["ledger"].status is CheckStatus.OK


@pytest.mark.s3
def test_a_missing_bucket_fails_naming_the_cause(settings: Settings, client: Client) -> None:
    missing = Settings(**{**_fields(settings), "store_url": "s3://no-such-bucket-4711/runs"})
    report = health_check(settings=missing, client=client)
    item = report["store"]
    assert item.status is CheckStatus.FAIL
    assert "NoSuchBucket" in item.detail
    assert "s3://no-such-bucket-4711/runs/" in item.detail
    assert item.fix is not None
    assert report["worker credentials"].status is CheckStatus.SKIP


@pytest.mark.s3
def test_wrong_credentials_fail_naming_the_cause(
    settings: Settings, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys
    options = {**settings.storage_options, "key": "AKIAWRONG", "secret": "s3cr3t-value"}
    wrong = Settings(**{**_fields(settings), "storage_options": options})
    report = health_check(settings=wrong, client=client, worker_probe=False)
    item = report["store"]
    assert item.status is CheckStatus.FAIL
    assert "InvalidAccessKeyId" in item.detail
    assert "cannot write a probe object" in item.detail
    assert "s3cr3t-value" not in report.to_json()


@pytest.mark.s3
def test_credentials_only_in_the_local_environment_fail_for_the_worker(
    settings: Settings, client: Client
) -> None:
    # No key/secret in storage_options: s3fs finds AWS_ACCESS_KEY_ID locally (set by the
    # s3_server fixture), but a worker receives only storage_options.
    options = {"client_kwargs": dict(settings.storage_options["client_kwargs"])}
    local_only = Settings(**{**_fields(settings), "storage_options": options})
    report = health_check(settings=local_only, client=client)
    assert report["store"].status is CheckStatus.OK
    worker = report["worker credentials"]
    assert worker.status is CheckStatus.FAIL
    assert "NoCredentialsError" in worker.detail
    assert worker.fix is not None
    assert "storage_options" in worker.fix


@pytest.mark.s3
def test_check_store_writable_raises_a_clear_error(
    s3_bucket: tuple[str, dict[str, Any]],
) -> None:
    store, options = s3_bucket
    check_store_writable(f"{store}/runs", options, run_id="run-1")
    assert _bucket_objects(store, options) == []
    with pytest.raises(ConfigError, match=r"cannot write a probe object at .*NoSuchBucket") as info:
        check_store_writable("s3://missing-bucket-0815/runs", options, run_id="run-1")
    assert info.value.key == "store_url"
    assert "missing-bucket-0815/runs/run-1/.vastkit-probe/" in str(info.value)


def test_a_local_store_is_probed_and_left_clean(tmp_path: Path) -> None:
    store = tmp_path / "runs"
    store.mkdir()
    check_store_writable(str(store), run_id="run-7")
    assert list(store.iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with pytest.raises(ConfigError, match=r"cannot write a probe object at .*a-file/") as info:
        check_store_writable(str(blocker / "runs"))
    assert info.value.key == "store_url"


def test_a_local_store_with_the_emulator_is_green(
    tmp_path: Path, emu: Emulator, client: Client
) -> None:
    settings = Settings(
        base_url=emu.url, store_url=str(tmp_path / "runs"), ledger_path=str(tmp_path / "l.db")
    )
    report = health_check(settings=settings, client=client)
    assert report.ok, report.to_text()
    assert report["store"].status is CheckStatus.OK
    assert report["worker credentials"].status is CheckStatus.OK


def test_a_skewed_clock_warns(tmp_path: Path, client: Client) -> None:
    settings = Settings(ledger_path=str(tmp_path / "l.db"))
    behind = ManualClock(start=time.time() - 600)
    report = health_check(settings=settings, client=client, clock=behind, worker_probe=False)
    item = report["clock"]
    assert item.status is CheckStatus.WARN
    assert "behind the API's" in item.detail
    assert item.fix is not None
    assert "ntp" in item.fix.lower()
    in_time = health_check(settings=settings, client=client, clock=ManualClock(start=time.time()))
    assert in_time["clock"].status is CheckStatus.OK


def test_broken_profiles_and_budgets_fail_with_their_line(tmp_path: Path, client: Client) -> None:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES.replace("max_dph", "max_dhp"))
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("projects:\n  vision: {limit_usd: -5}\n")
    settings = Settings(
        profiles_file=str(profiles), budgets_file=str(budgets), ledger_path=str(tmp_path / "l.db")
    )
    report = health_check(settings=settings, client=client)
    item = report["profiles"]
    assert item.status is CheckStatus.FAIL
    assert f"{profiles}:4" in item.detail
    assert "did you mean 'max_dph'" in item.detail
    assert report["budgets"].status is CheckStatus.FAIL
    assert f"{budgets}:2" in report["budgets"].detail


def test_a_ledger_that_cannot_open_fails(tmp_path: Path, client: Client) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    report = health_check(settings=Settings(ledger_path=str(blocker / "ledger.db")), client=client)
    assert report["ledger"].status is CheckStatus.FAIL
    assert report["reconcile"].status is CheckStatus.SKIP


def test_an_orphaned_instance_warns_in_reconcile(
    tmp_path: Path, emu: Emulator, client: Client
) -> None:
    offer = client.search_offers("rentable=true", order="dph+", limit=1)[0]
    with Ledger(tmp_path / "l.db") as ledger:
        label = f"vastkit/{ledger.ledger_id}/lost-run/1"  # ours, unknown to the ledger
    client.create_instance(offer.id, CreateInstanceRequest(image="ubuntu", label=label, disk_gb=10))
    report = health_check(settings=Settings(ledger_path=str(tmp_path / "l.db")), client=client)
    item = report["reconcile"]
    assert item.status is CheckStatus.WARN
    assert "1 orphaned" in item.detail
    assert item.fix is not None
    assert "vastkit reconcile" in item.fix
    assert len(emu.instances) == 1  # a dry run: nothing destroyed


def test_a_broken_config_file_is_the_first_failure(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated / "vastkit.yaml").write_text("stor_url: s3://b\n")
    report = health_check()
    assert not report.ok
    assert [(i.name, i.status) for i in report.items] == [("config", CheckStatus.FAIL)]
    assert "vastkit.yaml:1" in report.items[0].detail
    assert "did you mean 'store_url'" in report.items[0].detail


def test_vast_api_key_overriding_the_configured_source_warns(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, emu: Emulator
) -> None:
    (isolated / "vastkit.yaml").write_text(
        f"default: prod\nenvironments:\n  prod:\n    base_url: {emu.url}\n"
        "    api_key_env: PROD_KEY\n"
    )
    monkeypatch.setenv("VAST_API_KEY", emu.api_key)
    report = health_check(worker_probe=False)
    assert report.env == "prod"
    assert report["config"].status is CheckStatus.WARN
    assert "overrides the api_key_env" in report["config"].detail
    assert report["api key"].status is CheckStatus.OK


def _fields(settings: Settings) -> dict[str, Any]:
    import attrs

    return attrs.asdict(settings, recurse=False)


def test_report_shape() -> None:
    report = HealthReport(items=())
    assert report.ok
    assert report.to_dict() == {"ok": True, "env": None, "config_path": None, "items": []}

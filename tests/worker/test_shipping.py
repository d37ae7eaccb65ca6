"""Shipping the running vastkit: the wheel, its cache, the run directory, the signed URL."""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import urllib.request
import uuid
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import vastkit
from tests._support.processes import ProcessGroups
from tests._support.world import ON_DEMAND
from vastkit._bootstrap import ONSTART_LIMIT, build_onstart
from vastkit._shipping import (
    WHEEL_URL_EXPIRY,
    WorkerWheel,
    build_worker_wheel,
    cache_dir,
    ship_worker_wheel,
    signed_wheel_url,
    store_extra,
    worker_requirement,
)
from vastkit.api.client import Client
from vastkit.emulator import serve
from vastkit.errors import JobError
from vastkit.jobs import Job, run_job
from vastkit.ledger import Ledger
from vastkit.rundir import RunDir

PACKAGE = Path(vastkit.__file__).parent
WHEEL_NAME = f"vastkit-{vastkit.__version__}-py3-none-any.whl"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> WorkerWheel:
    return build_worker_wheel(cache=tmp_path_factory.mktemp("cache"))


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_wheel_holds_the_package_and_correct_metadata(wheel: WorkerWheel) -> None:
    assert wheel.name == WHEEL_NAME
    assert wheel.size == wheel.path.stat().st_size
    files = members(wheel.path)
    info = f"vastkit-{vastkit.__version__}.dist-info"
    for needed in ("vastkit/__init__.py", "vastkit/worker/__main__.py", "vastkit/py.typed"):
        assert needed in files
    assert files["vastkit/_version.py"] == (PACKAGE / "_version.py").read_bytes()
    assert not [n for n in files if "__pycache__" in n or n.endswith(".pyc")]
    assert set(files) - {n for n in files if n.startswith(("vastkit/", f"{info}/"))} == set()
    wheel_file = files[f"{info}/WHEEL"].decode()
    assert "Root-Is-Purelib: true" in wheel_file
    assert "Tag: py3-none-any" in wheel_file
    meta = Parser().parsestr(files[f"{info}/METADATA"].decode())
    installed = metadata.distribution("vastkit").metadata
    assert meta["Name"] == "vastkit"
    assert meta["Version"] == vastkit.__version__
    assert meta["Requires-Python"] == installed["Requires-Python"]
    assert meta.get_all("Requires-Dist") == installed.get_all("Requires-Dist")
    assert "s3" in (meta.get_all("Provides-Extra") or [])
    assert b"vastkit = vastkit.cli:main" in files[f"{info}/entry_points.txt"]


def test_record_lists_every_member_with_its_hash_and_size(wheel: WorkerWheel) -> None:
    files = members(wheel.path)
    record_name = f"vastkit-{vastkit.__version__}.dist-info/RECORD"
    rows = [line.split(",") for line in files[record_name].decode().splitlines()]
    assert sorted(row[0] for row in rows) == sorted(files)
    for name, hashed, size in rows:
        if name == record_name:
            assert (hashed, size) == ("", "")
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(files[name]).digest()).rstrip(b"=")
        assert hashed == f"sha256={digest.decode()}", name
        assert int(size) == len(files[name]), name


def test_pip_installs_the_wheel_and_vastkit_imports_at_its_version(
    wheel: WorkerWheel, tmp_path: Path, processes: ProcessGroups
) -> None:
    target = tmp_path / "site"
    done = processes.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, wheel.path],
        text=True,
    )
    assert done.returncode == 0, done.stderr
    probe = processes.run(
        [
            "env",
            f"PYTHONPATH={target}",
            sys.executable,
            "-c",
            "import vastkit, vastkit.worker; print(vastkit.__version__, vastkit.__file__)",
        ],
        cwd=tmp_path,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr
    version, where = probe.stdout.split()
    assert version == vastkit.__version__
    assert where == str(target / "vastkit" / "__init__.py")
    found = list(metadata.distributions(name="vastkit", path=[str(target)]))
    assert [d.version for d in found] == [vastkit.__version__]


def test_the_second_build_is_a_cache_hit_and_a_changed_file_a_new_wheel(
    tmp_path: Path,
) -> None:
    package = tmp_path / "src" / "vastkit"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    first = build_worker_wheel(cache=cache, package_dir=package)
    stamp = first.path.stat().st_mtime_ns
    second = build_worker_wheel(cache=cache, package_dir=package)
    assert second == first
    assert second.path.stat().st_mtime_ns == stamp  # found, not rewritten
    assert first.path.parent.parent == cache / "wheels"
    # the same files give the same bytes, whatever the cache
    again = build_worker_wheel(cache=tmp_path / "other", package_dir=package)
    assert again.path.read_bytes() == first.path.read_bytes()
    # an edited file (an editable install) gives another wheel
    (package / "_version.py").write_text((package / "_version.py").read_text() + "# edited\n")
    edited = build_worker_wheel(cache=cache, package_dir=package)
    assert edited.digest != first.digest
    assert edited.path != first.path
    assert b"# edited" in members(edited.path)["vastkit/_version.py"]
    assert first.path.is_file()


def test_the_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VASTKIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert cache_dir() == Path("/xdg/vastkit")
    monkeypatch.setenv("VASTKIT_CACHE_DIR", "/mine")
    assert cache_dir() == Path("/mine")
    monkeypatch.delenv("VASTKIT_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "vastkit"


@pytest.mark.s3
def test_on_s3_the_wheel_is_shipped_once_and_signed_with_sigv4(
    s3_bucket: tuple[str, dict[str, Any]], wheel: WorkerWheel, tmp_path: Path
) -> None:
    bucket, options = s3_bucket
    rundir = RunDir(f"{bucket}/runs/r1", options)
    requirement = worker_requirement(rundir, cache=wheel.path.parent.parent.parent)
    assert requirement is not None
    extra, url = requirement.split(" @ ")
    assert extra == "vastkit[s3]"
    endpoint = options["client_kwargs"]["endpoint_url"]
    path = f"/runs/r1/worker/{wheel.digest[:32]}/{WHEEL_NAME}?"
    assert url.startswith(endpoint)
    assert path in url
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert f"X-Amz-Expires={WHEEL_URL_EXPIRY}" in url
    assert "testing&" not in url  # the secret is never in the URL
    with urllib.request.urlopen(url, timeout=30) as answer:  # what pip downloads
        assert answer.read() == wheel.path.read_bytes()
    # a second attempt signs afresh but uploads nothing
    uploads: list[str] = []
    original = rundir.put_file

    def counting(local: Any, rel: str, **kw: Any) -> None:
        uploads.append(rel)
        original(local, rel, **kw)

    rundir.put_file = counting  # type: ignore[method-assign]
    assert ship_worker_wheel(rundir, wheel) == f"worker/{wheel.digest[:32]}/{WHEEL_NAME}"
    assert uploads == []
    # a tampered (truncated) copy is replaced
    rundir.store.write(rundir.path_of(f"worker/{wheel.digest[:32]}/{WHEEL_NAME}"), b"x")
    ship_worker_wheel(rundir, wheel)
    assert uploads == [f"worker/{wheel.digest[:32]}/{WHEEL_NAME}"]


def test_a_realistic_presigned_url_keeps_the_onstart_under_the_limit(
    wheel: WorkerWheel,
) -> None:
    # Signing is local arithmetic: no request is sent. An STS session token makes the URL long.
    for token, most in ((None, 1400), ("T" * 1100, 2600)):
        options: dict[str, Any] = {
            "key": "AKIAIOSFODNN7EXAMPLE",
            "secret": "s" * 40,
            "client_kwargs": {"region_name": "eu-central-1"},
        }
        if token:
            options["token"] = token
        run = "s3://my-training-bucket/vastkit/runs/2026-12-02-abcdef123456"
        rundir = RunDir(run, options)
        rel = f"worker/{wheel.digest[:32]}/{WHEEL_NAME}"
        url = signed_wheel_url(rundir, rel)
        assert url.startswith("https://my-training-bucket.s3.amazonaws.com/vastkit/runs/")
        script = build_onstart(run_url=run, attempt=12, requirement=f"vastkit[s3] @ {url}")
        assert url in script
        assert len(script) < most < ONSTART_LIMIT


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_local_stores_ship_nothing_and_cannot_sign(kind: str, tmp_path: Path) -> None:
    url = (tmp_path / "run").as_uri() if kind == "file" else f"memory://ship-{uuid.uuid4().hex}/r"
    rundir = RunDir(url)
    # only a host sharing this machine can reach the run directory: the onstart keeps its default
    assert worker_requirement(rundir, cache=tmp_path / "cache") is None
    assert not (tmp_path / "cache").exists()
    with pytest.raises(JobError) as info:
        signed_wheel_url(rundir, f"worker/x/{WHEEL_NAME}")
    message = str(info.value)
    assert "cannot sign URLs" in message
    assert "docker/Dockerfile" in message
    assert "Job.worker_requirement" in message
    assert f"vastkit {vastkit.__version__} preinstalled" in message


class NoSignFileSystem(MemoryFileSystem):  # type: ignore[misc]
    """A remote-looking store whose backend cannot sign URLs (like HTTP or SFTP)."""

    protocol: ClassVar[tuple[str, ...]] = ("nosign",)
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]


def test_a_remote_store_that_cannot_sign_fails_with_the_alternatives(tmp_path: Path) -> None:
    fsspec.register_implementation("nosign", NoSignFileSystem, clobber=True)
    rundir = RunDir(f"nosign://bucket-{uuid.uuid4().hex[:8]}/runs/r1")
    with pytest.raises(JobError, match=r"nosign://.* cannot sign URLs") as info:
        worker_requirement(rundir, cache=tmp_path / "cache")
    assert "docker/Dockerfile" in str(info.value)
    assert "worker_requirement" in str(info.value)
    # an explicit requirement needs no signing (and builds nothing)
    explicit = "vastkit[s3] @ https://example.org/vastkit.whl"
    assert worker_requirement(rundir, explicit=explicit, cache=tmp_path / "c2") == explicit
    assert not (tmp_path / "c2").exists()


def test_store_extras() -> None:
    assert store_extra("s3://b/r") == "s3"
    assert store_extra("gs://b/r") == "gcs"
    assert store_extra("gcs://b/r") == "gcs"
    assert store_extra("/data/runs") is None
    assert store_extra("memory://x") is None


def test_a_failed_install_says_what_to_do(tmp_path: Path, processes: ProcessGroups) -> None:
    python = tmp_path / "python"  # the check finds no vastkit (exit 2) and pip fails
    python.write_text('#!/bin/sh\nif [ "$1" = "-c" ]; then exit 2; fi\nexit 1\n')
    python.chmod(0o755)
    script = build_onstart(
        run_url="s3://b/r", attempt=1, python=str(python), requirement="vastkit @ https://x/y.whl"
    )
    (tmp_path / "onstart.sh").write_text(script)
    done = processes.run(["bash", str(tmp_path / "onstart.sh")], text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"vastkit bootstrap: could not install vastkit {vastkit.__version__}; use an image "
        "with it preinstalled (docker/Dockerfile) or set Job.worker_requirement"
    )


def test_run_job_on_a_store_that_cannot_sign_fails_before_renting(tmp_path: Path) -> None:
    fsspec.register_implementation("nosign", NoSignFileSystem, clobber=True)
    job = Job(
        name="no-sign",
        command="python train.py",
        profile=ON_DEMAND,
        store_url=f"nosign://bucket-{uuid.uuid4().hex[:8]}/runs",
        max_attempts=1,
    )
    with (
        serve(seed=0, offers=50, rate_limits=False) as emu,
        Client(emu.api_key, base_url=emu.url, min_intervals={}) as client,
        Ledger(tmp_path / "ledger.db") as ledger,
        pytest.raises(JobError, match="cannot sign URLs") as info,
    ):
        run_job(job, client=client, ledger=ledger, progress=False)
    assert "docker/Dockerfile" in str(info.value)
    assert emu.instances == []
    endpoints = {endpoint for _, endpoint, _ in emu.requests}
    assert not endpoints & {"create", "create_bulk", "search"}, endpoints

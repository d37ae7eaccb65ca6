"""Fixtures and settings shared by the whole suite.

``s3_server`` starts moto's S3 server on 127.0.0.1 (a free port) once per session; ``s3_bucket``
gives each test a fresh bucket and the ``storage_options`` to reach it with s3fs.

Three plugins from :mod:`tests._support` apply everywhere: ``processes`` (a fixture that starts
subprocesses and kills each one's whole process group at teardown), the fault matrix's
accounting (its summary line and verdict at the end of the session) and ``access`` (the ``home``
fixture: an empty home folder without SSH keys or access settings).

Hypothesis runs under the ``vastkit`` profile: no deadline and no ``too_slow`` /
``data_too_large`` / ``large_base_example`` health checks, so a busy machine cannot fail a
property, and a fixed number of examples. With ``CI=true`` the ``vastkit-ci`` profile also
derandomizes, so a CI failure reproduces. ``--hypothesis-profile NAME`` picks another one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = (
    "pytester",
    "tests._support.processes",
    "tests._support.fault_matrix",
    "tests._support.access",  # the `home` fixture: an empty home folder, no access variables
)

settings.register_profile(
    "vastkit",
    deadline=None,
    max_examples=100,
    suppress_health_check=(
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ),
)
settings.register_profile(
    "vastkit-ci",
    settings.get_profile("vastkit"),
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.load_profile("vastkit-ci" if os.environ.get("CI", "").lower() == "true" else "vastkit")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core, at most 8. Most tests wait (on the emulator, on
    subprocesses, on a rank's collective), so one worker per core leaves the cores half idle."""
    return min(8, 2 * (os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def _wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Wheels that jobs on S3 ship are cached in the session's temp folder, not ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VASTKIT_CACHE_DIR", str(tmp_path_factory.mktemp("vastkit-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on loopback."""
    moto_server = pytest.importorskip("moto.server")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh bucket: ``("s3://<bucket>", storage_options)`` for fsspec/s3fs."""
    boto3 = pytest.importorskip("boto3")
    name = f"test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    options: dict[str, Any] = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_server, "region_name": "us-east-1"},
    }
    try:
        yield f"s3://{name}", options
    finally:
        client.close()

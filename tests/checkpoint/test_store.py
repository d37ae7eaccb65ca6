"""The one store layer (vastkit._store): whole writes, reads, listings, retries, per backend."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from fsspec.callbacks import Callback

from vastkit._store import STORE_RETRY, Store, atomic_local_write, is_transient
from vastkit.clock import ManualClock
from vastkit.errors import CheckpointError
from vastkit.retry import RetryPolicy


def test_objects_round_trip_and_missing_ones_read_as_none(
    store: tuple[str, dict[str, Any]],
) -> None:
    url, options = store
    st = Store(url, options, clock=ManualClock())
    path = st.path("a", "b.bin")
    assert st.read(path) is None
    assert not st.exists(path)
    assert st.size(path) is None
    st.write(path, b"x" * 1000)
    st.write(st.path("a", "c", "d.bin"), memoryview(b"yz"))
    assert st.read(path) == b"x" * 1000
    assert st.exists(path)
    assert st.size(path) == 1000
    assert st.isdir(st.path("a"))
    assert st.sizes(st.path("a")) == {"b.bin": 1000}
    assert st.find(st.path("a")) == {"b.bin": 1000, "c/d.bin": 2}
    assert [p.rsplit("/", 1)[-1] for p in sorted(st.ls(st.path("a")))] == ["b.bin", "c"]
    assert st.ls(st.path("nothing")) == []
    st.delete(path)
    st.delete(path)  # a missing object is no error
    assert st.read(path) is None
    st.delete(st.path("a"), recursive=True)
    assert st.find(st.path("a")) == {}


def test_put_and_download_move_a_file_whole_and_report_progress(
    store: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, options = store
    st = Store(url, options, clock=ManualClock())
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(300_000))
    seen = Callback()
    st.put(local, st.path("up", "file.bin"), callback=seen)
    assert st.read(st.path("up", "file.bin")) == local.read_bytes()
    assert seen.value == 300_000
    back = tmp_path / "back.bin"
    st.download(st.path("up", "file.bin"), str(back))
    assert back.read_bytes() == local.read_bytes()


def test_a_failed_local_write_keeps_the_old_object_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "dir" / "obj"
    atomic_local_write(str(target), b"old")
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr("vastkit._store.os.fsync", counting_fsync)
    atomic_local_write(str(target), b"new")
    assert len(synced) == 2  # the file, then its directory
    assert target.read_bytes() == b"new"

    def full(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("vastkit._store.os.replace", full)
    with pytest.raises(OSError, match="disk full"):
        atomic_local_write(str(target), b"newer")
    monkeypatch.undo()
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["obj"]


def test_transient_errors_are_retried_on_the_clock_and_final_ones_are_not(
    flaky: Any,
) -> None:
    url, fs_cls = flaky
    left = {"n": 2}

    def reset_twice(path: str, value: Any) -> None:
        if left["n"]:
            left["n"] -= 1
            raise ConnectionError("connection reset by peer")

    fs_cls.hooks["pipe"] = reset_twice
    clock = ManualClock()
    st = Store(url, clock=clock, retry=RetryPolicy(attempts=3, initial_delay=1.0))
    st.write(st.path("x"), b"1")
    assert st.read(st.path("x")) == b"1"
    assert len(clock.slept) == 2
    assert 0.5 <= clock.slept[0] <= 1.0
    assert 1.0 <= clock.slept[1] <= 2.0

    def denied(path: str, value: Any) -> None:
        raise PermissionError("access denied")

    fs_cls.hooks["pipe"] = denied
    with pytest.raises(PermissionError):
        st.write(st.path("y"), b"2")
    assert len(clock.slept) == 2  # no retry of a final error


def test_retries_stop_at_the_policy_bound(flaky: Any) -> None:
    url, fs_cls = flaky

    def always(path: str, value: Any) -> None:
        raise TimeoutError("slow")

    fs_cls.hooks["pipe"] = always
    clock = ManualClock()
    start = clock.now()
    st = Store(url, clock=clock)
    with pytest.raises(TimeoutError):
        st.write(st.path("x"), b"1")
    assert len(clock.slept) == STORE_RETRY.attempts - 1
    assert STORE_RETRY.deadline is not None
    assert clock.now() - start <= STORE_RETRY.deadline


class _BotoLike(Exception):
    __module__ = "botocore.exceptions"

    def __init__(self, status: int | None, name: str = "ClientError") -> None:
        super().__init__(name)
        self.response = {"ResponseMetadata": {"HTTPStatusCode": status}} if status else {}


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (OSError("io"), True),
        (FileNotFoundError(), False),
        (PermissionError(), False),
        (ValueError(), False),
        (CheckpointError("ours"), False),
        (_BotoLike(503), True),
        (_BotoLike(429), True),
        (_BotoLike(408), True),
        (_BotoLike(403), False),
        (_BotoLike(404), False),
        (RuntimeError("unrelated"), False),
    ],
)
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


@pytest.mark.s3
def test_s3_urls_turn_off_the_per_part_checksum(s3_bucket: tuple[str, dict[str, Any]]) -> None:
    bucket, options = s3_bucket
    st = Store(f"{bucket}/run", options)
    assert st.is_s3
    assert st.storage_options == options  # the caller's options are not changed
    config = st.fs.config_kwargs if hasattr(st.fs, "config_kwargs") else {}
    assert config.get("request_checksum_calculation") == "when_required"


@pytest.mark.s3
@pytest.mark.parametrize("answer_lost", [True, False])
def test_a_streamed_write_survives_a_lost_complete_answer_and_fails_a_real_failure(
    s3_bucket: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, answer_lost: bool
) -> None:
    """A multipart upload whose complete succeeded but whose answer was lost is recognised by
    its ETag on the retry (the upload id is gone by then); a complete that never happened is
    retried and, past the policy, fails; no object appears."""
    url, options = s3_bucket
    st = Store(
        url,
        options,
        clock=ManualClock(),
        retry=RetryPolicy(attempts=2, initial_delay=0.1, max_delay=0.1, deadline=10.0),
        transfer_chunk_bytes=5 * 2**20,
    )
    real = st.fs.call_s3
    completes: list[str] = []

    def flaky(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "complete_multipart_upload":
            completes.append(method)
            if answer_lost:
                real(method, *args, **kwargs)  # it completes; the answer is lost
            raise OSError("connection reset (injected)")
        return real(method, *args, **kwargs)

    monkeypatch.setattr(st.fs, "call_s3", flaky)
    data = os.urandom(12 * 2**20 + 7)
    path = st.path("big.bin")
    if answer_lost:
        with st.writer(path) as out:
            out.write(data)
        assert completes == ["complete_multipart_upload"]
        monkeypatch.undo()
        assert st.read(path) == data
    else:
        with pytest.raises(OSError, match="injected"), st.writer(path) as out:
            out.write(data)
        assert completes == ["complete_multipart_upload"] * 2
        monkeypatch.undo()
        assert st.read(path) is None


@pytest.mark.s3
def test_a_commit_and_a_load_on_s3_make_only_the_requests_they_need(
    s3_bucket: tuple[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """Each request costs a round trip (and, on a shared machine, the server's CPU): reading a
    small object is one GET (s3fs would HEAD first, and list on a 404), and a load reads the
    manifest and the payload, whose size and digest it checks, without listing the folder.
    Counted on the server: the moto server's request log."""
    torch = pytest.importorskip("torch")
    from vastkit.checkpoint import CheckpointManager

    def requests() -> list[str]:
        seen = [
            r.getMessage().split('"')[1].split(" ")[:2]
            for r in caplog.records
            if r.name == "werkzeug" and '"' in r.getMessage()
        ]
        caplog.clear()
        return [f"{verb} {target.split('?')[0].rsplit('/', 1)[-1]}" for verb, target in seen]

    caplog.set_level(logging.INFO, logger="werkzeug")
    bucket, options = s3_bucket
    state = {"w": torch.arange(1000.0)}
    with CheckpointManager(f"{bucket}/run", storage_options=options, async_save=False) as mgr:
        mgr.save(1, state)
        requests()
        mgr.save(2, state)
        commit = requests()
    assert not [r for r in commit if r.startswith("HEAD")], commit
    # is step 2 committed (one GET: 404), payload, listing, manifest, read back, hint, prune
    assert len(commit) == 7, commit
    with CheckpointManager(f"{bucket}/run", storage_options=options) as reader:
        assert torch.equal(reader.load()["w"], state["w"])
    bucket_name = bucket.removeprefix("s3://")
    assert requests() == [f"GET {bucket_name}", "GET manifest.json", "GET state.pt"]

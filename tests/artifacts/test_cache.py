"""The content-addressed dataset cache, fetching, outputs and metric plots (no jobs)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import fsspec
import pytest

from vastkit._documents import converter as _converter
from vastkit.artifacts import (
    DatasetManifest,
    check_inputs,
    check_outputs,
    dataset_cache_url,
    fetch_artifact,
    folder_digest,
    input_env_name,
    is_local_path,
    plot_metrics,
    read_outputs,
    resolve_inputs,
    upload_dataset,
    upload_outputs,
)
from vastkit.clock import ManualClock
from vastkit.errors import JobError
from vastkit.rundir import MetricRecord


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


FILES = {"train/a.bin": b"a" * 1000, "train/b.bin": b"bb" * 700, "vocab.txt": b"hello\nworld\n"}


def read_manifest(cache: str, digest: str, options: dict[str, Any]) -> DatasetManifest:
    with fsspec.open(f"{cache}/{digest}/manifest.json", "rb", **options) as fh:
        return _converter.structure(json.loads(fh.read()), DatasetManifest)


# -- digests and names ----------------------------------------------------------------------------


def test_digest_depends_on_content_and_names_not_on_times_or_location(tmp_path: Path) -> None:
    one = make_folder(tmp_path / "one", FILES)
    two = make_folder(tmp_path / "two", dict(reversed(list(FILES.items()))))
    os.utime(two / "vocab.txt", (1, 1))
    assert folder_digest(one) == folder_digest(two)
    (two / "vocab.txt").write_bytes(b"hello\nWorld\n")  # same size, other bytes
    assert folder_digest(one) != folder_digest(two)
    (two / "vocab.txt").write_bytes(FILES["vocab.txt"])
    (two / "train" / "b.bin").rename(two / "train" / "c.bin")
    assert folder_digest(one) != folder_digest(two)
    with pytest.raises(JobError, match="does not exist"):
        folder_digest(tmp_path / "missing")


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ("s3://bucket/runs", "s3://bucket/datasets"),
        ("s3://bucket/team/runs/", "s3://bucket/team/datasets"),
        ("s3://bucket", "s3://bucket/datasets"),
        ("/data/runs", "/data/datasets"),
        ("file:///data/runs", "file:///data/datasets"),
        ("/runs", "/datasets"),
    ],
)
def test_the_cache_sits_beside_the_run_directories(store: str, expected: str) -> None:
    assert dataset_cache_url(store) == expected
    assert dataset_cache_url(store, "gs://other/cache/") == "gs://other/cache"


def test_input_names_and_paths_are_checked() -> None:
    assert input_env_name("data") == "VASTKIT_INPUT_DATA"
    assert input_env_name("val-set.v2") == "VASTKIT_INPUT_VAL_SET_V2"
    assert is_local_path("./local/folder")
    assert is_local_path("file:///tmp/x")
    assert not is_local_path("s3://bucket/datasets/imagenet-mini")
    with pytest.raises(ValueError, match="both map to VASTKIT_INPUT_A_B"):
        check_inputs({"a-b": "s3://x/1", "a.b": "s3://x/2"})
    with pytest.raises(ValueError, match="relative to the command's working directory"):
        check_outputs(["../escape"])
    with pytest.raises(ValueError, match="relative"):
        check_outputs(["/abs/path"])


# -- upload once, reuse ---------------------------------------------------------------------------


@pytest.mark.s3
def test_a_folder_is_uploaded_once_and_reused_on_s3(
    s3_bucket: tuple[str, dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket, options = s3_bucket
    cache = f"{bucket}/datasets"
    source = make_folder(tmp_path / "vocab", FILES)
    first = upload_dataset(source, cache, options, clock=ManualClock(start=100.0))
    assert first.uploaded
    assert (first.files, first.total_bytes, first.uploaded_bytes) == (3, 2412, 2412)
    assert first.url == f"{cache}/{first.digest}/data"
    manifest = read_manifest(cache, first.digest, options)
    assert [f.path for f in manifest.files] == sorted(FILES)
    # Mark the cached copy (same size, other bytes): an upload would overwrite the mark.
    fs = fsspec.filesystem("s3", **options)
    marked = f"{first.url}/vocab.txt".removeprefix("s3://")
    fs.pipe_file(marked, b"MARKED\nMARK\n")

    # A copy of the same content elsewhere on disk is the same dataset.
    copy = make_folder(tmp_path / "copy", FILES)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="werkzeug"):  # moto's request log
        again = upload_dataset(copy, cache, options)
    requests = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert requests  # the cache was looked at...
    assert not [m for m in requests if '"PUT ' in m or '"POST ' in m]  # ...and nothing written
    assert not again.uploaded
    assert again.uploaded_bytes == 0
    assert again.url == first.url
    fs.invalidate_cache()
    assert fs.cat_file(marked) == b"MARKED\nMARK\n"  # nothing was uploaded
    assert read_manifest(cache, first.digest, options).upload_id == manifest.upload_id


def test_an_interrupted_upload_is_completed_not_trusted(tmp_path: Path) -> None:
    cache = (tmp_path / "cache").as_uri()
    source = make_folder(tmp_path / "src", FILES)
    first = upload_dataset(source, cache)
    base = tmp_path / "cache" / first.digest
    (base / "manifest.json").unlink()  # the upload "died" before its manifest
    (base / "data" / "train" / "a.bin").unlink()
    second = upload_dataset(source, cache)
    assert second.uploaded
    assert second.uploaded_bytes == 1000  # only the missing file
    assert (base / "manifest.json").is_file()
    assert (base / "data" / "train" / "a.bin").read_bytes() == FILES["train/a.bin"]


def test_resolve_inputs_uploads_local_ones_and_keeps_urls(tmp_path: Path) -> None:
    store = (tmp_path / "store" / "runs").as_uri()
    make_folder(tmp_path / "work" / "vocab", {"v.txt": b"v"})
    (tmp_path / "work" / "labels.csv").write_text("a,b\n")
    urls, uploads = resolve_inputs(
        {"data": "s3://bucket/datasets/imagenet-mini", "vocab": "vocab", "labels": "labels.csv"},
        store_url=store,
        base_dir=tmp_path / "work",
    )
    assert urls["data"] == "s3://bucket/datasets/imagenet-mini"
    assert set(uploads) == {"vocab", "labels"}
    cache = (tmp_path / "store" / "datasets").as_uri()
    assert urls["vocab"] == f"{cache}/{uploads['vocab'].digest}/data"
    assert urls["labels"] == f"{cache}/{uploads['labels'].digest}/data/labels.csv"
    with pytest.raises(JobError, match=r"input 'x'.*does not exist"):
        resolve_inputs({"x": "nope"}, store_url=store, base_dir=tmp_path)


# -- fetch ----------------------------------------------------------------------------------------


def test_fetch_a_folder_and_a_file(tmp_path: Path) -> None:
    cache = (tmp_path / "cache").as_uri()
    up = upload_dataset(make_folder(tmp_path / "src", FILES), cache)
    local = fetch_artifact(up.url, tmp_path / "got", progress=True)
    assert local == tmp_path / "got"
    got = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    assert got == FILES
    one = fetch_artifact(f"{up.url}/vocab.txt", tmp_path / "one")
    assert one == tmp_path / "one" / "vocab.txt"
    assert one.read_bytes() == FILES["vocab.txt"]
    with pytest.raises(JobError, match="nothing to fetch"):
        fetch_artifact(f"{up.url}/nope", tmp_path / "x")


# -- outputs --------------------------------------------------------------------------------------


def test_outputs_are_uploaded_listed_and_merged(tmp_path: Path) -> None:
    cwd = make_folder(
        tmp_path / "cwd", {"outputs/model.pt": b"m" * 50, "log.txt": b"x", "a.csv": b"1"}
    )
    run = (tmp_path / "store" / "run1").as_uri()
    uploaded, skipped = upload_outputs(cwd, ["outputs/", "*.csv", "missing/"], run, attempt=1)
    assert [(o.path, o.size, o.attempt) for o in uploaded] == [
        ("a.csv", 1, 1),
        ("outputs/model.pt", 50, 1),
    ]
    assert skipped == []
    assert (
        tmp_path / "store" / "run1" / "outputs" / "outputs" / "model.pt"
    ).read_bytes() == b"m" * 50
    (cwd / "outputs" / "model.pt").write_bytes(b"m" * 60)
    upload_outputs(cwd, ["outputs"], run, attempt=2)
    listing = {o.path: (o.size, o.attempt) for o in read_outputs(run)}
    assert listing == {"a.csv": (1, 1), "outputs/model.pt": (60, 2)}


def test_outputs_stop_at_the_deadline(tmp_path: Path) -> None:
    cwd = make_folder(tmp_path / "cwd", {"out/a": b"a", "out/b": b"b"})
    run = (tmp_path / "store" / "run1").as_uri()
    clock = ManualClock(start=50.0)
    uploaded, skipped = upload_outputs(cwd, ["out"], run, deadline=50.0, clock=clock)
    assert uploaded == []
    assert skipped == ["out/a", "out/b"]
    assert read_outputs(run) == ()


# -- plots ----------------------------------------------------------------------------------------


def test_plot_metrics_writes_an_image(tmp_path: Path) -> None:
    records = [
        MetricRecord(step=s, time=float(s), values={"loss": 1.0 / (s + 1), "lr": 0.1})
        for s in range(10)
    ]
    records.append(MetricRecord(step=9, time=9.0, values={"loss": 0.1}, source="checkpoint"))
    path = plot_metrics(records, tmp_path / "plots" / "metrics.png", title="run")
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no metric records"):
        plot_metrics([], tmp_path / "empty.png")

"""Benchmark vastkit.CheckpointManager against the reference pattern and raw transfers.

Measures, on S3 (moto's ThreadedMotoServer on 127.0.0.1) and on file://, side by side:

* training stall per save: vastkit async save vs the reference architecture's pattern
  (synchronous ``torch.save`` to /tmp then ``boto3.upload_file``; for file:// a synchronous
  ``torch.save`` to the destination) vs the floor (copying the state into preallocated CPU
  buffers, nothing else; timed right before each save so both see the same machine load);
* upload throughput: bytes / (save() return to commit: serialise, hash, upload, verify, manifest)
  vs a raw ``boto3.upload_file`` of the same bytes (for file://, a raw file copy);
* restore time: ``CheckpointManager.load()`` (find latest, verify size and SHA-256, read,
  ``torch.load``) vs a raw ``boto3.download_file`` plus ``torch.load`` (for file://, ``torch.load``
  of the file).

Usage::

    python benchmarks/checkpoint.py                 # ~200 MB state
    python benchmarks/checkpoint.py --quick         # ~20 MB, for CI
    python benchmarks/checkpoint.py --json out.json

Stall figures are medians over ``--repeats`` saves; best-of-N figures are printed too, since a
shared machine's load moves single copies by several times.

Targets (from issue 6): stall <= 1.5x floor and >= 10x below the reference; upload >= 0.8x raw
boto3; restore <= 1.25x raw.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from vastkit.checkpoint import CheckpointManager


def build_state(size_mb: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model plus Adam state totalling about ``size_mb`` (params x 3: weights, m, v)."""
    torch.manual_seed(0)
    width = 1024 if size_mb >= 40 else 512
    per_layer = (width * width + width) * 4 * 3
    layers = max(1, round(size_mb * 2**20 / per_layer))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    return model, opt


def state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for s in opt.state_dict()["state"].values():
        total += sum(v.numel() * v.element_size() for v in s.values() if torch.is_tensor(v))
    return total


def median(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def make_floor(model: torch.nn.Module, opt: torch.optim.Optimizer) -> Callable[[], float]:
    """The staging copy alone, into preallocated buffers: returns a function timing one copy."""
    tensors = list(model.state_dict().values())
    for s in opt.state_dict()["state"].values():
        tensors += [v for v in s.values() if torch.is_tensor(v)]
    buffers = [torch.empty_like(t) for t in tensors]

    def once() -> float:
        t0 = time.perf_counter()
        for b, t in zip(buffers, tensors, strict=True):
            b.copy_(t)
        return time.perf_counter() - t0

    once()
    return once


def bench_vastkit(
    url: str,
    options: dict[str, Any],
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    repeats: int,
) -> dict[str, Any]:
    mgr = CheckpointManager(url, storage_options=options, keep_last=2)
    state = {"model": model, "optimizer": opt}
    mgr.save(0, state, force=True)  # warm-up: allocates the reused buffers
    mgr.wait()
    floor = make_floor(model, opt)
    stalls, commits, floors = [], [], []
    for step in range(1, repeats + 1):
        # The floor is timed right before each save, so both see the same machine load.
        floors.append(floor())
        t0 = time.perf_counter()
        mgr.save(step, state, force=True)
        t1 = time.perf_counter()
        mgr.wait()
        t2 = time.perf_counter()
        stalls.append(t1 - t0)
        commits.append(t2 - t1)
    info = mgr.latest()
    assert info is not None
    loads = [timed(mgr.load) for _ in range(repeats)]
    mgr.close()
    return {
        "floor_s": statistics.median(floors),
        "stall_s": statistics.median(stalls),
        "floor_min_s": min(floors),
        "stall_min_s": min(stalls),
        "commit_s": statistics.median(commits),
        "payload_bytes": info.size_bytes,
        "restore_s": statistics.median(loads),
        "payload_url": f"{info.url}/state.pt",
    }


def run_s3(
    model: torch.nn.Module, opt: torch.optim.Optimizer, repeats: int, tmp: str
) -> dict[str, Any]:
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="bench")
        options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        ours = bench_vastkit("s3://bench/run", options, model, opt, repeats)
        # The reference pattern: synchronous torch.save to /tmp, then boto3.upload_file.
        ref_path = os.path.join(tmp, "ref.pt")

        def reference() -> float:
            t0 = time.perf_counter()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, ref_path)
            client.upload_file(ref_path, "bench", "reference/ckpt.pt")
            return time.perf_counter() - t0

        ref_stall = median(reference, repeats)
        # Raw transfers of exactly our payload bytes.
        raw_path = os.path.join(tmp, "payload.pt")
        key = ours["payload_url"].removeprefix("s3://bench/")
        client.download_file("bench", key, raw_path)
        upload = median(
            lambda: timed(lambda: client.upload_file(raw_path, "bench", "raw.pt")), repeats
        )
        dl_path = os.path.join(tmp, "download.pt")

        def raw_restore() -> float:
            t0 = time.perf_counter()
            client.download_file("bench", "raw.pt", dl_path)
            torch.load(dl_path, weights_only=True)
            return time.perf_counter() - t0

        restore = median(raw_restore, repeats)
        client.close()
        return {
            **ours,
            "reference_stall_s": ref_stall,
            "raw_upload_s": upload,
            "raw_restore_s": restore,
        }
    finally:
        server.stop()


def run_file(
    model: torch.nn.Module, opt: torch.optim.Optimizer, repeats: int, tmp: str
) -> dict[str, Any]:
    root = os.path.join(tmp, "store")
    ours = bench_vastkit(f"file://{root}/run", {}, model, opt, repeats)
    ref_path = os.path.join(root, "reference.pt")

    def reference() -> float:
        return timed(
            lambda: torch.save(
                {"model": model.state_dict(), "optimizer": opt.state_dict()}, ref_path
            )
        )

    ref_stall = median(reference, repeats)
    src = ours["payload_url"].removeprefix("file://")
    dst = os.path.join(root, "raw-copy.pt")
    upload = median(lambda: timed(lambda: shutil.copyfile(src, dst)), repeats)
    restore = median(lambda: timed(lambda: torch.load(dst, weights_only=True)), repeats)
    return {
        **ours,
        "reference_stall_s": ref_stall,
        "raw_upload_s": upload,
        "raw_restore_s": restore,
    }


def summarise(name: str, r: dict[str, Any]) -> dict[str, Any]:
    size = r["payload_bytes"]
    floor = r["floor_s"]
    out = {
        "backend": name,
        "payload_mb": size / 2**20,
        "floor_stall_s": floor,
        "vastkit_stall_s": r["stall_s"],
        "reference_stall_s": r["reference_stall_s"],
        "stall_vs_floor": r["stall_s"] / floor,
        "floor_min_s": r["floor_min_s"],
        "vastkit_stall_min_s": r["stall_min_s"],
        "stall_vs_floor_best": r["stall_min_s"] / r["floor_min_s"],
        "reference_vs_stall": r["reference_stall_s"] / r["stall_s"],
        "vastkit_commit_s": r["commit_s"],
        "vastkit_upload_mb_s": size / 2**20 / r["commit_s"],
        "raw_upload_s": r["raw_upload_s"],
        "raw_upload_mb_s": size / 2**20 / r["raw_upload_s"],
        "upload_vs_raw": r["raw_upload_s"] / r["commit_s"],
        "vastkit_restore_s": r["restore_s"],
        "raw_restore_s": r["raw_restore_s"],
        "restore_vs_raw": r["restore_s"] / r["raw_restore_s"],
    }
    out["targets"] = {
        "stall_le_1.5x_floor": out["stall_vs_floor"] <= 1.5,
        "stall_10x_below_reference": out["reference_vs_stall"] >= 10,
        "upload_ge_0.8x_raw": out["upload_vs_raw"] >= 0.8,
        "restore_le_1.25x_raw": out["restore_vs_raw"] <= 1.25,
    }
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    lines = [
        ("payload (MB)", "payload_mb", "{:.1f}"),
        ("stall: floor (ms)", "floor_stall_s", "ms"),
        ("stall: vastkit async (ms)", "vastkit_stall_s", "ms"),
        ("stall: reference (ms)", "reference_stall_s", "ms"),
        ("stall / floor (<= 1.5)", "stall_vs_floor", "{:.2f}x"),
        ("  best-of-N floor (ms)", "floor_min_s", "ms"),
        ("  best-of-N stall (ms)", "vastkit_stall_min_s", "ms"),
        ("  best-of-N stall / floor", "stall_vs_floor_best", "{:.2f}x"),
        ("reference / stall (>= 10)", "reference_vs_stall", "{:.0f}x"),
        ("vastkit commit (s)", "vastkit_commit_s", "{:.3f}"),
        ("vastkit upload (MB/s)", "vastkit_upload_mb_s", "{:.0f}"),
        ("raw upload (MB/s)", "raw_upload_mb_s", "{:.0f}"),
        ("upload vs raw (>= 0.8)", "upload_vs_raw", "{:.2f}x"),
        ("vastkit restore (s)", "vastkit_restore_s", "{:.3f}"),
        ("raw restore (s)", "raw_restore_s", "{:.3f}"),
        ("restore / raw (<= 1.25)", "restore_vs_raw", "{:.2f}x"),
    ]
    header = f"{'':28}" + "".join(f"{r['backend']:>14}" for r in rows)
    print(header)
    for label, key, fmt in lines:
        cells = []
        for r in rows:
            v = r[key]
            cells.append(f"{v * 1000:.1f}" if fmt == "ms" else fmt.format(v))
        print(f"{label:28}" + "".join(f"{c:>14}" for c in cells))
    for r in rows:
        met = ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in r["targets"].items())
        print(f"{r['backend']}: {met}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200.0)
    parser.add_argument("--quick", action="store_true", help="about 20 MB, for CI")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    args = parser.parse_args(argv)
    size = 20.0 if args.quick else args.size_mb
    warnings.simplefilter("default")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    model, opt = build_state(size)
    nbytes = state_bytes(model, opt)
    print(f"state: {nbytes / 2**20:.1f} MB ({sum(1 for _ in model.parameters())} tensors)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="vastkit-bench-") as tmp:
        rows.append(summarise("s3 (moto)", run_s3(model, opt, args.repeats, tmp)))
        rows.append(summarise("file://", run_file(model, opt, args.repeats, tmp)))
    print_table(rows)
    result = {
        "state_mb": nbytes / 2**20,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "results": rows,
    }
    print(json.dumps(result, indent=1))
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark vastkit.CheckpointManager against the reference pattern, DCP and raw transfers.

Every measurement runs in a fresh process (``--worker``), the variants interleaved and their order
rotated round by round; figures are reported as min / median over the rounds. S3 is moto's
``ThreadedMotoServer`` in its own process on 127.0.0.1 (its CPU is read from /proc and reported
beside the client's). The state is a stack of ``Linear`` layers plus Adam state (weights, m, v).

Save workers (``vastkit-s3``, ``reference-s3``, ``vastkit-file``, ``dcp-file``), one process each:

1. **memory**: the first save with RSS sampled in-process every 2 ms (``/proc/self/statm``, a
   thread); extra peak = peak RSS during the save until durable minus RSS just before it (the
   staging buffers vastkit allocates on its first save count). In copies of the state's tensor
   bytes;
2. **idle commit**: a second save with no training: time until durable, client CPU
   (``time.process_time``, all threads) and server CPU for that commit, and the blocking time of
   ``save()`` against the *floor* (copying the state into preallocated buffers);
3. **lost loop time** (the stall): a training loop (forward, backward and Adam step of the model)
   in segments of a fixed number of steps, alternating without and with a save started at the
   segment's start; lost = with - without (adjacent pairs); once with every core
   (``torch.get_num_threads()`` as set by torch) and once with ``torch.set_num_threads(1)``, which
   leaves a core to the background work. Time until durable with training running is the time
   from the save call to the commit (``CheckpointManager.committed_step`` polled each step).

The *reference* pattern is the reference architecture's ``CheckpointManager``: blocking
``torch.save`` to /tmp, ``boto3.upload_file`` and a ``latest.json`` put. For ``file://`` the
reference is DCP's ``async_save`` to the same disk (its future's result = durable).

Restore workers (``restore-vastkit-s3``, ``restore-raw-s3``, ``restore-vastkit-file``,
``restore-raw-file``) read the payload the last vastkit save committed: vastkit ``load()`` against
one ``get_object`` + ``torch.load`` (S3) and a plain ``torch.load`` of the file (file://); time and
extra peak RSS until the state is in memory (for memory-mapped loads, the tensors are touched).
boto3's ``download_file`` is *not* a baseline: it makes 8 MiB ranged GETs, and moto spends CPU in
proportion to the whole object on each ranged GET (a moto artifact, not S3's behaviour).

Usage::

    python benchmarks/checkpoint.py                  # 63 MB and 604 MB states, 3 rounds
    python benchmarks/checkpoint.py --quick          # a 16 MB state, 2 rounds, 1 pair (CI)
    python benchmarks/checkpoint.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
SAVE_VARIANTS = ("vastkit-s3", "reference-s3", "vastkit-file", "dcp-file")
RESTORE_VARIANTS = (
    "restore-vastkit-s3",
    "restore-raw-s3",
    "restore-vastkit-file",
    "restore-raw-file",
)
OPTIONS_KEYS = ("key", "secret")


# --------------------------------------------------------------------------------------------
# measuring


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@contextmanager
def peak_rss() -> Iterator[dict[str, int]]:
    """Sample RSS every 2 ms while the block runs: ``{"base", "peak"}`` in bytes."""
    out = {"base": rss(), "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak"] = max(out["peak"], rss())
            stop.wait(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out["peak"] = max(out["peak"], rss())


def build_state(size_mb: float) -> tuple[Any, Any, int]:
    """A model plus Adam state totalling about ``size_mb`` (params x 3: weights, m, v)."""
    import torch

    torch.manual_seed(0)
    width = 1024 if size_mb >= 40 else 512
    per_layer = (width * width + width) * 4 * 3
    layers = max(1, round(size_mb * 1e6 / per_layer))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    train_step(model, opt)
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for s in opt.state_dict()["state"].values():
        nbytes += sum(v.numel() * v.element_size() for v in s.values() if torch.is_tensor(v))
    return model, opt, nbytes


def train_step(model: Any, opt: Any) -> None:
    import torch

    width = model[0].in_features
    x = torch.randn(64, width)
    opt.zero_grad(set_to_none=False)
    model(x).square().mean().backward()
    opt.step()


def floor_copy(model: Any, opt: Any) -> Callable[[], float]:
    import torch

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


# --------------------------------------------------------------------------------------------
# the savers: each has save(step) -> None (returns when save() returns) and durable() -> bool


class VastkitSaver:
    def __init__(self, url: str, options: dict[str, Any], model: Any, opt: Any) -> None:
        from vastkit.checkpoint import CheckpointManager

        self.mgr = CheckpointManager(url, storage_options=options, keep_last=2)
        # a training run looks for a checkpoint to resume first; that also opens the store's
        # session (as the reference's boto3 client is made before it is measured)
        self.mgr.latest()
        self.state = {"model": model, "optimizer": opt}
        self.step = 0

    def save(self) -> None:
        self.step += 1
        self.mgr.save(self.step, self.state, force=True)

    def durable(self) -> bool:
        # (_committed: the code before committed_step existed, for before/after runs)
        done = getattr(self.mgr, "committed_step", getattr(self.mgr, "_committed", None))
        return bool(done == self.step)

    def wait(self) -> None:
        self.mgr.wait()

    def close(self) -> None:
        self.mgr.close()


class ReferenceSaver:
    """The reference architecture's CheckpointManager: torch.save to /tmp, upload_file,
    latest.json."""

    def __init__(self, client: Any, bucket: str, prefix: str, model: Any, opt: Any) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.model, self.opt = model, opt
        self.step = 0
        self.local = os.path.join(tempfile.gettempdir(), f"ref-ckpt-{os.getpid()}.pt")

    def save(self) -> None:
        import torch

        self.step += 1
        torch.save(
            {
                "step": self.step,
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
            },
            self.local,
        )
        key = f"{self.prefix}/ckpt-{self.step}.pt"
        self.client.upload_file(self.local, self.bucket, key)
        body = json.dumps({"step": self.step, "key": key}).encode()
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/latest.json", Body=body)
        os.unlink(self.local)

    def durable(self) -> bool:
        return True

    def wait(self) -> None:
        pass

    def close(self) -> None:
        pass


class DcpSaver:
    def __init__(self, root: str, model: Any, opt: Any) -> None:
        self.root, self.model, self.opt = root, model, opt
        self.step = 0
        self.future: Any = None

    def save(self) -> None:
        import torch.distributed.checkpoint as dcp

        self.wait()
        self.step += 1
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict()}
        self.future = dcp.async_save(state, checkpoint_id=os.path.join(self.root, f"s{self.step}"))

    def durable(self) -> bool:
        return self.future is None or self.future.done()

    def wait(self) -> None:
        if self.future is not None:
            self.future.result()

    def close(self) -> None:
        self.wait()


# --------------------------------------------------------------------------------------------
# workers


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def s3_options(endpoint: str) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


def make_saver(variant: str, a: argparse.Namespace, model: Any, opt: Any) -> Any:
    tag = f"{a.size_mb:g}"
    if variant == "vastkit-s3":
        return VastkitSaver(f"s3://bench/{tag}/vastkit", s3_options(a.endpoint), model, opt)
    if variant == "reference-s3":
        return ReferenceSaver(s3_client(a.endpoint), "bench", f"{tag}/reference", model, opt)
    if variant == "vastkit-file":
        return VastkitSaver(f"file://{a.dir}/{tag}/vastkit", {}, model, opt)
    if variant == "dcp-file":
        return DcpSaver(os.path.join(a.dir, tag, f"dcp-{os.getpid()}"), model, opt)
    raise ValueError(variant)


def save_worker(variant: str, a: argparse.Namespace) -> dict[str, Any]:
    import torch

    model, opt, nbytes = build_state(a.size_mb)
    saver = make_saver(variant, a, model, opt)
    server = a.server_pid if variant.endswith("s3") else None
    out: dict[str, Any] = {"state_bytes": nbytes}
    # 1. memory of the first save (fresh process)
    with peak_rss() as mem:
        saver.save()
        while not saver.durable():
            time.sleep(0.001)
        saver.wait()
    out["mem_save_extra"] = mem["peak"] - mem["base"]
    # 2. an idle commit: time until durable, CPU, blocking time vs the copy floor
    floor = floor_copy(model, opt)
    out["floor_s"] = min(floor() for _ in range(2))
    cpu0, srv0, t0 = time.process_time(), cpu_of(server) if server else 0.0, time.perf_counter()
    saver.save()
    out["block_s"] = time.perf_counter() - t0
    while not saver.durable():
        time.sleep(0.001)
    out["durable_idle_s"] = time.perf_counter() - t0
    saver.wait()
    out["client_cpu_s"] = time.process_time() - cpu0
    out["server_cpu_s"] = (cpu_of(server) - srv0) if server else 0.0
    if isinstance(saver, ReferenceSaver):  # upload_file alone, of a payload of the same size
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, saver.local)
        t0 = time.perf_counter()
        saver.client.upload_file(saver.local, "bench", f"{a.size_mb:g}/raw.pt")
        out["upload_file_s"] = time.perf_counter() - t0
        os.unlink(saver.local)
    # 3. lost loop time, all cores and one thread
    cores = torch.get_num_threads()
    for label, threads in (("all", cores), ("one", 1)):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < 0.3 or n < 2:
            train_step(model, opt)
            n += 1
        per_step = (time.perf_counter() - t0) / n
        steps = max(3, int(max(a.segment_s, 1.3 * out["durable_idle_s"]) / per_step) + 1)
        lost, durable = [], []
        for _ in range(a.pairs):
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(model, opt)
            plain = time.perf_counter() - t0
            t0 = time.perf_counter()
            saver.save()
            done_at = None
            for _ in range(steps):
                train_step(model, opt)
                if done_at is None and saver.durable():
                    done_at = time.perf_counter() - t0
            with_save = time.perf_counter() - t0
            saver.wait()
            if done_at is None:  # the segment ended first: it is durable now
                done_at = time.perf_counter() - t0
            lost.append(with_save - plain)
            durable.append(done_at)
        out[f"lost_{label}_s"] = statistics.median(lost)
        out[f"durable_{label}_s"] = statistics.median(durable)
        out[f"segment_{label}_s"] = plain
    torch.set_num_threads(cores)
    saver.close()
    return out


def latest_payload(variant: str, a: argparse.Namespace) -> str:
    from vastkit.checkpoint import CheckpointManager

    tag = f"{a.size_mb:g}"
    url = f"s3://bench/{tag}/vastkit" if "s3" in variant else f"file://{a.dir}/{tag}/vastkit"
    options = s3_options(a.endpoint) if "s3" in variant else {}
    with CheckpointManager(url, storage_options=options) as mgr:
        info = mgr.latest()
        assert info is not None
        return f"{info.url}/{info.files[0]}"


def touch(obj: Any) -> float:
    """Read every tensor (so memory-mapped pages count as they would in training)."""
    import torch

    total = 0.0
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and obj.numel():
            total += float(obj.view(-1)[:: max(1, 4096 // obj.element_size())].sum())
        return total
    if isinstance(obj, dict):
        return sum(touch(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(touch(v) for v in obj)
    return total


def restore_worker(variant: str, a: argparse.Namespace) -> dict[str, Any]:
    import io

    import torch

    from vastkit.checkpoint import CheckpointManager

    payload = latest_payload(variant, a)  # (looked up before measuring)
    tag = f"{a.size_mb:g}"
    server = a.server_pid if variant.endswith("s3") else None
    srv0 = cpu_of(server) if server else 0.0
    if variant == "restore-raw-s3":
        client = s3_client(a.endpoint)
        key = payload.removeprefix("s3://bench/")
    mgr = None  # the client or manager is made before the clock starts, for both
    if variant == "restore-vastkit-s3":
        mgr = CheckpointManager(f"s3://bench/{tag}/vastkit", storage_options=s3_options(a.endpoint))
    elif variant == "restore-vastkit-file":
        mgr = CheckpointManager(f"file://{a.dir}/{tag}/vastkit")
    with peak_rss() as mem:
        t0 = time.perf_counter()
        if mgr is not None:
            state = mgr.load()
        elif variant == "restore-raw-s3":
            data = client.get_object(Bucket="bench", Key=key)["Body"].read()
            state = torch.load(io.BytesIO(data), weights_only=True)
            del data
        else:
            state = torch.load(payload.removeprefix("file://"), weights_only=True)
        touch(state)
        seconds = time.perf_counter() - t0
    if mgr is not None:
        mgr.close()
    return {
        "restore_s": seconds,
        "mem_restore_extra": mem["peak"] - mem["base"],
        "server_cpu_s": (cpu_of(server) - srv0) if server else 0.0,
    }


# --------------------------------------------------------------------------------------------
# the driver


def start_moto() -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys, logging, threading\n"
        "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
        "from moto.server import ThreadedMotoServer\n"
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
        "s.start()\n"
        "h, p = s.get_host_and_port()\n"
        "print(f'http://{h}:{p}', flush=True)\n"
        "sys.stdin.read()\n"
        "s.stop()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    s3_client(endpoint).create_bucket(Bucket="bench")
    return proc, endpoint


def run_worker(variant: str, size_mb: float, ctx: dict[str, Any]) -> dict[str, Any]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        variant,
        "--size-mb",
        str(size_mb),
        "--endpoint",
        ctx["endpoint"],
        "--server-pid",
        str(ctx["server_pid"]),
        "--dir",
        ctx["dir"],
        "--pairs",
        str(ctx["pairs"]),
        "--segment-s",
        str(ctx["segment_s"]),
    ]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # the vastkit under test: this checkout (or --src, for before/after runs), never an
        # installed copy
        "PYTHONPATH": ctx["src"],
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {variant} ({size_mb} MB) failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def mm(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values)}


def summarise(size_mb: float, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """min/median of every figure per variant, ratios and the verdicts against issue 19."""
    fig: dict[str, dict[str, dict[str, float]]] = {}
    for variant, rows in runs.items():
        fig[variant] = {k: mm([r[k] for r in rows]) for k in rows[0]}
    fig["vastkit-s3"]["mb_per_s"] = {
        k: fig["vastkit-s3"]["state_bytes"]["min"] / 2**20 / v
        for k, v in fig["vastkit-s3"]["durable_idle_s"].items()
    }
    v3, r3, vf, df = (fig[k] for k in SAVE_VARIANTS)
    rv3, rr3, rvf, rrf = (fig[k] for k in RESTORE_VARIANTS)
    nbytes = v3["state_bytes"]["min"]

    def ratio(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: a[k] / b[k] if b[k] else float("inf") for k in ("min", "median")}

    def copies(x: dict[str, float]) -> dict[str, float]:
        return {k: x[k] / nbytes for k in ("min", "median")}

    payload_bytes = nbytes  # close enough for MB/s (torch.save adds a few KiB)
    checks: list[dict[str, Any]] = []

    def check(name: str, value: dict[str, float], limit: float, *, higher: bool = False) -> None:
        met = value["median"] >= limit if higher else value["median"] <= limit
        checks.append(
            {"target": name, "value": value, "limit": limit, "higher": higher, "met": met}
        )

    lost_ref = r3["lost_all_s"]
    check("lost loop time, all cores, vs reference (S3)", ratio(v3["lost_all_s"], lost_ref), 1.0)
    check(
        "lost loop time, 1 thread, vs reference (S3)",
        ratio(v3["lost_one_s"], r3["lost_one_s"]),
        0.3,
    )
    check("save() blocking vs copy floor (S3)", ratio(v3["block_s"], v3["floor_s"]), 1.3)
    check(
        "time until durable vs reference (S3, training)",
        ratio(v3["durable_all_s"], r3["durable_all_s"]),
        1.0,
    )
    check(
        "time until durable vs DCP async_save (file://, training)",
        ratio(vf["durable_all_s"], df["durable_all_s"]),
        1.2,
    )
    check(
        "client CPU per commit vs reference (S3)",
        ratio(v3["client_cpu_s"], r3["client_cpu_s"]),
        1.0,
    )
    check("restore vs one GET + torch.load (S3)", ratio(rv3["restore_s"], rr3["restore_s"]), 1.1)
    check("restore vs torch.load (file://)", ratio(rvf["restore_s"], rrf["restore_s"]), 1.1)
    check("extra peak memory, save (S3), copies", copies(v3["mem_save_extra"]), 1.2)
    check("extra peak memory, save (file://), copies", copies(vf["mem_save_extra"]), 1.2)
    check("extra peak memory, restore (S3), copies", copies(rv3["mem_restore_extra"]), 1.1)
    check("extra peak memory, restore (file://), copies", copies(rvf["mem_restore_extra"]), 1.1)
    # commit throughput (serialise + hash + upload + commit, idle) vs upload_file alone
    check(
        "S3 commit speed vs upload_file of the same bytes",
        ratio(r3["upload_file_s"], v3["durable_idle_s"]),
        0.9,
        higher=True,
    )
    return {
        "size_mb": size_mb,
        "state_bytes": nbytes,
        "payload_mb": payload_bytes / 2**20,
        "figures": fig,
        "checks": checks,
        # the row the preemption benchmarks read (S3, medians)
        "backend": "s3 (moto)",
        # (a lost time within the noise can come out below zero: none is counted then)
        "vastkit_stall_s": max(0.0, v3["lost_all_s"]["median"]),
        "vastkit_commit_s": v3["durable_all_s"]["median"],
        "vastkit_restore_s": rv3["restore_s"]["median"],
        "reference_stall_s": max(0.0, r3["lost_all_s"]["median"]),
        "raw_restore_s": rr3["restore_s"]["median"],
        "targets": {c["target"]: c["met"] for c in checks},
    }


def rows_of(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Printable rows: figure, value (min / median), verdict."""
    out: list[tuple[str, str, str]] = []
    for size in result["sizes"]:
        f = size["figures"]
        mb = f"{size['state_bytes'] / 1e6:.0f} MB"

        def pair(
            variant: str, key: str, scale: float = 1.0, fmt: str = "{:.2f}", f: dict[str, Any] = f
        ) -> str:
            x = f[variant][key]
            return f"{fmt.format(x['min'] * scale)}/{fmt.format(x['median'] * scale)}"

        mib = 1 / 2**20
        out += [
            (
                f"{mb}: lost per save, all cores: vastkit | ref (s)",
                f"{pair('vastkit-s3', 'lost_all_s')} | {pair('reference-s3', 'lost_all_s')}",
                "",
            ),
            (
                f"{mb}: lost per save, 1 thread: vastkit | ref (s)",
                f"{pair('vastkit-s3', 'lost_one_s')} | {pair('reference-s3', 'lost_one_s')}",
                "",
            ),
            (
                f"{mb}: save() blocks | copy floor (ms)",
                f"{pair('vastkit-s3', 'block_s', 1e3, '{:.0f}')} | "
                f"{pair('vastkit-s3', 'floor_s', 1e3, '{:.0f}')}",
                "",
            ),
            (
                f"{mb}: durable, training: vastkit | ref (S3, s)",
                f"{pair('vastkit-s3', 'durable_all_s')} | {pair('reference-s3', 'durable_all_s')}",
                "",
            ),
            (
                f"{mb}: durable, training: vastkit | DCP (file://, s)",
                f"{pair('vastkit-file', 'durable_all_s')} | {pair('dcp-file', 'durable_all_s')}",
                "",
            ),
            (
                f"{mb}: idle commit: vastkit | ref (S3, s)",
                f"{pair('vastkit-s3', 'durable_idle_s')} | "
                f"{pair('reference-s3', 'durable_idle_s')}",
                "",
            ),
            (
                f"{mb}: client CPU/commit: vastkit | ref (s)",
                f"{pair('vastkit-s3', 'client_cpu_s')} | {pair('reference-s3', 'client_cpu_s')}",
                "",
            ),
            (
                f"{mb}: server CPU/commit: vastkit | ref (s)",
                f"{pair('vastkit-s3', 'server_cpu_s')} | {pair('reference-s3', 'server_cpu_s')}",
                "",
            ),
            (
                f"{mb}: restore S3: vastkit | GET+load (s)",
                f"{pair('restore-vastkit-s3', 'restore_s')} | "
                f"{pair('restore-raw-s3', 'restore_s')}",
                "",
            ),
            (
                f"{mb}: restore file: vastkit | torch.load (s)",
                f"{pair('restore-vastkit-file', 'restore_s')} | "
                f"{pair('restore-raw-file', 'restore_s')}",
                "",
            ),
            (
                f"{mb}: extra mem save: vastkit S3 | ref S3 | vastkit file | DCP (MiB)",
                " | ".join(pair(v, "mem_save_extra", mib, "{:.0f}") for v in SAVE_VARIANTS),
                "",
            ),
            (
                f"{mb}: extra mem restore: S3 vastkit | raw, file vastkit | raw (MiB)",
                " | ".join(pair(v, "mem_restore_extra", mib, "{:.0f}") for v in RESTORE_VARIANTS),
                "",
            ),
        ]
        for c in size["checks"]:
            v = c["value"]
            if c["met"]:
                verdict = "met"
            else:
                by = c["limit"] / v["median"] if c["higher"] else v["median"] / c["limit"]
                verdict = f"MISSED by {by:.2f}x"
            sign = ">=" if c["higher"] else "<="
            out.append(
                (
                    f"{mb}: {c['target']}",
                    f"{v['min']:.2f}/{v['median']:.2f}x",
                    f"{sign} {c['limit']}: {verdict}",
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a 16 MB state, 2 rounds (CI)")
    parser.add_argument("--sizes-mb", default=None, help="comma-separated state sizes")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", dest="json_path", help="also write the results here")
    parser.add_argument(
        "--src", default=os.path.dirname(HERE), help="the folder holding the vastkit to measure"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size-mb", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--segment-s", type=float, default=1.0, help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.worker:
        import logging
        import warnings

        warnings.simplefilter("ignore")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        work = restore_worker if a.worker.startswith("restore-") else save_worker
        print(json.dumps(work(a.worker, a)))
        return 0
    sizes = [float(s) for s in (a.sizes_mb or ("16" if a.quick else "63,604")).split(",")]
    rounds = a.rounds or (2 if a.quick else 3)
    started = time.perf_counter()
    moto, endpoint = start_moto()
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="vastkit-bench-") as tmp:
            ctx = {
                "endpoint": endpoint,
                "server_pid": moto.pid,
                "dir": tmp,
                "pairs": 1 if a.quick else 2,
                "segment_s": 0.2 if a.quick else 1.0,
                "src": os.path.abspath(a.src),
            }
            for size in sizes:
                runs: dict[str, list[dict[str, Any]]] = {}
                for r in range(rounds):
                    for group in (SAVE_VARIANTS, RESTORE_VARIANTS):
                        order = group[r % len(group) :] + group[: r % len(group)]
                        for variant in order:
                            runs.setdefault(variant, []).append(run_worker(variant, size, ctx))
                results.append(summarise(size, runs))
                print(
                    f"state {size:g} MB done at {time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                )
    finally:
        assert moto.stdin is not None
        moto.stdin.close()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
            moto.wait()
    import torch

    doc = {
        "rounds": rounds,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "sizes": results,
        # the rows the runner and the preemption benchmarks read: the largest size
        "results": [results[-1]],
        "seconds": time.perf_counter() - started,
    }
    for figure, value, note in rows_of(doc):
        print(f"{figure:<66} {value:>28}  {note}".rstrip())
    if a.json_path:
        with open(a.json_path, "w") as fh:
            json.dump(doc, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

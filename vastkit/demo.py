"""``vastkit demo``: a fault-tolerant training job on a local Vast marketplace, start to finish.

:func:`run_demo` needs no account and no cloud. It starts

- the Vast emulator (:mod:`vastkit.emulator`) on loopback, whose instances run their onstart
  script as local processes, exactly as a Vast container runs it;
- an S3 store: moto's S3 server on 127.0.0.1 (a local folder when moto is not installed);

then runs a real small PyTorch training job (:mod:`vastkit._demo_train`) through
:func:`vastkit.run_job` on an interruptible (bid) profile. Part way through, a competitor
outbids the instance; the orchestrator raises the bid up to the profile's cap, gives the machine
up, rents another one, and the worker there resumes from the last committed checkpoint. At the
end it prints what each attempt cost and the cost report, and it leaves nothing running.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs

from vastkit.api.client import Client
from vastkit.budget import load_budgets
from vastkit.cost_report import cost_report
from vastkit.emulator import Emulator, ProcessRunner, Timings
from vastkit.jobs import Job, JobEvent, JobResult, JobTimeouts, run_job
from vastkit.ledger import Ledger
from vastkit.money import worst_case_usd
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile
from vastkit.rundir import CheckpointSettings, RunDir

__all__ = ["DEMO_PROFILE", "DemoOutcome", "run_demo", "s3_store"]

DEMO_PROFILE = GpuProfile(
    name="demo-interruptible",
    gpu_name="RTX_3090",
    max_dph=0.20,
    max_duration_hours=1,
    disk_gb=16,
    rental="interruptible",
    description="one RTX 3090, interruptible (bid), at most $0.20/h with storage",
)
"""The profile the demo rents: a cheap interruptible GPU from the emulator's catalog."""

DEMO_BUDGETS = """\
# the demo's budgets.yaml
projects:
  demo:
    limit_usd: 0.50
    period: total
    warn_at: [0.5, 0.8]
"""
"""The budget the demo runs under: the ``demo`` project may spend 50 cents in all."""


@attrs.frozen(kw_only=True)
class DemoOutcome:
    """What :func:`run_demo` returns."""

    result: JobResult
    """The job's result."""
    resumed_steps: tuple[int, ...]
    """The checkpoint step each relaunched attempt resumed from (read from its log)."""
    leaked_instances: int
    """Instances still live in the emulator after the job (always 0 unless something broke)."""
    seconds: float
    """Wall-clock seconds the demo took."""
    ledger_usd: float = 0.0
    """What the ledger counted the demo's project spent."""
    bill_usd: float = 0.0
    """What the emulator billed the account (the exact bill, before Vast's $0.001 rounding)."""

    @property
    def ok(self) -> bool:
        """The job succeeded after at least one preemption, resumed, and nothing leaked."""
        return (
            self.result.ok
            and self.result.preemptions >= 1
            and bool(self.resumed_steps)
            and self.leaked_instances == 0
        )


@contextlib.contextmanager
def s3_store(prefer_s3: bool = True) -> Iterator[tuple[str, dict[str, Any], str]]:
    """An object store for the demo: moto's S3 server on loopback, else a temporary folder.

    Yields:
        ``(store_url, storage_options, description)``.
    """
    if prefer_s3:
        try:
            import boto3
            from moto.server import ThreadedMotoServer
        except ImportError:
            pass
        else:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            try:
                host, port = server.get_host_and_port()
                endpoint = f"http://{host}:{port}"
                bucket = f"vastkit-demo-{uuid.uuid4().hex[:8]}"
                s3 = boto3.client(
                    "s3",
                    endpoint_url=endpoint,
                    aws_access_key_id="demo",
                    aws_secret_access_key="demo",
                    region_name="us-east-1",
                )
                s3.create_bucket(Bucket=bucket)
                s3.close()
                options: dict[str, Any] = {
                    "key": "demo",
                    "secret": "demo",
                    "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                }
                yield f"s3://{bucket}/runs", options, f"S3 (moto server at {endpoint})"
            finally:
                server.stop()
            return
    folder = Path(tempfile.mkdtemp(prefix="vastkit-demo-store-"))
    try:
        yield folder.as_uri(), {}, f"a local folder ({folder})"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Narrator:
    """Turns job events into lines a new user can follow, and steers the emulator."""

    def __init__(self, emu: Emulator, out: IO[str], *, preempt_at_step: int, t0: float) -> None:
        self.emu = emu
        self.out = out
        self.preempt_at = preempt_at_step
        self.t0 = t0
        self.preempted = False

    def say(self, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.t0:5.1f}s] {text}\n")
        self.out.flush()

    def __call__(self, event: JobEvent) -> None:
        kind = event.kind
        if kind in (
            "started",
            "offer_chosen",
            "created",
            "running",
            "worker_ready",
            "checkpoint",
            "outbid",
            "bid_raised",
            "attempt_ended",
            "destroyed",
            "relaunching",
            "host_lost",
            "heartbeat_stale",
            "offer_failed",
            "budget_stop",
            "finished",
        ):
            self.say(event.message)
        if (
            kind == "checkpoint"
            and not self.preempted
            and event.step is not None
            and event.step >= self.preempt_at
            and event.instance_id is not None
        ):
            self.preempted = True
            self.say(
                ">>> steering the emulator: a competitor bids $5.00/h for this machine, far "
                "above our cap - the instance will be outbid"
            )
            self.emu.preempt(event.instance_id, price=5.0)


def run_demo(
    *,
    out: IO[str] | None = None,
    seed: int = 0,
    total_steps: int = 60,
    step_seconds: float = 0.1,
    checkpoint_every: int = 10,
    preempt_at_step: int = 20,
    prefer_s3: bool = True,
    workdir: str | Path | None = None,
) -> DemoOutcome:
    """Run the demo and print what happens at each step.

    Args:
        out: Where the narration goes (default: standard output).
        seed: The emulator's seed (its catalog of offers).
        total_steps: Training steps in all.
        step_seconds: Extra seconds per training step.
        checkpoint_every: Checkpoint every this many steps.
        preempt_at_step: Outbid the first instance once a checkpoint at this step or later is
            committed.
        prefer_s3: Use moto's S3 server when installed (else a local folder).
        workdir: A folder for the emulator's containers and the demo's ledger (default: a
            temporary one, removed afterwards).

    Returns:
        The outcome (``.ok`` tells whether everything went as described).
    """
    stream = out or sys.stdout
    started = time.monotonic()
    own_dir = workdir is None
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="vastkit-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    narrator: _Narrator | None = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_quiet_logs())
            store_url, options, store_text = stack.enter_context(s3_store(prefer_s3))
            runner = ProcessRunner(root / "containers", grace_s=10.0)
            emu = stack.enter_context(
                Emulator(
                    seed,
                    offers=400,
                    runner=runner,
                    timings=Timings(provision_s=1.0, loading_s=2.0),
                )
            )
            emu.serve()
            narrator = _Narrator(emu, stream, preempt_at_step=preempt_at_step, t0=started)
            say = narrator.say
            budgets = load_budgets(DEMO_BUDGETS)
            limit = budgets.projects["demo"].limit_usd
            _introduce(
                say,
                emu_url=emu.url,
                store_text=store_text,
                checkpoint_every=checkpoint_every,
                total_steps=total_steps,
                limit=limit,
            )
            client = stack.enter_context(Client(emu.api_key, base_url=emu.url))
            ledger = stack.enter_context(Ledger(root / "ledger.db"))
            job = _demo_job(
                store_url,
                options,
                total_steps=total_steps,
                step_seconds=step_seconds,
                checkpoint_every=checkpoint_every,
            )
            result = run_job(
                job,
                client=client,
                ledger=ledger,
                on_event=narrator,
                progress=False,
                budgets=budgets,
            )
            leaked = len(emu.instances)
            rundir = RunDir(result.run_url, options)
            resumed = tuple(_resumed_steps(rundir, result))
            say("")
            say(result.summary())
            for attempt, step in zip(result.attempts[1:], resumed, strict=False):
                say(f"attempt {attempt.attempt} resumed from checkpoint step {step}")
            say("")
            say("cost report (from the ledger, priced from the rented contracts):")
            stream.write(str(cost_report(ledger, by="job")) + "\n")
            say(f"budget: project 'demo' spent ${ledger.spend(project='demo'):.4f} of ${limit:.2f}")
            ledger_usd = ledger.spend(project="demo")
            bill_usd = emu.user.total_spend
            gap = (ledger_usd - bill_usd) / bill_usd * 100 if bill_usd else 0.0
            say(
                f"emulator: {leaked} instance(s) still live; the account was billed "
                f"${bill_usd:.6f}, the ledger counted ${ledger_usd:.6f} ({gap:+.1f} %)"
            )
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
    seconds = time.monotonic() - started
    outcome = DemoOutcome(
        result=result,
        resumed_steps=resumed,
        leaked_instances=leaked,
        seconds=seconds,
        ledger_usd=ledger_usd,
        bill_usd=bill_usd,
    )
    stream.write(
        ("demo OK" if outcome.ok else "demo FAILED")
        + f": {result.status}, {result.preemptions} preemption(s), resumed from "
        f"{list(resumed)}, {leaked} leaked, {seconds:.1f} s\n"
    )
    stream.flush()
    return outcome


def _introduce(
    say: Callable[[str], None],
    *,
    emu_url: str,
    store_text: str,
    checkpoint_every: int,
    total_steps: int,
    limit: float,
) -> None:
    """The demo's opening lines: the marketplace, the store, the profile and the budget."""
    say("vastkit demo: a PyTorch job that survives losing its GPU")
    say(f"  marketplace: the Vast emulator at {emu_url} (its instances run locally)")
    say(f"  store:       {store_text}")
    say(
        f"  profile:     {DEMO_PROFILE.name} - {DEMO_PROFILE.description}; "
        f"checkpoint every {checkpoint_every} steps, {total_steps} steps in all"
    )
    say(
        f"  budget:      project 'demo' may spend ${limit:.2f} in all (budgets.yaml); "
        f"the profile's worst case (${worst_case_usd(DEMO_PROFILE):.2f}) must fit before "
        "anything is rented, and every poll checks the spend"
    )


def _demo_job(
    store_url: str,
    options: dict[str, Any],
    *,
    total_steps: int,
    step_seconds: float,
    checkpoint_every: int,
) -> Job:
    """The demo's training job: fast deadlines, a raise-then-move outbid policy, a $1 cap."""
    return Job(
        name="demo-mlp",
        command=(sys.executable, "-m", "vastkit._demo_train"),
        profile=DEMO_PROFILE,
        store_url=store_url,
        storage_options=options,
        env={"DEMO_TOTAL_STEPS": str(total_steps), "DEMO_STEP_SECONDS": str(step_seconds)},
        checkpoint=CheckpointSettings(every_steps=checkpoint_every, keep_last=2),
        project="demo",
        outbid=OutbidPolicy.raise_bid(then_wait_s=2.0),
        timeouts=JobTimeouts(
            poll_interval=1.0,
            provisioning=60,
            loading=60,
            running=120,
            worker_ready=90,
            heartbeat_stale=60,
            host_lost_grace=10,
            stop_grace=15,
            heartbeat_interval=1.0,
            worker_grace=10,
            orchestrator_timeout=120,
            log_flush_seconds=1.0,
            relaunch_delay=1.0,
            destroy=60,
        ),
        max_cost_usd=1.0,
    )


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Keep the moto server's request lines and vastkit's warnings out of the narration.

    Only when the application configured no logging: a ``NullHandler`` on ``vastkit`` and
    ``werkzeug`` (moto's HTTP server) for the duration of the demo.
    """
    added: list[tuple[logging.Logger, logging.Handler]] = []
    for name in ("vastkit", "werkzeug"):
        log = logging.getLogger(name)
        if not log.hasHandlers():
            handler: logging.Handler = logging.NullHandler()
            log.addHandler(handler)
            added.append((log, handler))
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)
    try:
        yield
    finally:
        werkzeug.setLevel(level)
        for log, handler in added:
            log.removeHandler(handler)


def _resumed_steps(rundir: RunDir, result: JobResult) -> list[int]:
    """The checkpoint steps the attempts after the first resumed from, read from their logs."""
    steps: list[int] = []
    marker = "resumed from checkpoint step "
    for attempt in result.attempts[1:]:
        text = rundir.read_log(attempt.attempt).decode("utf-8", errors="replace")
        for line in text.splitlines():
            if marker in line:
                steps.append(int(line.split(marker, 1)[1].split()[0]))
                break
    return steps


if __name__ == "__main__":  # pragma: no cover - ``python -m vastkit.demo``
    sys.exit(0 if run_demo().ok else 1)

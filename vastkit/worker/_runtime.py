"""The worker process: one attempt of a job, from ``job.json`` to ``result.json``.

It imports only :mod:`vastkit.rundir` (plus the standard library and httpx for the
self-destroy call): never the account client, and the account API key never reaches the host.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from vastkit._documents import converter as document_converter
from vastkit.clock import Clock, SystemClock
from vastkit.errors import JobError
from vastkit.retry import RetryPolicy, retry_call
from vastkit.rundir import (
    AttemptLimits,
    AttemptResult,
    AttemptSettings,
    Heartbeat,
    JobSpec,
    OrchestratorBeat,
    Phase,
    ResultStatus,
    RunDir,
    unpack_bundle,
)
from vastkit.worker._launch import LaunchPlan, plan_launch, read_rank_failure, signal_command
from vastkit.worker._progress import ProgressReader
from vastkit.worker._protocol import (
    ENV_ATTEMPT,
    ENV_CHECKPOINT_URL,
    ENV_INPUTS_DIR,
    ENV_RUN_URL,
    ENV_STATUS_DIR,
    ENV_STORAGE_OPTIONS,
    ENV_WORKER_PID,
    JOB_FILE,
    STOP_FILE,
    write_json_atomic,
)
from vastkit.worker._transfers import fetch_inputs, upload_job_outputs

__all__ = [
    "SELF_DESTROY_STATUSES",
    "LivenessWatch",
    "Worker",
    "attempt_outcome",
    "backstop_reason",
    "destroy_self",
    "limits_summary",
    "main",
    "read_job",
]

logger = logging.getLogger("vastkit.worker")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_WORKER_ERROR = 2

SELF_DESTROY_STATUSES = frozenset(
    {ResultStatus.ABANDONED, ResultStatus.TIMED_OUT, ResultStatus.BUDGET_EXCEEDED}
)
"""The attempt ends that the worker's backstop began: it destroys its own instance after them."""


def backstop_reason(
    *,
    now: float,
    deadline: float | None,
    silent_for: float,
    timeout: float | None,
    limits: AttemptLimits | None = None,
    margin: float = 0.0,
    away_limit: float | None = None,
) -> tuple[ResultStatus, str] | None:
    """Decide whether the self-destroy backstop fires.

    An orchestrator that is silent (a laptop asleep, a lost network) does not end the attempt
    by itself: the job's own limits do. The attempt stops when the job's deadline passes, when
    its cost (at its rate since its instance was created) would pass what it may spend within
    ``margin`` seconds, or when the silence passes ``away_limit``. Only an attempt bounded by
    neither a deadline nor a cost cap stops after ``timeout`` seconds of silence, as before:
    something must bound what it bills.

    Args:
        now: The worker's current time (Unix seconds, the clock the deadline is written in).
        deadline: The job's max-duration deadline (absolute), or ``None``.
        silent_for: Seconds since the worker last saw ``orchestrator.json`` change.
        timeout: ``AttemptSettings.orchestrator_timeout``.
        limits: What the attempt may spend, or ``None``.
        margin: Seconds of spend to keep in hand (the grace period plus a check interval), so
            the stop ends before the cap, not after it.
        away_limit: ``AttemptSettings.away_limit``.

    Returns:
        ``(status, reason)`` when the attempt must stop and the instance destroy itself, else
        ``None``. The deadline wins, then the cost cap, then the silence.
    """
    if deadline is not None and now >= deadline:
        late = now - deadline
        return ResultStatus.TIMED_OUT, f"the job's max-duration deadline passed {late:.0f} s ago"
    if limits is not None and limits.cost_at(now + margin) >= limits.max_cost_usd:
        return ResultStatus.BUDGET_EXCEEDED, (
            f"the attempt has cost ${limits.cost_at(now):.4f} at {limits.rate_dph:g} $/h; "
            f"it may spend ${limits.max_cost_usd:.4f}"
        )
    if away_limit is not None and silent_for >= away_limit:
        return ResultStatus.ABANDONED, (
            f"no sign of the orchestrator for {silent_for:.0f} s (away_limit {away_limit:g} s)"
        )
    unbounded = deadline is None and limits is None
    if unbounded and timeout is not None and silent_for >= timeout:
        return (
            ResultStatus.ABANDONED,
            f"no sign of the orchestrator for {silent_for:.0f} s (backstop timeout {timeout:g} s) "
            "and the job has no deadline or cost cap to run on alone",
        )
    return None


class LivenessWatch:
    """Tracks when ``orchestrator.json`` last changed, on the worker's own clock.

    The orchestrator's timestamps are never compared with the worker's clock (the machines'
    clocks may disagree): any change of the object counts as a sign of life. Until the first
    change is seen, silence counts from the worker's start, so an orchestrator that died before
    the worker started is noticed after at most twice the timeout.

    Args:
        started_at: The worker's start time.
    """

    def __init__(self, started_at: float) -> None:
        self._last_key: tuple[int, float] | None = None
        self._last_change = started_at
        self._away = False

    def observe(self, beat: OrchestratorBeat | None, now: float) -> None:
        """Record what ``orchestrator.json`` holds now."""
        if beat is None:
            return
        key = (beat.seq, beat.time)
        if key != self._last_key:
            self._last_key = key
            self._last_change = now

    def silent_for(self, now: float) -> float:
        """Seconds since the last sign of life."""
        return max(0.0, now - self._last_change)

    def away_change(self, silent_for: float, timeout: float | None) -> str | None:
        """A note when the orchestrator just went away (silent past ``timeout``) or came back."""
        away = timeout is not None and silent_for >= timeout
        was, self._away = self._away, away
        if away and not was:
            return (
                f"no sign of the orchestrator for {silent_for:.0f} s: running on within the "
                "job's limits until it is back"
            )
        if was and not away:
            return "the orchestrator is back"
        return None


def limits_summary(settings: AttemptSettings, limits: AttemptLimits | None, now: float) -> str:
    """The worker's note of what bounds the attempt while the orchestrator is away."""
    parts = []
    if settings.deadline is not None:
        parts.append(f"deadline in {settings.deadline - now:.0f} s")
    if limits is not None:
        parts.append(f"cost cap ${limits.max_cost_usd:.4f} at {limits.rate_dph:g} $/h")
    if settings.away_limit is not None:
        parts.append(f"orchestrator silence of {settings.away_limit:g} s")
    if not parts and settings.orchestrator_timeout is not None:
        parts.append(f"orchestrator silence of {settings.orchestrator_timeout:g} s")
    return "backstop: " + (", ".join(parts) if parts else "none (nothing bounds the cost)")


def destroy_self(
    *,
    base_url: str,
    environ: Mapping[str, str],
    clock: Clock,
    http: httpx.Client | None = None,
    tries: int = 3,
) -> bool:
    """Destroy the instance this worker runs on with its own per-instance key.

    Sends ``DELETE {base_url}/api/v0/instances/{CONTAINER_ID}/`` with
    ``Authorization: Bearer $CONTAINER_API_KEY`` (the key Vast gives each container; never the
    account key). The key never appears in a log line.

    Returns:
        True when Vast confirmed (2xx) or the instance is already gone (404).
    """
    container_id = environ.get("CONTAINER_ID", "").strip()
    key = environ.get("CONTAINER_API_KEY", "").strip()
    if not container_id or not key:
        pairs = (("CONTAINER_ID", container_id), ("CONTAINER_API_KEY", key))
        missing = [name for name, value in pairs if not value]
        logger.error("cannot destroy this instance: %s not set", " and ".join(missing))
        return False
    url = f"{base_url.rstrip('/')}/api/v0/instances/{container_id}/"
    client = http or httpx.Client(timeout=30.0)
    tried = [0]

    def delete() -> httpx.Response:
        tried[0] += 1
        try:
            response = client.delete(url, headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            logger.warning("self-destroy try %d/%d failed: %s", tried[0], tries, type(exc).__name__)
            raise
        if not (response.is_success or response.status_code == 404):
            logger.warning(
                "self-destroy try %d/%d of instance %s answered HTTP %d",
                tried[0],
                tries,
                container_id,
                response.status_code,
            )
            raise _Refused(response.status_code)
        return response

    try:
        response = retry_call(
            delete,
            policy=RetryPolicy(attempts=tries, initial_delay=2.0, multiplier=2.0),
            clock=clock,
            retry_if=lambda exc: isinstance(exc, httpx.HTTPError | _Refused),
            what="self-destroy",
        )
    except (httpx.HTTPError, _Refused):
        logger.error("could not destroy instance %s: it keeps costing money", container_id)
        return False
    finally:
        if http is None:
            client.close()
    logger.warning(
        "self-destroy of instance %s accepted (HTTP %d)", container_id, response.status_code
    )
    return True


class _Refused(Exception):
    """The self-destroy call was answered, but not with success or 404."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def attempt_outcome(
    exit_code: int, stop_status: ResultStatus | None, stop_reason: str | None
) -> tuple[ResultStatus, str]:
    """How an attempt ended, from the command's exit code and the stop the worker began (if any).

    A stop the worker began (preempted, cancelled, timed out, abandoned) wins over the exit code;
    otherwise 0 is success and anything else a failure.
    """
    if stop_status is not None:
        return stop_status, stop_reason or "stopped"
    if exit_code == 0:
        return ResultStatus.SUCCEEDED, "the command exited 0"
    return ResultStatus.FAILED, f"the command exited with {_describe_exit(exit_code)}"


class _Output:
    """The command's output: echoed to our stdout and buffered for the store."""

    def __init__(self, echo: IO[bytes] | None) -> None:
        self._echo = echo
        self._lock = threading.Lock()
        self._buffer = bytearray()

    def add(self, data: bytes) -> None:
        with self._lock:
            self._buffer += data
        if self._echo is not None:
            try:
                self._echo.write(data)
                self._echo.flush()
            except (OSError, ValueError):
                pass

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def take(self) -> bytes:
        with self._lock:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data

    def put_back(self, data: bytes) -> None:
        with self._lock:
            self._buffer[:0] = data

    def pump(self, stream: IO[bytes]) -> None:
        fd = stream.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.add(data)


class Worker:
    """One attempt of a job on this host.

    Args:
        run_url: The run directory.
        attempt: The attempt number.
        storage_options: fsspec options for the run directory.
        workdir: Where to unpack the code bundle and run the command (default: a fresh temporary
            directory when there is a bundle, else the current directory).
        environ: The environment the command inherits, and where ``CONTAINER_ID`` and
            ``CONTAINER_API_KEY`` are read (default: ``os.environ``).
        clock: The clock for every interval, grace period and deadline.
        http: The HTTP client for the self-destroy call.
        echo: Where the command's output is echoed (default: this process's stdout).
        tick: Seconds between looks at the command, the signals and the timers.
        inputs_dir: Where inputs are fetched, under ``<run_id>/`` (default:
            ``$VASTKIT_INPUTS_DIR``, else ``vastkit-inputs`` in the temporary directory). A
            container that restarts finds what it fetched before and does not fetch it again.
    """

    def __init__(
        self,
        run_url: str,
        attempt: int,
        *,
        storage_options: Mapping[str, Any] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        http: httpx.Client | None = None,
        echo: IO[bytes] | None = None,
        tick: float = 0.2,
        inputs_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.storage_options = dict(storage_options or {})
        self.rundir = RunDir(run_url, self.storage_options, clock=self.clock)
        self.attempt = attempt
        self.environ = dict(os.environ if environ is None else environ)
        self.workdir = Path(workdir) if workdir is not None else None
        self.http = http
        self.tick = tick
        self._output = _Output(echo if echo is not None else sys.stdout.buffer)
        self._stop_requested = threading.Event()
        self._stop_signal: str | None = None
        self._stop_signal_at: float | None = None
        self._phase = Phase.STARTING
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop_status: ResultStatus | None = None
        self._stop_reason: str | None = None
        self._kill_at: float | None = None
        self._log_index = 0
        self._metrics_index = 0
        self._progress = ProgressReader(self.storage_options, self.clock)
        self._host = socket.gethostname()
        self._status_dir: Path | None = None
        self._spec: JobSpec | None = None
        self._start_no = 0
        self._cwd: Path | None = None
        self._input_env: dict[str, str] = {}
        self._stop_began: float | None = None
        self._limits: AttemptLimits | None = None
        self._launch: LaunchPlan | None = None
        inputs = inputs_dir or self.environ.get(ENV_INPUTS_DIR)
        self.inputs_dir = Path(inputs) if inputs else Path(tempfile.gettempdir()) / "vastkit-inputs"

    # -- signals -----------------------------------------------------------------------------

    def request_stop(self, signal_name: str = "SIGTERM") -> None:
        """Ask the attempt to stop as preempted (what the SIGTERM handler calls). Thread-safe."""
        if self._stop_signal_at is None:  # the stop itself: Vast's GPU billing ends here
            self._stop_signal_at = self.clock.now()
        self._stop_signal = signal_name
        self._stop_requested.set()

    def install_signal_handlers(self) -> None:
        """Route SIGTERM and SIGINT to :meth:`request_stop` (main thread only)."""

        def handler(signum: int, _frame: object) -> None:
            self.request_stop(signal.Signals(signum).name)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    # -- notes -------------------------------------------------------------------------------

    def note(self, message: str, *, level: int = logging.INFO) -> None:
        """Log a worker message and put it in the attempt's log in the store."""
        logger.log(level, "%s", message)
        self._output.add(f"[vastkit worker] {message}\n".encode())

    # -- the attempt -------------------------------------------------------------------------

    def run(self) -> int:
        """Run the attempt to its end and return the worker's exit status.

        Returns:
            0 when the attempt ended as planned (succeeded, preempted, cancelled, timed out,
            abandoned), 1 when the command failed, 2 when the worker could not run the job.
        """
        started = self.clock.now()
        self._status_dir = Path(tempfile.mkdtemp(prefix="vastkit-status-"))
        self._progress.status_dir = self._status_dir
        try:
            return self._run(started)
        finally:
            shutil.rmtree(self._status_dir, ignore_errors=True)

    def _run(self, started: float) -> int:
        self._continue_attempt()
        self._heartbeat()
        try:
            spec = read_job(self.rundir, self.clock)
            self._spec = spec
            self._limits = AttemptLimits.from_environ(self.environ)
            self._progress.checkpoint_url = self.rundir.checkpoint_url(spec)
            cwd = self._prepare(spec)
            self._cwd = cwd
        except Exception as exc:
            reason = f"the worker could not prepare the job: {exc}"
            self.note(reason, level=logging.ERROR)
            self._finish(None, ResultStatus.FAILED, reason)
            return EXIT_WORKER_ERROR
        settings = spec.attempt
        self.note(limits_summary(settings, self._limits, self.clock.now()))
        liveness = LivenessWatch(started)
        if self._stop_requested.is_set():
            why = f"{self._stop_signal} before the command started"
            self._finish(None, ResultStatus.PREEMPTED, why)
            return EXIT_OK
        try:
            self._proc = self._start(spec, cwd)
        except (OSError, JobError) as exc:
            reason = f"could not start the command: {exc}"
            self.note(reason, level=logging.ERROR)
            self._finish(127, ResultStatus.FAILED, reason)
            return EXIT_FAILED
        exit_code = self._supervise(self._proc, spec, liveness)
        status, reason = attempt_outcome(exit_code, self._stop_status, self._stop_reason)
        failure = read_rank_failure(self._status_dir) if self._launch else None
        if status is ResultStatus.FAILED and failure is not None:
            exit_code, reason = failure.exit_code, failure.reason()
            for line in failure.notes():
                self.note(line, level=logging.ERROR)
        self.note(f"attempt {self.attempt} ended: {status.value} ({reason})")
        backstop = status in SELF_DESTROY_STATUSES
        if backstop:
            self.note(f"BACKSTOP: destroying this instance ({reason})", level=logging.WARNING)
        self._upload_outputs(spec, cwd, settings.grace_period)
        self._finish(exit_code, status, reason)
        if backstop:
            destroy_self(
                base_url=settings.api_base_url,
                environ=self.environ,
                clock=self.clock,
                http=self.http,
            )
        return EXIT_FAILED if status is ResultStatus.FAILED else EXIT_OK

    def _supervise(
        self, proc: subprocess.Popen[bytes], spec: JobSpec, liveness: LivenessWatch
    ) -> int:
        """Pump the command's output, beat, flush and watch the signals until it exits.

        Returns:
            The command's exit code.
        """
        assert proc.stdout is not None
        settings = spec.attempt
        reader = threading.Thread(
            target=self._output.pump, args=(proc.stdout,), name="vastkit-output", daemon=True
        )
        reader.start()
        self._phase = Phase.RUNNING
        self.note(f"started attempt {self.attempt} of run {spec.run_id}: pid {proc.pid}")
        last_beat = self.clock.now()
        last_flush = last_beat
        self._heartbeat()
        self._check_signals(liveness, settings)
        while True:
            now = self.clock.now()
            if self._stop_requested.is_set() and self._stop_status is None:
                why = f"{self._stop_signal or 'SIGTERM'} received"
                self._begin_stop(ResultStatus.PREEMPTED, why, settings.grace_period)
            exited = proc.poll() is not None
            if exited:
                break
            if self._kill_at is not None and now >= self._kill_at:
                self.note(
                    f"the command did not exit within the {settings.grace_period:g} s "
                    "grace period: killing it",
                    level=logging.WARNING,
                )
                self._signal_group(signal.SIGKILL)
                self._kill_at = None
            if now - last_beat >= settings.heartbeat_interval:
                last_beat = now
                self._check_signals(liveness, settings)
                self._heartbeat()
            if self._output.pending() >= settings.log_flush_bytes or (
                now - last_flush >= settings.log_flush_seconds
            ):
                last_flush = now
                self._flush()
            self.clock.sleep(self.tick)
        exit_code = proc.returncode
        reader.join(timeout=5.0)
        if reader.is_alive():
            # Something the command started still holds the output pipe: end the whole group.
            self._signal_group(signal.SIGKILL)
            reader.join(timeout=5.0)
        if not reader.is_alive():
            proc.stdout.close()
        return exit_code

    def _continue_attempt(self) -> None:
        """Continue an attempt whose container restarted (outbid, then won back).

        Its earlier start left a heartbeat, log and metric chunks and maybe a result: the log
        and metrics continue after the last chunk, the earlier result is archived under
        ``attempts/<n>/starts/<k>/``, and heartbeats and results carry the new start number.
        """
        try:
            previous = self.rundir.read_heartbeat(self.attempt)
        except Exception as exc:
            logger.warning("could not read the previous heartbeat: %s", exc)
            previous = None
        if previous is None:
            return
        self._start_no = previous.start + 1
        try:
            self._log_index = self.rundir.next_index(f"attempts/{self.attempt}/log")
            self._metrics_index = self.rundir.next_index(
                f"attempts/{self.attempt}/metrics", ".jsonl"
            )
            archived = self.rundir.archive_attempt_result(self.attempt)
        except Exception as exc:
            logger.warning("could not inspect the earlier start of this attempt: %s", exc)
            archived = None
        ended = f"; the earlier start ended {archived.status.value}" if archived else ""
        self.note(
            f"the container restarted: start {self._start_no} of attempt {self.attempt}, "
            f"log continues at chunk {self._log_index}{ended}"
        )

    def _prepare(self, spec: JobSpec) -> Path:
        assert self._status_dir is not None
        write_json_atomic(self._status_dir / JOB_FILE, document_converter.unstructure(spec))
        if spec.has_code_bundle:
            bundle = self.rundir.read_bundle()
            if bundle is None:
                missing = self.rundir.url_of("code.tar.gz")
                raise JobError(f"job.json says there is a code bundle but {missing} is missing")
            cwd = self.workdir or Path(tempfile.mkdtemp(prefix=f"vastkit-{spec.run_id}-"))
            files = unpack_bundle(bundle, cwd)
            self.note(f"unpacked {len(files)} files into {cwd}")
        else:
            cwd = self.workdir or Path.cwd()
            cwd.mkdir(parents=True, exist_ok=True)
        self._input_env = fetch_inputs(
            spec, self.inputs_dir, self.storage_options, clock=self.clock, note=self.note
        )
        return cwd

    def _upload_outputs(self, spec: JobSpec, cwd: Path, grace: float) -> None:
        """Upload the outputs; after a stop, only within what is left of the grace period."""
        upload_job_outputs(
            spec,
            cwd,
            self.rundir.url,
            self.storage_options,
            attempt=self.attempt,
            deadline=None if self._stop_began is None else self._stop_began + grace,
            clock=self.clock,
            note=self.note,
        )

    def _start(self, spec: JobSpec, cwd: Path) -> subprocess.Popen[bytes]:
        assert self._status_dir is not None
        self._launch = plan_launch(
            spec.command, spec.env, self.environ, self._status_dir, python=sys.executable
        )
        env = dict(self.environ)
        env.update(spec.env)
        env[ENV_RUN_URL] = self.rundir.url
        env[ENV_CHECKPOINT_URL] = self.rundir.checkpoint_url(spec)
        env[ENV_ATTEMPT] = str(self.attempt)
        env[ENV_STATUS_DIR] = str(self._status_dir)
        env.update(self._input_env)
        if self.storage_options:
            env[ENV_STORAGE_OPTIONS] = json.dumps(self.storage_options)
        env.setdefault("PYTHONUNBUFFERED", "1")
        command: str | list[str]
        command = spec.command if isinstance(spec.command, str) else list(spec.command)
        if self._launch is not None:
            command = list(self._launch.argv)
            env[ENV_WORKER_PID] = str(os.getpid())
            self.note(self._launch.describe())
        return subprocess.Popen(
            command,
            shell=isinstance(command, str),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            signal_command(self._proc.pid, sig, ranks=self._launch is not None)

    def _begin_stop(self, status: ResultStatus, reason: str, grace: float) -> None:
        if self._stop_status is not None:
            return
        self._stop_status, self._stop_reason = status, reason
        self._stop_began = self.clock.now()
        self._phase = Phase.STOPPING
        self.note(f"stopping the command ({reason}): SIGTERM, {grace:g} s grace period")
        assert self._status_dir is not None
        (self._status_dir / STOP_FILE).touch()
        self._signal_group(signal.SIGTERM)
        self._kill_at = self.clock.now() + grace
        self._heartbeat(message=reason)

    def _check_signals(self, liveness: LivenessWatch, settings: AttemptSettings) -> None:
        """Look at cancel.json, orchestrator.json, the deadline and the cost; stop if needed."""
        if self._stop_status is not None:
            return
        assert self._proc is not None
        now = self.clock.now()
        grace = self._spec.attempt.grace_period if self._spec is not None else 30.0
        try:
            cancel = self.rundir.read_cancel()
        except Exception as exc:
            logger.warning("could not read cancel.json: %s", exc)
            cancel = None
        if cancel is not None:
            why = f"cancelled by the orchestrator{': ' + cancel.reason if cancel.reason else ''}"
            self._begin_stop(ResultStatus.CANCELLED, why, grace)
            return
        try:
            liveness.observe(self.rundir.read_orchestrator(), now)
        except Exception as exc:
            logger.warning("could not read orchestrator.json: %s", exc)
        silent_for = liveness.silent_for(now)
        change = liveness.away_change(silent_for, settings.orchestrator_timeout)
        if change is not None:
            self.note(change, level=logging.WARNING)
        decision = backstop_reason(
            now=now,
            deadline=settings.deadline,
            silent_for=silent_for,
            timeout=settings.orchestrator_timeout,
            limits=self._limits,
            margin=settings.grace_period + settings.heartbeat_interval,
            away_limit=settings.away_limit,
        )
        if decision is not None:
            status, reason = decision
            self.note(f"BACKSTOP: {reason}", level=logging.WARNING)
            self._begin_stop(status, reason, grace)

    # -- store writes ------------------------------------------------------------------------

    def _heartbeat(self, message: str | None = None) -> None:
        self._progress.read()
        beat = Heartbeat(
            attempt=self.attempt,
            time=self.clock.now(),
            phase=self._phase,
            step=self._progress.int_status("step"),
            checkpoint_step=self._progress.int_status("checkpoint_step"),
            pid=os.getpid(),
            child_pid=self._proc.pid if self._proc is not None else None,
            host=self._host,
            message=message,
            start=self._start_no,
            stop_signal_at=self._stop_signal_at,
        )
        try:
            self.rundir.write_heartbeat(beat)
        except Exception as exc:
            logger.warning("could not write the heartbeat: %s", exc)

    def _flush(self) -> None:
        """Upload waiting output and metrics; on failure keep them for the next try."""
        data = self._output.take()
        if data:
            try:
                self.rundir.write_log_chunk(self.attempt, self._log_index, data)
            except Exception as exc:
                logger.warning("could not upload log chunk %d: %s", self._log_index, exc)
                self._output.put_back(data)
            else:
                self._log_index += 1
        self._progress.read()
        if self._progress.pending:
            try:
                self.rundir.write_metrics_chunk(
                    self.attempt, self._metrics_index, self._progress.pending
                )
            except Exception as exc:
                logger.warning("could not upload metrics chunk %d: %s", self._metrics_index, exc)
            else:
                self._metrics_index += 1
                self._progress.pending = []

    def _finish(self, exit_code: int | None, status: ResultStatus, reason: str | None) -> None:
        """Flush everything, write the last heartbeat, then the result (last of all)."""
        self._phase = Phase.FINISHED
        for _ in range(3):
            self._flush()
            if not self._output.pending() and not self._progress.pending:
                break
            self.clock.sleep(1.0)
        self._heartbeat(message=reason)
        result = AttemptResult(
            attempt=self.attempt,
            status=status,
            exit_code=exit_code,
            ended_at=self.clock.now(),
            metrics=dict(self._progress.last_metrics),
            step=self._progress.int_status("step"),
            checkpoint_step=self._progress.int_status("checkpoint_step"),
            reason=reason,
            start=self._start_no,
        )

        def log(exc: Exception, retry: int, wait: float) -> None:
            logger.error("could not write the result (try %d/3): %s", retry, exc)

        try:
            retry_call(
                lambda: self.rundir.write_attempt_result(result),
                policy=RetryPolicy(attempts=3, initial_delay=2.0, multiplier=1.0),
                clock=self.clock,
                retry_if=lambda exc: True,
                on_retry=log,
                what="writing the result",
            )
        except Exception as exc:
            logger.error("could not write the result (try 3/3): %s", exc)


def read_job(rundir: RunDir, clock: Clock, tries: int = 5) -> JobSpec:
    """Read job.json, retrying store errors (a missing or garbled spec is final)."""

    def log(exc: Exception, retry: int, wait: float) -> None:
        logger.warning("could not read job.json (try %d/%d): %s", retry, tries, exc)

    spec = retry_call(
        rundir.read_job,
        policy=RetryPolicy(attempts=tries, initial_delay=1.0, multiplier=2.0),
        clock=clock,
        retry_if=lambda exc: not isinstance(exc, JobError),
        on_retry=log,
        what="reading job.json",
    )
    if spec is None:
        raise JobError(f"{rundir.url_of('job.json')} does not exist")
    return spec


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vastkit.worker",
        description="Run one attempt of a vastkit job from its run directory.",
    )
    parser.add_argument(
        "--run-url",
        default=os.environ.get(ENV_RUN_URL),
        help="the run directory URL (default: $VASTKIT_RUN_URL)",
    )
    parser.add_argument(
        "--attempt", type=int, default=None, help="the attempt number (default: $VASTKIT_ATTEMPT)"
    )
    parser.add_argument(
        "--workdir", default=os.environ.get("VASTKIT_WORKDIR"), help="where to run the command"
    )
    parser.add_argument("--tick", type=float, default=0.2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m vastkit.worker`` entry point.

    Storage options come from ``$VASTKIT_STORAGE_OPTIONS`` (JSON), so credentials never appear on
    a command line.

    Returns:
        The worker's exit status (see :meth:`Worker.run`).
    """
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s vastkit-worker %(levelname)s %(message)s"
    )
    if not args.run_url:
        logger.error("no run directory: pass --run-url or set %s", ENV_RUN_URL)
        return EXIT_WORKER_ERROR
    attempt = args.attempt
    if attempt is None:
        try:
            attempt = int(os.environ.get(ENV_ATTEMPT, "0"))
        except ValueError:
            logger.error("%s is not a number", ENV_ATTEMPT)
            return EXIT_WORKER_ERROR
    raw = os.environ.get(ENV_STORAGE_OPTIONS)
    try:
        options = json.loads(raw) if raw else {}
        if not isinstance(options, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        logger.error("%s is not a JSON object: %s", ENV_STORAGE_OPTIONS, exc)
        return EXIT_WORKER_ERROR
    worker = Worker(
        args.run_url, attempt, storage_options=options, workdir=args.workdir, tick=args.tick
    )
    worker.install_signal_handlers()
    return worker.run()

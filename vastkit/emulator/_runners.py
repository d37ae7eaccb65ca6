"""What runs "inside" an emulated instance.

:class:`ScriptedRunner` runs nothing: the instance follows the state machine in virtual time and
its log is whatever the test writes. :class:`ProcessRunner` runs the onstart script with bash in a
per-instance folder with the environment a Vast container gets, and stops it like Vast does
(SIGTERM to the process group, SIGKILL after a grace period).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Protocol, runtime_checkable

__all__ = [
    "WORKSPACE",
    "ContainerSpec",
    "Executes",
    "ProcessRunner",
    "Runner",
    "ScriptedRunner",
    "make_runner",
]

WORKSPACE = "/workspace"
"""The container folder Vast's ``execute`` runs in (its ``writeable_path``)."""

logger = logging.getLogger("vastkit.emulator")


@dataclass(frozen=True)
class ContainerSpec:
    """What a runner needs to start an instance's container."""

    instance_id: int
    """The instance id (``CONTAINER_ID``)."""
    onstart: str | None
    """The onstart script, or None."""
    env: Mapping[str, str]
    """The container's environment variables (Vast's own plus the request's)."""
    runtype: str
    """The instance's runtype (``ssh``, ``args``, ...)."""
    args: tuple[str, ...] = field(default=())
    """Entrypoint args for the ``args`` runtype."""


@runtime_checkable
class Runner(Protocol):
    """How instances' containers are run. Called with the emulator's lock held."""

    public_ipaddr: str | None
    """The address instances report (None: the machine's catalog address)."""

    def start(self, spec: ContainerSpec) -> None:
        """The container starts (or restarts after a stop): run its onstart."""
        ...

    def terminate(self, instance_id: int) -> None:
        """The container is being stopped: ask it to end (SIGTERM)."""
        ...

    def kill(self, instance_id: int) -> None:
        """The stop grace period is over: end it now (SIGKILL)."""
        ...

    def pause(self, instance_id: int) -> None:
        """The host went offline: freeze the container."""
        ...

    def resume(self, instance_id: int) -> None:
        """The host is back: unfreeze the container."""
        ...

    def destroy(self, instance_id: int) -> None:
        """The instance is destroyed: kill everything and delete its files."""
        ...

    def exit_code(self, instance_id: int) -> int | None:
        """The container's exit code once its main process ended, else None."""
        ...

    def logs(self, instance_id: int) -> str:
        """Everything the container printed so far."""
        ...

    def close(self) -> None:
        """Kill every container and remove every file the runner created."""
        ...


@runtime_checkable
class Executes(Protocol):
    """A runner that can answer Vast's ``execute`` (``ls``, ``rm``, ``du`` in the container).

    A runner without this method answers every command with an empty result.
    """

    def execute(self, instance_id: int, argv: Sequence[str]) -> str:
        """Run ``argv`` in the container's ``/workspace``; its output (stdout, then stderr).

        Raises:
            ValueError: A path argument outside ``/workspace``.
        """
        ...


class ScriptedRunner:
    """Runs no process: for tests in virtual time.

    The log of an instance is what :meth:`write_log` appended (plus one line per start); its
    container "exits" when :meth:`finish` is called.
    """

    def __init__(self) -> None:
        self.public_ipaddr: str | None = None
        self._logs: dict[int, list[str]] = {}
        self._exit: dict[int, int] = {}
        self.started: list[int] = []
        """Instance ids in the order their containers started (for assertions)."""
        self.terminated: list[int] = []
        """Instance ids in the order their containers were asked to stop."""
        self.executed: list[tuple[int, tuple[str, ...]]] = []
        """``(instance id, argv)`` of every ``execute``, in order (for assertions)."""
        self.command_output: dict[int, str] = {}
        """What ``execute`` answers per instance (default empty): set it in a test."""

    def start(self, spec: ContainerSpec) -> None:
        """Record the start and log a line."""
        self._exit.pop(spec.instance_id, None)
        self.started.append(spec.instance_id)
        self._logs.setdefault(spec.instance_id, []).append(
            f"[emulator] container C.{spec.instance_id} started\n"
        )

    def terminate(self, instance_id: int) -> None:
        """Record the stop."""
        self.terminated.append(instance_id)

    def kill(self, instance_id: int) -> None:
        """Nothing to kill."""

    def pause(self, instance_id: int) -> None:
        """Nothing to freeze."""

    def resume(self, instance_id: int) -> None:
        """Nothing to unfreeze."""

    def destroy(self, instance_id: int) -> None:
        """Forget the instance's log."""
        self._logs.pop(instance_id, None)
        self._exit.pop(instance_id, None)

    def exit_code(self, instance_id: int) -> int | None:
        """The code given to :meth:`finish`, if any."""
        return self._exit.get(instance_id)

    def logs(self, instance_id: int) -> str:
        """The lines logged so far."""
        return "".join(self._logs.get(instance_id, []))

    def execute(self, instance_id: int, argv: Sequence[str]) -> str:
        """Record the command; answer :attr:`command_output` for the instance."""
        self.executed.append((instance_id, tuple(argv)))
        return self.command_output.get(instance_id, "")

    def write_log(self, instance_id: int, text: str) -> None:
        """Append ``text`` to the instance's log (what request_logs returns)."""
        self._logs.setdefault(instance_id, []).append(text)

    def finish(self, instance_id: int, code: int = 0) -> None:
        """Make the container's main process end with ``code``."""
        self._exit[instance_id] = code

    def close(self) -> None:
        """Forget everything."""
        self._logs.clear()
        self._exit.clear()


class _Proc:
    def __init__(self, popen: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self.popen = popen
        self.log = log


class ProcessRunner:
    """Runs each instance's onstart script with bash in its own folder.

    The process gets only the environment a Vast container gets (``CONTAINER_ID``,
    ``VAST_CONTAINERLABEL``, ``CONTAINER_API_KEY``, ``PUBLIC_IPADDR=127.0.0.1``, ``GPU_COUNT``,
    ``VAST_TCP_PORT_<n>``, the request's env vars), plus ``PATH`` (with the directory of the
    running Python first), ``HOME`` (the instance folder) and ``extra_env``; never the emulator
    process's own environment, so no account key leaks into it. It runs in its own session so
    that stop signals reach the whole process group; a kill, a pause and a destroy reach every
    process of the container, also one that started a session of its own (as the worker's
    command does), like a real container's PID namespace.

    Args:
        root: The folder holding ``instances/<id>/`` and ``logs/<id>.log``; a temporary folder
            (removed on close) when None.
        grace_s: Seconds (on the emulator's clock) between SIGTERM and SIGKILL on stop.
        extra_env: Variables added to every container, like Vast's account-level env vars
            (``/secrets/``); e.g. credentials for a test object store.
        stop_signal: How a stop begins: ``"term"`` (SIGTERM, then SIGKILL after ``grace_s``)
            or ``"kill"`` (SIGKILL at once, no SIGTERM at all: a host that stops an outbid
            container without a grace period, which Vast's documentation does not rule out).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        grace_s: float = 10.0,
        extra_env: Mapping[str, str] | None = None,
        stop_signal: Literal["term", "kill"] = "term",
    ) -> None:
        if stop_signal not in ("term", "kill"):
            raise ValueError(f"stop_signal must be 'term' or 'kill', not {stop_signal!r}")
        if grace_s < 0:
            raise ValueError(f"grace_s must not be negative, not {grace_s}")
        self._own_root = root is None
        if root is None:
            root = tempfile.mkdtemp(prefix="vastkit-emulator-")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.grace_s = grace_s
        self.extra_env = dict(extra_env or {})
        self.stop_signal: Literal["term", "kill"] = stop_signal
        """How a stop begins (may be changed between stops, e.g. for one preemption)."""
        self.public_ipaddr: str | None = "127.0.0.1"
        bash = shutil.which("bash") or "/bin/bash"
        self._bash = bash
        self._procs: dict[int, _Proc] = {}
        self._lock = threading.Lock()

    def folder(self, instance_id: int) -> Path:
        """The instance's folder (its ``HOME`` and working directory)."""
        return self.root / "instances" / str(instance_id)

    def log_path(self, instance_id: int) -> Path:
        """Where the instance's stdout and stderr go."""
        return self.root / "logs" / f"{instance_id}.log"

    def pid(self, instance_id: int) -> int | None:
        """The pid of the instance's running bash, if any."""
        proc = self._procs.get(instance_id)
        if proc is None or proc.popen.poll() is not None:
            return None
        return proc.popen.pid

    def wait(self, instance_id: int, timeout: float) -> int | None:
        """Wait (real time, at most ``timeout`` s) for the instance's process; its exit code."""
        proc = self._procs.get(instance_id)
        if proc is None:
            return None
        try:
            return proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def start(self, spec: ContainerSpec) -> None:
        """Run the onstart script (no process when there is none)."""
        with self._lock:
            self._reap(spec.instance_id, signal.SIGKILL)
            folder = self.folder(spec.instance_id)
            folder.mkdir(parents=True, exist_ok=True)
            self.log_path(spec.instance_id).parent.mkdir(parents=True, exist_ok=True)
            script = spec.onstart or ""
            if spec.runtype == "args" and spec.args:
                script = (script + "\n" if script else "") + shlex.join(spec.args)
            if not script.strip():
                return
            env = {
                "PATH": os.pathsep.join(
                    (str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin")
                ),
                "HOME": str(folder),
                "LANG": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
            }
            env.update(self.extra_env)
            env.update(spec.env)
            log = self.log_path(spec.instance_id).open("ab")
            popen = subprocess.Popen(
                [self._bash, "-c", script],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._procs[spec.instance_id] = _Proc(popen, log)
            logger.debug("instance %s: started process %s", spec.instance_id, popen.pid)

    def _signal(self, instance_id: int, sig: signal.Signals) -> None:
        # The whole group, even when its leader (the onstart's bash) has exited: what it
        # started in the background (the rental's backstop loop) must not outlive the container.
        proc = self._procs.get(instance_id)
        if proc is None:
            return
        try:
            os.killpg(proc.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        if sig != signal.SIGTERM:  # a kill, a pause or a resume reaches the whole container
            self._signal_container(instance_id, sig)

    def _signal_container(self, instance_id: int, sig: signal.Signals) -> None:
        """Signal every process of the container, also those in sessions of their own (the
        worker's command, torchrun's ranks), as a real container's PID namespace would: the
        processes whose environment still has this container's ``HOME`` (Linux ``/proc``)."""
        for pid in _pids_with_env(f"HOME={self.folder(instance_id)}"):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _reap(self, instance_id: int, sig: signal.Signals) -> None:
        proc = self._procs.pop(instance_id, None)
        if proc is None:
            return
        try:
            os.killpg(proc.popen.pid, sig)  # the group, also when the leader already exited
        except (ProcessLookupError, PermissionError):
            pass
        self._signal_container(instance_id, sig)
        if proc.popen.poll() is None:
            try:
                proc.popen.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be caught
                pass
        proc.log.close()

    def terminate(self, instance_id: int) -> None:
        """Send SIGTERM to the instance's process group (SIGCONT first if it was paused).

        With ``stop_signal="kill"`` the group gets SIGKILL instead: no SIGTERM, no grace.
        """
        if self.stop_signal == "kill":
            self._signal(instance_id, signal.SIGKILL)
            return
        self._signal(instance_id, signal.SIGCONT)
        self._signal(instance_id, signal.SIGTERM)

    def kill(self, instance_id: int) -> None:
        """Send SIGKILL to the instance's process group."""
        self._signal(instance_id, signal.SIGKILL)

    def pause(self, instance_id: int) -> None:
        """SIGSTOP the process group (host offline: heartbeats stop)."""
        self._signal(instance_id, signal.SIGSTOP)

    def resume(self, instance_id: int) -> None:
        """SIGCONT the process group."""
        self._signal(instance_id, signal.SIGCONT)

    def destroy(self, instance_id: int) -> None:
        """Kill the process group and remove the folder and the log."""
        with self._lock:
            self._signal(instance_id, signal.SIGCONT)
            self._reap(instance_id, signal.SIGKILL)
            shutil.rmtree(self.folder(instance_id), ignore_errors=True)
            self.log_path(instance_id).unlink(missing_ok=True)

    def execute(self, instance_id: int, argv: Sequence[str]) -> str:
        """Run ``argv`` (``ls``, ``rm`` or ``du``) in the instance's folder, which stands for
        ``/workspace``: path arguments must lie under ``/workspace`` (or be relative without
        ``..``) and are mapped into the folder; the folder's real path in the output reads
        ``/workspace`` again.

        Raises:
            ValueError: A path argument outside ``/workspace``.
        """
        folder = self.folder(instance_id)
        folder.mkdir(parents=True, exist_ok=True)
        mapped = [argv[0], *(_workspace_arg(a, folder) for a in argv[1:])]
        done = subprocess.run(
            mapped,
            cwd=folder,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        text = (done.stdout + done.stderr).decode(errors="replace")
        return text.replace(str(folder), WORKSPACE)

    def exit_code(self, instance_id: int) -> int | None:
        """The process's exit code once it ended."""
        proc = self._procs.get(instance_id)
        if proc is None:
            return None
        return proc.popen.poll()

    def logs(self, instance_id: int) -> str:
        """The process's stdout and stderr so far."""
        try:
            return self.log_path(instance_id).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Kill every process; remove the root folder if the runner created it."""
        with self._lock:
            for instance_id in list(self._procs):
                self._signal(instance_id, signal.SIGCONT)
                self._reap(instance_id, signal.SIGKILL)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def _pids_with_env(entry: str) -> list[int]:
    """The pids (other than this process) whose environment has ``entry`` (``NAME=value``);
    none where there is no ``/proc``."""
    wanted = entry.encode()
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                if wanted in environ.read().split(b"\0"):
                    found.append(int(name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def _workspace_arg(arg: str, folder: Path) -> str:
    """``arg`` with ``/workspace`` mapped to ``folder``; options pass unchanged.

    Raises:
        ValueError: An absolute path outside ``/workspace``, or one that climbs out with ``..``.
    """
    if arg.startswith("-"):
        return arg
    if ".." in Path(arg).parts:
        raise ValueError(f"{arg!r}: paths may not contain '..'")
    if arg == WORKSPACE or arg.startswith(WORKSPACE + "/"):
        return str(folder) + arg[len(WORKSPACE) :]
    if arg.startswith(("/", "~")):
        raise ValueError(f"{arg!r} is outside {WORKSPACE}")
    return arg


def make_runner(runner: Literal["scripted", "process"] | Runner) -> Runner:
    """The runner an :class:`~vastkit.emulator.Emulator` was asked for, by name or as given.

    Raises:
        ValueError: An unknown name.
    """
    if runner == "scripted":
        return ScriptedRunner()
    if runner == "process":
        return ProcessRunner()
    if isinstance(runner, str):
        raise ValueError(f"runner must be 'scripted', 'process' or a Runner, not {runner!r}")
    return runner

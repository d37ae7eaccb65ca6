"""An instance's container through its phases: provisioning, loading, running, exited,
rebooting, recycling, stopped; and what the runner is told at each step."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from vastkit.emulator._http import error
from vastkit.emulator._model import Instance, Timings
from vastkit.emulator._runners import ContainerSpec, Runner

__all__ = ["Containers"]


def _oci_error(instance_id: int) -> str:
    """The ``status_msg`` of a container that failed to start (a real NVIDIA driver error)."""
    return (
        f"Error response from daemon: failed to create task for container: "
        f"failed to create shim task: OCI runtime create failed: runc create "
        f"failed: unable to start container process: error during container "
        f"init: error running hook #0: exit status 1, stdout: , stderr: "
        f"nvidia-container-cli: initialization error: nvml error: driver/library "
        f"version mismatch: unknown (C.{instance_id})"
    )


class Containers:
    """Moves containers between phases and drives the runner.

    Args:
        runner: What runs inside instances.
        timings: Phase delays.
        grace_s: SIGTERM-to-SIGKILL delay on stop.
        preemption_mtbp_s: Mean time between random preemptions of a running bid instance
            (None: none).
        rng_preempt: Draws the random preemption times.
        url: The emulator's URL for ``VAST_URL`` (None when it is not served).
    """

    def __init__(
        self,
        runner: Runner,
        timings: Timings,
        *,
        grace_s: float,
        preemption_mtbp_s: float | None,
        rng_preempt: random.Random,
        url: Callable[[], str | None],
    ) -> None:
        self.runner = runner
        self.timings = timings
        self.grace_s = grace_s
        self.preemption_mtbp_s = preemption_mtbp_s
        self.rng_preempt = rng_preempt
        self.url = url
        """The served URL for the containers' ``VAST_URL`` (the emulator sets it when it serves)."""

    # ------------------------------------------------------------------ GPUs given and taken

    def acquire(self, inst: Instance, now: float) -> None:
        """``inst`` gets its GPUs: provision a new container, or load the existing one again."""
        inst.holds = True
        inst.outbid = False
        if inst.ran_before:
            self.to_loading(inst, now)
            if inst.fault == "stuck_loading":
                inst.fault = None
                inst.phase_until = now + self.timings.loading_s
        else:
            inst.actual = None
            inst.status_msg = None
            inst.phase_until = now + self.timings.provision_s

    def release(self, inst: Instance, now: float) -> None:
        """``inst`` loses its GPUs: stop the container (SIGTERM now, SIGKILL after the grace)."""
        was_running = inst.actual in ("running", "rebooting", "frozen", "exited")
        inst.holds = False
        inst.phase_until = None
        inst.preempt_at = None
        inst.ports = {}
        if inst.actual == "created" and inst.fault == "oci_error":
            return
        inst.actual = "stopped" if (inst.ran_before or inst.actual is not None) else inst.actual
        inst.status_msg = "stopped"
        if was_running:
            self.runner.terminate(inst.id)
            inst.kill_at = now + self.grace_s

    # ------------------------------------------------------------------ phases

    def phase_done(self, inst: Instance, now: float) -> None:
        """The current phase's time is up: move to the next one."""
        if not inst.holds:
            return
        if inst.actual is None:
            if inst.fault == "oci_error":
                inst.actual = "created"
                inst.status_msg = _oci_error(inst.id)
                return
            self.to_loading(inst, now)
        elif inst.actual in ("loading", "rebooting"):
            self.to_running(inst, now)
        elif inst.actual == "recycling":
            self.to_loading(inst, now)

    def to_loading(self, inst: Instance, now: float) -> None:
        """Pull the image and start the container (forever, for ``stuck_loading``)."""
        inst.actual = "loading"
        inst.status_msg = f"Pulling image {inst.image}: Downloading layers"
        if inst.fault == "stuck_loading":
            inst.phase_until = None
        else:
            inst.phase_until = now + self.timings.loading_s

    def to_running(self, inst: Instance, now: float) -> None:
        """The container runs: bind its ports, start it, maybe schedule a random preemption."""
        inst.actual = "running"
        inst.ran_before = True
        inst.start_date = now
        inst.exit_code = None
        kind = "ssh" if "args" not in inst.runtype else "args"
        inst.status_msg = f"success, running {inst.image}/{kind}"
        inst.ports = self._port_bindings(inst)
        self.runner.start(self.container_spec(inst))
        if inst.is_bid and self.preemption_mtbp_s:
            inst.preempt_at = now + self.rng_preempt.expovariate(1.0 / self.preemption_mtbp_s)

    @staticmethod
    def _port_bindings(inst: Instance) -> dict[str, list[dict[str, str]]]:
        """Host ports for SSH/Jupyter (direct run types) and every ``-p`` option in ``env``,
        as many as the machine's ``direct_port_count`` allows: none on a host without direct
        ports (its instances are reached through the SSH proxy only)."""
        m = inst.machine
        if m.direct_port_count <= 0:
            return {}
        internal: list[str] = []
        if "direc" in inst.runtype:
            internal.append("22/tcp")
            if "jupyter" in inst.runtype:
                internal.append("8080/tcp")
        for key in inst.env:
            if key.startswith("-p "):
                spec = key[3:].strip()
                inner = spec.split(":")[-1]
                proto = "udp" if inner.endswith("/udp") else "tcp"
                number = inner.split("/")[0]
                name = f"{number}/{proto}"
                if name not in internal:
                    internal.append(name)
        base = m.direct_port_start if m.direct_port_start > 0 else 40_000
        return {
            name: [{"HostIp": "0.0.0.0", "HostPort": str(base + offset)}]
            for offset, name in enumerate(internal[: m.direct_port_count])
        }

    def reboot(self, inst: Instance, now: float, recycle: bool = False) -> None:
        """Restart the container, keeping the GPUs (``rebooting`` or ``recycling``).

        Raises:
            ApiError: 400 when the instance is not running.
        """
        if not inst.holds or inst.actual not in ("running", "exited", "loading", "created"):
            raise error(400, "invalid_args", f"Instance {inst.id} is not running.")
        self.runner.terminate(inst.id)
        self.runner.kill(inst.id)
        inst.ports = {}
        if recycle:
            inst.actual = "recycling"
            inst.status_msg = f"Recycling: pulling {inst.image}"
            inst.phase_until = now + self.timings.recycle_s
        else:
            inst.actual = "rebooting"
            inst.status_msg = "rebooting"
            inst.phase_until = now + self.timings.reboot_s

    def poll(self, instances: Iterable[Instance]) -> None:
        """Notice containers whose main process ended (``args`` run types then show exited)."""
        for inst in instances:
            if inst.actual == "running" and inst.holds:
                code = self.runner.exit_code(inst.id)
                if code is not None and inst.exit_code is None:
                    inst.exit_code = code
                    if "args" in inst.runtype.split():
                        inst.actual = "exited"
                        inst.status_msg = f"container exited with code {code}"
                        inst.ports = {}

    # ------------------------------------------------------------------ what the runner gets

    def container_env(self, inst: Instance) -> dict[str, str]:
        """The environment a Vast container of ``inst`` gets."""
        env = {
            "CONTAINER_ID": str(inst.id),
            "VAST_CONTAINERLABEL": f"C.{inst.id}",
            "CONTAINER_API_KEY": inst.api_key,
            "PUBLIC_IPADDR": self.runner.public_ipaddr or inst.machine.public_ipaddr,
            "GPU_COUNT": str(inst.machine.num_gpus),
            "JUPYTER_TOKEN": inst.jupyter_token,
            "DATA_DIRECTORY": "/workspace/",
        }
        if inst.ssh_keys:
            env["SSH_PUBLIC_KEY"] = "\n".join(k.public_key for k in inst.ssh_keys)
        url = self.url()
        if url:
            env["VAST_URL"] = url
        for name, bindings in inst.ports.items():
            number, proto = name.split("/")
            env[f"VAST_{proto.upper()}_PORT_{number}"] = bindings[0]["HostPort"]
        for key, value in inst.env.items():
            if not key.startswith("-"):
                env[key] = str(value)
        return env

    def container_spec(self, inst: Instance) -> ContainerSpec:
        """What the runner needs to start ``inst``'s container."""
        return ContainerSpec(
            instance_id=inst.id,
            onstart=inst.onstart,
            env=self.container_env(inst),
            runtype=inst.runtype,
            args=tuple(inst.args),
        )

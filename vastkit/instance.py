"""The instance lifecycle: rent, wait through each phase, use, and always destroy.

:class:`Instance` is the context manager users hold. It rents through the attempt engine
(:mod:`vastkit._provision`: search, create intent, safe create, phase waits, confirmed destroy,
machine blocking) with the machinery of one rental in :mod:`vastkit._rental`; every wait goes
through an injected :class:`~vastkit.clock.Clock`, so tests drive hours of virtual time in
milliseconds. Labels live in :mod:`vastkit.labels`, the outbid policy in :mod:`vastkit.outbid`
and the cost meter in :mod:`vastkit.money`.
"""

from __future__ import annotations

import logging
import os
import signal
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import attrs

from vastkit._console import Progress
from vastkit._keepalive import RentalBackstop
from vastkit._provision import (
    DEFAULT_IMAGE,
    InstanceTimeouts,
)
from vastkit._rental import (
    InstanceEvent,
    ProvisioningAttempt,
    RentalBase,
    Stage,
    live_instances,
)
from vastkit._settings import poll_interval_setting
from vastkit.access import AccessPlan, RegistryLogin
from vastkit.api.client import Client
from vastkit.api.models import InstanceInfo, InstanceState, Offer, PortBinding
from vastkit.budget import BudgetGuard
from vastkit.clock import Clock, SystemClock
from vastkit.errors import ProvisioningError
from vastkit.labels import make_label, new_run_id
from vastkit.ledger import Ledger
from vastkit.outbid import OutbidPolicy
from vastkit.profiles import GpuProfile, get_profile

__all__ = [
    "Instance",
    "InstanceEvent",
    "InstanceTimeouts",
    "ProvisioningAttempt",
]

logger = logging.getLogger("vastkit.instance")


# ============================================================================================
# The public part
# ============================================================================================


def _resolve_profile(profile: str | GpuProfile | tuple[str | os.PathLike[str], str]) -> GpuProfile:
    if isinstance(profile, GpuProfile):
        return profile
    if isinstance(profile, str):
        return get_profile(profile)
    if isinstance(profile, tuple) and len(profile) == 2:
        path, name = profile
        return get_profile(name, path)
    raise TypeError(
        "profile must be a profile name, a GpuProfile, or a (path, name) pair "
        f"(got {type(profile).__name__})"
    )


class Instance(RentalBase):
    """One rented Vast.ai instance, destroyed when the ``with`` block ends.

    ::

        with vastkit.Instance("dev-test", image="pytorch/pytorch:latest") as inst:
            print(inst.ssh_command, inst.dph)

    Entering searches and ranks offers for the profile, reconciles what earlier runs left
    behind, writes a create intent to the ledger, rents the best offer with the label
    ``vastkit/<ledger_id>/<run_id>/<attempt>`` and waits through provisioning, loading and
    running, each with its own deadline (:class:`InstanceTimeouts`). An offer that fails
    (deadline overrun, ``exited``, ``created`` with an error, offer gone, bid too low) is
    destroyed, its machine blocked in the ledger, and the next offer tried, up to
    ``max_offers``.

    Leaving, for any reason (normal exit, exception, Ctrl-C, SIGTERM to the process), destroys
    the instance, retried with backoff until the API confirms it is gone, and records the final
    cost in the ledger. SIGTERM is turned into ``SystemExit(143)`` while the block runs (only when
    entered in the main thread; the previous handler is restored on exit).

    Without ``with``: :meth:`launch` and :meth:`destroy`. A launched instance that is garbage
    collected without being destroyed warns with :class:`ResourceWarning`.

    Args:
        profile: A profile name (built-in profiles), a :class:`~vastkit.profiles.GpuProfile`,
            or a ``(path, name)`` pair naming a profile in a ``gpu_profiles.yaml`` file.
        image: The Docker image (default: the profile's ``image``, else Vast's base image).
        disk_gb: Local disk in GB (default: the profile's ``disk_gb``).
        env: Environment variables and Docker options for the container.
        onstart: The onstart script.
        client: The API client (default: a :class:`~vastkit.api.client.Client` configured from
            the environment, closed on exit).
        ledger: Where intents, attempts, blocked machines and costs are recorded (default: the
            ledger at its default path).
        budget: A :class:`~vastkit.budget.BudgetGuard` checked before renting.
        clock: The clock every wait goes through (default: the client's, else real time).
        timeouts: Deadlines and pacing (default: :class:`InstanceTimeouts`, looking every
            ``$VASTKIT_POLL_INTERVAL`` seconds, else the config file's ``poll_interval_s``, when
            either is set).
        max_offers: The most offers to try before raising
            :class:`~vastkit.errors.ProvisioningError`.
        keep: Keep the instance when the block ends (for debugging): it goes on billing, and a
            warning and a ledger record say so.
        on_event: Called with an :class:`InstanceEvent` for everything that happens.
        outbid: What to do when an interruptible instance is outbid (default
            ``OutbidPolicy.raise_bid()``: raise 20 % at a time up to the profile's cap, give the
            instance up if it has not run again 10 minutes after the outbid: an interactive
            instance is wanted back soon; ``cheapest_expected()`` weighs waiting and raising).
        run_id: The run id in the label (default: a fresh one).
        project: The project recorded in the ledger (for budgets and the cost report).
        team: The team recorded in the ledger.
        progress: Show a live status line: True, False, or None for automatic (a live line in
            a terminal or notebook, plain lines otherwise).
        reconcile_on_enter: Run :func:`vastkit.reconcile` before renting.
        runtype: Vast's launch mode for the container.
        backstop: Put a host-side backstop before ``onstart`` that destroys the instance with
            its per-instance key at the profile's max duration and, with ``keepalive_s``, once
            this process stops renewing its keepalive (see :mod:`vastkit._keepalive`).
        keepalive_s: Seconds without a renewal after which the backstop destroys the instance.
        keepalive_url: The keepalive's store folder; ``storage_options``: its fsspec options.
        ssh_key: The public key to attach, a ``.pub`` file or the key line (default: see
            :mod:`vastkit.access`); ``image_login``: a private image's registry login.

    Raises:
        ConfigError: The profile cannot be found or loaded, or no API key is configured.
        TypeError: ``profile`` is of the wrong type.
        ValueError: ``max_offers`` is not positive.
    """

    def __init__(
        self,
        profile: str | GpuProfile | tuple[str | os.PathLike[str], str],
        *,
        image: str | None = None,
        disk_gb: float | None = None,
        env: Mapping[str, str] | None = None,
        onstart: str | None = None,
        client: Client | None = None,
        ledger: Ledger | None = None,
        budget: BudgetGuard | None = None,
        clock: Clock | None = None,
        timeouts: InstanceTimeouts | None = None,
        max_offers: int = 5,
        keep: bool = False,
        on_event: Callable[[InstanceEvent], None] | None = None,
        outbid: OutbidPolicy | None = None,
        run_id: str | None = None,
        project: str | None = None,
        team: str | None = None,
        progress: bool | None = None,
        reconcile_on_enter: bool = True,
        runtype: str | None = "ssh_direc ssh_proxy",
        backstop: bool = True,
        keepalive_s: float | None = None,
        keepalive_url: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        ssh_key: str | os.PathLike[str] | None = None,
        image_login: RegistryLogin | str | None = None,
    ) -> None:
        self._backstop = RentalBackstop(backstop, keepalive_s, keepalive_url, storage_options)
        self._access = AccessPlan(ssh_key=ssh_key, image_login=image_login)
        if isinstance(max_offers, bool) or not isinstance(max_offers, int) or max_offers < 1:
            raise ValueError(f"max_offers must be a positive integer (got {max_offers!r})")
        resolved = _resolve_profile(profile)
        if disk_gb is not None and float(disk_gb) != resolved.disk_gb:
            # offers are searched, priced and capped with the disk actually rented
            resolved = attrs.evolve(resolved, disk_gb=float(disk_gb))
        self.profile: GpuProfile = resolved
        self.image = image or self.profile.image or DEFAULT_IMAGE
        self.disk_gb = self.profile.disk_gb
        self.env: dict[str, str] = dict(env or {})
        self.onstart = onstart
        self.runtype = runtype
        self.timeouts = timeouts if timeouts is not None else _default_timeouts()
        self.max_offers = max_offers
        self.keep = keep
        self.outbid_policy = outbid or OutbidPolicy.raise_bid()
        self.project = project
        self.team = team
        self.reconcile_on_enter = reconcile_on_enter
        self._on_event = on_event
        self._progress_setting = progress
        self._owns_client = client is None
        self._client: Client = client if client is not None else Client()
        client_clock = getattr(self._client, "clock", None)
        self._clock: Clock = clock or (
            client_clock if isinstance(client_clock, Clock) else SystemClock()
        )
        self._owns_ledger = ledger is None
        self._ledger: Ledger | None = ledger
        self._budget = budget
        self.run_id: str = run_id or new_run_id(self._clock)
        """The run id in this instance's label."""
        make_label(self.run_id, 1)  # validates the run id
        self._init_rental()
        self._entered = False
        self._closed = False
        self.attempts: list[ProvisioningAttempt] = []
        """What happened on each create, in order (also when launch succeeded)."""

    def __enter__(self) -> Instance:
        if self._entered:
            raise RuntimeError("an Instance can be entered only once; create a new one")
        if self._stage is not Stage.NEW:
            raise RuntimeError("this Instance was already launched; use it without 'with'")
        self._entered = True
        self._start(close_on_failure=False)
        return self

    def _start(self, *, close_on_failure: bool) -> None:
        """Launch with SIGTERM handled; on a failure, clean up (and close what it opened)."""
        self._signals.install()
        try:
            self._launch()
        except BaseException:
            try:
                self._cleanup_after_failed_launch()
            finally:
                self._signals.uninstall()
                if close_on_failure:
                    self._close_resources()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.keep:
                self._keep()
            else:
                self.destroy(reason=_exit_reason(exc))
        finally:
            self._signals.uninstall()
            self._close_resources()

    @classmethod
    def launch(
        cls,
        profile: str | GpuProfile | tuple[str | os.PathLike[str], str],
        **kwargs: Any,
    ) -> Instance:
        """Rent an instance without a ``with`` block; call :meth:`destroy` when done.

        Takes the same arguments as :class:`Instance`. While it waits for the instance, SIGTERM
        is handled as in a ``with`` block; afterwards destroying is the caller's job (an
        interpreter that exits normally still destroys it, with a warning in the log).

        Returns:
            The running instance.

        Raises:
            NoOfferError: No offer qualifies for the profile.
            ProvisioningError: No offer tried came up; ``.attempts`` says why for each.
            BudgetExceededError: The budget cannot cover the profile's worst case.
        """
        inst = cls(profile, **kwargs)
        inst._start(close_on_failure=True)
        inst._signals.uninstall()
        return inst

    def __del__(self) -> None:
        if getattr(self, "_view", None) is not None and self._stage is Stage.LAUNCHED:
            warnings.warn(
                f"Instance {self._view.id if self._view else '?'} ({self.run_id}) was garbage "
                "collected while it still exists and bills; destroy it with inst.destroy() or "
                "use 'with vastkit.Instance(...)'",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )

    def _require(self) -> InstanceInfo:
        if self._view is None:
            raise RuntimeError("the instance is not launched yet; use 'with' or Instance.launch()")
        return self._view

    @property
    def id(self) -> int:
        """The Vast instance id."""
        return self._require().id

    @property
    def label(self) -> str:
        """The instance label, ``vastkit/<ledger_id>/<run_id>/<attempt>``."""
        view = self._require()
        return view.label or make_label(
            self.run_id, self._attempt_no, ledger_id=self._get_ledger().ledger_id
        )

    @property
    def attempt(self) -> int:
        """The attempt number of the live instance (the last part of its label)."""
        return self._attempt_no

    @property
    def offer(self) -> Offer:
        """The offer that was rented."""
        self._require()
        assert self._candidate is not None
        return self._candidate.offer

    @property
    def machine_id(self) -> int:
        """The physical machine."""
        return self.offer.machine_id

    @property
    def instance(self) -> InstanceInfo:
        """The last view of the instance from the API (see :meth:`refresh`)."""
        return self._require()

    @property
    def state(self) -> InstanceState:
        """The state at the last look (:meth:`refresh` looks again)."""
        return self._require().state

    @property
    def destroyed(self) -> bool:
        """Whether the instance has been destroyed (by :meth:`destroy`, the ``with`` block, or
        the outbid policy giving up)."""
        return self._stage is Stage.DESTROYED

    @property
    def end_reason(self) -> str | None:
        """Why the instance ended (``exit``, ``exception``, ``interrupted``, ``sigterm``,
        ``outbid``, ``destroy``...), once it has."""
        return self._end_reason

    @property
    def ssh_command(self) -> str | None:
        """An ``ssh`` command line to reach the instance, when it exposes SSH."""
        return self._require().ssh_command

    @property
    def ports(self) -> Mapping[str, tuple[PortBinding, ...]]:
        """Mapped ports while running, ``{"22/tcp": (PortBinding(...),)}``."""
        return self._require().ports

    @property
    def public_ip(self) -> str | None:
        """The machine's public IP address."""
        return self._require().public_ipaddr

    @property
    def bid(self) -> float | None:
        """The current bid in $/h for an interruptible rental; None on-demand."""
        return self._bid

    @property
    def dph(self) -> float:
        """What the instance costs per hour while running: GPU (or bid) plus storage."""
        self._require()
        assert self._meter is not None
        return self._meter.price.dph_total

    @property
    def cost_so_far(self) -> float:
        """Dollars accrued since creation, priced from the contract and the observed states."""
        self._require()
        assert self._meter is not None
        return self._meter.cost_at(self._clock.now())

    def refresh(self) -> InstanceInfo:
        """Look at the instance again, apply the outbid policy, and return the new view.

        Returns:
            The instance as the API shows it now (the last view when it is already destroyed).

        Raises:
            ProvisioningError: The instance no longer exists although it was not destroyed here.
        """
        view = self._require()
        if self._stage is Stage.DESTROYED:
            return view
        fresh = self._client.get_instance(view.id)
        now = self._clock.now()
        if fresh is None:
            self._mark_gone(now, reason="vanished")
            raise ProvisioningError(
                f"instance {view.id} no longer exists (destroyed outside this process?)",
                attempts=list(self.attempts),
            )
        self._observe(fresh, now)
        self._apply_outbid_policy(fresh, now)
        return self._view if self._view is not None else fresh

    def wait_until(
        self, state: InstanceState | str, *, timeout: float | None = None
    ) -> InstanceInfo:
        """Poll until the instance is in ``state``.

        Args:
            state: The state to wait for (an :class:`~vastkit.api.models.InstanceState` or its
                value, e.g. ``"running"``).
            timeout: Seconds to wait at most; None waits without limit.

        Returns:
            The view in which the state was reached.

        Raises:
            TimeoutError: ``timeout`` passed first.
            ProvisioningError: The instance ended (destroyed, given up after being outbid, or
                gone) before reaching the state.
        """
        target = InstanceState(state)
        start = self._clock.now()
        while True:
            if self.destroyed:
                raise ProvisioningError(
                    f"instance {self.id} ended ({self._end_reason}) before reaching {target.value}",
                    attempts=list(self.attempts),
                )
            view = self.refresh()
            if not self.destroyed and view.state is target:
                return view
            if timeout is not None and self._clock.now() - start >= timeout:
                raise TimeoutError(
                    f"instance {view.id} not {target.value} after {timeout:g} s "
                    f"(it is {view.state.value})"
                )
            self._clock.sleep(self.timeouts.poll_interval)

    def logs(self, *, tail: int | None = None) -> str:
        """The container's log (its output), from Vast.

        Args:
            tail: Only the last ``tail`` lines.
        """
        return self._client.instance_logs(self.id, tail=tail)

    def stop(self) -> None:
        """Stop the container. The GPUs are released and storage keeps billing."""
        self._client.stop_instance(self.id)
        self._emit("stopped", f"instance {self.id} asked to stop")

    def start(self) -> None:
        """Start a stopped container (it may wait for its GPUs: "scheduling")."""
        self._client.start_instance(self.id)
        self._emit("started", f"instance {self.id} asked to start")

    def destroy(self, *, reason: str = "destroy") -> None:
        """Destroy the instance and wait until the API confirms it is gone. Idempotent.

        Ctrl-C and SIGTERM are held until it finishes. The final cost goes to the ledger.

        Args:
            reason: Why, as recorded in the ledger.

        Raises:
            DestroyFailedError: The API did not confirm within ``timeouts.destroy``; the
                instance may still bill (the ledger row stays open, so
                :func:`vastkit.reconcile` destroys it later).
        """
        if self._stage is Stage.DESTROYED or self._view is None:
            return
        instance_id = self._view.id
        self._emit("destroying", f"destroying instance {instance_id} ({reason})")
        with self._signals.deferring():
            gone_at = self._provisioner().destroy(instance_id)
            self._mark_gone(gone_at, reason=reason)
        live_instances.discard(self)
        cost = self._meter.total if self._meter is not None else 0.0
        self._emit("destroyed", f"instance {instance_id} destroyed; cost ${cost:.4f}")
        offer = self._candidate.offer if self._candidate is not None else None
        dph = self._meter.price.dph_total if self._meter is not None else None
        # said where the rental was shown (terminal, notebook, log): leaving visibly ends billing
        Progress(self._progress_setting).close(
            destroyed_line(instance_id, reason, cost, offer, dph)
        )
        if not self._entered:
            self._close_resources()  # launched without 'with': nothing else will close them

    def _create_onstart(self) -> str | None:
        """The onstart of the next create: the backstop's lines, then the user's onstart."""
        return self._backstop.onstart(
            self.onstart, self._client.base_url, self.profile, self.run_id
        )

    def _close_resources(self) -> None:
        self._backstop.stop()
        if self._closed:
            return
        self._closed = True
        if self._progress is not None:
            self._progress.close()
        if self._owns_client:
            self._client.close()
        if self._owns_ledger and self._ledger is not None:
            self._ledger.close()

    def close(self) -> None:
        """Destroy the instance (unless ``keep``) and close what this object opened."""
        try:
            if self.keep:
                self._keep()
            else:
                self.destroy()
        finally:
            self._close_resources()

    def __repr__(self) -> str:
        view = self._view
        if view is None:
            return f"<Instance {self.profile.name!r} run={self.run_id} not launched>"
        status = "destroyed" if self._stage is Stage.DESTROYED else view.state.value
        return f"<Instance {view.id} {self.profile.name!r} run={self.run_id} {status}>"


_REASONS = {
    "exit": "when the with block ended",
    "exception": "when an exception left the with block",
    "interrupted": "on Ctrl-C",
    "sigterm": "on SIGTERM",
    "system_exit": "on exit",
    "destroy": "by destroy()",
}
"""Why an instance was destroyed, as the line printed then says it."""


def destroyed_line(
    instance_id: int, reason: str, cost: float, offer: Offer | None, dph: float | None
) -> str:
    """``instance 123 (1x RTX 4090, machine 45) destroyed when the with block ended;
    billing stopped; it cost $0.0004 at 0.258 $/h``."""
    what = f"instance {instance_id}"
    if offer is not None:
        what += f" ({offer.num_gpus}x {offer.gpu_name}, machine {offer.machine_id})"
    why = _REASONS.get(reason, f"({reason})")
    rate = f" at {dph:.3f} $/h" if dph is not None else ""
    return f"{what} destroyed {why}; billing stopped; it cost ${cost:.4f}{rate}"


def _default_timeouts() -> InstanceTimeouts:
    """:class:`InstanceTimeouts` with the configured poll interval (``$VASTKIT_POLL_INTERVAL``,
    else the config file's ``poll_interval_s``), else the defaults."""
    configured = poll_interval_setting()
    if configured is None:
        return InstanceTimeouts()
    return InstanceTimeouts(poll_interval=configured[0])


def _exit_reason(exc: BaseException | None) -> str:
    if exc is None:
        return "exit"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, SystemExit):
        return "sigterm" if exc.code == 128 + signal.SIGTERM else "system_exit"
    return "exception"

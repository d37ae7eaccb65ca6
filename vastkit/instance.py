"""The instance lifecycle: rent, wait through each phase, use, and always destroy.

:class:`Instance` is the context manager users hold. The parts it is built from are public too,
for the job layer and for tests: every one waits through an injected
:class:`~vastkit.clock.Clock`, so tests drive hours of virtual time in milliseconds.

- the label scheme ``vastkit/<run_id>/<attempt>`` and its parser;
- :class:`PhaseWaiter`, the per-phase deadline state machine that waits for ``running``;
- :func:`destroy_confirmed`, destroy retried with backoff until the API says the instance is gone;
- :class:`SignalGuard`, which turns SIGTERM into an exception in the main thread and defers
  interrupts while an instance is being destroyed;
- :class:`Progress`, a live status line (rich in a terminal or a notebook, plain lines otherwise);
- :class:`CostMeter`, which accrues cost from the rented contract's prices and observed states.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import IO, Any, Literal, Protocol

import attrs

from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest, InstanceState, Offer, PortBinding
from vastkit.api.models import Instance as ApiInstance
from vastkit.budget import BudgetGuard, ContractPrice, hourly_rate
from vastkit.clock import Clock, SystemClock
from vastkit.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    DestroyFailedError,
    GoneError,
    NotFoundError,
    PermissionDeniedError,
    ProvisioningError,
    RateLimitError,
    ServerError,
)
from vastkit.ledger import Ledger
from vastkit.profiles import GpuProfile, get_profile
from vastkit.selector import Candidate, build_query, select_offers

__all__ = [
    "DEFAULT_IMAGE",
    "LABEL_PREFIX",
    "CostMeter",
    "DestroyFailedError",
    "Instance",
    "InstanceEvent",
    "InstanceTimeouts",
    "OutbidDecision",
    "OutbidPolicy",
    "PhaseOutcome",
    "PhaseWaiter",
    "Progress",
    "ProvisioningAttempt",
    "SignalGuard",
    "destroy_confirmed",
    "make_label",
    "new_run_id",
    "owner_alive",
    "owner_metadata",
    "parse_label",
    "pid_alive",
]

logger = logging.getLogger("vastkit.instance")

LABEL_PREFIX = "vastkit/"
"""Every instance vastkit rents carries a label that starts with this."""

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LABEL = re.compile(r"vastkit/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/([1-9][0-9]{0,8})")


def new_run_id(clock: Clock | None = None) -> str:
    """A fresh, sortable run id: UTC time of creation plus 8 random hex digits.

    Args:
        clock: The clock that gives the time (default: the real time).

    Returns:
        A string such as ``"20260101-000000-3fa94c1b"``.
    """
    now = clock.now() if clock is not None else time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{secrets.token_hex(4)}"


def make_label(run_id: str, attempt: int) -> str:
    """The label of attempt ``attempt`` of run ``run_id``: ``vastkit/<run_id>/<attempt>``.

    Raises:
        ValueError: ``run_id`` has characters other than letters, digits, ``.``, ``_`` and ``-``
            (or is empty or too long), or ``attempt`` is not a positive integer.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be a positive integer (got {attempt!r})")
    return f"{LABEL_PREFIX}{run_id}/{attempt}"


def parse_label(label: str | None) -> tuple[str, int] | None:
    """Read ``(run_id, attempt)`` back from a vastkit label.

    Returns:
        The pair, or None when ``label`` is not a vastkit label (surrounding whitespace is
        ignored, since Vast may pad strings).
    """
    if not label:
        return None
    match = _LABEL.fullmatch(label.strip())
    if match is None:
        return None
    return match.group(1), int(match.group(2))


# --------------------------------------------------------------------------------------------
# Waiting through the phases


@attrs.frozen(kw_only=True)
class PhaseOutcome:
    """How waiting for ``running`` ended."""

    ok: bool
    """True when the instance reached ``running``."""
    reason: str
    """``running``, or why it failed: ``provisioning_deadline``, ``loading_deadline``,
    ``running_deadline``, ``exited``, ``failed``, ``host_lost``, ``outbid``, ``vanished``."""
    detail: str = ""
    """A human explanation (with Vast's ``status_msg`` when it said something)."""
    instance: ApiInstance | None = None
    """The last view of the instance."""
    elapsed: float = 0.0
    """Seconds from the start of the wait to its end."""
    blame_machine: bool = False
    """Whether the failure points at the machine (so it should be blocked for a while)."""


class PhaseWaiter:
    """Polls an instance until it runs, with a deadline per phase.

    Phases are ``provisioning`` (accepted, no container yet; also "scheduling", i.e. stopped
    while waiting for GPUs), ``loading`` (image pull and container start) and the total time to
    ``running``. The time in a phase counts from the first poll that saw it. ``offline`` or
    ``unknown`` for longer than the grace period means the host is lost.

    Args:
        poll: Returns the current view of the instance, or None when it no longer exists. An
            :class:`~vastkit.errors.APIError` from it counts as "no news": the wait goes on until a
            deadline.
        clock: The clock to read and sleep on.
        timeouts: The deadlines (an :class:`~vastkit.instance.InstanceTimeouts`).
        on_state: Called with each new view of the instance (for progress and events).
        expect_bid_stop: Treat the stopped triple of a bid instance as ``outbid`` (True) rather
            than as scheduling.
    """

    def __init__(
        self,
        poll: Callable[[], ApiInstance | None],
        *,
        clock: Clock,
        timeouts: InstanceTimeouts,
        on_state: Callable[[ApiInstance, str, float], None] | None = None,
        expect_bid_stop: bool = True,
    ) -> None:
        self._poll = poll
        self._clock = clock
        self._timeouts = timeouts
        self._on_state = on_state
        self._expect_bid_stop = expect_bid_stop

    def wait(self) -> PhaseOutcome:
        """Wait until the instance runs or a deadline passes.

        Returns:
            The outcome; never raises for an instance that fails to start.
        """
        t = self._timeouts
        start = self._clock.now()
        first_seen: dict[str, float] = {}
        lost_since: float | None = None
        last: ApiInstance | None = None
        api_errors = 0
        while True:
            now = self._clock.now()
            try:
                view = self._poll()
            except APIError as exc:
                if isinstance(exc, AuthenticationError | PermissionDeniedError):
                    raise
                api_errors += 1
                logger.warning("polling the instance failed (%s); will retry", exc)
                view = last
                gone = False
            else:
                gone = view is None
            now = self._clock.now()
            elapsed = now - start
            if gone:
                return PhaseOutcome(
                    ok=False,
                    reason="vanished",
                    detail="the instance disappeared before it ran (destroyed elsewhere?)",
                    instance=last,
                    elapsed=elapsed,
                )
            if view is not None:
                last = view
                state = view.state
                phase = _phase_of(state)
                if phase not in first_seen:
                    first_seen[phase] = now
                if self._on_state is not None:
                    self._on_state(view, phase, now - first_seen[phase])
                msg = (view.status_msg or "").strip()
                if state is InstanceState.RUNNING:
                    return PhaseOutcome(ok=True, reason="running", instance=view, elapsed=elapsed)
                if state is InstanceState.EXITED:
                    return PhaseOutcome(
                        ok=False,
                        reason="exited",
                        detail=f"the container exited{': ' + msg if msg else ''}",
                        instance=view,
                        elapsed=elapsed,
                        blame_machine=True,
                    )
                if state is InstanceState.FAILED:
                    return PhaseOutcome(
                        ok=False,
                        reason="failed",
                        detail=f"the container failed to start: {msg}",
                        instance=view,
                        elapsed=elapsed,
                        blame_machine=True,
                    )
                if state is InstanceState.OUTBID and self._expect_bid_stop:
                    return PhaseOutcome(
                        ok=False,
                        reason="outbid",
                        detail="outbid before it started",
                        instance=view,
                        elapsed=elapsed,
                    )
                if state in (InstanceState.OFFLINE, InstanceState.UNKNOWN):
                    if lost_since is None:
                        lost_since = now
                    if now - lost_since >= t.host_lost_grace:
                        return PhaseOutcome(
                            ok=False,
                            reason="host_lost",
                            detail=(
                                f"the host was {state.value} for "
                                f"{now - lost_since:.0f} s (grace {t.host_lost_grace:.0f} s)"
                            ),
                            instance=view,
                            elapsed=elapsed,
                            blame_machine=True,
                        )
                else:
                    lost_since = None
                if phase in ("provisioning", "loading"):
                    limit = t.provisioning if phase == "provisioning" else t.loading
                    spent = now - first_seen[phase]
                    if spent >= limit:
                        return PhaseOutcome(
                            ok=False,
                            reason=f"{phase}_deadline",
                            detail=(
                                f"still {phase} after {spent:.0f} s (deadline {limit:.0f} s)"
                                + (f"; Vast says: {msg}" if msg else "")
                            ),
                            instance=view,
                            elapsed=elapsed,
                            blame_machine=True,
                        )
            if elapsed >= t.running:
                state_text = last.state.value if last is not None else "never seen"
                return PhaseOutcome(
                    ok=False,
                    reason="running_deadline",
                    detail=(
                        f"not running after {elapsed:.0f} s (deadline {t.running:.0f} s); "
                        f"last state {state_text}"
                        + (f", {api_errors} failed polls" if api_errors else "")
                    ),
                    instance=last,
                    elapsed=elapsed,
                    blame_machine=last is not None,
                )
            self._clock.sleep(t.poll_interval)


def _phase_of(state: InstanceState) -> str:
    if state in (InstanceState.PROVISIONING, InstanceState.STOPPED):
        return "provisioning"
    if state is InstanceState.LOADING:
        return "loading"
    return state.value


# --------------------------------------------------------------------------------------------
# Destroy until the API confirms


class _Destroyer(Protocol):
    def destroy_instance(self, instance_id: int) -> bool: ...

    def get_instance(self, instance_id: int) -> ApiInstance | None: ...


def destroy_confirmed(
    client: _Destroyer,
    instance_id: int,
    *,
    clock: Clock,
    deadline: float = 900.0,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    rng: random.Random | None = None,
) -> float:
    """Destroy an instance, retrying with backoff until the API confirms it is gone.

    Gone means ``destroy_instance`` answered that it did not exist, or ``get_instance`` returns
    None after a destroy. Transport errors, 5xx and 429 are retried with exponential backoff and
    jitter; a rejected key (401/403) is raised at once since retrying cannot help.

    Args:
        client: The API client.
        instance_id: The instance to destroy.
        clock: The clock to sleep on.
        deadline: Seconds to keep trying.
        first_delay: The first backoff delay in seconds.
        max_delay: The largest backoff delay.
        rng: Random source for jitter.

    Returns:
        The time (``clock.now()``) at which the instance was confirmed gone.

    Raises:
        DestroyFailedError: Still not confirmed gone after ``deadline`` seconds.
        AuthenticationError: The API key was refused.
        PermissionDeniedError: The key may not destroy this instance.
    """
    rng = rng or random.Random()
    start = clock.now()
    delay = first_delay
    tries = 0
    last_problem = ""
    while True:
        tries += 1
        try:
            existed = client.destroy_instance(instance_id)
            if not existed:
                return clock.now()
            if client.get_instance(instance_id) is None:
                return clock.now()
            last_problem = "the instance is still listed after destroy"
        except (AuthenticationError, PermissionDeniedError):
            raise
        except APIError as exc:
            last_problem = str(exc)
            logger.warning("destroying instance %s failed (try %d): %s", instance_id, tries, exc)
        if clock.now() - start >= deadline:
            raise DestroyFailedError(
                f"instance {instance_id} could not be confirmed destroyed after {tries} tries "
                f"over {clock.now() - start:.0f} s ({last_problem}); it may still be billing: "
                f"destroy it by hand (vastai destroy instance {instance_id}) or run "
                "vastkit.reconcile",
                instance_id=instance_id,
            )
        clock.sleep(delay * rng.uniform(0.5, 1.0))
        delay = min(delay * 2.0, max_delay)


# --------------------------------------------------------------------------------------------
# Signals


class SignalGuard:
    """Makes SIGTERM unwind the stack like Ctrl-C, and defers both while destroying.

    Installed only when running in the main thread (signal handlers can only be set there);
    elsewhere it does nothing. The previous handlers are restored on :meth:`uninstall`, and a
    SIGTERM caught while installed is passed on to a previous Python handler afterwards.
    """

    def __init__(self) -> None:
        self._installed = False
        self._previous_term: Any = None
        self._previous_int: Any = None
        self._deferring = False
        self._deferred: list[int] = []
        self.got_sigterm = False
        """Whether a SIGTERM arrived while installed."""

    @property
    def active(self) -> bool:
        """Whether handlers are installed."""
        return self._installed

    def install(self) -> None:
        """Install the SIGTERM handler (main thread only; a no-op elsewhere or twice)."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        try:
            self._previous_term = signal.signal(signal.SIGTERM, self._on_term)
        except ValueError:  # not the main interpreter
            return
        self._installed = True

    def uninstall(self) -> None:
        """Restore the previous handlers; re-deliver a SIGTERM to a previous Python handler."""
        if not self._installed:
            return
        signal.signal(signal.SIGTERM, self._previous_term)
        self._installed = False
        previous = self._previous_term
        if self.got_sigterm and callable(previous):
            self.got_sigterm = False
            previous(signal.SIGTERM, None)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.got_sigterm = True
        if self._deferring:
            logger.warning("SIGTERM received while destroying the instance; finishing first")
            self._deferred.append(signum)
            return
        logger.warning("SIGTERM received: destroying the instance before exiting")
        raise SystemExit(128 + signum)

    def _on_int(self, signum: int, frame: FrameType | None) -> None:
        logger.warning("interrupt received while destroying the instance; finishing first")
        self._deferred.append(signum)

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Hold SIGTERM and SIGINT until the block ends, then raise for the first one held."""
        main = threading.current_thread() is threading.main_thread()
        previous_int: Any = None
        if main:
            try:
                previous_int = signal.signal(signal.SIGINT, self._on_int)
            except ValueError:
                main = False
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            if main:
                signal.signal(signal.SIGINT, previous_int)
            held, self._deferred = self._deferred, []
            if held and sys.exc_info()[1] is None:
                if held[0] == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + held[0])


# --------------------------------------------------------------------------------------------
# Progress line


class Progress:
    """One live status line while something waits.

    In a terminal or a Jupyter notebook it is a rich spinner updated in place; otherwise (a log
    file, CI) it writes a plain line only when the text changes. ``enabled=False`` writes nothing.

    Args:
        enabled: True, False, or None for "when stderr is a terminal or a notebook, else plain".
        file: Where plain lines go (default: ``sys.stderr``).
    """

    def __init__(self, enabled: bool | None = None, *, file: IO[str] | None = None) -> None:
        self._enabled = enabled is not False
        self._file = file
        self._status: Any = None
        self._last = ""
        self._rich = False
        if self._enabled:
            try:
                from rich.console import Console

                console = Console(file=file or sys.stderr)
                self._rich = bool(console.is_terminal or console.is_jupyter) and file is None
                if self._rich:
                    self._status = console.status("")
            except Exception:  # pragma: no cover - rich missing or broken terminal
                self._rich = False

    @property
    def live(self) -> bool:
        """Whether the line is drawn in place (terminal or notebook)."""
        return self._rich

    def update(self, text: str) -> None:
        """Show ``text`` as the current status."""
        if not self._enabled or text == self._last:
            return
        self._last = text
        if self._rich:
            self._status.update(text)
            self._status.start()
        else:
            stream = self._file or sys.stderr
            stream.write(f"vastkit: {text}\n")
            stream.flush()

    def close(self, final: str | None = None) -> None:
        """Stop the live line and, when given, print a final line."""
        if self._rich and self._status is not None:
            self._status.stop()
        if final and self._enabled:
            stream = self._file or sys.stderr
            stream.write(f"vastkit: {final}\n")
            stream.flush()


# --------------------------------------------------------------------------------------------
# Cost


class CostMeter:
    """Accrues the cost of one instance from its contract prices and its observed states.

    Rates follow :func:`vastkit.budget.hourly_rate`: GPU and storage while running, storage only
    in every other existing state, nothing offline. Between two observations the earlier state
    is assumed (a step function), so the error is at most one poll interval of the rate.

    Args:
        price: The rented contract's prices.
        start: When the instance was created (clock time).
    """

    def __init__(self, price: ContractPrice, *, start: float) -> None:
        self.price = price
        self._last_time = start
        self._last_state: InstanceState = InstanceState.PROVISIONING
        self._cost = 0.0
        self._closed = False

    def observe(self, now: float, state: InstanceState) -> float:
        """Account up to ``now`` at the previous state's rate, then switch to ``state``.

        Returns:
            The cost so far in dollars.
        """
        if not self._closed:
            if now > self._last_time:
                rate = hourly_rate(self.price, self._last_state)
                self._cost += rate * (now - self._last_time) / 3600.0
                self._last_time = now
            self._last_state = state
        return self._cost

    def reprice(self, now: float, price: ContractPrice) -> None:
        """Switch to new prices from ``now`` on (a raised bid)."""
        self.observe(now, self._last_state)
        self.price = price

    def cost_at(self, now: float) -> float:
        """The cost in dollars if the instance stayed in its last state until ``now``."""
        if self._closed or now <= self._last_time:
            return self._cost
        rate = hourly_rate(self.price, self._last_state)
        return self._cost + rate * (now - self._last_time) / 3600.0

    def rate(self) -> float:
        """What the instance accrues now, in $/h."""
        return 0.0 if self._closed else hourly_rate(self.price, self._last_state)

    def close(self, now: float) -> float:
        """Stop accruing at ``now`` (destroyed). Returns the final cost in dollars."""
        self.observe(now, self._last_state)
        self._closed = True
        return self._cost

    @property
    def total(self) -> float:
        """The cost accounted so far, in dollars."""
        return self._cost


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ============================================================================================
# The public part
# ============================================================================================


def _positive_number(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be greater than 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class InstanceTimeouts:
    """Deadlines and pacing for one instance's life, in seconds of the injected clock.

    The three phase deadlines apply to each offer tried: an instance that overruns one is
    destroyed, its machine blocked for :attr:`machine_block`, and the next offer tried.
    """

    provisioning: float = attrs.field(default=600.0, validator=_positive_number)
    """Longest an instance may stay accepted without a container (``actual_status`` null or
    ``created``, or stopped while waiting for its GPUs)."""
    loading: float = attrs.field(default=1200.0, validator=_positive_number)
    """Longest the image pull and container start (``loading``) may take."""
    running: float = attrs.field(default=1800.0, validator=_positive_number)
    """Longest from create until ``running``, all phases together."""
    host_lost_grace: float = attrs.field(default=120.0, validator=_positive_number)
    """How long ``offline`` or ``unknown`` is tolerated while starting before the host counts
    as lost."""
    poll_interval: float = attrs.field(default=5.0, validator=_positive_number)
    """Time between two looks at a starting instance."""
    destroy: float = attrs.field(default=900.0, validator=_positive_number)
    """How long destroy keeps retrying before it raises (the instance may still bill then)."""
    machine_block: float = attrs.field(default=6 * 3600.0, validator=_positive_number)
    """How long a machine that failed us stays blocked (in the ledger, for every process)."""
    create_retries: int = attrs.field(default=2)
    """Extra create tries on one offer after a timeout or 5xx, each only after listing by
    label proved that the previous try rented nothing."""

    def __attrs_post_init__(self) -> None:
        if isinstance(self.create_retries, bool) or self.create_retries < 0:
            raise ValueError(f"create_retries must be 0 or more (got {self.create_retries!r})")


OutbidAction = Literal["raise", "wait", "give_up"]


@attrs.frozen(kw_only=True)
class OutbidDecision:
    """What to do about an outbid instance right now (see :meth:`OutbidPolicy.decide`)."""

    action: OutbidAction
    """``raise`` (send :attr:`bid`), ``wait`` (look again later) or ``give_up`` (destroy)."""
    bid: float | None = None
    """The new bid in $/h when raising."""
    reason: str = ""
    """Why, for people."""


@attrs.frozen(kw_only=True)
class OutbidPolicy:
    """What an interruptible instance does when it is outbid while running.

    Build one with :meth:`raise_bid`, :meth:`wait` or :meth:`give_up`. Raising never passes the
    cap: the profile's ``max_bid`` and ``max_dph`` minus storage (and :attr:`max_bid` when set).
    A ``raise`` policy whose bid is already at the cap falls back to waiting :attr:`wait_s`.
    """

    action: OutbidAction = "raise"
    """``raise``, ``wait`` or ``give_up``."""
    step: float = attrs.field(default=0.2, validator=_positive_number)
    """Raise the bid by this fraction above the higher of our bid and Vast's current
    ``min_bid`` (0.2 = 20 %)."""
    max_bid: float | None = None
    """An extra cap in $/h on top of the profile's caps."""
    wait_s: float = attrs.field(default=600.0)
    """How long to wait for the GPUs to come back before giving the instance up."""

    def __attrs_post_init__(self) -> None:
        if self.action not in ("raise", "wait", "give_up"):
            raise ValueError(
                f"action must be 'raise', 'wait' or 'give_up' (got {self.action!r})"
            )
        if not self.wait_s >= 0:
            raise ValueError(f"wait_s must be 0 or more (got {self.wait_s!r})")
        if self.max_bid is not None and not self.max_bid > 0:
            raise ValueError(f"max_bid must be greater than 0 (got {self.max_bid!r})")

    @classmethod
    def raise_bid(
        cls, *, step: float = 0.2, max_bid: float | None = None, then_wait_s: float = 600.0
    ) -> OutbidPolicy:
        """Raise the bid (up to the cap), then wait ``then_wait_s`` once at the cap.

        Args:
            step: Fraction to raise by each time.
            max_bid: An extra cap in $/h.
            then_wait_s: How long to wait at the cap before giving up.
        """
        return cls(action="raise", step=step, max_bid=max_bid, wait_s=then_wait_s)

    @classmethod
    def wait(cls, seconds: float) -> OutbidPolicy:
        """Keep the bid and wait up to ``seconds`` for the GPUs to come back, then give up."""
        return cls(action="wait", wait_s=seconds)

    @classmethod
    def give_up(cls) -> OutbidPolicy:
        """Destroy the instance as soon as it is outbid."""
        return cls(action="give_up", wait_s=0.0)

    def cap(self, profile_cap: float) -> float:
        """The highest bid allowed, given the profile's cap."""
        return profile_cap if self.max_bid is None else min(profile_cap, self.max_bid)

    def next_bid(self, *, current_bid: float, min_bid: float | None, cap: float) -> float | None:
        """The bid to raise to, or None when the bid is already at the cap.

        Args:
            current_bid: Our bid in $/h.
            min_bid: Vast's current ``min_bid`` for the machine, when known.
            cap: The profile's cap (this policy's :attr:`max_bid` is applied on top).
        """
        # Bids are sent with 6 decimals: floor the cap to that grid first, so a bid at the cap
        # compares equal to it (a rounded-down cap would otherwise be "raised" to itself forever).
        limit = math.floor(self.cap(cap) * 1e6 + 1e-6) / 1e6
        if current_bid >= limit - 1e-9:
            return None
        target = max(current_bid, min_bid or 0.0) * (1.0 + self.step)
        bid = round(min(target, limit), 6)
        return bid if bid > current_bid + 1e-9 else None

    def decide(
        self,
        *,
        outbid_for: float,
        current_bid: float,
        min_bid: float | None,
        cap: float,
        raised_at_current: bool = False,
    ) -> OutbidDecision:
        """Decide what to do about an instance outbid for ``outbid_for`` seconds.

        Args:
            outbid_for: Seconds since the outbid was first seen.
            current_bid: Our bid in $/h.
            min_bid: Vast's current ``min_bid``, when known.
            cap: The profile's cap in $/h.
            raised_at_current: The current bid was already a raise for this outbid and the
                instance has not come back yet (then only a higher ``min_bid`` warrants another
                raise).
        """
        if self.action == "give_up":
            return OutbidDecision(action="give_up", reason="the policy gives up when outbid")
        if self.action == "raise":
            needs_raise = not raised_at_current or (min_bid or 0.0) >= current_bid
            if needs_raise:
                bid = self.next_bid(current_bid=current_bid, min_bid=min_bid, cap=cap)
                if bid is not None:
                    return OutbidDecision(
                        action="raise",
                        bid=bid,
                        reason=f"raising the bid {current_bid:.4f} -> {bid:.4f} $/h",
                    )
        if outbid_for >= self.wait_s:
            return OutbidDecision(
                action="give_up",
                reason=f"outbid for {outbid_for:.0f} s (waited up to {self.wait_s:.0f} s)",
            )
        return OutbidDecision(
            action="wait", reason=f"outbid for {outbid_for:.0f} s of {self.wait_s:.0f} s"
        )


@attrs.frozen(kw_only=True)
class InstanceEvent:
    """Something that happened to an instance, passed to ``on_event``.

    Kinds: ``searching``, ``offer_chosen``, ``created``, ``phase``, ``running``,
    ``offer_failed`` (destroyed, next offer), ``bid_too_low``, ``outbid``, ``bid_raised``,
    ``outbid_waiting``, ``outbid_recovered``, ``outbid_gave_up``, ``host_lost``,
    ``destroying``, ``destroyed``, ``kept``.
    """

    kind: str
    """What happened (see above)."""
    message: str
    """One line for people."""
    time: float
    """When (clock time)."""
    run_id: str
    """The run."""
    attempt: int | None = None
    """The attempt number (the last part of the label)."""
    instance_id: int | None = None
    """The instance, once created."""
    offer_id: int | None = None
    """The offer."""
    machine_id: int | None = None
    """The machine."""
    state: InstanceState | None = None
    """The instance's state when it happened, if known."""


@attrs.frozen(kw_only=True)
class ProvisioningAttempt:
    """What happened on one create (one attempt), as listed by ``ProvisioningError.attempts``."""

    attempt: int
    """The attempt number."""
    offer_id: int
    """The offer tried."""
    machine_id: int
    """Its machine."""
    outcome: str
    """``running``, or why it failed: ``offer_gone``, ``bid_too_low``, ``create_failed``,
    ``provisioning_deadline``, ``loading_deadline``, ``running_deadline``, ``exited``,
    ``failed``, ``host_lost``, ``outbid``, ``vanished``."""
    detail: str = ""
    """The explanation."""
    instance_id: int | None = None
    """The instance, when one was created."""
    bid: float | None = None
    """The bid sent, for an interruptible rental."""
    seconds: float = 0.0
    """How long the attempt took."""
    machine_blocked: bool = False
    """Whether the machine was blocked because of it."""

    def __str__(self) -> str:
        where = f"offer {self.offer_id} (machine {self.machine_id})"
        inst = f", instance {self.instance_id}" if self.instance_id is not None else ""
        return f"#{self.attempt} {where}{inst}: {self.outcome}" + (
            f" - {self.detail}" if self.detail else ""
        )


MAX_REBIDS = 3
"""How many times one offer is retried with a higher bid after "bid too low"."""

SAMPLE_EVERY_S = 60.0
"""Cost samples go to the ledger on every state change and at least this often while polled,
so budgets read the spend of a running instance."""

DEFAULT_IMAGE = "vastai/base-image:@vastai-automatic-tag"
"""The image used when neither the call nor the profile names one."""

_live_instances: weakref.WeakSet[Instance] = weakref.WeakSet()
_MACHINE_FAILURES = frozenset(
    {"provisioning_deadline", "loading_deadline", "running_deadline", "exited", "failed",
     "host_lost"}
)


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


class Instance:
    """One rented Vast.ai instance, destroyed when the ``with`` block ends.

    ::

        with vastkit.Instance("dev-test", image="pytorch/pytorch:latest") as inst:
            print(inst.ssh_command, inst.dph)

    Entering searches and ranks offers for the profile, reconciles what earlier runs left
    behind, writes a create intent to the ledger, rents the best offer with the label
    ``vastkit/<run_id>/<attempt>`` and waits through provisioning, loading and running, each
    with its own deadline (:class:`InstanceTimeouts`). An offer that fails (deadline overrun,
    ``exited``, ``created`` with an error, offer gone, bid too low) is destroyed, its machine
    blocked in the ledger, and the next offer tried, up to ``max_offers``.

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
        timeouts: Deadlines and pacing.
        max_offers: The most offers to try before raising
            :class:`~vastkit.errors.ProvisioningError`.
        keep: Keep the instance when the block ends (for debugging): it goes on billing, and a
            warning and a ledger record say so.
        on_event: Called with an :class:`InstanceEvent` for everything that happens.
        outbid: What to do when an interruptible instance is outbid (default: raise the bid up
            to the profile's cap, then wait 10 minutes, then give up).
        run_id: The run id in the label (default: a fresh one).
        project: The project recorded in the ledger (for budgets and the cost report).
        team: The team recorded in the ledger.
        progress: Show a live status line: True, False, or None for automatic (a live line in
            a terminal or notebook, plain lines otherwise).
        reconcile_on_enter: Run :func:`vastkit.reconcile` before renting.
        runtype: Vast's launch mode for the container.

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
    ) -> None:
        if isinstance(max_offers, bool) or not isinstance(max_offers, int) or max_offers < 1:
            raise ValueError(f"max_offers must be a positive integer (got {max_offers!r})")
        resolved = _resolve_profile(profile)
        if disk_gb is not None and float(disk_gb) != resolved.disk_gb:
            # offers are searched, priced and capped with the disk actually rented
            resolved = attrs.evolve(resolved, disk_gb=float(disk_gb))
        self.profile: GpuProfile = resolved
        """The profile this instance was rented for (with ``disk_gb`` applied)."""
        self.image = image or self.profile.image or DEFAULT_IMAGE
        self.disk_gb = self.profile.disk_gb
        self.env: dict[str, str] = dict(env or {})
        self.onstart = onstart
        self.runtype = runtype
        self.timeouts = timeouts or InstanceTimeouts()
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
        self._attempt_no = 0
        self._entered = False
        self._launched = False
        self._closed = False
        self._destroyed = False
        self._kept = False
        self._view: ApiInstance | None = None
        self._candidate: Candidate | None = None
        self._bid: float | None = None
        self._bid_cap_value: float | None = None
        self._meter: CostMeter | None = None
        self._outbid_since: float | None = None
        self._raised_for_outbid = False
        self._end_reason: str | None = None
        self._signals = SignalGuard()
        self._progress: Progress | None = None
        self._books: _Books | None = None
        self._intent: _Intent | None = None
        self._pending_label: str | None = None
        self.attempts: list[ProvisioningAttempt] = []
        """What happened on each create, in order (also when launch succeeded)."""

    # -- entering and leaving -----------------------------------------------------------------

    def __enter__(self) -> Instance:
        if self._entered:
            raise RuntimeError("an Instance can be entered only once; create a new one")
        if self._launched:
            raise RuntimeError("this Instance was already launched; use it without 'with'")
        self._entered = True
        self._signals.install()
        try:
            self._launch()
        except BaseException:
            try:
                self._cleanup_after_failed_launch()
            finally:
                self._signals.uninstall()
            raise
        return self

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
        inst._signals.install()
        try:
            inst._launch()
        except BaseException:
            try:
                inst._cleanup_after_failed_launch()
            finally:
                inst._signals.uninstall()
                inst._close_resources()
            raise
        inst._signals.uninstall()
        return inst

    def __del__(self) -> None:
        if getattr(self, "_view", None) is not None and not (self._destroyed or self._kept):
            warnings.warn(
                f"Instance {self._view.id if self._view else '?'} ({self.run_id}) was garbage "
                "collected while it still exists and bills; destroy it with inst.destroy() or "
                "use 'with vastkit.Instance(...)'",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )

    # -- what a user reads ---------------------------------------------------------------------

    def _require(self) -> ApiInstance:
        if self._view is None:
            raise RuntimeError("the instance is not launched yet; use 'with' or Instance.launch()")
        return self._view

    @property
    def id(self) -> int:
        """The Vast instance id."""
        return self._require().id

    @property
    def label(self) -> str:
        """The instance label, ``vastkit/<run_id>/<attempt>``."""
        self._require()
        return make_label(self.run_id, self._attempt_no)

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
    def instance(self) -> ApiInstance:
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
        return self._destroyed

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

    # -- what a user does ----------------------------------------------------------------------

    def refresh(self) -> ApiInstance:
        """Look at the instance again, apply the outbid policy, and return the new view.

        Returns:
            The instance as the API shows it now (the last view when it is already destroyed).

        Raises:
            ProvisioningError: The instance no longer exists although it was not destroyed here.
        """
        view = self._require()
        if self._destroyed:
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
    ) -> ApiInstance:
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
            if self._destroyed:
                raise ProvisioningError(
                    f"instance {self.id} ended ({self._end_reason}) before reaching "
                    f"{target.value}",
                    attempts=list(self.attempts),
                )
            view = self.refresh()
            if not self._destroyed and view.state is target:
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
        if self._destroyed or self._view is None:
            self._destroyed = self._destroyed or self._view is not None
            return
        instance_id = self._view.id
        self._emit("destroying", f"destroying instance {instance_id} ({reason})")
        with self._signals.deferring():
            gone_at = destroy_confirmed(
                self._client,
                instance_id,
                clock=self._clock,
                deadline=self.timeouts.destroy,
            )
            self._mark_gone(gone_at, reason=reason)
        _live_instances.discard(self)
        cost = self._meter.total if self._meter is not None else 0.0
        self._emit("destroyed", f"instance {instance_id} destroyed; cost ${cost:.4f}")
        if not self._entered:
            self._close_resources()  # launched without 'with': nothing else will close them

    # -- internals: launching ------------------------------------------------------------------

    def _emit(self, kind: str, message: str, *, state: InstanceState | None = None) -> None:
        view = self._view
        candidate = self._candidate
        event = InstanceEvent(
            kind=kind,
            message=message,
            time=self._clock.now(),
            run_id=self.run_id,
            attempt=self._attempt_no or None,
            instance_id=view.id if view is not None else None,
            offer_id=candidate.offer.id if candidate is not None else None,
            machine_id=candidate.offer.machine_id if candidate is not None else None,
            state=state if state is not None else (view.state if view is not None else None),
        )
        logger.info("%s: %s", self.run_id, message)
        if self._on_event is not None:
            self._on_event(event)

    def _status(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(text)

    def _get_ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger()
        return self._ledger

    def _launch(self) -> None:
        if self._launched:
            raise RuntimeError("this Instance was already launched")
        self._launched = True
        self._progress = Progress(self._progress_setting)
        ledger = self._get_ledger()
        profile = self.profile
        if self.reconcile_on_enter:
            self._status(f"{profile.name}: reconciling instances left by earlier runs")
            from vastkit.reconcile import reconcile

            report = reconcile(self._client, ledger, clock=self._clock)
            if report.destroyed:
                logger.warning("%s", report.summary())
        if self._budget is not None:
            self._budget.preflight(profile)
        books = _Books(ledger, self)
        books.start_run()
        self._status(f"{profile.name}: searching offers")
        self._emit("searching", f"searching offers for profile {profile.name!r}")
        query = build_query(profile)
        offers = self._client.search_offers(query)
        now = self._clock.now()
        candidates = select_offers(
            profile, offers, now=now, blocked=ledger.blocked_machines(now=now)
        )
        tried = 0
        for candidate in candidates:
            if tried >= self.max_offers:
                break
            if candidate.offer.machine_id in ledger.blocked_machines(now=self._clock.now()):
                continue  # blocked by another process meanwhile
            tried += 1
            bid = candidate.bid
            for _ in range(MAX_REBIDS + 1):
                outcome, rebid = self._try_offer(books, candidate, bid)
                if outcome == "running":
                    self._progress.close(
                        f"instance {self.id} running on machine {self.machine_id} "
                        f"at {self.dph:.3f} $/h"
                    )
                    _live_instances.add(self)
                    return
                if rebid is None:
                    break
                bid = rebid
        self._progress.close()
        books.end_run("failed")
        lines = "\n  ".join(str(a) for a in self.attempts)
        raise ProvisioningError(
            f"no instance came up for profile {profile.name!r} after {tried} "
            f"offer(s) ({len(self.attempts)} attempt(s)):\n  {lines}",
            attempts=list(self.attempts),
        )

    def _bid_cap(self, offer: Offer) -> float:
        cap = self.profile.max_dph - offer.storage_dph(self.disk_gb)
        if self.profile.max_bid is not None:
            cap = min(cap, self.profile.max_bid)
        return self.outbid_policy.cap(cap)

    def _try_offer(
        self, books: _Books, candidate: Candidate, bid: float | None
    ) -> tuple[str, float | None]:
        """One create on ``candidate`` and the wait that follows.

        Returns:
            ``("running", None)``, or the failure outcome and a higher bid to retry the same
            offer with (None: move on).
        """
        offer = candidate.offer
        self._attempt_no += 1
        attempt = self._attempt_no
        self._candidate = candidate
        self._view = None
        label = make_label(self.run_id, attempt)
        started = self._clock.now()
        request = CreateInstanceRequest(
            image=self.image,
            disk_gb=self.disk_gb,
            env=self.env,
            onstart=self.onstart,
            label=label,
            price=bid,
            runtype=self.runtype,
        )
        price = ContractPrice.from_offer(offer, disk_gb=self.disk_gb, bid=bid)
        self._status(
            f"{self.profile.name}: renting offer {offer.id} (machine {offer.machine_id}, "
            f"{price.dph_total:.3f} $/h{', bid' if bid is not None else ''}), attempt {attempt}"
        )
        self._emit("offer_chosen", f"attempt {attempt}: renting offer {offer.id}")
        intent = books.intent(attempt, label, candidate, bid, price)
        self._pending_label = label

        def record(
            outcome: str,
            detail: str = "",
            instance_id: int | None = None,
            blocked: bool = False,
        ) -> None:
            self.attempts.append(
                ProvisioningAttempt(
                    attempt=attempt,
                    offer_id=offer.id,
                    machine_id=offer.machine_id,
                    outcome=outcome,
                    detail=detail,
                    instance_id=instance_id,
                    bid=bid,
                    seconds=self._clock.now() - started,
                    machine_blocked=blocked,
                )
            )

        created = self._create(offer, request, label, attempt)
        if isinstance(created, _CreateFailure):
            self._pending_label = None
            if created.contract is not None:
                # The error body carried an instance: it exists (stopped) and bills storage.
                books.created(intent, created.contract)
                gone_at = destroy_confirmed(
                    self._client,
                    created.contract,
                    clock=self._clock,
                    deadline=self.timeouts.destroy,
                )
                books.ended(intent, created.outcome, cost=0.0, when=gone_at)
            else:
                books.abandon(intent, created.outcome)
            record(created.outcome, created.detail, created.contract)
            self._emit(
                "bid_too_low" if created.outcome == "bid_too_low" else "offer_failed",
                f"attempt {attempt} on offer {offer.id}: {created.outcome}: {created.detail}",
            )
            if created.outcome == "bid_too_low" and bid is not None:
                return created.outcome, self.outbid_policy.next_bid(
                    current_bid=bid, min_bid=offer.min_bid, cap=self._bid_cap(offer)
                )
            return created.outcome, None

        instance_id = created
        self._pending_label = None
        self._meter = CostMeter(price, start=self._clock.now())
        books.created(intent, instance_id)
        self._books = books
        self._intent = intent
        self._bid = bid
        self._bid_cap_value = self._bid_cap(offer) if bid is not None else None
        self._view = ApiInstance(id=instance_id, machine_id=offer.machine_id, label=label,
                                 is_bid=bid is not None)
        self._emit("created", f"attempt {attempt}: instance {instance_id} created")

        last_phase: list[str] = [""]

        def on_state(view: ApiInstance, phase: str, in_phase: float) -> None:
            now = self._clock.now()
            self._observe(view, now)
            if phase != last_phase[0]:
                last_phase[0] = phase
                books.phase(intent, phase, now)
                self._emit("phase", f"instance {instance_id}: {phase}", state=view.state)
            msg = (view.status_msg or "").strip()
            self._status(
                f"{self.profile.name}: instance {instance_id} {phase} {in_phase:.0f} s"
                + (f" - {msg[:60]}" if msg else "")
            )

        waiter = PhaseWaiter(
            lambda: self._client.get_instance(instance_id),
            clock=self._clock,
            timeouts=self.timeouts,
            on_state=on_state,
            expect_bid_stop=bid is not None,
        )
        outcome = waiter.wait()
        if outcome.ok:
            assert outcome.instance is not None
            self._observe(outcome.instance, self._clock.now())
            books.phase(intent, "running", self._clock.now())
            record("running", instance_id=instance_id)
            self._emit("running", f"instance {instance_id} is running", state=InstanceState.RUNNING)
            return "running", None

        # Failed: destroy it, block the machine when it is to blame, and move on.
        blocked = outcome.blame_machine and outcome.reason in _MACHINE_FAILURES
        self._status(f"{self.profile.name}: instance {instance_id} {outcome.reason}; destroying")
        with self._signals.deferring():
            gone_at = destroy_confirmed(
                self._client, instance_id, clock=self._clock, deadline=self.timeouts.destroy
            )
            cost = self._meter.close(gone_at)
            books.ended(intent, outcome.reason, cost=cost, when=gone_at)
        self._view = None
        self._intent = None
        if blocked:
            books.block(offer.machine_id, outcome.reason, outcome.detail)
        record(outcome.reason, outcome.detail, instance_id, blocked)
        self._emit(
            "offer_failed",
            f"attempt {attempt}: instance {instance_id} on machine {offer.machine_id} "
            f"{outcome.reason}: {outcome.detail}; destroyed"
            + (", machine blocked" if blocked else ""),
        )
        if outcome.reason == "outbid" and bid is not None:
            last = outcome.instance
            return outcome.reason, self.outbid_policy.next_bid(
                current_bid=bid,
                min_bid=last.min_bid if last is not None else None,
                cap=self._bid_cap(offer),
            )
        return outcome.reason, None

    def _create(
        self, offer: Offer, request: CreateInstanceRequest, label: str, attempt: int
    ) -> int | _CreateFailure:
        """Create, never leaving two live instances for one attempt.

        A create that timed out or failed with 5xx may still have rented: before any retry the
        instances with this attempt's label are listed, and one found is adopted (extra ones
        destroyed). A failed list is raised, never read as "nothing was rented".
        """
        delay = 2.0
        last_error: APIError | None = None
        for try_no in range(self.timeouts.create_retries + 1):
            if try_no:
                found = [
                    i
                    for i in self._client.list_instances(label=label)
                    if parse_label(i.label) == (self.run_id, attempt)
                ]
                if found:
                    found.sort(key=lambda i: i.id)
                    keep, extra = found[0], found[1:]
                    for other in extra:
                        destroy_confirmed(
                            self._client, other.id, clock=self._clock,
                            deadline=self.timeouts.destroy,
                        )
                    logger.warning(
                        "create of %s failed (%s) but instance %s was rented: adopting it",
                        label, last_error, keep.id,
                    )
                    return keep.id
                self._clock.sleep(delay * random.uniform(0.5, 1.0))
                delay *= 2
            try:
                return self._client.create_instance(offer.id, request).id
            except APIStatusError as exc:
                contract = exc.new_contract
                if contract is not None:
                    too_low = request.price is not None
                    return _CreateFailure(
                        "bid_too_low" if too_low else "create_failed",
                        (exc.msg or str(exc)) + f" (instance {contract} destroyed)",
                        contract,
                    )
                if isinstance(exc, NotFoundError | GoneError):
                    return _CreateFailure("offer_gone", exc.msg or str(exc))
                if isinstance(exc, ServerError | RateLimitError):
                    last_error = exc
                    continue
                raise
            except APIConnectionError as exc:
                last_error = exc
                continue
        # Every try failed: make sure none of them rented before giving up on the offer.
        found = [
            i
            for i in self._client.list_instances(label=label)
            if parse_label(i.label) == (self.run_id, attempt)
        ]
        if found:
            found.sort(key=lambda i: i.id)
            for other in found[1:]:
                destroy_confirmed(
                    self._client, other.id, clock=self._clock, deadline=self.timeouts.destroy
                )
            return found[0].id
        return _CreateFailure("create_failed", str(last_error))

    # -- internals: observing ------------------------------------------------------------------

    def _observe(self, view: ApiInstance, now: float) -> None:
        self._view = view
        if self._meter is not None:
            self._meter.observe(now, view.state)
        if self._books is not None and self._intent is not None:
            self._books.sample(self._intent, view.state, now)

    def _apply_outbid_policy(self, view: ApiInstance, now: float) -> None:
        state = view.state
        if state is not InstanceState.OUTBID or self._bid is None:
            if self._outbid_since is not None and state is InstanceState.RUNNING:
                self._outbid_since = None
                self._raised_for_outbid = False
                self._emit("outbid_recovered", f"instance {view.id} runs again")
            if state in (InstanceState.OFFLINE, InstanceState.UNKNOWN):
                self._emit("host_lost", f"instance {view.id}: host is {state.value}")
            return
        if self._outbid_since is None:
            self._outbid_since = now
            self._emit("outbid", f"instance {view.id} was outbid (bid {self._bid:.4f} $/h)")
        assert self._bid_cap_value is not None
        decision = self.outbid_policy.decide(
            outbid_for=now - self._outbid_since,
            current_bid=self._bid,
            min_bid=view.min_bid,
            cap=self._bid_cap_value,
            raised_at_current=self._raised_for_outbid,
        )
        if decision.action == "raise" and decision.bid is not None:
            self._client.change_bid(view.id, decision.bid)
            self._bid = decision.bid
            self._raised_for_outbid = True
            if self._meter is not None:
                self._meter.reprice(now, attrs.evolve(self._meter.price, gpu_dph=decision.bid))
            self._emit("bid_raised", f"instance {view.id}: {decision.reason}")
        elif decision.action == "give_up":
            self._emit("outbid_gave_up", f"instance {view.id}: giving up: {decision.reason}")
            self.destroy(reason="outbid")
        else:
            self._emit("outbid_waiting", f"instance {view.id}: {decision.reason}")

    def _mark_gone(self, when: float, *, reason: str) -> None:
        self._destroyed = True
        self._end_reason = reason
        cost = self._meter.close(when) if self._meter is not None else 0.0
        if self._books is not None and self._intent is not None:
            self._books.ended(self._intent, reason, cost=cost, when=when)
            self._books.end_run("ended" if reason in ("exit", "destroy") else reason)

    def _keep(self) -> None:
        if self._view is None or self._destroyed:
            return
        self._kept = True
        self._end_reason = "kept"
        if self._books is not None and self._intent is not None:
            self._books.kept(self._intent)
        _live_instances.discard(self)
        message = (
            f"keeping instance {self._view.id} ({self.ssh_command or 'no ssh yet'}): it bills "
            f"{self.dph:.3f} $/h until destroyed (vastai destroy instance {self._view.id})"
        )
        self._emit("kept", message)
        warnings.warn(message, UserWarning, stacklevel=3)

    def _cleanup_after_failed_launch(self) -> None:
        try:
            if self._view is not None and not self._destroyed:
                self.destroy(reason="launch_interrupted")
            elif self._pending_label is not None:
                self._sweep_label(self._pending_label)
        finally:
            if self._progress is not None:
                self._progress.close()
            if self._ledger is not None and self._launched:
                run = self._ledger.get_run(self.run_id)
                if run is not None and run.ended_at is None:
                    self._ledger.end_run(self.run_id, "failed", at=self._clock.now())

    def _sweep_label(self, label: str) -> None:
        """A create may have rented although we never learnt its id: destroy by label."""
        try:
            found = self._client.list_instances(label=label)
        except APIError as exc:
            logger.error(
                "cannot list instances labelled %s (%s): one may exist and bill; "
                "vastkit.reconcile will destroy it once the API answers", label, exc,
            )
            return
        with self._signals.deferring():
            for item in found:
                if (item.label or "").strip() == label:
                    destroy_confirmed(
                        self._client, item.id, clock=self._clock, deadline=self.timeouts.destroy
                    )

    def _close_resources(self) -> None:
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
        status = "destroyed" if self._destroyed else view.state.value
        return f"<Instance {view.id} {self.profile.name!r} run={self.run_id} {status}>"


@attrs.frozen
class _CreateFailure:
    outcome: str
    detail: str
    contract: int | None = None


def _exit_reason(exc: BaseException | None) -> str:
    if exc is None:
        return "exit"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, SystemExit):
        return "sigterm" if exc.code == 128 + signal.SIGTERM else "system_exit"
    return "exception"


@atexit.register
def _destroy_live_instances_at_exit() -> None:
    for inst in list(_live_instances):
        if inst.destroyed or inst.keep:
            continue
        logger.warning(
            "interpreter exiting with instance %s still live: destroying it", inst.run_id
        )
        try:
            inst.destroy(reason="interpreter_exit")
        except Exception:
            logger.exception("could not destroy instance of run %s at exit", inst.run_id)


# --------------------------------------------------------------------------------------------
# Ledger bookkeeping


def _process_start(pid: int) -> str | None:
    """The start time of a process (Linux ``/proc``), to tell a reused pid from the original."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _record_create_intent(
    ledger: Ledger,
    run_id: str,
    attempt: int,
    *,
    offer: Offer,
    label: str,
    bid: float | None,
    price: ContractPrice,
    disk_gb: float,
    at: float,
) -> tuple[int, int]:
    """Write the create intent and the attempt row before renting ``offer`` (the ``run_job``
    orchestrator records its attempts the same way).

    Returns:
        The intent id and the attempt id.
    """
    intent_id = ledger.begin_intent(run_id, attempt, offer_id=offer.id, label=label, at=at)
    attempt_id = ledger.record_attempt(
        run_id,
        attempt,
        offer_id=offer.id,
        machine_id=offer.machine_id,
        label=label,
        rental="interruptible" if bid is not None else "on-demand",
        bid=bid,
        gpu_name=offer.gpu_name,
        num_gpus=offer.num_gpus,
        disk_gb=disk_gb,
        dph_base=offer.dph_base,
        dph_total=price.dph_total,
        storage_cost=offer.storage_cost_per_gb_month,
        storage_dph=price.storage_dph,
        intent_at=at,
    )
    return intent_id, attempt_id


def owner_metadata() -> dict[str, Any]:
    """Who owns a run: this host, process id and process start time.

    Stored under ``"owner"`` in the run's ledger metadata; :func:`vastkit.reconcile` destroys the
    instances of a run whose owner process is gone.
    """
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _process_start(pid)}


def owner_alive(metadata: Mapping[str, Any] | None) -> bool | None:
    """Whether the process that owns a run is still running.

    Returns:
        True or False for an owner on this host; None when it cannot be told (another host,
        or no owner recorded).
    """
    owner = (metadata or {}).get("owner")
    if not isinstance(owner, Mapping):
        return None
    if owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    if not pid_alive(pid):
        return False
    started = owner.get("started")
    if started is not None:
        current = _process_start(pid)
        if current is not None and current != started:
            return False  # the pid was reused by another process
    return True


@attrs.define
class _Intent:
    intent_id: int
    attempt_id: int


class _Books:
    """What one :class:`Instance` writes to the ledger."""

    def __init__(self, ledger: Ledger, inst: Instance) -> None:
        self._ledger = ledger
        self._inst = inst
        self._last_state: dict[int, tuple[str, float]] = {}

    def _now(self) -> float:
        return self._inst._clock.now()

    def start_run(self) -> None:
        inst = self._inst
        self._ledger.record_run(
            inst.run_id,
            name=f"instance:{inst.profile.name}",
            project=inst.project,
            team=inst.team,
            profile=inst.profile.name,
            status="running",
            metadata={"kind": "instance", "owner": owner_metadata()},
            at=self._now(),
        )

    def end_run(self, status: str) -> None:
        self._ledger.end_run(self._inst.run_id, status, at=self._now())

    def intent(
        self,
        attempt: int,
        label: str,
        candidate: Candidate,
        bid: float | None,
        price: ContractPrice,
    ) -> _Intent:
        intent_id, attempt_id = _record_create_intent(
            self._ledger,
            self._inst.run_id,
            attempt,
            offer=candidate.offer,
            label=label,
            bid=bid,
            price=price,
            disk_gb=self._inst.disk_gb,
            at=self._now(),
        )
        return _Intent(intent_id, attempt_id)

    def created(self, it: _Intent, instance_id: int) -> None:
        now = self._now()
        self._ledger.complete_intent(it.intent_id, instance_id=instance_id, at=now)
        self._ledger.update_attempt(it.attempt_id, instance_id=instance_id, created_at=now)
        meter = self._inst._meter
        storage = meter.price.storage_dph if meter is not None else 0.0
        self._ledger.add_cost_sample(
            it.attempt_id, state=InstanceState.PROVISIONING.value, rate_dph=storage, at=now
        )

    def abandon(self, it: _Intent, outcome: str) -> None:
        now = self._now()
        self._ledger.complete_intent(it.intent_id, error=outcome, at=now)
        self._ledger.update_attempt(it.attempt_id, end_reason=outcome, ended_at=now)

    def phase(self, it: _Intent, phase: str, now: float) -> None:
        if phase in ("loading", "running"):
            self._ledger.mark_phase(it.attempt_id, phase, at=now)

    def sample(self, it: _Intent, state: InstanceState, now: float) -> None:
        """Record the rate when the state changes, and at least every minute while it bills."""
        meter = self._inst._meter
        if meter is None:
            return
        last = self._last_state.get(it.attempt_id)
        if last is not None and last[0] == state.value and now - last[1] < SAMPLE_EVERY_S:
            return
        self._last_state[it.attempt_id] = (state.value, now)
        self._ledger.add_cost_sample(
            it.attempt_id, state=state.value, rate_dph=hourly_rate(meter.price, state), at=now
        )

    def ended(self, it: _Intent, reason: str, *, cost: float, when: float) -> None:
        self._ledger.add_cost_sample(it.attempt_id, state="destroyed", rate_dph=0.0, at=when)
        self._ledger.update_attempt(
            it.attempt_id, end_reason=reason, ended_at=when, destroyed_at=when
        )
        logger.info("attempt %s ended (%s), cost $%.4f", it.attempt_id, reason, cost)

    def kept(self, it: _Intent) -> None:
        self._ledger.update_attempt(it.attempt_id, end_reason="kept")
        self._ledger.update_run(self._inst.run_id, status="kept")

    def block(self, machine_id: int, reason: str, detail: str) -> None:
        self._ledger.block_machine(
            machine_id,
            reason=f"{reason}: {detail}" if detail else reason,
            for_s=self._inst.timeouts.machine_block,
            at=self._now(),
        )

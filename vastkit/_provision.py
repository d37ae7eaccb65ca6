"""The attempt engine: every rental in vastkit is made, watched to ``running`` and destroyed here.

Both :class:`vastkit.Instance` and ``run_job`` rent through one :class:`Provisioner`:

1. :meth:`Provisioner.candidates` searches offers for a profile and ranks them, leaving out the
   machines the ledger blocks and those the caller avoids;
2. :meth:`Provisioner.begin` writes the create intent and the attempt row to the ledger *before*
   anything is rented, so a crash between the create and the next write is found again;
3. :meth:`Provisioner.create` sends the one ``create_instance`` call in the library outside the API
   client. A create that may have reached the server (timeout, 5xx, 429, a garbled answer) is
   retried only after listing by label proved it rented nothing (lists the account's creates in
   the process share: :mod:`vastkit._label_sweeps`); an instance found is adopted, never a
   second one rented for the attempt. Each create carries the registry login, and each
   instance rented gets the user's SSH key (:mod:`vastkit.access`, resolved before searching);
4. :class:`PhaseWaiter` waits through provisioning, loading and running with a deadline per phase;
   the decisions are :class:`PhaseTracker`'s, a state machine over observations with no I/O;
5. :meth:`Provisioner.retire` destroys until the API confirms the instance is gone
   (:func:`destroy_confirmed`), settles the attempt in the ledger and blocks a machine that failed
   us, for every driver's searches.

Every wait goes through the injected clock and every retry through :mod:`vastkit.retry`.
Outcomes are values (:class:`CreateFailure`, :class:`PhaseOutcome`), never strings parsed back.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from vastkit._label_sweeps import LabelSweeps, label_sweeps_for
from vastkit.access import AccessPlan, RentalAccess, attach_quietly, direct_only_where_open
from vastkit.api.client import Client
from vastkit.api.models import CreateInstanceRequest, InstanceInfo, InstanceState, Offer
from vastkit.clock import Clock
from vastkit.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    DestroyFailedError,
    GoneError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    RouteNotFoundError,
    ServerError,
)
from vastkit.ledger import Fence, LeaseLost, Ledger
from vastkit.money import ContractPrice
from vastkit.profiles import GpuProfile
from vastkit.retry import RetryPolicy, retry_call
from vastkit.selector import Candidate, build_query, select_offers

__all__ = [
    "DEFAULT_IMAGE",
    "MACHINE_FAILURES",
    "AttemptTicket",
    "CreateFailure",
    "CreateFailureKind",
    "Destroyer",
    "InstanceTimeouts",
    "PhaseOutcome",
    "PhaseTracker",
    "PhaseWaiter",
    "Provisioner",
    "destroy_confirmed",
    "phase_of",
]

logger = logging.getLogger("vastkit.instance")

DEFAULT_IMAGE = "vastai/base-image:@vastai-automatic-tag"
"""The image used when neither the call nor the profile names one."""

MACHINE_FAILURES = frozenset(
    {
        "provisioning_deadline",
        "loading_deadline",
        "running_deadline",
        "exited",
        "failed",
        "host_lost",
        "heartbeat_stale",
        "worker_never_started",
        "worker_crashed",
    }
)
"""Attempt ends that point at the machine: it is blocked for a while after them."""


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
    instance: InstanceInfo | None = None
    """The last view of the instance."""
    elapsed: float = 0.0
    """Seconds from the start of the wait to its end."""
    blame_machine: bool = False
    """Whether the failure points at the machine (so it should be blocked for a while)."""


@attrs.define
class PhaseTracker:
    """The decisions of a wait for ``running``, as a state machine over observations (no I/O).

    Feed it what each poll saw (:meth:`see`, or :meth:`poll_failed` when the poll raised), then
    ask :meth:`decide` whether the wait is over. :class:`PhaseWaiter` is the shell that polls
    and sleeps; tests drive the tracker directly with generated observations.

    Attributes:
        timeouts: The deadlines.
        start: When the wait began.
        expect_bid_stop: Treat the stopped triple of a bid instance as ``outbid``.
    """

    timeouts: InstanceTimeouts
    start: float
    expect_bid_stop: bool = True
    first_seen: dict[str, float] = attrs.field(factory=dict)
    """When each phase was first seen."""
    lost_since: float | None = None
    """Since when the host has been ``offline``/``unknown`` (None: it is not)."""
    last: InstanceInfo | None = None
    """The last view seen."""
    failed_polls: int = 0
    """Polls that raised an API error."""

    def see(self, view: InstanceInfo, now: float) -> tuple[str, float]:
        """Record ``view`` at ``now``; returns its phase and the seconds spent in that phase."""
        self.last = view
        phase = phase_of(view.state)
        self.first_seen.setdefault(phase, now)
        return phase, now - self.first_seen[phase]

    def poll_failed(self) -> None:
        """Record a poll that raised (no news: the last view stands)."""
        self.failed_polls += 1

    def vanished(self, now: float) -> PhaseOutcome:
        """The outcome when the instance no longer exists."""
        return PhaseOutcome(
            ok=False,
            reason="vanished",
            detail="the instance disappeared before it ran (destroyed elsewhere?)",
            instance=self.last,
            elapsed=now - self.start,
        )

    def decide(self, now: float) -> PhaseOutcome | None:
        """Whether the wait is over at ``now`` (an outcome), or goes on (None)."""
        elapsed = now - self.start
        view = self.last
        if view is not None:
            outcome = self._by_state(view, now, elapsed)
            if outcome is not None:
                return outcome
        t = self.timeouts
        if elapsed >= t.running:
            state_text = view.state.value if view is not None else "never seen"
            return PhaseOutcome(
                ok=False,
                reason="running_deadline",
                detail=(
                    f"not running after {elapsed:.0f} s (deadline {t.running:.0f} s); "
                    f"last state {state_text}"
                    + (f", {self.failed_polls} failed polls" if self.failed_polls else "")
                ),
                instance=view,
                elapsed=elapsed,
                blame_machine=view is not None,
            )
        return None

    def _by_state(self, view: InstanceInfo, now: float, elapsed: float) -> PhaseOutcome | None:
        t = self.timeouts
        state = view.state
        msg = (view.status_msg or "").strip()

        def end(reason: str, detail: str, *, blame: bool = True) -> PhaseOutcome:
            return PhaseOutcome(
                ok=False,
                reason=reason,
                detail=detail,
                instance=view,
                elapsed=elapsed,
                blame_machine=blame,
            )

        if state is InstanceState.RUNNING:
            return PhaseOutcome(ok=True, reason="running", instance=view, elapsed=elapsed)
        if state is InstanceState.EXITED:
            return end("exited", f"the container exited{': ' + msg if msg else ''}")
        if state is InstanceState.FAILED:
            return end("failed", f"the container failed to start: {msg}")
        if state is InstanceState.OUTBID and self.expect_bid_stop:
            return end("outbid", "outbid before it started", blame=False)
        if state in (InstanceState.OFFLINE, InstanceState.UNKNOWN):
            if self.lost_since is None:
                self.lost_since = now
            if now - self.lost_since >= t.host_lost_grace:
                return end(
                    "host_lost",
                    f"the host was {state.value} for {now - self.lost_since:.0f} s "
                    f"(grace {t.host_lost_grace:.0f} s)",
                )
        else:
            self.lost_since = None
        phase = phase_of(state)
        if phase in ("provisioning", "loading"):
            limit = t.provisioning if phase == "provisioning" else t.loading
            spent = now - self.first_seen.get(phase, now)
            if spent >= limit:
                return end(
                    f"{phase}_deadline",
                    f"still {phase} after {spent:.0f} s (deadline {limit:.0f} s)"
                    + (f"; Vast says: {msg}" if msg else ""),
                )
        return None


class PhaseWaiter:
    """Polls an instance until it runs, with a deadline per phase.

    Phases are ``provisioning`` (accepted, no container yet; also "scheduling", i.e. stopped
    while waiting for GPUs), ``loading`` (image pull and container start) and the total time to
    ``running``. The time in a phase counts from the first poll that saw it. ``offline`` or
    ``unknown`` for longer than the grace period means the host is lost. The decisions are the
    :class:`PhaseTracker`'s; this class only polls, reports and sleeps.

    Args:
        poll: Returns the current view of the instance, or None when it no longer exists. An
            :class:`~vastkit.errors.APIError` from it counts as "no news": the wait goes on until a
            deadline.
        clock: The clock to read and sleep on.
        timeouts: The deadlines (an :class:`InstanceTimeouts`).
        on_state: Called with each new view of the instance (for progress and events).
        expect_bid_stop: Treat the stopped triple of a bid instance as ``outbid`` (True) rather
            than as scheduling.
    """

    def __init__(
        self,
        poll: Callable[[], InstanceInfo | None],
        *,
        clock: Clock,
        timeouts: InstanceTimeouts,
        on_state: Callable[[InstanceInfo, str, float], None] | None = None,
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
        tracker = PhaseTracker(
            self._timeouts, self._clock.now(), expect_bid_stop=self._expect_bid_stop
        )
        while True:
            try:
                view = self._poll()
            except APIError as exc:
                if isinstance(exc, AuthenticationError | PermissionDeniedError):
                    raise
                logger.warning("polling the instance failed (%s); will retry", exc)
                tracker.poll_failed()
                view = tracker.last
            else:
                if view is None:
                    return tracker.vanished(self._clock.now())
            now = self._clock.now()
            if view is not None:
                phase, in_phase = tracker.see(view, now)
                if self._on_state is not None:
                    self._on_state(view, phase, in_phase)
            outcome = tracker.decide(now)
            if outcome is not None:
                return outcome
            self._clock.sleep(self._timeouts.poll_interval)


def phase_of(state: InstanceState) -> str:
    if state in (InstanceState.PROVISIONING, InstanceState.STOPPED):
        return "provisioning"
    if state is InstanceState.LOADING:
        return "loading"
    return state.value


class Destroyer(Protocol):
    """What :func:`destroy_confirmed` needs of a client."""

    def destroy_instance(self, instance_id: int) -> bool: ...

    def get_instance(self, instance_id: int) -> InstanceInfo | None: ...


def destroy_confirmed(
    client: Destroyer,
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
    start = clock.now()
    policy = RetryPolicy(
        attempts=None,
        initial_delay=first_delay,
        max_delay=max_delay,
        deadline=deadline,
        persistent=True,
    )
    tries = [0]

    def destroy_once() -> float:
        tries[0] += 1
        if not client.destroy_instance(instance_id):
            return clock.now()
        if client.get_instance(instance_id) is None:
            return clock.now()
        raise _StillListed("the instance is still listed after destroy")

    def log(exc: Exception, retry: int, wait: float) -> None:
        if not isinstance(exc, _StillListed):
            logger.warning("destroying instance %s failed (try %d): %s", instance_id, retry, exc)

    try:
        return retry_call(
            destroy_once,
            policy=policy,
            clock=clock,
            retry_if=_destroy_may_succeed_later,
            rng=rng,
            on_retry=log,
            what=f"destroying instance {instance_id}",
        )
    except (_StillListed, APIError) as exc:
        if isinstance(exc, AuthenticationError | PermissionDeniedError):
            raise
        raise DestroyFailedError(
            f"instance {instance_id} could not be confirmed destroyed after {tries[0]} tries "
            f"over {clock.now() - start:.0f} s ({exc}); it may still be billing: "
            f"destroy it by hand (vastai destroy instance {instance_id}) or run "
            "vastkit.reconcile",
            instance_id=instance_id,
        ) from exc


class _StillListed(Exception):
    """A destroy was answered, but the instance is still listed."""


def _destroy_may_succeed_later(exc: Exception) -> bool:
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return False
    return isinstance(exc, _StillListed | APIError)


class CreateFailureKind(enum.StrEnum):
    """Why a create rented nothing (or only a contract that was destroyed at once)."""

    OFFER_GONE = "offer_gone"
    """The offer was taken or withdrawn (404 ``no_such_ask``, 410)."""
    BID_TOO_LOW = "bid_too_low"
    """The bid lost: Vast made a stopped contract, which was destroyed."""
    CREATE_FAILED = "create_failed"
    """The create failed (retries used up, or an error contract)."""
    REJECTED = "rejected"
    """Vast refused the request itself (a 4xx other than auth): no retry helps on this offer."""
    ROUTE_MISSING = "route_missing"
    """The create route answered 404/410 itself (not ``no_such_ask``) and a list by label
    proved nothing was rented: no offer can be rented until vastkit's API matches Vast's."""


@attrs.frozen(kw_only=True)
class CreateFailure:
    """A create that left no instance to use."""

    kind: CreateFailureKind
    """Why."""
    detail: str
    """Vast's message or the last error."""
    contract: int | None = None
    """The instance Vast made anyway (a losing bid), already destroyed."""
    destroyed_at: float | None = None
    """When :attr:`contract` was confirmed gone."""
    error: APIStatusError | None = None
    """The error to raise for :attr:`CreateFailureKind.ROUTE_MISSING`."""


@attrs.frozen
class AttemptTicket:
    """The ledger rows of one attempt: its create intent and the attempt itself."""

    intent_id: int
    attempt_id: int


class Provisioner:
    """Rents, finds and destroys instances for one caller, recording each step in the ledger.

    Args:
        client: The API client.
        ledger: Where intents, attempts, cost samples and blocked machines go.
        clock: Every wait goes through it.
        destroy_deadline: Seconds destroys (and lists proving a create rented nothing) keep trying.
        create_retries: Extra create tries on one offer after an error that may have rented.
        retry_interval: The wait between two tries of a failed list.
        rng: Jitter source.
        access: The SSH key and registry login of every rental (default: the environment's).
    """

    def __init__(
        self,
        client: Client,
        ledger: Ledger,
        clock: Clock,
        *,
        destroy_deadline: float = 900.0,
        create_retries: int = 2,
        retry_interval: float = 5.0,
        rng: random.Random | None = None,
        access: AccessPlan | RentalAccess | None = None,
    ) -> None:
        self.client = client
        self.access = access if isinstance(access, AccessPlan) else AccessPlan(resolved=access)
        self.ledger = ledger
        self.clock = clock
        self.destroy_deadline = destroy_deadline
        self.create_policy = RetryPolicy(
            attempts=create_retries + 1, initial_delay=2.0, multiplier=2.0, max_delay=30.0
        )
        self.list_policy = RetryPolicy(
            attempts=None,
            initial_delay=retry_interval,
            multiplier=1.0,
            max_delay=retry_interval,
            deadline=destroy_deadline,
            jitter=False,
            persistent=True,
        )
        self.rng = rng if rng is not None else random.Random()
        self._sweeps: LabelSweeps | None = None
        self.fence: Fence | None = None
        """A queue driver's fencing token (None outside a queue): every write that changes
        money for the job checks it in its transaction, and a destroy is sent only while it
        holds; when it no longer does, :class:`~vastkit.ledger.LeaseLost` is raised."""

    def check_fence(self) -> None:
        """Raise :class:`~vastkit.ledger.LeaseLost` when another driver took the job over."""
        if self.fence is not None and not self.ledger.fence_holds(self.fence):
            raise LeaseLost(f"job {self.fence.job_id}: another driver took it over")

    # -- choosing ------------------------------------------------------------------------------

    def blocked_machines(self, avoid: Mapping[int, float] | None = None) -> set[int]:
        """The machines blocked in the ledger now, plus those ``avoid`` keeps us off.

        Args:
            avoid: Machines the caller stays off, with the time until which it does.
        """
        now = self.clock.now()
        return set(self.ledger.blocked_machines(now=now)) | {
            m for m, until in (avoid or {}).items() if until > now
        }

    def candidates(
        self, profile: GpuProfile, *, blocked: set[int] | None = None
    ) -> list[Candidate]:
        """Search offers for ``profile`` and rank them, without the ``blocked`` machines.

        Args:
            profile: What to rent.
            blocked: Machines to leave out (default: :meth:`blocked_machines`).

        Raises:
            NoOfferError: No offer qualifies (one relaxed search says what would rent).
            APIError: The search failed.
        """
        self.access.resolve()  # a wrong key file fails here, before any API call
        if blocked is None:
            blocked = self.blocked_machines()
        offers = self.client.search_offers(build_query(profile))
        now, search = self.clock.now(), self.client.search_offers  # search: "what would rent"
        return list(select_offers(profile, offers, now=now, blocked=blocked, search=search))

    def is_blocked(self, machine_id: int) -> bool:
        """Whether ``machine_id`` is blocked in the ledger now (maybe by another process)."""
        return machine_id in self.ledger.blocked_machines(now=self.clock.now())

    # -- the ledger around a create ------------------------------------------------------------

    def begin(
        self,
        run_id: str,
        attempt: int,
        *,
        offer: Offer,
        label: str,
        bid: float | None,
        price: ContractPrice,
        disk_gb: float,
    ) -> AttemptTicket:
        """Write the create intent and the attempt row before renting ``offer`` (fenced)."""
        intent_id, attempt_id = self.ledger.begin_attempt(
            run_id,
            attempt,
            offer_id=offer.id,
            label=label,
            at=self.clock.now(),
            fence=self.fence,
            machine_id=offer.machine_id,
            rental="interruptible" if bid is not None else "on-demand",
            bid=bid,
            gpu_name=offer.gpu_name,
            num_gpus=offer.num_gpus,
            disk_gb=disk_gb,
            dph_base=offer.dph_base,
            dph_total=price.dph_total,
            storage_cost=offer.storage_cost_per_gb_month,
            storage_dph=price.storage_dph,
        )
        return AttemptTicket(intent_id, attempt_id)

    def created(self, ticket: AttemptTicket, instance_id: int, price: ContractPrice) -> float:
        """Record that the attempt's instance exists; it bills storage from now. Returns now.

        Raises:
            LeaseLost: The create raced a takeover: the job's new driver adopted the instance,
                or it was destroyed (confirmed) and recorded here.
        """
        now = self.clock.now()
        try:
            self.ledger.record_created(
                ticket.intent_id,
                ticket.attempt_id,
                instance_id=instance_id,
                storage_dph=price.storage_dph,
                at=now,
                fence=self.fence,
            )
        except LeaseLost:
            self._superseded(ticket, instance_id, price, now)
            raise
        return now

    def _superseded(
        self, ticket: AttemptTicket, instance_id: int, price: ContractPrice, created_at: float
    ) -> None:
        """A create that raced a takeover: never leave its instance alone."""
        if self.ledger.attempt_adopted(ticket.attempt_id, instance_id):
            logger.warning(
                "instance %s was created after another driver took the job over; that driver "
                "adopted it",
                instance_id,
            )
            return
        logger.warning(
            "instance %s was created after another driver took the job over: destroying it",
            instance_id,
        )
        gone_at = self.destroy_now(instance_id)
        self.ledger.record_superseded(
            ticket.intent_id,
            ticket.attempt_id,
            instance_id=instance_id,
            created_at=created_at,
            gone_at=gone_at,
            storage_dph=price.storage_dph,
        )

    def failed(self, ticket: AttemptTicket, failure: CreateFailure) -> None:
        """Record a create that left nothing to use (a contract it made is already gone)."""
        self.check_fence()
        now = self.clock.now()
        if failure.contract is not None:
            gone = failure.destroyed_at if failure.destroyed_at is not None else now
            self.ledger.complete_intent(
                ticket.intent_id, instance_id=failure.contract, at=now, fence=self.fence
            )
            self.ledger.update_attempt(
                ticket.attempt_id, instance_id=failure.contract, created_at=now, fence=self.fence
            )
            self.ended(ticket, failure.kind.value, when=gone)
            return
        self.ledger.complete_intent(
            ticket.intent_id, error=failure.kind.value, at=now, fence=self.fence
        )
        self.ledger.update_attempt(
            ticket.attempt_id, end_reason=failure.kind.value, ended_at=now, fence=self.fence
        )

    def ended(self, ticket: AttemptTicket, reason: str, *, when: float) -> None:
        """Record that the attempt's instance is confirmed gone at ``when``."""
        self._settle(ticket.attempt_id, reason, when)

    def _settle(self, attempt_id: int, reason: str, when: float) -> None:
        self.ledger.settle_attempt(attempt_id, reason=reason, at=when, fence=self.fence)

    def retire(
        self,
        attempt_id: int,
        instance_id: int,
        reason: str,
        *,
        detail: str = "",
        block_machine: int | None = None,
        block_for: float = 0.0,
    ) -> float:
        """Destroy an attempt's instance until confirmed and settle the attempt in the ledger.

        Args:
            attempt_id: The attempt's ledger row.
            instance_id: Its instance.
            reason: Why it ends, as recorded.
            detail: The explanation (recorded with a machine block).
            block_machine: A machine to keep out of every driver's searches (it failed us).
            block_for: For how many seconds.

        Returns:
            When the instance was confirmed gone.

        Raises:
            LeaseLost: Another driver took the job over (before the destroy: nothing done).
        """
        gone_at = self.destroy(instance_id)
        self._settle(attempt_id, reason, gone_at)
        if block_machine is not None:
            self.block(block_machine, reason, detail, for_s=block_for)
        return gone_at

    def block(self, machine_id: int, reason: str, detail: str, *, for_s: float) -> None:
        """Keep ``machine_id`` out of every driver's searches for ``for_s`` seconds."""
        self.ledger.block_machine(
            machine_id,
            reason=f"{reason}: {detail}" if detail else reason,
            for_s=for_s,
            at=self.clock.now(),
            fence=self.fence,
        )

    # -- the create ----------------------------------------------------------------------------

    def create(self, offer: Offer, request: CreateInstanceRequest) -> int | CreateFailure:
        """Rent ``offer``, never leaving two live instances for one attempt (one label).

        Returns:
            The new instance's id (or the id of the one an earlier try rented), or why nothing
            usable was rented.

        Raises:
            ConfigError: The access could not be resolved (before anything is sent).
            AuthenticationError, PermissionDeniedError: The key was refused.
            APIError: A list by label, needed before a retry, kept failing.
        """
        created = self._create(offer, self.access.request_for(request))
        if not isinstance(created, CreateFailure):
            attach_quietly(self.client, created, self.access.resolve().public_key)
        return created

    def _create(self, offer: Offer, request: CreateInstanceRequest) -> int | CreateFailure:
        label = request.label or ""
        runtype = direct_only_where_open(request.runtype, offer)
        if runtype != request.runtype:
            request = attrs.evolve(request, runtype=runtype)
        start = self.clock.now()
        tries = 0
        last: Exception
        while True:
            tries += 1
            moved: RouteNotFoundError | None = None
            self.check_fence()  # the last look before renting; created() checks again after
            try:
                return self.client.create_instance(offer.id, request).id
            except (AuthenticationError, PermissionDeniedError):
                raise
            except RouteNotFoundError as exc:
                # Not Vast's create handler answering: it may or may not have rented. A list by
                # label settles it; a create sent again would only meet the same route.
                last = exc
                moved = exc
            except APIStatusError as exc:
                failure = self._refused(exc, request)
                if failure is not None:
                    return failure
                last = exc
            except (APIConnectionError, ResponseValidationError) as exc:
                last = exc  # no answer, or a garbled one: the create may have gone through
            found = self.instances_with_label(label)
            if found:
                logger.warning(
                    "create of %s failed (%s) but instance %s was rented: adopting it",
                    label,
                    last,
                    found[0],
                )
                return self._keep_first(found)
            if moved is not None:
                return CreateFailure(
                    kind=CreateFailureKind.ROUTE_MISSING, detail=str(moved), error=moved
                )
            wait = self.create_policy.delay(tries, self.rng)
            if not self.create_policy.allows(tries, elapsed=self.clock.now() - start, wait=wait):
                return CreateFailure(kind=CreateFailureKind.CREATE_FAILED, detail=str(last))
            self.clock.sleep(wait)

    def _refused(self, exc: APIStatusError, request: CreateInstanceRequest) -> CreateFailure | None:
        """What an error answer to a create means; None when it may have rented (retry)."""
        contract = exc.new_contract
        if contract is not None:
            gone = self.destroy_now(contract)
            kind = (
                CreateFailureKind.BID_TOO_LOW
                if request.price is not None
                else CreateFailureKind.CREATE_FAILED
            )
            return CreateFailure(
                kind=kind,
                detail=f"{exc.msg or exc} (instance {contract} destroyed)",
                contract=contract,
                destroyed_at=gone,
            )
        if isinstance(exc, NotFoundError | GoneError):
            return CreateFailure(kind=CreateFailureKind.OFFER_GONE, detail=exc.msg or str(exc))
        if isinstance(exc, ServerError | RateLimitError):
            return None
        return CreateFailure(kind=CreateFailureKind.REJECTED, detail=exc.msg or str(exc))

    def _keep_first(self, found: list[int]) -> int:
        for extra in found[1:]:
            self.destroy_now(extra)
        return found[0]

    def instances_with_label(self, label: str) -> list[int]:
        """The ids of the instances carrying ``label``, oldest first, listed until the API answers.

        A create whose answer was lost may have rented: no other create is sent until a list
        sent after that answer proves otherwise. The creates of the account in this process
        share those lists (:class:`~vastkit._label_sweeps.LabelSweeps`; an API client stand-in
        without an account has its own). Each list is retried for ``destroy_deadline`` seconds,
        then the last error is raised (the create intent left open in the ledger makes the next
        reconcile clean up).
        """
        if self._sweeps is None:
            account = self.client.account_id if isinstance(self.client, Client) else None
            self._sweeps = label_sweeps_for(account) if account else LabelSweeps()
        return self._sweeps.find(label, self._list_labels)

    def _list_labels(self, labels: frozenset[str]) -> list[tuple[int, str | None]]:
        """``(id, label)`` of the instances carrying one of ``labels``, listed until the API
        answers (one label: ``label eq``; several: ``label in``)."""

        def listed() -> list[tuple[int, str | None]]:
            if len(labels) == 1:
                found = self.client.list_instances(label=next(iter(labels)))
            else:
                found = self.client.list_instances(filters={"label": {"in": sorted(labels)}})
            return [(instance.id, instance.label) for instance in found]

        def log(exc: Exception, retry: int, wait: float) -> None:
            logger.warning("listing instances by label failed (%s); trying again", exc)

        what = next(iter(labels)) if len(labels) == 1 else f"{len(labels)} labels"
        return retry_call(
            listed,
            policy=self.list_policy,
            clock=self.clock,
            retry_if=lambda exc: (
                isinstance(exc, APIError)
                and not isinstance(exc, AuthenticationError | PermissionDeniedError)
            ),
            on_retry=log,
            what=f"listing instances labelled {what}",
        )

    # -- waiting and destroying ----------------------------------------------------------------

    def wait_running(
        self,
        poll: Callable[[], InstanceInfo | None],
        timeouts: InstanceTimeouts,
        *,
        on_state: Callable[[InstanceInfo, str, float], None] | None = None,
        expect_bid_stop: bool = True,
    ) -> PhaseOutcome:
        """Wait through the phases of a new instance (see :class:`PhaseWaiter`)."""
        return PhaseWaiter(
            poll,
            clock=self.clock,
            timeouts=timeouts,
            on_state=on_state,
            expect_bid_stop=expect_bid_stop,
        ).wait()

    def destroy(self, instance_id: int) -> float:
        """Destroy until confirmed gone (:func:`destroy_confirmed`); returns when it was gone.

        Raises:
            LeaseLost: Another driver took the job over (nothing was destroyed).
        """
        self.check_fence()
        return self.destroy_now(instance_id)

    def destroy_now(self, instance_id: int) -> float:
        """:meth:`destroy` without the fence check (an instance this driver just rented)."""
        return destroy_confirmed(
            self.client,
            instance_id,
            clock=self.clock,
            deadline=self.destroy_deadline,
            rng=self.rng,
        )

"""What an interruptible instance does when it is outbid: a pure policy, no I/O.

The fixed policies (:meth:`OutbidPolicy.give_up`, :meth:`OutbidPolicy.raise_bid`,
:meth:`OutbidPolicy.wait`) always do the same thing. :meth:`OutbidPolicy.cheapest_expected`
prices the three choices at every outbid and takes the cheapest (:func:`expected_costs`):

* **wait** for the machine: storage (and the time's value) for the expected rest of the outbid,
  estimated from the outbids this job has seen end by themselves (:class:`BidHistory`);
* **raise** the bid just above Vast's ``min_bid`` (the winner's bid): the extra $/h until the
  next outbid is expected, if that bid is within the cap;
* **move** to the best other offer: its price difference until the next outbid is expected,
  plus the recovery (search, create, boot, restore) at its rate.

The price-aware policy is a job's default (:attr:`vastkit.Job.outbid`), bounded by its
``max_wait_s`` (an hour): after that long outbid it moves, whatever the figures say.

Every option restarts the container (an outbid container is stopped), so the work since the
last checkpoint is lost whichever is chosen and is left out of the comparison.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs

from vastkit._validate import MAX_SECONDS, check_choice, check_int, check_number, short_repr
from vastkit.errors import ConfigTypeError, ConfigValueError

__all__ = [
    "MAX_WAIT_S",
    "OUTBID_RULES",
    "BidHistory",
    "OptionCost",
    "OutbidAction",
    "OutbidDecision",
    "OutbidPolicy",
    "OutbidQuote",
    "OutbidRule",
    "expected_costs",
]


OutbidAction = Literal["raise", "wait", "give_up"]
"""What a decision does: raise the bid, wait for the machine, or give it up (move)."""

OutbidRule = Literal["raise", "wait", "give_up", "cheapest_expected"]
"""How a policy decides: one fixed action, or the cheapest expected one at each outbid."""

OUTBID_RULES: tuple[OutbidRule, ...] = ("cheapest_expected", "give_up", "raise", "wait")
"""Every :data:`OutbidRule`, the default first (what a job file's ``outbid:`` may name)."""

RAISE_MARGIN = 0.001
"""$/h above Vast's ``min_bid`` that a price-aware raise bids (the emulator's winning margin)."""

MAX_WAIT_S = 3600.0
"""The longest :meth:`OutbidPolicy.cheapest_expected` waits for one outbid by default (an hour:
the wait it measured at under 1.01x the no-preemption cost, see ``benchmarks/README.md``)."""

_SAID: dict[str, str] = {"wait": "wait", "raise": "raise", "give_up": "move"}
"""How a reason names each action for people (``give_up`` moves to another offer)."""


def _default_wait_s(policy: OutbidPolicy) -> float:
    """The default :attr:`OutbidPolicy.wait_s` of a policy built by its fields (a job file):
    the same as its factory's, so ``{action: cheapest_expected}`` equals
    ``OutbidPolicy.cheapest_expected()`` and ``give_up`` equals ``OutbidPolicy.give_up()``."""
    if policy.action == "cheapest_expected":
        return MAX_WAIT_S
    return 0.0 if policy.action == "give_up" else 600.0


@attrs.frozen(kw_only=True)
class OutbidDecision:
    """What to do about an outbid instance right now (see :meth:`OutbidPolicy.decide`)."""

    action: OutbidAction
    """``raise`` (send :attr:`bid`), ``wait`` (look again later) or ``give_up`` (destroy)."""
    bid: float | None = None
    """The new bid in $/h when raising."""
    reason: str = ""
    """Why, for people."""


def _check_durations(owner: str, field: str, value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigTypeError.of(
            owner,
            field,
            f"must be a tuple of seconds (got {short_repr(value)})",
            allowed="a tuple of seconds",
        )
    for item in value:
        check_number(owner, field, item, minimum=0.0, maximum=MAX_SECONDS)


@attrs.frozen(kw_only=True)
class BidHistory:
    """What one job has seen of the market for its interruptible instances.

    The watch loop builds it as the job runs (:meth:`ran`, :meth:`outbid_seen`,
    :meth:`outbid_ended`); :func:`expected_costs` reads it. Every field is checked when it is
    made: a negative, infinite or missing figure, or more ended outbids than seen, raises
    :class:`~vastkit.errors.ConfigValueError` naming the field.
    """

    running_s: float = 0.0
    """Seconds the job's bid instances held their GPUs."""
    outbids: int = 0
    """Outbids seen (the one going on included)."""
    holds_s: tuple[float, ...] = ()
    """How long each outbid that ended by itself lasted (the machine came back)."""
    left_s: tuple[float, ...] = ()
    """How long each outbid had lasted when the job stopped waiting for it (raised or moved):
    a hold at least this long."""

    def __attrs_post_init__(self) -> None:
        owner = "BidHistory"
        check_number(owner, "running_s", self.running_s, minimum=0.0)
        check_int(owner, "outbids", self.outbids, minimum=0)
        _check_durations(owner, "holds_s", self.holds_s)
        _check_durations(owner, "left_s", self.left_s)
        ended = len(self.holds_s) + len(self.left_s)
        if ended > self.outbids:
            raise ConfigValueError.of(
                owner,
                "outbids",
                f"must count every outbid that ended ({ended} ended; got {self.outbids})",
                allowed="at least len(holds_s) + len(left_s)",
            )

    def ran(self, seconds: float) -> BidHistory:
        """The history after the instance held its GPUs ``seconds`` more."""
        return attrs.evolve(self, running_s=self.running_s + max(seconds, 0.0))

    def outbid_seen(self) -> BidHistory:
        """The history after a new outbid."""
        return attrs.evolve(self, outbids=self.outbids + 1)

    def outbid_ended(self, lasted_s: float, *, by_itself: bool) -> BidHistory:
        """The history after an outbid that lasted ``lasted_s`` ended: by itself (the machine
        came back) or because the job raised or moved."""
        lasted = max(lasted_s, 0.0)
        if by_itself:
            return attrs.evolve(self, holds_s=(*self.holds_s, lasted))
        return attrs.evolve(self, left_s=(*self.left_s, lasted))

    def mean_hold_s(self, *, prior_s: float, ongoing_s: float = 0.0) -> float:
        """The expected rest of an outbid that has lasted ``ongoing_s``.

        Holds are taken as exponential (a competitor leaves at a steady rate, as in the
        emulator), so the expected rest does not depend on how long it has lasted; the mean is
        the maximum-likelihood one over every outbid seen, those cut short counting as at least
        as long as they lasted, with ``prior_s`` as one outbid seen to its end.
        """
        total = prior_s + sum(self.holds_s) + sum(self.left_s) + max(ongoing_s, 0.0)
        return total / (1 + len(self.holds_s))

    def mtbp_s(self, *, prior_s: float) -> float:
        """The expected time from a restart to the next outbid, with ``prior_s`` as one
        preemption interval seen."""
        return (prior_s + self.running_s) / (1 + self.outbids)


@attrs.frozen(kw_only=True)
class OutbidQuote:
    """The prices an outbid decision weighs, as seen at the outbid.

    A bad figure raises :class:`~vastkit.errors.ConfigValueError` naming the field.
    """

    current_bid: float
    """Our bid in $/h."""
    storage_dph: float
    """What the instance's disk costs in $/h in every state."""
    min_bid: float | None
    """Vast's ``min_bid`` for the machine now (the bid holding it), when known."""
    cap: float
    """The highest bid allowed in $/h (the profile's and the policy's caps)."""
    alternative_dph: float | None
    """The best other offer's whole rate in $/h (bid or GPU price plus storage); None when
    none qualifies."""
    recovery_s: float = 120.0
    """Seconds from the decision until training runs again on another machine (search,
    create, boot, worker start, restore)."""
    restart_s: float = 120.0
    """Seconds from the machine coming back until training runs again on it."""
    remaining_s: float | None = None
    """Seconds of training the job still needs, when known."""

    def __attrs_post_init__(self) -> None:
        owner = "OutbidQuote"
        check_number(owner, "current_bid", self.current_bid, minimum=0.0)
        check_number(owner, "storage_dph", self.storage_dph, minimum=0.0)
        check_number(owner, "min_bid", self.min_bid, minimum=0.0, none_ok=True)
        check_number(owner, "cap", self.cap, minimum=0.0)
        check_number(owner, "alternative_dph", self.alternative_dph, minimum=0.0, none_ok=True)
        for field in ("recovery_s", "restart_s"):
            check_number(owner, field, getattr(self, field), minimum=0.0, maximum=MAX_SECONDS)
        check_number(
            owner, "remaining_s", self.remaining_s, minimum=0.0, maximum=MAX_SECONDS, none_ok=True
        )


@attrs.frozen(kw_only=True)
class OptionCost:
    """One choice at an outbid and what it is expected to cost over staying as we were."""

    action: OutbidAction
    """``wait``, ``raise`` or ``give_up`` (move)."""
    cost_usd: float
    """Expected extra cost in $ (the time's value included)."""
    bid: float | None = None
    """The bid a ``raise`` sends."""
    detail: str = ""
    """How the figure was made, for people."""


def expected_costs(
    quote: OutbidQuote,
    history: BidHistory,
    *,
    outbid_for: float,
    prior_hold_s: float,
    prior_mtbp_s: float,
    time_value_dph: float = 0.0,
) -> tuple[OptionCost, ...]:
    """The expected cost of each choice open at an outbid, cheapest first (ties: wait, raise,
    move).

    The horizon of a price difference is the expected time to the next outbid (when the job
    chooses again), cut to the training left when known. Waiting pays storage for the expected
    rest of the hold; raising pays the raised bid's difference over the horizon (only offered
    when the winning bid, ``min_bid`` plus :data:`RAISE_MARGIN`, is within the cap and above our
    bid); moving pays the other offer's difference over the horizon plus the recovery at its
    rate (None: no move is priced). Every idle second is also charged ``time_value_dph``.

    Args:
        quote: The prices seen now.
        history: The job's outbids so far (the current one counted in ``outbids``).
        outbid_for: Seconds the current outbid has lasted.
        prior_hold_s: The hold assumed before any is seen.
        prior_mtbp_s: The time between outbids assumed before any is seen.
        time_value_dph: What an hour without training is worth to the user beyond the bill.
    """
    owner = "expected_costs"
    check_number(owner, "outbid_for", outbid_for, minimum=0.0, maximum=MAX_SECONDS)
    check_number(owner, "prior_hold_s", prior_hold_s, minimum=0.0, above=True)
    check_number(owner, "prior_mtbp_s", prior_mtbp_s, minimum=0.0, above=True)
    check_number(owner, "time_value_dph", time_value_dph, minimum=0.0)
    hold = history.mean_hold_s(prior_s=prior_hold_s, ongoing_s=outbid_for)
    horizon = history.mtbp_s(prior_s=prior_mtbp_s)
    if quote.remaining_s is not None:
        horizon = min(horizon, quote.remaining_s)
    rate = quote.current_bid + quote.storage_dph
    options = [
        OptionCost(
            action="wait",
            cost_usd=(
                hold * (quote.storage_dph + time_value_dph)
                + quote.restart_s * (rate + time_value_dph)
            )
            / 3600.0,
            detail=f"storage for the expected {hold:.0f} s rest of the outbid",
        )
    ]
    limit = math.floor(quote.cap * 1e6 + 1e-6) / 1e6
    if quote.min_bid is not None and quote.min_bid >= quote.current_bid:
        bid = math.ceil((quote.min_bid + RAISE_MARGIN) * 1e6 - 1e-6) / 1e6  # sent with 6 decimals
        if bid <= limit:
            options.append(
                OptionCost(
                    action="raise",
                    bid=bid,
                    cost_usd=(
                        (bid - quote.current_bid) * horizon
                        + quote.restart_s * (bid + quote.storage_dph + time_value_dph)
                    )
                    / 3600.0,
                    detail=f"bid {bid:.4f} $/h for the next {horizon:.0f} s",
                )
            )
    if quote.alternative_dph is not None:
        alt = quote.alternative_dph
        options.append(
            OptionCost(
                action="give_up",
                cost_usd=((alt - rate) * horizon + quote.recovery_s * (alt + time_value_dph))
                / 3600.0,
                detail=f"the next offer at {alt:.4f} $/h for the next {horizon:.0f} s",
            )
        )
    order = {"wait": 0, "raise": 1, "give_up": 2}
    return tuple(sorted(options, key=lambda o: (o.cost_usd, order[o.action])))


@attrs.frozen(kw_only=True)
class OutbidPolicy:
    """What an interruptible instance does when it is outbid while running.

    Build one with :meth:`cheapest_expected`, :meth:`raise_bid`, :meth:`wait` or
    :meth:`give_up`. Raising never passes the cap: the profile's ``max_bid`` and ``max_dph``
    minus storage (and :attr:`max_bid` when set). A ``raise`` policy whose bid is already at the
    cap falls back to waiting :attr:`wait_s`.
    """

    action: OutbidRule = "raise"
    """``raise``, ``wait``, ``give_up`` or ``cheapest_expected``."""
    step: float = 0.2
    """Raise the bid by this fraction above the higher of our bid and Vast's current
    ``min_bid`` (0.2 = 20 %)."""
    max_bid: float | None = None
    """An extra cap in $/h on top of the profile's caps."""
    wait_s: float = attrs.field(default=attrs.Factory(_default_wait_s, takes_self=True))
    """How long to wait for the GPUs to come back before giving the instance up (for
    ``cheapest_expected``: the longest it ever waits for one outbid, a raise's restart
    included). Default: 600 s; 3,600 s (:data:`MAX_WAIT_S`) for ``cheapest_expected``; 0 for
    ``give_up``."""
    prior_hold_s: float = 600.0
    """``cheapest_expected``: how long an outbid is assumed to last before any is seen to end
    (the emulator's mean; the job's own outbids take over as they are seen)."""
    prior_mtbp_s: float = 6 * 3600.0
    """``cheapest_expected``: the time between outbids assumed before any is seen (the
    checkpoint manager's default MTBF)."""
    time_value_dph: float = 0.0
    """``cheapest_expected``: what an hour without training is worth to you beyond the bill,
    in $/h (0: only the bill counts, so waiting costs only storage)."""

    def __attrs_post_init__(self) -> None:
        owner = "OutbidPolicy"
        check_choice(owner, "action", self.action, OUTBID_RULES)
        for field in ("prior_hold_s", "prior_mtbp_s"):
            check_number(
                owner, field, getattr(self, field), minimum=0.0, above=True, maximum=MAX_SECONDS
            )
        check_number(owner, "time_value_dph", self.time_value_dph, minimum=0.0)
        check_number(owner, "step", self.step, minimum=0.0, above=True, maximum=100.0)
        check_number(owner, "max_bid", self.max_bid, minimum=0.0, above=True, none_ok=True)
        check_number(
            owner,
            "wait_s",
            self.wait_s,
            minimum=0.0,
            maximum=MAX_SECONDS,
            allowed=f"a number of seconds from 0 to {MAX_SECONDS:.0f} (a year)",
        )

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

    @classmethod
    def cheapest_expected(
        cls,
        *,
        max_bid: float | None = None,
        time_value_dph: float = 0.0,
        max_wait_s: float = MAX_WAIT_S,
        prior_hold_s: float = 600.0,
        prior_mtbp_s: float = 6 * 3600.0,
    ) -> OutbidPolicy:
        """At each outbid, wait, raise or move, whichever is expected to cost least.

        See :func:`expected_costs`. The job prices a move with one offer search at the outbid
        and learns how long outbids last from its own. This is a job's default
        (:attr:`vastkit.Job.outbid`); an :class:`~vastkit.Instance` has no move, so there it
        weighs waiting against raising and gives the instance up after ``max_wait_s``.

        Args:
            max_bid: An extra cap in $/h on a raised bid.
            time_value_dph: What an hour without training is worth to you beyond the bill.
            max_wait_s: Never wait longer than this for one outbid.
            prior_hold_s: How long an outbid is assumed to last before any is seen to end.
            prior_mtbp_s: The time between outbids assumed before any is seen.
        """
        return cls(
            action="cheapest_expected",
            max_bid=max_bid,
            wait_s=max_wait_s,
            time_value_dph=time_value_dph,
            prior_hold_s=prior_hold_s,
            prior_mtbp_s=prior_mtbp_s,
        )

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
        quote: OutbidQuote | None = None,
        history: BidHistory | None = None,
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
            quote: The prices of the choices (``cheapest_expected``; without it that policy
                moves).
            history: The job's outbids so far (``cheapest_expected``).
        """
        if self.action == "cheapest_expected":
            return self._cheapest(outbid_for, quote, history, raised_at_current)
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

    def _cheapest(
        self,
        outbid_for: float,
        quote: OutbidQuote | None,
        history: BidHistory | None,
        raised_at_current: bool,
    ) -> OutbidDecision:
        if quote is None:
            return OutbidDecision(action="give_up", reason="no prices to compare: moving")
        if outbid_for >= self.wait_s:
            return OutbidDecision(
                action="give_up",
                reason=f"outbid for {outbid_for:.0f} s (waits up to {self.wait_s:.0f} s)",
            )
        if raised_at_current and (quote.min_bid or 0.0) < quote.current_bid:
            return OutbidDecision(
                action="wait", reason=f"raised; waiting for the restart ({outbid_for:.0f} s)"
            )
        capped = attrs.evolve(quote, cap=self.cap(quote.cap))
        options = expected_costs(
            capped,
            history if history is not None else BidHistory(outbids=1),
            outbid_for=outbid_for,
            prior_hold_s=self.prior_hold_s,
            prior_mtbp_s=self.prior_mtbp_s,
            time_value_dph=self.time_value_dph,
        )
        best = options[0]
        others = "; ".join(f"{_SAID[o.action]} ${o.cost_usd:.4f}" for o in options[1:])
        reason = f"{_SAID[best.action]} expected ${best.cost_usd:.4f} ({best.detail})" + (
            f" against {others}" if others else ""
        )
        return OutbidDecision(action=best.action, bid=best.bid, reason=reason)

"""What an interruptible instance does when it is outbid: a pure policy, no I/O."""

from __future__ import annotations

import math
from typing import Literal

import attrs

from vastkit._validate import MAX_SECONDS, check_choice, check_number

__all__ = ["OutbidAction", "OutbidDecision", "OutbidPolicy"]


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
    step: float = 0.2
    """Raise the bid by this fraction above the higher of our bid and Vast's current
    ``min_bid`` (0.2 = 20 %)."""
    max_bid: float | None = None
    """An extra cap in $/h on top of the profile's caps."""
    wait_s: float = attrs.field(default=600.0)
    """How long to wait for the GPUs to come back before giving the instance up."""

    def __attrs_post_init__(self) -> None:
        owner = "OutbidPolicy"
        check_choice(owner, "action", self.action, ("raise", "wait", "give_up"))
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

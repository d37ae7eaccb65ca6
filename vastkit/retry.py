"""One retry policy for every loop in vastkit that tries again.

The API transport, the store layer (checkpoints, the run directory, artifacts, the worker) and the
provisioning engine all retry through :class:`RetryPolicy` and :func:`retry_call`: the same
convention (``attempts`` counts every try, 1 = no retry), the same jittered exponential backoff
and the same optional deadline, with every wait taken on the injected :class:`~vastkit.clock.Clock`.

Why not stamina or tenacity: both are good libraries, but they time their deadlines with
``time.monotonic`` and wait with ``time.sleep``; vastkit's tests and benchmarks drive hours of
recovery in virtual time through an injected clock, and the transport must wait for the server's
``Retry-After`` rather than its own backoff. What we need is about forty lines, so they live here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TypeVar

import attrs

from vastkit.clock import Clock

__all__ = ["RetryPolicy", "retry_call"]

logger = logging.getLogger("vastkit.retry")

T = TypeVar("T")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"RetryPolicy.{attribute.name} must be >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How an operation that failed for a passing reason is tried again.

    Attributes:
        attempts: The most tries of one operation, the first included (1 = never retry);
            None: as many as :attr:`deadline` allows (a deadline is then required).
        initial_delay: The wait before the first retry, in seconds.
        multiplier: How much each wait grows over the previous one.
        max_delay: The longest single wait, in seconds.
        deadline: The most seconds one operation may take, waits included (None: no bound).
            No retry starts whose wait would end past it.
        jitter: Whether waits are jittered (50-100 % of the step) when a random source is given.
        persistent: Retry until :attr:`deadline` has passed, even when the last wait ends after
            it (for operations that must not give up early, such as confirming a destroy); by
            default no retry starts whose wait would end past the deadline.
    """

    attempts: int | None = 4
    initial_delay: float = attrs.field(default=0.5, validator=_non_negative)
    multiplier: float = 2.0
    max_delay: float = attrs.field(default=30.0, validator=_non_negative)
    deadline: float | None = None
    jitter: bool = True
    persistent: bool = False

    def __attrs_post_init__(self) -> None:
        if self.attempts is None:
            if self.deadline is None:
                raise ValueError("RetryPolicy needs attempts or a deadline (both are None)")
        elif isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"RetryPolicy.attempts must be an int, not {self.attempts!r}")
        elif self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, not {self.attempts}")
        if not self.multiplier >= 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, not {self.multiplier!r}")
        if self.deadline is not None and not self.deadline >= 0:
            raise ValueError(f"RetryPolicy.deadline must be >= 0 or None, not {self.deadline!r}")

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that tries once."""
        return cls(attempts=1)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``retry`` (1 = the first retry).

        With ``rng`` (and :attr:`jitter`) the wait is jittered to 50-100 % of the step.
        """
        step = min(self.max_delay, self.initial_delay * self.multiplier ** max(retry - 1, 0))
        if rng is None or not self.jitter:
            return step
        return step * (0.5 + rng.random() / 2)

    def allows(self, tries: int, *, elapsed: float = 0.0, wait: float = 0.0) -> bool:
        """Whether a try may follow ``tries`` tries, ``elapsed`` seconds in, after ``wait``."""
        if self.attempts is not None and tries >= self.attempts:
            return False
        if self.deadline is None:
            return True
        if self.persistent:
            return elapsed < self.deadline
        return elapsed + wait <= self.deadline


def retry_call(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    clock: Clock,
    retry_if: Callable[[Exception], bool],
    rng: random.Random | None = None,
    wait_for: Callable[[Exception], float | None] | None = None,
    on_retry: Callable[[Exception, int, float], None] | None = None,
    what: str = "operation",
) -> T:
    """Call ``fn`` until it returns, retrying the errors ``retry_if`` accepts as ``policy`` allows.

    Args:
        fn: The operation.
        policy: How often and how long to retry.
        clock: Every wait is ``clock.sleep``.
        retry_if: True for an error worth another try; any other error is raised at once.
        rng: Jitter source (default: a fresh ``random.Random``).
        wait_for: The wait an error itself asks for (a ``Retry-After``), or None for backoff.
        on_retry: Called with the error, the retry number and the wait before each retry.
        what: Names the operation in the log.

    Returns:
        What ``fn`` returned.

    Raises:
        Exception: The last error, when it is not retryable or the policy is used up.
    """
    rng = rng if rng is not None else random.Random()
    start = clock.now()
    tries = 0
    while True:
        tries += 1
        try:
            return fn()
        except Exception as exc:
            if not retry_if(exc):
                raise
            asked = wait_for(exc) if wait_for is not None else None
            wait = asked if asked is not None else policy.delay(tries, rng)
            if not policy.allows(tries, elapsed=clock.now() - start, wait=wait):
                raise
            logger.debug("%s failed (%s); retry %d in %.2f s", what, exc, tries, wait)
            if on_retry is not None:
                on_retry(exc, tries, wait)
            clock.sleep(wait)

"""The clock every wait, timeout and backoff in vastkit goes through.

Inject a clock wherever a component takes ``clock=``: :class:`SystemClock` (the default) uses
real time; :class:`ManualClock` only moves when something sleeps on it or a test advances it, so
tests never sleep and recovery loops can be driven in virtual time.

A clock has two methods: ``now()`` returns Unix seconds as a float (so it can be compared with
Vast's ``start_date``/``end_date``), ``sleep(seconds)`` waits.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What vastkit needs of a clock."""

    def now(self) -> float:
        """Return the current time in Unix seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait for ``seconds`` (a non-positive value returns at once)."""
        ...


class SystemClock:
    """Real time: :func:`time.time` and :func:`time.sleep`."""

    def now(self) -> float:
        """Return the current time in Unix seconds."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of real time."""
        if seconds > 0:
            time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """Virtual time that moves only when slept on or advanced.

    ``sleep(s)`` advances the clock by ``s`` and returns at once, so code that waits in a loop
    runs through hours of virtual time in milliseconds. Safe to share between threads.

    Args:
        start: The initial time in Unix seconds (default: 1,767,225,600, i.e. 2026-01-01 UTC, so
            runs are reproducible).
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept: list[float] = []
        """Every duration passed to :meth:`sleep`, in order (for assertions)."""

    def now(self) -> float:
        """Return the virtual time."""
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Advance the virtual time by ``seconds`` and return at once."""
        with self._lock:
            self.slept.append(seconds)
            if seconds > 0:
                self._now += seconds

    def advance(self, seconds: float) -> None:
        """Move the virtual time forward by ``seconds``.

        Raises:
            ValueError: ``seconds`` is negative: time does not go back.
        """
        if seconds < 0:
            raise ValueError(f"cannot advance a clock by a negative amount ({seconds})")
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now:.3f})"

"""Pacing per account and process: Vast enforces its minimum intervals per key, not per client.

Every :class:`~vastkit.api._transport.Transport` of this process on the same server and key
(:func:`~vastkit.api._transport.account_id`) shares one :class:`AccountPacing` per time line
(:func:`pacing_for`): when each endpoint was last sent to, and until when a 429 keeps it quiet.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from vastkit.clock import Clock, SystemClock

__all__ = ["AccountPacing", "pacing_for", "quiet_after_429"]


class AccountPacing:
    """The pacing of one account on one time line: per endpoint, when the last request was
    sent (or is reserved to be) and until when a 429 keeps every caller away. Thread-safe.

    Vast enforces its minimum intervals per key (reference section 9.2), so every
    :class:`~vastkit.api._transport.Transport` of this process on the same server and key shares one
    (:func:`pacing_for`); each keeps its own ``min_intervals`` table, and a request waits for
    the interval of the table of the transport sending it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._quiet: dict[str, float] = {}

    def reserve(self, endpoint: str, interval: float, clock: Clock) -> tuple[float, float]:
        """Take the next free slot for ``endpoint``: ``interval`` seconds after the last request
        reserved (by any transport of the account), and not before a 429's quiet time ends.

        Returns:
            ``(now, slot)``: the time read and the time the request may be sent.
        """
        with self._lock:
            now = clock.now()
            slot = max(now, self._quiet.get(endpoint, now))
            last = self._last.get(endpoint)
            if last is not None:
                slot = max(slot, last + interval)
            self._last[endpoint] = slot
        return now, slot

    def keep_quiet(self, endpoint: str, until: float) -> None:
        """After a 429, keep every caller of ``endpoint`` away until ``until``."""
        with self._lock:
            self._quiet[endpoint] = max(self._quiet.get(endpoint, until), until)

    def __repr__(self) -> str:
        with self._lock:
            return f"AccountPacing(endpoints={sorted(self._last.keys() | self._quiet.keys())})"


class _PacingRegistry:
    """The :class:`AccountPacing` of every account, per time line, for this process.

    A time line is what the clocks read: every clock that reads real time through
    :meth:`SystemClock.now` (each ``Client()`` makes its own ``SystemClock``) is one time line;
    any other clock (a :class:`~vastkit.clock.ManualClock`, the emulator's virtual time) is its
    own, so two tests with their own virtual clocks on the same account never wait for each
    other's requests, while the clients of one test, on one clock, pace together. Virtual time
    lines are held weakly: a clock that is gone takes its pacing with it (a clock that cannot
    be weakly referenced is kept with its pacing for the life of the process).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._real: dict[str, AccountPacing] = {}
        self._virtual: weakref.WeakKeyDictionary[Any, dict[str, AccountPacing]] = (
            weakref.WeakKeyDictionary()
        )
        self._pinned: dict[int, tuple[Clock, dict[str, AccountPacing]]] = {}

    def get(self, account: str, clock: Clock) -> AccountPacing:
        with self._lock:
            table = self._table(clock)
            pacing = table.get(account)
            if pacing is None:
                pacing = table[account] = AccountPacing()
            return pacing

    def _table(self, clock: Clock) -> dict[str, AccountPacing]:
        if getattr(type(clock), "now", None) is SystemClock.now:
            return self._real
        try:
            return self._virtual.setdefault(clock, {})
        except TypeError:  # no weak references to this clock: keep it (its id stays unique)
            return self._pinned.setdefault(id(clock), (clock, {}))[1]

    def clear(self) -> None:
        """Forget every account's pacing (a forked child starts its own process's pacing)."""
        self._lock = threading.Lock()
        self._real = {}
        self._virtual = weakref.WeakKeyDictionary()
        self._pinned = {}


_PACING = _PacingRegistry()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_PACING.clear)


def pacing_for(account: str, clock: Clock) -> AccountPacing:
    """The pacing every transport of this process on ``account`` (:func:`account_id`) shares
    with the others on the same time line as ``clock``."""
    return _PACING.get(account, clock)


def quiet_after_429(asked: float | None, interval: float, longest: float) -> float:
    """Seconds every caller of an endpoint stays away after a 429 (also one not retried, a
    create): the ``Retry-After`` ``asked``, else the endpoint's paced ``interval``; at most
    ``longest``."""
    return min(interval if asked is None else asked, longest)

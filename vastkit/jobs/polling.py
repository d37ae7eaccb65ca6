"""One instance list call per poll interval, shared by every job of a process.

A :class:`~vastkit.JobQueue` shares one :class:`SharedInstances` between its drivers; separate
:func:`~vastkit.run_job` calls in one process (threads of a notebook or a script) share one too,
found by :func:`shared_instances` from the account the client talks to and the clock, so 20 jobs
make one list request per poll interval in total instead of 20.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Protocol

from vastkit.api.models import InstanceInfo
from vastkit.clock import Clock, SystemClock

__all__ = ["InstanceLister", "SharedInstances", "shared_instances"]


class InstanceLister(Protocol):
    """What :class:`SharedInstances` needs of the client."""

    def list_instances(self) -> list[InstanceInfo]:
        """Every instance of the account (all pages)."""
        ...


class SharedInstances:
    """One paged list call per poll interval for every driver of the queue.

    A driver asks for the instances "as listed after ``fresh_after``" (the time its instance
    was created, so a new instance is never read as vanished). The last list is served while it
    is younger than ``max_age`` and newer than ``fresh_after``; otherwise one list call is made,
    under a lock, so drivers polling at the same moment share it.

    Args:
        client: Makes the list call.
        clock: Says how old the last list is.
        max_age: Seconds a list is served (the shortest poll interval of the queue's jobs).
    """

    def __init__(self, client: InstanceLister, clock: Clock, max_age: float) -> None:
        self.client = client
        self.clock = clock
        self.max_age = max_age
        self.calls = 0
        """List calls made (all pages of one count as one)."""
        self.served = 0
        """Looks served to drivers (from a fresh call or the last list)."""
        self._lock = threading.Lock()
        self._cache: list[InstanceInfo] | None = None
        self._taken_at = -math.inf

    def __call__(
        self, fresh_after: float, client: InstanceLister | None = None
    ) -> list[InstanceInfo]:
        """The instances, as listed after ``fresh_after`` and at most ``max_age`` ago.

        ``client`` makes the call when one is needed (default: the one given at construction),
        so a list shared by several jobs never goes through a client a finished job closed.
        """
        with self._lock:
            self.served += 1
            if (
                self._cache is not None
                and self._taken_at > fresh_after
                and self.clock.now() - self._taken_at < self.max_age
            ):
                return self._cache
            started = self.clock.now()
            listed = (client or self.client).list_instances()
            self.calls += 1
            self._cache = listed
            self._taken_at = started
            return listed


_SYSTEM_CLOCK = SystemClock()
_lock = threading.Lock()
_shared: weakref.WeakKeyDictionary[Clock, dict[str, SharedInstances]] = weakref.WeakKeyDictionary()


def account_of(client: InstanceLister) -> str:
    """Who ``client`` lists instances for: its server and a digest of its key (never the key).

    A client without an ``account_id`` (a test double) is its own account.
    """
    account = getattr(client, "account_id", None)
    return account if isinstance(account, str) else f"object:{id(client)}"


def shared_instances(client: InstanceLister, clock: Clock, max_age: float) -> SharedInstances:
    """The process's shared list for ``client``'s account on ``clock`` (made on first use).

    Every :class:`~vastkit.SystemClock` is the same clock here; any other clock (a
    ``ManualClock`` in tests) has lists of its own, forgotten with it. ``max_age`` only ever
    shortens: the list is served for the shortest poll interval of the jobs sharing it.
    """
    key_clock: Clock = _SYSTEM_CLOCK if type(clock) is SystemClock else clock
    account = account_of(client)
    with _lock:
        lists = _shared.setdefault(key_clock, {})
        shared = lists.get(account)
        if shared is None:
            shared = lists[account] = SharedInstances(client, key_clock, max_age)
        else:
            shared.max_age = min(shared.max_age, max_age)
        return shared

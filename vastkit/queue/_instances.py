"""One instance list call per poll interval, shared by every driver of a queue."""

from __future__ import annotations

import math
import threading
from typing import Protocol

from vastkit.api.models import InstanceInfo
from vastkit.clock import Clock

__all__ = ["InstanceLister", "SharedInstances"]


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

    def __call__(self, fresh_after: float) -> list[InstanceInfo]:
        """The instances, as listed after ``fresh_after`` and at most ``max_age`` ago."""
        with self._lock:
            self.served += 1
            if (
                self._cache is not None
                and self._taken_at > fresh_after
                and self.clock.now() - self._taken_at < self.max_age
            ):
                return self._cache
            started = self.clock.now()
            listed = self.client.list_instances()
            self.calls += 1
            self._cache = listed
            self._taken_at = started
            return listed

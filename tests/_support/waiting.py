"""Waiting for a condition instead of sleeping for a guessed time.

A test that needs something to happen in another thread or process polls for it with
:func:`wait_until`; the limit is a hang guard (:data:`~tests._support.processes.HANG_S`), so a
busy machine makes the test slower, never red::

    wait_until(lambda: len(fleet.running_since) >= 2, "both jobs run")
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests._support.processes import HANG_S


def wait_until(
    condition: Callable[[], object], what: str, *, timeout: float = HANG_S, poll: float = 0.02
) -> None:
    """Return as soon as ``condition()`` is true; ``condition`` may also assert (a child that
    died early, say) to fail at once.

    Raises:
        AssertionError: ``condition()`` stayed false for ``timeout`` seconds (a hang guard).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(poll)


__all__ = ["wait_until"]

"""Real time for the emulator: a sped-up clock, and the ticker that advances a served world."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["AcceleratedClock", "Ticker"]

logger = logging.getLogger("vastkit.emulator")


class AcceleratedClock:
    """Real time sped up by ``factor``: one real second is ``factor`` emulated seconds.

    Args:
        factor: The speed-up (60: one emulated minute per real second).
        start: The emulated time at creation (default: the real time).
    """

    def __init__(self, factor: float, start: float | None = None) -> None:
        if factor <= 0:
            raise ValueError(f"factor must be positive, not {factor}")
        self.factor = float(factor)
        self._start = time.time() if start is None else float(start)
        self._t0 = time.monotonic()

    def now(self) -> float:
        """The emulated time in Unix seconds."""
        return self._start + (time.monotonic() - self._t0) * self.factor

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of emulated time (``seconds / factor`` real seconds)."""
        if seconds > 0:
            time.sleep(seconds / self.factor)

    def __repr__(self) -> str:
        return f"AcceleratedClock(factor={self.factor})"


class Ticker:
    """Calls ``tick`` every ``interval`` real seconds on a daemon thread until stopped.

    A served emulator on a real or accelerated clock uses it so that phases, preemptions and
    billing happen even while nobody sends a request.
    """

    def __init__(self, tick: Callable[[], None], interval: float) -> None:
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="vastkit-emulator-ticker", daemon=True
        )

    def start(self) -> None:
        """Start ticking."""
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and wait (up to 5 s) for the thread to end."""
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._tick()
            except Exception:  # pragma: no cover - keep the ticker alive
                logger.exception("emulator tick failed")

"""Process-level helpers for code that rents: signal handling and the live status line.

- :class:`SignalGuard` turns SIGTERM into an exception in the main thread and defers interrupts
  while an instance is being destroyed;
- :class:`Progress` is a live status line (rich in a terminal or a notebook, plain lines
  otherwise).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import IO, Any

__all__ = ["Progress", "SignalGuard"]

logger = logging.getLogger("vastkit.instance")


class SignalGuard:
    """Makes SIGTERM unwind the stack like Ctrl-C, and defers both while destroying.

    Installed only when running in the main thread (signal handlers can only be set there);
    elsewhere it does nothing. The previous handlers are restored on :meth:`uninstall`, and a
    SIGTERM caught while installed is passed on to a previous Python handler afterwards.
    """

    def __init__(self) -> None:
        self._installed = False
        self._previous_term: Any = None
        self._previous_int: Any = None
        self._deferring = False
        self._deferred: list[int] = []
        self.got_sigterm = False
        """Whether a SIGTERM arrived while installed."""

    @property
    def active(self) -> bool:
        """Whether handlers are installed."""
        return self._installed

    def install(self) -> None:
        """Install the SIGTERM handler (main thread only; a no-op elsewhere or twice)."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        try:
            self._previous_term = signal.signal(signal.SIGTERM, self._on_term)
        except ValueError:  # not the main interpreter
            return
        self._installed = True

    def uninstall(self) -> None:
        """Restore the previous handlers; re-deliver a SIGTERM to a previous Python handler."""
        if not self._installed:
            return
        signal.signal(signal.SIGTERM, self._previous_term)
        self._installed = False
        previous = self._previous_term
        if self.got_sigterm and callable(previous):
            self.got_sigterm = False
            previous(signal.SIGTERM, None)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.got_sigterm = True
        if self._deferring:
            logger.warning("SIGTERM received while destroying the instance; finishing first")
            self._deferred.append(signum)
            return
        logger.warning("SIGTERM received: destroying the instance before exiting")
        raise SystemExit(128 + signum)

    def _on_int(self, signum: int, frame: FrameType | None) -> None:
        logger.warning("interrupt received while destroying the instance; finishing first")
        self._deferred.append(signum)

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Hold SIGTERM and SIGINT until the block ends, then raise for the first one held."""
        main = threading.current_thread() is threading.main_thread()
        previous_int: Any = None
        if main:
            try:
                previous_int = signal.signal(signal.SIGINT, self._on_int)
            except ValueError:
                main = False
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            if main:
                signal.signal(signal.SIGINT, previous_int)
            held, self._deferred = self._deferred, []
            if held and sys.exc_info()[1] is None:
                if held[0] == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + held[0])


class Progress:
    """One live status line while something waits.

    In a terminal or a Jupyter notebook with ipywidgets it is a rich spinner updated in place;
    otherwise (a log file, CI, a notebook without ipywidgets) it writes a plain line only when
    the text changes. ``enabled=False`` writes nothing.

    Args:
        enabled: True, False, or None for "when stderr is a terminal or a notebook, else plain".
        file: Where plain lines go (default: ``sys.stderr``).
    """

    def __init__(self, enabled: bool | None = None, *, file: IO[str] | None = None) -> None:
        self._enabled = enabled is not False
        self._file = file
        self._status: Any = None
        self._last = ""
        self._rich = False
        if self._enabled:
            try:
                from rich.console import Console

                console = Console(file=file or sys.stderr)
                # rich draws in a notebook only through ipywidgets (and warns without it):
                # without them a notebook gets the plain lines
                live = console.is_terminal or (console.is_jupyter and _has_ipywidgets())
                self._rich = bool(live) and file is None
                if self._rich:
                    self._status = console.status("")
            except Exception:  # pragma: no cover - rich missing or broken terminal
                self._rich = False

    @property
    def enabled(self) -> bool:
        """Whether anything is shown at all."""
        return self._enabled

    @property
    def live(self) -> bool:
        """Whether the line is drawn in place (terminal or notebook)."""
        return self._rich

    def update(self, text: str) -> None:
        """Show ``text`` as the current status."""
        if not self._enabled or text == self._last:
            return
        self._last = text
        if self._rich:
            self._status.update(text)
            self._status.start()
        else:
            stream = self._file or sys.stderr
            stream.write(f"vastkit: {text}\n")
            stream.flush()

    def close(self, final: str | None = None) -> None:
        """Stop the live line and, when given, print a final line."""
        if self._rich and self._status is not None:
            self._status.stop()
        if final and self._enabled:
            stream = self._file or sys.stderr
            stream.write(f"vastkit: {final}\n")
            stream.flush()


def _has_ipywidgets() -> bool:
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None

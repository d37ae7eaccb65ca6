"""When a checkpoint is due: the manager's interval, measured step and save costs."""

from __future__ import annotations

from typing import Literal

import attrs

from vastkit.checkpoint.naming import auto_interval_steps, is_due

__all__ = ["SaveSchedule", "SaveStats", "ema"]


@attrs.define
class SaveStats:
    """Measured costs of saving (moving averages, in seconds; ``None`` until measured)."""

    stall_seconds: float | None = None
    """How long a save held up the caller (staging the state)."""
    upload_seconds: float | None = None
    """How long serialising, uploading and committing took."""
    step_seconds: float | None = None
    """The time per training step between calls to :meth:`CheckpointManager.save`."""


def ema(old: float | None, new: float, weight: float = 0.5) -> float:
    """An exponential moving average step (``new`` when there is no ``old``)."""
    return new if old is None else (1 - weight) * old + weight * new


@attrs.define
class SaveSchedule:
    """Decides whether a save is due at a step, from the interval and what was measured.

    The manager tells it every call (:meth:`note_call`), every save started (:meth:`saved`) and
    every checkpoint restored (:meth:`restored`); it keeps no I/O of its own.
    """

    every_steps: int | Literal["auto"] | None
    every_seconds: float | None
    mtbf_seconds: float
    last_time: float
    stats: SaveStats = attrs.field(factory=SaveStats)
    last_step: int | None = None
    last_call: tuple[int, float] | None = None

    @property
    def interval_steps(self) -> int | None:
        """The current interval in steps (the measured one for ``every_steps="auto"``)."""
        if self.every_steps != "auto":
            return self.every_steps
        s = self.stats
        if s.step_seconds is None or s.stall_seconds is None:
            return None
        return auto_interval_steps(
            step_seconds=s.step_seconds,
            stall_seconds=s.stall_seconds,
            upload_seconds=s.upload_seconds or 0.0,
            mtbf_seconds=self.mtbf_seconds,
        )

    @property
    def time_decides(self) -> bool:
        """Whether being due depends on the clock or on measurements, not on the step alone
        (so that ranks could disagree)."""
        return self.every_seconds is not None or self.every_steps == "auto"

    def note_call(self, step: int, now: float) -> None:
        """Measure the time per step between calls."""
        if self.last_call is not None and step > self.last_call[0]:
            per_step = (now - self.last_call[1]) / (step - self.last_call[0])
            self.stats.step_seconds = ema(self.stats.step_seconds, max(per_step, 0.0))
        self.last_call = (step, now)

    def due(self, step: int, now: float) -> bool:
        """Whether a save is due at ``step`` (time ``now``)."""
        if self.every_steps == "auto":
            if self.last_step is None:
                return True
            interval = self.interval_steps
            if step <= self.last_step:
                return False
            return interval is None or step - self.last_step >= interval
        return is_due(
            step=step,
            now=now,
            last_step=self.last_step,
            last_time=self.last_time,
            every_steps=self.every_steps,
            every_seconds=self.every_seconds,
        )

    def saved(self, step: int, now: float) -> None:
        """A save of ``step`` started (or committed) at ``now``."""
        self.last_step = step
        self.last_time = now

    def restored(self, step: int) -> None:
        """A checkpoint of ``step`` was loaded: the next save is counted from it."""
        if self.last_step is None or step > self.last_step:
            self.last_step = step

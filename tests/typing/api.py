"""Type-checked, never run: the public signatures under ``mypy --strict`` (stamina's habit).

A change that breaks how users annotate against vastkit fails CI here first.
"""

from __future__ import annotations

import vastkit
import vastkit.clock
from vastkit.api.models import InstanceInfo, InstanceState, Offer

clock: vastkit.Clock = vastkit.ManualClock(start=0.0)
clock.sleep(1.5)
now: float = clock.now()
real: vastkit.Clock = vastkit.clock.SystemClock()


def state_of(instance: InstanceInfo) -> InstanceState:
    return instance.state


def storage(offer: Offer) -> float:
    return offer.storage_dph(10.0) + offer.dph_base


def handle(exc: vastkit.VastkitError) -> str | None:
    if isinstance(exc, vastkit.APIStatusError):
        code: int = exc.status_code
        return f"{code} {exc.error} {exc.msg}"
    if isinstance(exc, vastkit.ConfigError):
        return exc.path
    return None

"""A local Vast.ai marketplace that speaks the real REST API.

``vastkit.emulator`` is to vastkit what moto is to boto3: a seeded catalog of offers, the offer
query language, instance creation, listing and control, the instance state machine in (real,
accelerated or manual) time, per-second billing, bids and outbidding, host outages, the
documented rate limits and injected faults. It is written from the API reference and imports no
vastkit client code, so the client and the emulator check each other.

Example:
    >>> import httpx
    >>> from vastkit.emulator import serve
    >>> with serve(seed=0) as emu:
    ...     headers = {"Authorization": f"Bearer {emu.api_key}"}
    ...     offers = httpx.post(f"{emu.url}/api/v0/bundles/", json={"limit": 3},
    ...                         headers=headers).json()["offers"]
"""

from __future__ import annotations

from vastkit.emulator._emulator import Emulator, serve
from vastkit.emulator._faults import FaultRule
from vastkit.emulator._limits import DEFAULT_RATE_LIMITS
from vastkit.emulator._market import GPU_MODELS, GpuModel
from vastkit.emulator._model import Timings
from vastkit.emulator._runners import ContainerSpec, ProcessRunner, Runner, ScriptedRunner
from vastkit.emulator._server import EmulatorTransport
from vastkit.emulator._time import AcceleratedClock
from vastkit.emulator._views import InstanceView, UserView

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "GPU_MODELS",
    "AcceleratedClock",
    "ContainerSpec",
    "Emulator",
    "EmulatorTransport",
    "FaultRule",
    "GpuModel",
    "InstanceView",
    "ProcessRunner",
    "Runner",
    "ScriptedRunner",
    "Timings",
    "UserView",
    "serve",
]

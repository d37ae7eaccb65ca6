"""Which rank this process is, and the collectives of a sharded save (with a timeout).

:func:`ranks_from_env` is pure (``RANK``/``WORLD_SIZE`` as torchrun, ``accelerate launch`` and
``deepspeed`` set them); :func:`detect_ranks` asks ``torch.distributed`` first when a process
group is initialised. torch is never imported here just to ask: when ``torch.distributed`` was
not imported, no process group can exist.

:class:`Coordinator` runs the few object collectives of :meth:`CheckpointManager.save_sharded`
and :meth:`CheckpointManager.load_sharded` on a gloo group of its own, created at the first
sharded call with the manager's ``collective_timeout``: a rank that dies or hangs makes the
others fail with :class:`~vastkit.errors.CheckpointError` within that time, never wait forever
(and the user's NCCL group is never asked to move Python objects).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from vastkit.errors import CheckpointError, ConfigValueError

__all__ = ["Coordinator", "Ranks", "detect_ranks", "ranks_from_env", "writes_here"]

_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class Ranks:
    """This process's place in a group of processes."""

    rank: int
    """Its rank, ``0 <= rank < world_size``."""
    world_size: int
    """How many processes the group has (1: not distributed)."""

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0


SINGLE = Ranks(rank=0, world_size=1)


def _env_int(env: Mapping[str, str], key: str, default: int, *, least: int) -> int:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = least - 1
    if value < least:
        raise ConfigValueError(
            key,
            f"the environment variable {key} must be an integer >= {least} (the launcher "
            f"sets it), not {raw!r}",
            problem=f"must be an integer >= {least}",
        )
    return value


def ranks_from_env(env: Mapping[str, str]) -> Ranks:
    """This process's rank from ``RANK`` and ``WORLD_SIZE`` (absent: rank 0 of 1).

    Raises:
        ConfigValueError: a variable is not an integer, or ``RANK`` is not below ``WORLD_SIZE``.
    """
    world = _env_int(env, "WORLD_SIZE", 1, least=1)
    rank = _env_int(env, "RANK", 0, least=0)
    if rank >= world:
        raise ConfigValueError(
            "RANK",
            f"the environment variable RANK={rank} is not below WORLD_SIZE={world}",
            problem=f"must be below WORLD_SIZE={world}",
        )
    return Ranks(rank=rank, world_size=world)


def initialized_dist() -> Any:
    """``torch.distributed`` when a default process group is initialised, else ``None``."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def detect_ranks(env: Mapping[str, str] | None = None) -> Ranks:
    """This process's rank: from ``torch.distributed`` when a process group is initialised,
    else from ``RANK``/``WORLD_SIZE`` (``env``, default ``os.environ``).

    Raises:
        ConfigValueError: the environment variables are malformed.
    """
    dist = initialized_dist()
    if dist is not None:
        return Ranks(rank=int(dist.get_rank()), world_size=int(dist.get_world_size()))
    return ranks_from_env(os.environ if env is None else env)


def writes_here(save_rank: int | None) -> bool:
    """Whether this process writes replicated saves: it is rank ``save_rank`` (``None``: every
    rank writes).

    Raises:
        ValueError: ``save_rank`` is not a rank of this group.
    """
    if save_rank is None:
        return True
    ranks = detect_ranks()
    if save_rank >= ranks.world_size:
        raise ValueError(
            f"save_rank={save_rank} is not a rank of this group (world size {ranks.world_size})"
        )
    return ranks.rank == save_rank


class Coordinator:
    """The object collectives of sharded saves and loads, on a gloo group with a timeout.

    Args:
        timeout: Seconds any one collective may wait for the other ranks.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self._group: Any = None
        self._world: Any = None

    def group(self) -> Any:
        """The gloo group (created on first use: every rank must be here, as for any
        collective)."""
        dist = initialized_dist()
        if dist is None:
            raise CheckpointError("no torch.distributed process group is initialised")
        world = dist.group.WORLD
        if self._group is None or self._world is not world:
            self._group = dist.new_group(
                backend="gloo", timeout=datetime.timedelta(seconds=self.timeout)
            )
            self._world = world
        return self._group

    def broadcast(self, obj: _T, *, what: str) -> _T:
        """Rank 0's ``obj`` on every rank."""
        dist = initialized_dist()
        box = [obj]
        self._run(what, lambda: dist.broadcast_object_list(box, src=0, group=self.group()))
        return box[0]

    def all_gather(self, obj: _T, *, what: str) -> list[_T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        dist = initialized_dist()
        out: list[Any] = [None] * int(dist.get_world_size())
        self._run(what, lambda: dist.all_gather_object(out, obj, group=self.group()))
        return out

    def _run(self, what: str, call: Any) -> None:
        try:
            call()
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"{what}: the other ranks did not answer within {self.timeout:g} s or one of them "
                f"is gone (a rank was killed, crashed or hangs); the process group cannot be "
                f"used any more, end this process ({type(exc).__name__}: {exc})"
            ) from exc

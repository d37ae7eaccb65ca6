"""Which rank this process is in a group of processes (torchrun, ``accelerate launch``,
``deepspeed``): the one reader of ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``.

:func:`ranks_from_env` is pure; :func:`detect_ranks` asks ``torch.distributed`` first when a
process group is initialised. torch is never imported here just to ask: when
``torch.distributed`` was not imported, no process group can exist.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from vastkit.errors import ConfigValueError

__all__ = ["SINGLE", "Ranks", "any_rank", "detect_ranks", "initialized_dist", "ranks_from_env"]


@attrs.frozen(kw_only=True)
class Ranks:
    """This process's place in a group of processes."""

    rank: int
    """Its rank, ``0 <= rank < world_size``."""
    world_size: int
    """How many processes the group has (1: not distributed)."""
    local_rank: int = 0
    """Its rank on its machine (``LOCAL_RANK``; 0 without a launcher)."""

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
    """This process's rank from ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (absent: rank 0
    of 1).

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
    return Ranks(rank=rank, world_size=world, local_rank=_env_int(env, "LOCAL_RANK", 0, least=0))


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
        local = ranks_from_env(os.environ if env is None else env).local_rank
        return Ranks(
            rank=int(dist.get_rank()), world_size=int(dist.get_world_size()), local_rank=local
        )
    return ranks_from_env(os.environ if env is None else env)


def any_rank(flag: bool, device: Any = None) -> bool:
    """Whether ``flag`` is true on any rank of the default process group (``flag`` itself
    without a group of two or more): every rank then acts after the same step, so none waits in
    a collective for a rank that already left. One all-reduce of one number, on ``device``
    (default: the current CUDA device with the NCCL backend, which needs it there, else the
    CPU); every rank must call it at the same point."""
    dist = initialized_dist()
    if dist is None or dist.get_world_size() < 2:
        return flag
    import torch

    if device is None:
        nccl = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu"
    vote = torch.tensor([int(flag)], device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return bool(vote.item())

"""Which rank writes a replicated save, and the collectives of a sharded save (with a timeout).

Which rank this process is comes from :mod:`vastkit._ranks` (the one reader of the launcher's
variables).

:class:`Coordinator` runs the few object collectives of :meth:`CheckpointManager.save_sharded`
and :meth:`CheckpointManager.load_sharded` on a gloo group of its own, created at the first
sharded call with the manager's ``collective_timeout``: a rank that dies or hangs makes the
others fail with :class:`~vastkit.errors.CheckpointError` within that time, never wait forever
(and the user's NCCL group is never asked to move Python objects).
"""

from __future__ import annotations

import datetime
from typing import Any, TypeVar

from vastkit._ranks import detect_ranks, initialized_dist
from vastkit.errors import CheckpointError

__all__ = ["Coordinator", "writes_here"]

_T = TypeVar("_T")


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

"""One rank of a multi-process checkpoint test (gloo on CPU); prints one JSON line, its result.

Usage: ``_dist_rank.py MODE URL [ARGS...]``, with ``RANK``/``WORLD_SIZE`` in the environment
(as torchrun starts it), or ``_dist_rank.py --fork N MODE URL [ARGS...]``: import torch once,
then fork N ranks (torch's import costs seconds of CPU per process; the ranks share one), wait
for them and print ``{"exits": [...]}`` (a rank killed by a signal: minus its number). The process
group is joined through ``torchrun``'s ``MASTER_ADDR``/``MASTER_PORT`` when set,
else through the file named by ``VASTKIT_TEST_RENDEZVOUS`` (no port to pick). Storage options for
the store come as JSON in ``VASTKIT_TEST_STORAGE`` (S3 on moto).

Modes:

* ``ddp URL STEPS``: train a tiny DDP model STEPS steps, ``save`` each step (every 2), then
  ``restore`` the latest into a fresh model and a fresh manager on every rank;
* ``sharded-save URL STEP``: ``save_sharded`` a DTensor sharded over the ranks, a replicated
  tensor and a Python value, all made from STEP;
* ``sharded-load URL``: ``load_sharded`` into zeros sharded over *this* world size;
* ``sharded-corrupt URL``: save steps 1 and 2, flip a byte of rank 1's shard of step 2, then
  load without and with ``step=2``;
* ``sharded-kill URL STEP RANK WHEN``: like ``sharded-save``, but rank RANK SIGKILLs itself
  ``mid-write`` (half of its shard written) or ``after-write`` (shard written, not reported),
  or hangs (``hang``); the others report the error they got.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

from vastkit.checkpoint import CheckpointManager
from vastkit.errors import CheckpointError

ROWS, COLS = 8, 3


def join() -> tuple[int, int]:
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    if "MASTER_ADDR" in os.environ:
        dist.init_process_group("gloo")
    else:
        where = os.environ["VASTKIT_TEST_RENDEZVOUS"]
        dist.init_process_group("gloo", init_method=f"file://{where}", rank=rank, world_size=world)
    return rank, world


def manager(url: str, **kwargs: Any) -> CheckpointManager:
    options = json.loads(os.environ.get("VASTKIT_TEST_STORAGE", "{}"))
    return CheckpointManager(url, storage_options=options, async_save=False, **kwargs)


def full(step: int) -> torch.Tensor:
    return torch.arange(ROWS * COLS, dtype=torch.float32).reshape(ROWS, COLS) + 1000 * step


def sharded_state(step: int, world: int) -> dict[str, Any]:
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    return {
        "weight": distribute_tensor(full(step), mesh, [Shard(0)]),
        "bias": torch.full((4,), float(step)),
        "step": step,
    }


def ddp_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def ddp_save(rank: int, url: str, steps: int) -> dict[str, Any]:
    model, opt = ddp_model()
    saved = []
    with manager(url, every_steps=2) as mgr:
        for step in range(1, steps + 1):
            gen = torch.Generator().manual_seed(step * 10 + rank)
            loss = model(torch.randn(5, 4, generator=gen)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            saved.append(mgr.save(step, {"model": model.module, "optimizer": opt}))
    weight = model.module.weight.detach().flatten().tolist()
    return {"saved": saved, "weight": weight}


def ddp_restore(url: str) -> dict[str, Any]:
    model, opt = ddp_model()
    with manager(url) as mgr:
        info = mgr.restore(model=model.module, optimizer=opt)
    assert info is not None
    return {"restored": info.step, "restored_weight": model.module.weight.flatten().tolist()}


def sharded_save(url: str, step: int, world: int) -> dict[str, Any]:
    with manager(url, collective_timeout=20) as mgr:
        committed = mgr.save_sharded(step, sharded_state(step, world), metrics={"loss": 1 / step})
        return {"committed": committed, "committed_step": mgr.committed_step}


def sharded_load(url: str, world: int) -> dict[str, Any]:
    state = sharded_state(0, world)
    state["weight"].to_local().zero_()
    with manager(url) as mgr:
        info = mgr.load_sharded(state)
    assert info is not None
    return {
        "step": info.step,
        "value": state["step"],
        "weight_ok": torch.equal(state["weight"].full_tensor(), full(info.step)),
        "local_rows": state["weight"].to_local().shape[0],
        "bias": state["bias"].tolist(),
    }


def sharded_corrupt(url: str, world: int) -> dict[str, Any]:
    import glob
    import warnings

    with manager(url) as mgr:
        for step in (1, 2):
            mgr.save_sharded(step, sharded_state(step, world))
        if dist.get_rank() == 0:
            folder = url.removeprefix("file://") + "/checkpoints/step-000000000002"
            (shard,) = glob.glob(f"{folder}/*-1_0.distcp")  # only rank 1 reads it
            with open(shard, "r+b") as fh:
                fh.seek(-50, os.SEEK_END)
                byte = fh.read(1)
                fh.seek(-50, os.SEEK_END)
                fh.write(bytes([byte[0] ^ 0xFF]))
        dist.barrier()
        state = sharded_state(0, world)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = mgr.load_sharded(state)
        assert info is not None
        out: dict[str, Any] = {
            "fallback_step": info.step,
            "weight_ok": torch.equal(state["weight"].full_tensor(), full(info.step)),
            "warned": [str(w.message) for w in caught],
        }
        try:
            mgr.load_sharded(sharded_state(0, world), step=2)
        except CheckpointError as exc:
            out.update(error=type(exc).__name__, message=str(exc))
        return out


def sharded_kill(url: str, step: int, victim: int, when: str, *, rank: int, world: int) -> Any:
    from vastkit.checkpoint import _sharded

    if rank == victim and when == "mid-write":
        original = _sharded.StoreFileSystem.create_stream

        def dying(self: Any, path: Any, mode: str) -> Any:
            if "w" in mode and str(path).endswith(".distcp"):
                with original(self, path, mode) as stream:
                    stream.write(b"x" * 100)
                    os.kill(os.getpid(), signal.SIGKILL)
            return original(self, path, mode)

        _sharded.StoreFileSystem.create_stream = dying  # type: ignore[method-assign]
    with manager(url, collective_timeout=4) as mgr:
        if rank == victim and when in ("after-write", "hang"):

            def stop(obj: Any, *, what: str) -> Any:
                if when == "hang":
                    time.sleep(600)
                os.kill(os.getpid(), signal.SIGKILL)

            mgr._coordinator.all_gather = stop  # type: ignore[method-assign]
        try:
            mgr.save_sharded(step, sharded_state(step, world))
        except CheckpointError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
        return {"committed": step}


def fork(world: int, argv: list[str]) -> None:
    import torch.distributed.tensor  # noqa: F401  (imported once, before forking)

    pids = []
    for rank in range(world):
        pid = os.fork()
        if pid == 0:
            os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
            try:
                main(argv)
            finally:
                os._exit(70)  # main exits itself; anything else is a failure
        pids.append(pid)
    exits = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        exits.append(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    os.write(1, (json.dumps({"exits": exits}) + "\n").encode())


def main(argv: list[str]) -> None:
    mode, url, *args = argv
    rank, world = join()
    if mode == "ddp":
        out = ddp_save(rank, url, int(args[0]))
        dist.barrier()  # rank 0's last commit is in
        out.update(ddp_restore(url))
    elif mode == "sharded-save":
        out = sharded_save(url, int(args[0]), world)
    elif mode == "sharded-load":
        out = sharded_load(url, world)
    elif mode == "sharded-corrupt":
        out = sharded_corrupt(url, world)
    elif mode == "sharded-kill":
        out = sharded_kill(url, int(args[0]), int(args[1]), args[2], rank=rank, world=world)
    else:
        raise SystemExit(f"unknown mode {mode}")
    line = json.dumps({"rank": rank, "world": world, **out}) + "\n"
    os.write(1, line.encode())  # one write: the ranks share the pipe
    if mode != "sharded-kill":  # a broken group cannot be destroyed cleanly
        dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "--fork":
        fork(int(sys.argv[2]), sys.argv[3:])
    else:
        main(sys.argv[1:])

"""Two gloo ranks on CPU: SIGTERM reached rank 1 only; both must stop after the same step.

Run as ``python _two_ranks.py <rendezvous file>``; prints one line per rank. The ranks call
the callback's step-end hook directly (no Trainer): what is tested is the stop vote.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import TrainerControl

from vastkit import _ranks
from vastkit.integrations.transformers import VastkitTrainerCallback


def rank_main(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:

        class Context:  # rank 1 got the SIGTERM first
            def should_stop(self, *, any_rank: bool = False, device: object = None) -> bool:
                # the real context's vote over the ranks, on a stop only rank 1 saw
                return _ranks.any_rank(rank == 1, device) if any_rank else rank == 1

            def report(self, *args: object, **kwargs: object) -> None:
                pass

        vk = VastkitTrainerCallback(manager=SimpleNamespace(), context=Context())  # type: ignore[arg-type]
        control = TrainerControl()
        state = SimpleNamespace(global_step=7, is_world_process_zero=rank == 0)
        vk.on_step_end(SimpleNamespace(device="cpu"), state, control)  # type: ignore[arg-type]
        line = f"rank {rank}: stop={control.should_training_stop} save={control.should_save}\n"
        os.write(1, line.encode())  # one write per line: the two ranks' lines never interleave
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    # fork: the ranks inherit the imports instead of paying for them twice more
    mp.start_processes(rank_main, args=(sys.argv[1],), nprocs=2, start_method="fork")

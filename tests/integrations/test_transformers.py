"""vastkit.integrations.transformers: a preempted HF Trainer resumes exactly where it stopped.

A one-layer GPT-2 built from a config (no hub download) trains on 40 random token rows,
shuffled by the Trainer's seeded sampler, with a linear LR schedule. SIGTERM during step 6
makes the callback ask the Trainer to save and stop; the folder is committed through vastkit,
the local output folder is thrown away (a new machine), and a restarted run fetches the
latest checkpoint back, resumes, and must match an uninterrupted run loss for loss and bit for
bit.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests._support.processes import ProcessGroups  # noqa: E402
from tests.integrations.conftest import fresh_context, reported, sigterm_self  # noqa: E402
from vastkit.checkpoint import CheckpointManager  # noqa: E402
from vastkit.errors import CheckpointError  # noqa: E402
from vastkit.integrations.transformers import (  # noqa: E402
    VastkitTrainerCallback,
    folder_state,
    write_folder,
)
from vastkit.worker import WorkerContext  # noqa: E402

TOTAL = 12
STOP_AT = 6


class Rows(torch.utils.data.Dataset):  # type: ignore[misc]
    def __init__(self) -> None:
        self.ids = torch.randint(0, 32, (40, 8), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Losses(transformers.TrainerCallback):  # type: ignore[misc]
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            self.losses[state.global_step] = logs["loss"]


class During(transformers.TrainerCallback):  # type: ignore[misc]
    """Calls ``action`` once, while step ``step`` is being computed (as a SIGTERM lands)."""

    def __init__(self, step: int, action: Any) -> None:
        self.step, self.action = step, action

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step - 1:
            self.action()


def run(ctx: WorkerContext, out: Path, *callbacks: Any) -> tuple[Any, Any, Losses, Any]:
    """One attempt: fetch vastkit's latest (if any) into ``out`` and train to TOTAL steps."""
    vk = VastkitTrainerCallback(CheckpointManager(ctx.checkpoint_url, keep_last=3), context=ctx)
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=8, n_head=2, vocab_size=32, n_positions=8, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=TOTAL,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        save_strategy="steps",
        save_steps=4,
        logging_steps=1,
        report_to="none",
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    losses = Losses()
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Rows(), callbacks=[vk, losses, *callbacks]
    )
    trainer.train(resume_from_checkpoint=vk.resume_from_checkpoint(out))
    vk.manager.close()
    return trainer, model, losses, vk


def test_a_preempted_trainer_resumes_exactly_where_an_uninterrupted_one_would_be(
    tmp_path: Path, worker_context: WorkerContext
) -> None:
    alone = WorkerContext(
        {"VASTKIT_LOCAL_RUN": str(tmp_path / "alone")}, install_signal_handler=False
    )
    base_trainer, baseline, base_losses, base_vk = run(alone, tmp_path / "alone-out")
    assert base_trainer.state.global_step == TOTAL
    assert [c.step for c in base_vk.manager.list()] == [4, 8, 12]  # every save_steps folder

    # Attempt 1: SIGTERM (the worker forwarding an outbid) lands during step 6.
    out = tmp_path / "out"
    trainer, _, losses, vk = run(worker_context, out, During(STOP_AT, sigterm_self))
    assert worker_context.should_stop()
    assert trainer.state.global_step == vk.stopped_step == STOP_AT  # train() returned there
    assert sorted(losses.losses) == list(range(1, STOP_AT + 1))
    assert [c.step for c in vk.manager.list()] == [4, STOP_AT]
    status = reported(tmp_path)  # what the worker's heartbeats carry
    assert (status["step"], status["checkpoint_step"]) == (STOP_AT, STOP_AT)

    # Attempt 2, on another machine: nothing local survives; resumes from vastkit's step 6.
    shutil.rmtree(out)
    ctx2 = fresh_context(tmp_path)
    try:
        trainer2, second, losses2, vk2 = run(ctx2, out)
    finally:
        ctx2.close()
    assert (out / f"checkpoint-{STOP_AT}" / "trainer_state.json").is_file()  # fetched back
    assert trainer2.state.global_step == TOTAL
    assert vk2.stopped_step is None
    assert sorted(losses2.losses) == list(range(STOP_AT + 1, TOTAL + 1))  # none trained twice
    assert losses2.losses == {s: base_losses.losses[s] for s in range(STOP_AT + 1, TOTAL + 1)}
    for name, weight in baseline.state_dict().items():
        assert torch.equal(second.state_dict()[name], weight), name
    assert [c.step for c in vk2.manager.list()] == [STOP_AT, 8, 12]


def test_a_fresh_start_resumes_from_nothing(tmp_path: Path, worker_context: WorkerContext) -> None:
    vk = VastkitTrainerCallback(context=worker_context)  # the run's manager
    assert vk.manager.url.endswith("run")
    assert vk.resume_from_checkpoint(tmp_path / "out") is None
    assert not (tmp_path / "out").exists()


def test_a_folder_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    src = tmp_path / "checkpoint-3"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(1000))
    (src / "sub" / "empty.json").write_bytes(b"")
    (src / "trainer_state.json").write_text('{"global_step": 3}')
    with CheckpointManager(str(tmp_path / "store")) as manager:
        manager.save(3, {"transformers": folder_state(src)}, force=True)
    state = CheckpointManager(str(tmp_path / "store")).load(weights_only=True)
    dst = write_folder(state["transformers"], tmp_path / "back" / "checkpoint-3")
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()) == [
        "model.safetensors",
        "sub/empty.json",
        "trainer_state.json",
    ]
    for name in ("model.safetensors", "sub/empty.json", "trainer_state.json"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()
    assert not list((tmp_path / "back").glob(".vastkit-restore-*"))


def test_bad_folders_and_foreign_checkpoints_are_refused(
    tmp_path: Path, worker_context: WorkerContext
) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        folder_state(tmp_path / "checkpoint-9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is empty"):
        folder_state(tmp_path / "empty")
    evil = {"files": {"../outside.txt": torch.zeros(1, dtype=torch.uint8)}}
    with pytest.raises(CheckpointError, match=r"escapes its folder: '\.\./outside\.txt'"):
        write_folder(evil, tmp_path / "out" / "checkpoint-1")
    assert not (tmp_path / "out" / "outside.txt").exists()
    with CheckpointManager(worker_context.checkpoint_url) as manager:
        manager.save_now(5, {"model": torch.zeros(2)})  # a plain training loop's
        vk = VastkitTrainerCallback(manager)
        with pytest.raises(CheckpointError, match=r"step 5 .* not saved by vastkit.integrations"):
            vk.resume_from_checkpoint(tmp_path / "out")


@pytest.mark.slow
def test_a_sigterm_on_one_rank_stops_every_rank_after_the_same_step(
    tmp_path: Path, processes: ProcessGroups
) -> None:
    """Two gloo ranks; only rank 1 sees should_stop(): the vote makes both save and stop (a
    rank that went on would wait forever in the next step's all-reduce)."""
    script = Path(__file__).with_name("_two_ranks.py")
    done = processes.run([sys.executable, str(script), str(tmp_path / "rendezvous")], text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        "rank 0: stop=True save=True",
        "rank 1: stop=True save=True",
    ]

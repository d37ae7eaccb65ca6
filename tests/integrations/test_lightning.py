"""vastkit.integrations.lightning: preempted Lightning training resumes exactly where it stopped.

A tiny ``torch.nn.Linear`` LightningModule (SGD with momentum and a step LR schedule, so the
optimizer's and scheduler's states matter) trains on a resumable in-memory loader that
reshuffles every epoch. A run that receives SIGTERM at step 5 commits step 5 and stops; a
restarted run resumes from vastkit's latest checkpoint and must match an uninterrupted run
loss for loss and bit for bit.
"""

from __future__ import annotations

import fractions
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pl = pytest.importorskip("pytorch_lightning")
torch = pytest.importorskip("torch")

import vastkit.worker  # noqa: E402
from tests.integrations.conftest import fresh_context, reported, sigterm_self  # noqa: E402
from vastkit.checkpoint import PAYLOAD_NAME, CheckpointManager, CheckpointWarning  # noqa: E402
from vastkit.errors import CheckpointCorruptError, CheckpointError  # noqa: E402
from vastkit.integrations.lightning import (  # noqa: E402
    VastkitCheckpointIO,
    VastkitCheckpoints,
    lightning_namespace,
)
from vastkit.worker import WorkerContext  # noqa: E402

pytestmark = [
    # Lightning 2.6.6 on torch 2.13 (its own code, at every fit):
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]

TOTAL = 14
STOP_AT = 5


class Batches:
    """A resumable loader: epoch e visits the samples in ``randperm(seed=e)`` order, and its
    ``state_dict`` (which Lightning saves with its loops) says where in which epoch it is."""

    def __init__(self, batch_size: int = 4) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(24, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        self.batch_size = batch_size
        self.epoch = self.index = self.start = 0

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.epoch))
        self.index, self.start = self.start, 0
        while self.index < len(self):
            pick = order[self.index * self.batch_size : (self.index + 1) * self.batch_size]
            self.index += 1
            yield self.x[pick], self.y[pick]
        self.epoch, self.index = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.start = state["epoch"], state["index"]


class Tiny(pl.LightningModule):  # type: ignore[misc]
    def __init__(self, lr: float = 0.05, extra: Any = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lin = torch.nn.Linear(4, 1)
        self.losses: dict[int, float] = {}

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.losses[self.global_step] = loss.item()
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)]


class During(pl.Callback):  # type: ignore[misc]
    """Calls ``action`` once, while optimizer step ``step`` is being computed (as a SIGTERM
    from the worker lands: in the middle of a batch)."""

    def __init__(self, step: int, action: Any) -> None:
        self.step, self.action = step, action

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.step - 1:
            self.action()


class After(During):
    """Calls ``action`` once, after step ``step``'s batch ended (between two batches)."""

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        pass

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.step:
            self.action()


def trainer(vk: VastkitCheckpoints, *callbacks: Any, steps: int = TOTAL, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "max_steps": steps,
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [vk, *callbacks],
        "plugins": [vk.checkpoint_io],
        **kw,
    }
    return pl.Trainer(**options)


def manager(ctx: WorkerContext) -> CheckpointManager:
    return CheckpointManager(ctx.checkpoint_url, every_steps=4, keep_last=3)


def run(ctx: WorkerContext, *callbacks: Any, model: Tiny | None = None) -> tuple[Any, Tiny, Any]:
    """One attempt: resume from vastkit's latest (if any) and train to TOTAL steps."""
    torch.manual_seed(0)
    model = model or Tiny()
    vk = VastkitCheckpoints(manager(ctx), context=ctx)
    tr = trainer(vk, *callbacks)
    tr.fit(model, Batches(), ckpt_path=vk.ckpt_path())
    vk.manager.close()
    return tr, model, vk


def uninterrupted(tmp_path: Path) -> tuple[Any, Tiny]:
    ctx = WorkerContext(
        {"VASTKIT_LOCAL_RUN": str(tmp_path / "alone")}, install_signal_handler=False
    )
    tr, model, vk = run(ctx)
    assert [c.step for c in vk.manager.list()] == [8, 12, TOTAL]  # every 4, keep 3, the end
    return tr, model


@pytest.mark.parametrize("when", [During, After], ids=["during-a-batch", "between-batches"])
def test_a_preempted_run_resumes_exactly_where_an_uninterrupted_run_would_be(
    tmp_path: Path, worker_context: WorkerContext, when: type[During]
) -> None:
    baseline_trainer, baseline = uninterrupted(tmp_path)

    # Attempt 1: SIGTERM (the worker forwarding an outbid) lands during or after step 5.
    torch.manual_seed(0)
    first = Tiny()
    vk = VastkitCheckpoints(manager(worker_context), context=worker_context)
    assert vk.ckpt_path() is None  # nothing committed yet: a fresh start
    tr = trainer(vk, when(STOP_AT, sigterm_self))
    # Lightning's own SIGTERM handler ends fit (SIGTERMException) once the batch is done; the
    # callback committed the step first (at the batch end, or in on_exception after it).
    with pytest.raises(SystemExit):
        tr.fit(first, Batches(), ckpt_path=None)
    vk.manager.close()
    assert worker_context.should_stop()
    assert vk.stopped_step == STOP_AT == tr.global_step
    assert [c.step for c in vk.manager.list()] == [4, STOP_AT]
    status = reported(tmp_path)  # what the worker's heartbeats carry
    assert (status["step"], status["checkpoint_step"]) == (STOP_AT, STOP_AT)
    assert sorted(first.losses) == list(range(STOP_AT))

    # Attempt 2 (a new machine): resumes from step 5 and finishes.
    ctx2 = fresh_context(tmp_path)
    try:
        tr2, second, vk2 = run(ctx2)
    finally:
        ctx2.close()
    assert vk2.stopped_step is None
    assert tr2.global_step == TOTAL
    assert tr2.current_epoch == baseline_trainer.current_epoch
    assert sorted(second.losses) == list(range(STOP_AT, TOTAL))  # no step trained twice
    assert second.losses == {s: baseline.losses[s] for s in range(STOP_AT, TOTAL)}
    assert torch.equal(second.lin.weight, baseline.lin.weight)
    assert torch.equal(second.lin.bias, baseline.lin.bias)
    assert [c.step for c in vk2.manager.list()] == [8, 12, TOTAL]


def test_the_worker_stop_file_stops_training_after_committing_the_step(
    tmp_path: Path, worker_context: WorkerContext
) -> None:
    stop_file = tmp_path / "run" / "status" / "stop"  # what the worker writes on a stop
    tr, model, vk = run(worker_context, During(3, stop_file.touch))
    assert tr.global_step == vk.stopped_step == 3  # fit returned: trainer.should_stop
    assert sorted(model.losses) == [0, 1, 2]
    assert vk.manager.latest() is not None
    assert vk.manager.latest().step == 3  # type: ignore[union-attr]
    state = vk.manager.load(3)["lightning"]
    assert state["global_step"] == 3
    # The loader's position travels with Lightning's loops (what makes the resume exact).
    assert state["loops"]["fit_loop"]["state_dict"] == {
        "combined_loader": [{"epoch": 0, "index": 3}]
    }


def test_hyperparameters_weights_only_loading_refuses_fail_the_first_save(
    tmp_path: Path, worker_context: WorkerContext
) -> None:
    with pytest.raises(CheckpointError) as caught:
        run(worker_context, model=Tiny(extra=fractions.Fraction(1, 3)))
    message = str(caught.value)
    assert "checkpoint['hyper_parameters']['extra']: a fractions.Fraction" in message
    assert "weights_only=False" in message
    assert CheckpointManager(worker_context.checkpoint_url).list() == []  # nothing committed


def test_weights_only_false_saves_and_resumes_arbitrary_hyperparameters(
    tmp_path: Path, worker_context: WorkerContext
) -> None:
    def attempt(steps: int) -> tuple[Any, Tiny]:
        torch.manual_seed(0)
        model = Tiny(extra=fractions.Fraction(1, 3))
        vk = VastkitCheckpoints(manager(worker_context), context=worker_context, weights_only=False)
        tr = trainer(vk, steps=steps)
        tr.fit(model, Batches(), ckpt_path=vk.ckpt_path())
        vk.manager.close()
        return tr, model

    attempt(3)
    tr, model = attempt(6)
    assert tr.global_step == 6
    assert sorted(model.losses) == [3, 4, 5]
    with pytest.raises(CheckpointError, match="weights_only"):
        CheckpointManager(worker_context.checkpoint_url).load()  # the safe default refuses it


def test_every_damaged_checkpoint_fails_the_resume_instead_of_starting_afresh(
    tmp_path: Path, worker_context: WorkerContext
) -> None:
    run(worker_context, During(2, (tmp_path / "run" / "status" / "stop").touch))
    for payload in (tmp_path / "run" / "checkpoints").glob(f"step-*/{PAYLOAD_NAME}"):
        payload.write_bytes(payload.read_bytes()[:100])
    vk = VastkitCheckpoints(manager(worker_context), context=worker_context)
    with pytest.warns(CheckpointWarning, match="skipping damaged checkpoint: checkpoint step 2"):
        path = vk.ckpt_path()
    assert path == "vastkit:latest"
    with (
        pytest.raises(CheckpointCorruptError, match="step 2"),
        pytest.warns(CheckpointWarning, match="skipping damaged checkpoint"),
    ):
        trainer(vk).fit(Tiny(), Batches(), ckpt_path=path)


def test_without_its_plugin_the_callback_refuses_to_start(worker_context: WorkerContext) -> None:
    vk = VastkitCheckpoints(manager(worker_context), context=worker_context)
    tr = trainer(vk, plugins=[])
    with pytest.raises(CheckpointError, match=r"plugins=\[vk.checkpoint_io\]"):
        tr.fit(Tiny(), Batches())


def test_other_paths_go_to_lightnings_own_checkpoint_io(
    tmp_path: Path, worker_context: WorkerContext
) -> None:
    """ModelCheckpoint's files are Lightning's as usual; vastkit: paths are vastkit's."""
    vk = VastkitCheckpoints(manager(worker_context), context=worker_context)
    files = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "pl", every_n_train_steps=2)
    tr = trainer(vk, files, steps=4, enable_checkpointing=True)
    tr.fit(Tiny(), Batches())
    assert sorted(os.listdir(tmp_path / "pl")) == ["epoch=0-step=4.ckpt"]
    loaded = torch.load(tmp_path / "pl" / "epoch=0-step=4.ckpt", weights_only=True)
    assert loaded["global_step"] == 4
    tr.save_checkpoint("vastkit:step=40")  # an explicit save through the plugin
    assert [c.step for c in vk.manager.list()] == [4, 40]
    with pytest.raises(CheckpointError, match="vastkit:latest or vastkit:step=<number>"):
        vk.checkpoint_io.load_checkpoint("vastkit:newest")
    assert isinstance(vk.checkpoint_io, VastkitCheckpointIO)
    assert lightning_namespace() == "pytorch_lightning"


def test_sharded_strategies_are_refused_and_ddp_is_accepted(worker_context: WorkerContext) -> None:
    """The callback saves one full copy from the main rank: FSDP's shards would be lost."""
    vk = VastkitCheckpoints(manager(worker_context), context=worker_context)
    sharded = SimpleNamespace(strategy=pl.strategies.FSDPStrategy())
    with pytest.raises(CheckpointError, match="FSDPStrategy shards it"):
        vk.setup(sharded, Tiny(), "fit")
    ddp = SimpleNamespace(strategy=pl.strategies.DDPStrategy(checkpoint_io=vk.checkpoint_io))
    vk.setup(ddp, Tiny(), "fit")  # accepted (it has run on one CPU process only)
    vk.manager.close()


def test_the_default_context_keeps_its_sigterm_handler_after_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_context: WorkerContext
) -> None:
    """The run's context, made on first use (at setup, also with a manager given), installs
    its handler before Lightning's, which puts the earlier one back at teardown: a SIGTERM
    after fit still reaches should_stop()."""
    made: list[WorkerContext] = []

    def context() -> WorkerContext:  # what vastkit.worker.context() does on its first call
        if not made:
            made.append(WorkerContext({"VASTKIT_LOCAL_RUN": str(tmp_path / "lazy")}))
        return made[0]

    monkeypatch.setattr(vastkit.worker, "context", context)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fixture puts the one before back
    vk = VastkitCheckpoints(CheckpointManager(str(tmp_path / "given")))  # context: the default
    trainer(vk, steps=2).fit(Tiny(), Batches())
    vk.manager.close()
    assert [c.step for c in vk.manager.list()] == [1, 2]
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    handler(signal.SIGTERM, None)  # as a SIGTERM after fit would
    assert made[0].should_stop()
    made[0].close()

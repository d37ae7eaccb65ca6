"""CheckpointManager on memory://, file:// and s3:// (moto): commit, verify, order, retain, fail."""

from __future__ import annotations

import fractions
import random
import sys
from typing import Any

import fsspec
import numpy as np
import pytest
import torch

from tests._support.processes import ProcessGroups
from vastkit.checkpoint import CheckpointManager, CheckpointWarning, RetryPolicy
from vastkit.checkpoint.naming import auto_interval_steps
from vastkit.clock import ManualClock
from vastkit.errors import CheckpointCorruptError, CheckpointError

Store = tuple[str, dict[str, Any]]


def _model() -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    return model, opt, sched


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any) -> None:
    loss = model(torch.randn(4, 8)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def _flip_byte(url: str, options: dict[str, Any], offset: int = -100) -> None:
    fs, path = fsspec.core.url_to_fs(url, **options)
    data = bytearray(fs.cat_file(path))
    data[offset] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    fs.invalidate_cache()


def test_save_restore_round_trip_continues_training_identically(store: Store) -> None:
    url, options = store
    model, opt, sched = _model()
    with CheckpointManager(url, storage_options=options, every_steps=3) as mgr:
        for step in range(1, 7):
            _train_step(model, opt, sched)
            saved = mgr.save(
                step,
                {
                    "model": model,
                    "optimizer": opt,
                    "scheduler": sched,
                    "epoch": step // 3,
                    "arr": np.arange(6).reshape(2, 3),
                },
            )
            assert saved == (step % 3 == 0)
        mgr.wait()
        expected_next = [torch.rand(3), random.random(), np.random.rand()]

    model2, opt2, sched2 = _model()
    torch.manual_seed(1234)
    random.seed(1)
    np.random.seed(2)
    with CheckpointManager(url, storage_options=options) as mgr2:
        info = mgr2.restore(model=model2, optimizer=opt2, scheduler=sched2)
    assert info is not None
    assert info.step == 6
    assert info.state is not None
    assert info.state["epoch"] == 2
    np.testing.assert_array_equal(info.state["arr"], np.arange(6).reshape(2, 3))
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert sched2.state_dict() == sched.state_dict()
    # RNG states came back: the next draws equal those right after the save.
    assert torch.equal(torch.rand(3), expected_next[0])
    assert random.random() == expected_next[1]
    assert np.random.rand() == expected_next[2]
    # And training goes on identically.
    _train_step(model, opt, sched)
    torch.manual_seed(5)
    _train_step(model2, opt2, sched2)
    torch.manual_seed(5)
    model3, opt3, sched3 = _model()
    with CheckpointManager(url, storage_options=options) as mgr3:
        mgr3.restore(model=model3, optimizer=opt3, scheduler=sched3, restore_rng=False)
    torch.manual_seed(5)
    _train_step(model3, opt3, sched3)
    for a, b in zip(model2.parameters(), model3.parameters(), strict=True):
        assert torch.equal(a, b)


def test_restore_without_checkpoint_is_a_fresh_start(store: Store) -> None:
    url, options = store
    model, _, _ = _model()
    with CheckpointManager(url, storage_options=options) as mgr:
        assert mgr.latest() is None
        assert mgr.list() == []
        assert mgr.restore(model=model) is None
        with pytest.raises(CheckpointError, match="no committed checkpoint"):
            mgr.load()


def test_step_ordering_is_numeric(store: Store) -> None:
    url, options = store
    with CheckpointManager(url, storage_options=options, keep_last=None, async_save=False) as mgr:
        for step in (9, 10, 99, 100, 2):
            mgr.save(step, {"x": torch.tensor([step])}, force=True)
        assert [i.step for i in mgr.list()] == [2, 9, 10, 99, 100]
        latest = mgr.latest()
        assert latest is not None
        assert latest.step == 100
        assert mgr.load()["x"].item() == 100
        assert mgr.load(10)["x"].item() == 10


def test_flipped_byte_is_detected_and_previous_checkpoint_used(store: Store) -> None:
    url, options = store
    with CheckpointManager(url, storage_options=options, async_save=False) as mgr:
        mgr.save(1, {"w": torch.full((1000,), 1.0)})
        mgr.save(2, {"w": torch.full((1000,), 2.0)})
        info = mgr.latest()
        assert info is not None
        _flip_byte(f"{info.url}/state.pt", options, offset=-2000)
        with pytest.warns(CheckpointWarning, match=r"step 2.*BLAKE3"):
            state = mgr.load()
        assert torch.equal(state["w"], torch.full((1000,), 1.0))
        with pytest.warns(CheckpointWarning, match="step 2"):
            full = mgr.latest(verify="full")
        assert full is not None
        assert full.step == 1
        with pytest.raises(CheckpointCorruptError, match=r"step 2.*state\.pt"):
            mgr.load(2)
        model = torch.nn.Linear(1, 1)
        with pytest.warns(CheckpointWarning):
            restored = mgr.restore(w=_Loader(model))
        assert restored is not None
        assert restored.step == 1


class _Loader:
    """Receives a plain tensor through load_state_dict (stands in for any stateful object)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.got: Any = None

    def load_state_dict(self, value: Any) -> None:
        self.got = value


def test_truncated_payload_and_bad_manifest_are_skipped_with_a_warning(store: Store) -> None:
    url, options = store
    with CheckpointManager(url, storage_options=options, async_save=False, keep_last=None) as mgr:
        for step in (1, 2, 3):
            mgr.save(step, {"w": torch.full((100,), float(step))})
    fs, root = fsspec.core.url_to_fs(url, **options)
    payload3 = f"{root}/checkpoints/step-000000000003/state.pt"
    fs.pipe_file(payload3, fs.cat_file(payload3)[:-10])
    fs.pipe_file(f"{root}/checkpoints/step-000000000002/manifest.json", b"{not json")
    fs.invalidate_cache()
    mgr = CheckpointManager(url, storage_options=options)
    with pytest.warns(CheckpointWarning) as record:
        info = mgr.latest()
    assert info is not None
    assert info.step == 1
    messages = " | ".join(str(w.message) for w in record)
    assert "step 3" in messages
    assert "step 2" in messages


def test_uncommitted_payload_is_ignored_without_warning(store: Store) -> None:
    url, options = store
    with CheckpointManager(url, storage_options=options, async_save=False) as mgr:
        mgr.save(5, {"w": torch.ones(3)})
    fs, root = fsspec.core.url_to_fs(url, **options)
    if "file" in fs.protocol:
        fs.makedirs(f"{root}/checkpoints/step-000000000006", exist_ok=True)
    fs.pipe_file(f"{root}/checkpoints/step-000000000006/state.pt", b"half a payl")
    fs.invalidate_cache()
    info = CheckpointManager(url, storage_options=options).latest()
    assert info is not None
    assert info.step == 5


def test_weights_only_refuses_pickled_objects_unless_opted_out(store: Store) -> None:
    url, options = store
    with CheckpointManager(url, storage_options=options, async_save=False) as mgr:
        mgr.save(1, {"obj": fractions.Fraction(1, 3), "w": torch.ones(2)})
        with pytest.raises(CheckpointError, match=r"step 1.*weights_only"):
            mgr.load()
        assert mgr.load(weights_only=False)["obj"] == fractions.Fraction(1, 3)


def test_async_save_snapshots_state_at_call_time(store: Store) -> None:
    url, options = store
    w = torch.zeros(256, 256)
    with CheckpointManager(url, storage_options=options) as mgr:
        assert mgr.save(1, {"w": w, "meta": {"tags": ["a"]}})
        w.fill_(7.0)  # mutate before the upload is done
        mgr.wait()
        first = mgr._stager.buffers[("w",)]
        assert mgr.save(2, {"w": w, "meta": {"tags": ["a"]}})
        # Same shapes and dtypes: the staging buffer is reused, not reallocated.
        assert mgr._stager.buffers[("w",)].data_ptr() == first.data_ptr()
        mgr.wait()
        assert torch.equal(mgr.load(1)["w"], torch.zeros(256, 256))
        assert torch.equal(mgr.load(2)["w"], torch.full((256, 256), 7.0))


def test_interval_every_steps_every_seconds_and_force(tmp_path: Any) -> None:
    clock = ManualClock()
    url = f"file://{tmp_path}/run"
    with CheckpointManager(url, every_steps=4, clock=clock, async_save=False) as mgr:
        saved = [s for s in range(1, 13) if mgr.save(s, {"s": s})]
        assert saved == [4, 8, 12]
        assert mgr.save(13, {"s": 13}, force=True)
        assert not mgr.save(13, {"s": 13})
    with CheckpointManager(f"{url}2", every_seconds=60, clock=clock, async_save=False) as mgr:
        saved = []
        for s in range(1, 10):
            clock.advance(25)
            if mgr.save(s, {"s": s}):
                saved.append(s)
        assert saved == [3, 6, 9]


def test_retention_keeps_last_and_best_and_prunes_only_after_commit(flaky: Any) -> None:
    url, fs_cls = flaky
    mgr = CheckpointManager(url, keep_last=2, keep_best=1, best_metric="loss", async_save=False)
    losses = {1: 0.5, 2: 0.1, 3: 0.4, 4: 0.3}
    for step, loss in losses.items():
        mgr.save(step, {"s": step}, metrics={"loss": loss})
    assert [i.step for i in mgr.list()] == [2, 3, 4]  # best (2) + last two

    def fail_manifest(path: str, value: Any) -> None:
        if path.endswith("step-000000000005/manifest.json"):
            raise PermissionError("denied")

    fs_cls.hooks["pipe"] = fail_manifest
    with pytest.raises(CheckpointError, match="step 5"):
        mgr.save(5, {"s": 5}, metrics={"loss": 0.9})
    # The failed save pruned nothing.
    assert [i.step for i in mgr.list()] == [2, 3, 4]
    fs_cls.hooks = {}
    mgr.save(6, {"s": 6}, metrics={"loss": 0.9})
    assert [i.step for i in mgr.list()] == [2, 4, 6]
    # The abandoned step-5 folder is cleaned up too.
    fs = fsspec.filesystem("flakymem")
    root = url.removeprefix("flakymem://")
    assert not any("step-000000000005" in p for p in fs.find(f"/{root}"))
    mgr.close()


def test_failed_background_save_is_raised_at_the_next_call(flaky: Any) -> None:
    url, fs_cls = flaky

    def fail_payload(path: str, value: Any) -> None:
        if path.endswith("step-000000000002/state.pt"):
            raise PermissionError("access denied to bucket")

    fs_cls.hooks["pipe"] = fail_payload
    mgr = CheckpointManager(url)
    assert mgr.save(1, {"w": torch.ones(4)})
    assert mgr.save(2, {"w": torch.ones(4)})  # returns before the upload fails
    with pytest.raises(CheckpointError, match="step 2") as excinfo:
        mgr.save(3, {"w": torch.ones(4)})
    assert isinstance(excinfo.value.__cause__, PermissionError)
    # Raised once; the manager carries on.
    fs_cls.hooks = {}
    assert mgr.save(4, {"w": torch.ones(4)})
    mgr.close()
    assert [i.step for i in CheckpointManager(url).list()] == [1, 4]


def test_failure_is_raised_by_wait_and_close(flaky: Any) -> None:
    url, fs_cls = flaky
    fs_cls.hooks["pipe"] = lambda path, value: (_ for _ in ()).throw(PermissionError("nope"))
    mgr = CheckpointManager(url)
    mgr.save(1, {"w": torch.ones(1)})
    with pytest.raises(CheckpointError, match="step 1"):
        mgr.wait()
    mgr.save(2, {"w": torch.ones(1)})
    with pytest.raises(CheckpointError, match="step 2"):
        mgr.close()
    with pytest.raises(CheckpointError, match="closed"):
        mgr.save(3, {"w": torch.ones(1)})


def test_transient_errors_are_retried_with_backoff_on_the_clock(flaky: Any) -> None:
    url, fs_cls = flaky
    failures = {"left": 3}

    def flaky_pipe(path: str, value: Any) -> None:
        if path.endswith("state.pt") and failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionError("connection reset by peer")

    fs_cls.hooks["pipe"] = flaky_pipe
    clock = ManualClock()
    mgr = CheckpointManager(
        url,
        clock=clock,
        async_save=False,
        retries=RetryPolicy(attempts=5, initial_delay=1.0, deadline=60),
    )
    assert mgr.save(1, {"w": torch.ones(3)})
    assert len(clock.slept) == 3
    assert all(0.5 <= d <= 4.0 for d in clock.slept)
    assert clock.slept[2] > clock.slept[0] / 2  # backoff grows (with jitter in [0.5, 1])
    mgr.close()


def test_retries_are_bounded_in_time(flaky: Any) -> None:
    url, fs_cls = flaky

    def always(path: str, value: Any) -> None:
        if path.endswith("state.pt"):
            raise TimeoutError("read timed out")

    fs_cls.hooks["pipe"] = always
    clock = ManualClock()
    start = clock.now()
    mgr = CheckpointManager(
        url,
        clock=clock,
        async_save=False,
        retries=RetryPolicy(attempts=100, initial_delay=1, max_delay=8, deadline=30),
    )
    with pytest.raises(CheckpointError, match="step 1") as excinfo:
        mgr.save(1, {"w": torch.ones(3)})
    assert isinstance(excinfo.value.__cause__, TimeoutError)
    assert clock.now() - start <= 30
    assert mgr.latest() is None


def test_manifest_is_not_published_when_the_payload_does_not_verify(flaky: Any) -> None:
    url, fs_cls = flaky

    def truncate(path: str, value: Any) -> Any:
        if path.endswith("state.pt"):
            return bytes(value)[:-1]
        return None

    fs_cls.hooks["pipe"] = truncate
    mgr = CheckpointManager(url, async_save=False)
    with pytest.raises(CheckpointCorruptError, match=r"step 1.*state\.pt"):
        mgr.save(1, {"w": torch.ones(100)})
    assert not any(op == "pipe" and path.endswith("manifest.json") for op, path in fs_cls.calls)
    assert mgr.latest() is None


def test_save_now_commits_the_last_seen_state_within_the_deadline(store: Store) -> None:
    url, options = store
    w = torch.zeros(10)
    mgr = CheckpointManager(url, storage_options=options, every_steps=100)
    for step in range(1, 8):
        w += 1
        mgr.save(step, {"w": w})
    assert mgr.latest() is None  # nothing was due
    assert mgr.save_now(deadline=60)
    info = mgr.latest()
    assert info is not None
    assert info.step == 7
    assert torch.equal(mgr.load()["w"], torch.full((10,), 7.0))
    assert mgr.save_now(deadline=60)  # already committed: nothing to do
    mgr.close()


def test_save_now_reports_a_missed_deadline(flaky: Any) -> None:
    url, fs_cls = flaky
    clock = ManualClock()
    import threading

    release = threading.Event()

    def slow(path: str, value: Any) -> None:
        if path.endswith("state.pt"):
            release.wait(10)

    fs_cls.hooks["pipe"] = slow
    mgr = CheckpointManager(url, clock=clock)
    mgr.save(1, {"w": torch.ones(2)})
    assert mgr.save_now(deadline=1.0) is False
    release.set()
    mgr.close()
    assert mgr.latest() is not None


class _TickingClock(ManualClock):
    """Virtual time that also moves 10 ms on every reading, so saves take measurable time."""

    def now(self) -> float:
        self.advance(0.01)
        return super().now()


def test_auto_interval_follows_young_daly_bounded_by_upload(flaky: Any) -> None:
    url, _ = flaky
    clock = _TickingClock()
    mgr = CheckpointManager(
        url, every_steps="auto", clock=clock, mtbf_seconds=3600, async_save=False
    )
    assert mgr.save(1, {"w": torch.ones(2)})  # the first call saves, to measure
    steps_saved = []
    for step in range(2, 200):
        clock.advance(2.0)  # two seconds per step
        if mgr.save(step, {"w": torch.ones(2)}):
            steps_saved.append(step)
    stats = mgr.stats
    assert stats.stall_seconds is not None
    assert stats.stall_seconds > 0
    assert stats.upload_seconds is not None
    assert stats.step_seconds is not None
    expected = auto_interval_steps(
        step_seconds=stats.step_seconds,
        stall_seconds=stats.stall_seconds,
        upload_seconds=stats.upload_seconds,
        mtbf_seconds=3600,
    )
    assert mgr.interval_steps == expected
    # sqrt(2 x stall x MTBF) is several seconds here: more than one 2-second step apart.
    assert expected > 1
    gaps = [b - a for a, b in zip([1, *steps_saved], steps_saved, strict=False)]
    assert gaps
    assert all(abs(g - expected) <= 1 for g in gaps[2:])
    assert len(steps_saved) < 199 // 2
    mgr.close()


def test_resaving_a_committed_step_replaces_it(store: Store) -> None:
    url, options = store
    with CheckpointManager(url, storage_options=options, async_save=False) as mgr:
        mgr.save(3, {"v": torch.tensor(1)})
        mgr.save(3, {"v": torch.tensor(2)}, force=True)
        assert mgr.load(3)["v"].item() == 2
        assert [i.step for i in mgr.list()] == [3]


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="every_steps"):
        CheckpointManager("memory://x", every_steps=0)
    with pytest.raises(ValueError, match="keep_best"):
        CheckpointManager("memory://x", keep_best=2)
    with pytest.raises(ValueError, match="step"):
        CheckpointManager("memory://x").save(-1, {})


def test_import_vastkit_works_without_torch(processes: ProcessGroups) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import vastkit, vastkit.checkpoint\n"
        "from vastkit.errors import CheckpointError\n"
        "m = vastkit.checkpoint.CheckpointManager('memory://nt/run')\n"
        "try:\n    m.save(1, {'x': 1})\nexcept CheckpointError as e:\n    print('ERR', e)\n"
    )
    out = processes.run([sys.executable, "-c", code], text=True)
    assert out.returncode == 0, out.stderr
    assert "ERR checkpoints need PyTorch" in out.stdout


@pytest.mark.parametrize("async_save", [False, True])
def test_a_state_of_many_parts_streams_round_trips_and_verifies(
    store: Store, async_save: bool
) -> None:
    """A payload larger than one transfer part is streamed (multipart on S3, a streamed atomic
    write on a local disk) and reads back whole."""
    url, options = store
    state = {"w": torch.arange(3_000_000, dtype=torch.float32), "meta": {"epoch": 3}}  # 12 MB
    with CheckpointManager(
        url, storage_options=options, async_save=async_save, transfer_chunk_bytes=5 * 2**20
    ) as mgr:
        assert mgr.save(5, state)
        mgr.wait()
        info = mgr.latest(verify="full")
        assert info is not None
        assert info.step == 5
        loaded = mgr.load()
    assert torch.equal(loaded["w"], state["w"])
    assert loaded["meta"] == {"epoch": 3}

"""The checkpoint invariants of issue 16, each case by name.

* a re-save of a committed step never uncommits it (checked after every change of the store, so
  at every moment a kill could land), also asynchronously and with ``keep_last=1`` pruning;
* "every checkpoint is damaged" raises :class:`CheckpointCorruptError` listing what was found,
  whatever the damage; a fresh start only when nothing was ever committed;
* entries under ``checkpoints/`` that are not step folders are ignored with a warning naming them
  and never hide a committed checkpoint.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import fsspec
import pytest
import torch

from vastkit.checkpoint import CheckpointManager, CheckpointWarning
from vastkit.checkpoint.naming import MANIFEST_NAME, PAYLOAD_NAME, step_dirname
from vastkit.errors import CheckpointCorruptError, CheckpointError

Store = tuple[str, dict[str, Any]]


def _state(step: int, version: int = 0) -> dict[str, Any]:
    return {"w": torch.full((500,), float(step)), "step": step, "version": version}


def _folder(url: str, options: dict[str, Any], step: int) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(url, **options)
    return fs, f"{root}/checkpoints/{step_dirname(step)}"


class _Watcher:
    """After every change of the store, what a fresh reader finds: latest() and a full load."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[str, str, int | None, int | None, list[str]]] = []
        self.watching = True

    def __call__(self, path: str, op: str) -> None:
        if not self.watching:
            return
        self.watching = False  # the reader's own calls are not watched
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with CheckpointManager(self.url, capture_rng=False) as reader:
                    info = reader.latest(verify="full")
                    loaded = None
                    if info is not None:
                        state = reader.load()
                        whole = torch.equal(state["w"], torch.full((500,), float(state["step"])))
                        loaded = int(state["step"]) if whole else -1
            self.seen.append(
                (op, path, info.step if info else None, loaded, [str(w.message) for w in caught])
            )
        finally:
            self.watching = True

    def assert_always(self, step: int) -> None:
        assert self.seen, "no change of the store was watched"
        for op, path, latest, loaded, warned in self.seen:
            where = f"after {op} {path}"
            assert latest == step, f"{where}: latest() is {latest}, not step {step}"
            assert loaded == step, f"{where}: load() gave {loaded}"
            assert not warned, f"{where}: {warned}"


def _resave_watched(
    flaky: Any, *, async_save: bool, keep_last: int, before: Callable[[CheckpointManager], None]
) -> _Watcher:
    url, fs_cls = flaky
    with CheckpointManager(url, keep_last=keep_last, async_save=False, capture_rng=False) as mgr:
        before(mgr)
    watcher = _Watcher(url)
    fs_cls.hooks["after"] = watcher
    try:
        with CheckpointManager(
            url, keep_last=keep_last, async_save=async_save, capture_rng=False
        ) as mgr:
            info = mgr.restore(restore_rng=False)
            assert info is not None
            for version in (1, 2, 3):  # first state.pt is replaced, then state-<token>.pt, ...
                mgr.save(info.step, _state(info.step, version), force=True)
                mgr.wait()
            assert mgr.load()["version"] == 3
    finally:
        fs_cls.hooks = {}
    return watcher


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_resaving_the_restored_step_never_uncommits_it(flaky: Any, async_save: bool) -> None:
    """The issue's case: with keep_last=1, re-saving the step just restored used to delete its
    manifest first, so a kill in that window left nothing (latest() and restore() None)."""
    watcher = _resave_watched(
        flaky,
        async_save=async_save,
        keep_last=1,
        before=lambda mgr: [mgr.save(s, _state(s), force=True) for s in (3, 4)],
    )
    watcher.assert_always(4)
    ops = [op for op, *_ in watcher.seen]
    assert ops.count("rm") >= 3  # each replaced payload removed only after the swap
    # state.pt -> state-<token>.pt -> state.pt -> state-<token>.pt, the replaced one removed.
    fs, folder = _folder(flaky[0], {}, 4)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))
    assert len(names) == 2
    assert names[0] == MANIFEST_NAME
    assert re.fullmatch(r"state-[0-9a-f]{32}\.pt", names[1])


def test_the_demo_resuming_at_its_last_step_keeps_its_checkpoint(flaky: Any) -> None:
    """The demo's training script, resumed after its last step, restores it and calls
    save_now() of that same step: the step stays committed at every moment."""
    url, fs_cls = flaky
    last = 59
    with CheckpointManager(url, keep_last=1, every_steps=10, capture_rng=False) as mgr:
        for step in range(last + 1):
            mgr.save(step, _state(step))
        mgr.save_now(last, _state(last))
    watcher = _Watcher(url)
    fs_cls.hooks["after"] = watcher
    try:
        with CheckpointManager(url, keep_last=1, every_steps=10, capture_rng=False) as mgr:
            info = mgr.restore(restore_rng=False)
            assert info is not None
            assert info.step == last
            assert mgr.save_now(last, _state(last, 1))
    finally:
        fs_cls.hooks = {}
    watcher.assert_always(last)


def test_pruning_with_keep_last_1_never_leaves_no_checkpoint(flaky: Any) -> None:
    """A new step's save prunes the old one only after the new one is committed."""
    url, fs_cls = flaky
    with CheckpointManager(url, keep_last=1, async_save=False, capture_rng=False) as mgr:
        mgr.save(1, _state(1), force=True)
        watcher = _Watcher(url)
        fs_cls.hooks["after"] = watcher
        try:
            mgr.save(2, _state(2), force=True)
        finally:
            fs_cls.hooks = {}
    latest = [s for _, _, s, _, _ in watcher.seen]
    assert latest[0] == 1
    assert set(latest) == {1, 2}
    assert latest == sorted(latest)  # 1 until step 2 is committed, then 2: never None
    assert all(not warned for *_, warned in watcher.seen)


def test_a_failed_resave_keeps_the_previous_commit(flaky: Any) -> None:
    """A re-save whose payload does not verify fails and leaves the old commit in place."""
    url, fs_cls = flaky
    mgr = CheckpointManager(url, keep_last=1, async_save=False, capture_rng=False)
    mgr.save(7, _state(7, 0), force=True)

    def truncate(path: str, value: Any) -> Any:
        return bytes(value)[:-1] if path.endswith(".pt") else None

    fs_cls.hooks["pipe"] = truncate
    with pytest.raises(CheckpointCorruptError, match=r"step 7.*state-[0-9a-f]+\.pt"):
        mgr.save(7, _state(7, 1), force=True)
    fs_cls.hooks = {}
    info = mgr.latest(verify="full")
    assert info is not None
    assert info.step == 7
    assert mgr.load()["version"] == 0
    mgr.close()


# -- every checkpoint damaged -------------------------------------------------------------------


def _truncate(fs: Any, folder: str) -> None:
    path = f"{folder}/{PAYLOAD_NAME}"
    fs.pipe_file(path, bytes(fs.cat_file(path))[:-10])


def _flip_bits(fs: Any, folder: str) -> None:
    path = f"{folder}/{PAYLOAD_NAME}"
    data = bytearray(fs.cat_file(path))
    data[-600] ^= 0xFF
    fs.pipe_file(path, bytes(data))


def _missing_payload(fs: Any, folder: str) -> None:
    fs.rm_file(f"{folder}/{PAYLOAD_NAME}")


def _manifest(content: bytes) -> Callable[[Any, str], None]:
    def damage(fs: Any, folder: str) -> None:
        fs.pipe_file(f"{folder}/{MANIFEST_NAME}", content)

    return damage


DAMAGE: dict[str, tuple[Callable[[Any, str], None], str]] = {
    "truncated_payload": (_truncate, r"has \d+ bytes, the manifest says"),
    "bit_flips": (_flip_bits, "BLAKE3"),
    "missing_payload": (_missing_payload, "is missing"),
    "empty_manifest": (_manifest(b""), r"empty \S+/manifest\.json"),
    "garbled_manifest": (_manifest(b"{not json"), r"bad \S+/manifest\.json: not valid JSON"),
    "bad_manifest": (
        _manifest(b'{"format_version": 1, "step": 2}'),
        r"bad \S+/manifest\.json: bad time",
    ),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_checkpoint_damaged_raises_whatever_the_damage(store: Store, kind: str) -> None:
    """The issue's case: restore() started fresh after truncation or bad manifests but raised
    after bit flips. Now every kind raises CheckpointCorruptError naming each step."""
    url, options = store
    damage, found = DAMAGE[kind]
    with CheckpointManager(url, storage_options=options, keep_last=None, async_save=False) as m:
        for step in (1, 2):
            m.save(step, _state(step), force=True)
    for step in (1, 2):
        fs, folder = _folder(url, options, step)
        damage(fs, folder)
        fs.invalidate_cache()
    mgr = CheckpointManager(url, storage_options=options, capture_rng=False)
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointCorruptError) as excinfo:
        mgr.restore(restore_rng=False)
    message = str(excinfo.value)
    assert "every committed one is damaged (2)" in message
    for step in (1, 2):
        assert f"checkpoint step {step}: " in message
    assert len(re.findall(found, message)) == 2, message
    assert "move" in message
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointCorruptError):
        mgr.load()
    mgr.close()


def test_mixed_damage_lists_each_step_with_what_was_found(store: Store) -> None:
    url, options = store
    with CheckpointManager(url, storage_options=options, keep_last=None, async_save=False) as m:
        for step in (1, 2, 3):
            m.save(step, _state(step), force=True)
    for step, kind in ((1, "truncated_payload"), (2, "garbled_manifest"), (3, "bit_flips")):
        fs, folder = _folder(url, options, step)
        DAMAGE[kind][0](fs, folder)
        fs.invalidate_cache()
    mgr = CheckpointManager(url, storage_options=options)
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointCorruptError) as excinfo:
        mgr.restore()
    message = str(excinfo.value)
    assert message.index("step 3: ") < message.index("step 2: ") < message.index("step 1: ")
    assert "BLAKE3" in message
    assert "not valid JSON" in message
    assert "the manifest says" in message


def test_some_damaged_restores_the_newest_good_one_with_warnings_naming_them(
    store: Store,
) -> None:
    url, options = store
    with CheckpointManager(url, storage_options=options, keep_last=None, async_save=False) as m:
        for step in (1, 2, 3):
            m.save(step, _state(step), force=True)
    for step, kind in ((2, "empty_manifest"), (3, "bit_flips")):
        fs, folder = _folder(url, options, step)
        DAMAGE[kind][0](fs, folder)
        fs.invalidate_cache()
    mgr = CheckpointManager(url, storage_options=options, capture_rng=False)
    with pytest.warns(CheckpointWarning) as record:
        info = mgr.restore(restore_rng=False)
    assert info is not None
    assert info.step == 1
    warned = " | ".join(str(w.message) for w in record)
    assert "checkpoint step 3:" in warned
    assert "checkpoint step 2:" in warned


def test_fresh_start_only_when_nothing_was_committed(store: Store) -> None:
    """No step folder, or only folders a killed first save left without a manifest: None."""
    url, options = store
    mgr = CheckpointManager(url, storage_options=options)
    assert mgr.restore() is None
    fs, folder = _folder(url, options, 1)
    if "file" in fs.protocol:
        fs.makedirs(folder, exist_ok=True)
    fs.pipe_file(f"{folder}/{PAYLOAD_NAME}", b"half a payl")  # a killed first save
    fs.invalidate_cache()
    assert CheckpointManager(url, storage_options=options).restore() is None  # and no warning
    with pytest.raises(CheckpointError, match="no committed checkpoint"):
        mgr.load()


# -- strays -------------------------------------------------------------------------------------


def test_a_stray_step_4_folder_never_hides_step_000000000004(store: Store) -> None:
    """The issue's case: ``step-4/`` silently hid a committed ``step-000000000004/``."""
    url, options = store
    with CheckpointManager(url, storage_options=options, async_save=False, keep_last=1) as mgr:
        mgr.save(4, _state(4), force=True)
    fs, root = fsspec.core.url_to_fs(url, **options)
    top = f"{root}/checkpoints"
    strays = ("step-4", "step-9", "step-abc", "tmp")
    for name in strays:
        if "file" in fs.protocol:
            fs.makedirs(f"{top}/{name}", exist_ok=True)
        fs.pipe_file(f"{top}/{name}/{MANIFEST_NAME}", b"{not json")
    fs.pipe_file(f"{top}/notes.txt", b"hello")
    fs.invalidate_cache()
    mgr = CheckpointManager(url, storage_options=options, async_save=False, keep_last=1)
    with pytest.warns(CheckpointWarning, match="not a step folder") as record:
        info = mgr.latest()
    assert info is not None
    assert info.step == 4
    message = str(record[0].message)
    assert "5 entries" in message
    for name in (*strays, "notes.txt"):
        assert f"checkpoints/{name}" in message
    # Warned once per manager; restore and the next save (which prunes) leave strays alone.
    restored = mgr.restore(restore_rng=False)
    assert restored is not None
    assert restored.step == 4
    mgr.save(5, _state(5), force=True)
    mgr.close()
    fs.invalidate_cache()
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(top, detail=False))
    assert names == sorted(["latest", "notes.txt", *strays, step_dirname(5)])

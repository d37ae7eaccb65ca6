"""Pure checkpoint policy: naming, manifests, retention, intervals, retries (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vastkit.checkpoint.naming import (
    FORMAT_VERSION,
    LAYOUT_DCP,
    Manifest,
    ManifestError,
    PayloadEntry,
    auto_interval_steps,
    is_due,
    parse_step_dirname,
    payload_name,
    select_retained,
    split_step_entries,
    step_dirname,
    young_daly_seconds,
)
from vastkit.retry import RetryPolicy

steps = st.integers(min_value=0, max_value=10**15)


@given(steps)
def test_step_names_round_trip(step: int) -> None:
    name = step_dirname(step)
    assert name.startswith("step-")
    assert parse_step_dirname(name) == step
    assert parse_step_dirname(f"bucket/run/checkpoints/{name}/") == step


stray_names = st.one_of(
    st.integers(min_value=0, max_value=10**11 - 1).map(lambda n: f"step-{n}"),  # unpadded
    st.text("abcxyz-_.0123456789", min_size=1, max_size=12).filter(lambda t: not t.startswith(".")),
    st.sampled_from(["tmp", "step-", "step-abc", "step-0004x", "notes.txt", "STEP-000000000001"]),
)


@given(st.sets(steps, max_size=8), st.lists(stray_names, max_size=8))
def test_strays_are_never_taken_for_steps_and_never_hide_one(
    real: set[int], strays: list[str]
) -> None:
    names = [f"b/run/checkpoints/{step_dirname(s)}" for s in real]
    names += [f"b/run/checkpoints/{n}" for n in strays]
    names += ["b/run/checkpoints/latest", "b/run/checkpoints/.latest.tmp-abc"]
    found, ignored = split_step_entries(reversed(names))
    assert set(found) == real
    for step in real:
        assert found[step] == f"b/run/checkpoints/{step_dirname(step)}"
    assert set(ignored) | set(found.values()) == set(names) - {
        "b/run/checkpoints/latest",
        "b/run/checkpoints/.latest.tmp-abc",
    }
    assert not set(ignored) & set(found.values())


@given(st.lists(st.sampled_from(["state.pt", "state-1a.pt", "state-2b.pt"]), max_size=3))
def test_a_resave_payload_never_reuses_a_name_of_the_commit_it_replaces(
    replacing: list[str],
) -> None:
    name = payload_name(replacing, "c3")
    assert name not in replacing
    assert name in ("state.pt", "state-c3.pt")
    with pytest.raises(ValueError, match="token"):
        payload_name(replacing, "../x")


@given(steps, steps)
def test_padded_names_sort_like_numbers_up_to_the_padding(a: int, b: int) -> None:
    if a < 10**12 and b < 10**12:
        assert (step_dirname(a) < step_dirname(b)) == (a < b)


@pytest.mark.parametrize("name", ["manifest.json", "step-", "step-1a", "latest", "step-00x", ""])
def test_non_step_names_are_not_steps(name: str) -> None:
    assert parse_step_dirname(name) is None


def test_negative_and_non_int_steps_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        step_dirname(-1)
    with pytest.raises(TypeError):
        step_dirname(True)
    with pytest.raises(TypeError):
        step_dirname(1.0)  # type: ignore[arg-type]


names = st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True).filter(
    lambda n: n != "manifest.json"
)
entries = st.builds(
    PayloadEntry,
    name=names,
    size=st.integers(min_value=0, max_value=2**50),
    digest=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    algorithm=st.sampled_from(["blake3", "sha256"]),
)
manifests = st.builds(
    Manifest,
    step=steps,
    time=st.floats(min_value=0, max_value=4e9),
    files=st.lists(entries, min_size=1, max_size=4, unique_by=lambda e: e.name).map(tuple),
    metrics=st.dictionaries(
        st.text(min_size=1, max_size=10), st.floats(allow_nan=False), max_size=4
    ),
)


@given(manifests)
def test_manifest_round_trips_through_json(manifest: Manifest) -> None:
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.total_size == sum(f.size for f in manifest.files)


@given(manifests, st.data())
def test_truncated_manifests_are_refused(manifest: Manifest, data: st.DataObject) -> None:
    raw = manifest.to_json()
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(ManifestError):
        Manifest.from_json(raw[:cut])


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ('{"format_version": 99, "step": 1, "time": 0, "files": []}', "newer"),
        ('{"format_version": 1, "step": -1, "time": 0, "files": []}', "step"),
        ('{"format_version": 1, "step": 1, "time": 0, "files": []}', "files"),
        ("[1, 2]", "object"),
        (
            '{"format_version": 1, "step": 1, "time": 0, "files": '
            '[{"name": "../x", "size": 1, "sha256": "' + "a" * 64 + '"}]}',
            "name",
        ),
        (
            '{"format_version": 1, "step": 1, "time": 0, "files": '
            '[{"name": "x", "size": 1, "sha256": "nothex"}]}',
            "bad sha256 for x",
        ),
        (
            '{"format_version": 3, "step": 1, "time": 0, "files": '
            '[{"name": "x", "size": 1, "blake3": "' + "A" * 64 + '"}]}',
            "bad blake3 for x",
        ),
        (
            '{"format_version": 3, "step": 1, "time": 0, "files": '
            '[{"name": "x", "size": 1, "md5": "' + "a" * 32 + '"}]}',
            "x must have exactly one digest",
        ),
        (
            '{"format_version": 3, "step": 1, "time": 0, "files": [{"name": "x", "size": 1, '
            '"blake3": "' + "a" * 64 + '", "sha256": "' + "a" * 64 + '"}]}',
            "x must have exactly one digest",
        ),
        (
            '{"format_version": 2, "step": 1, "time": 0, "files": '
            '[{"name": "x", "size": 1, "blake3": "' + "a" * 64 + '"}]}',
            "blake3 digests need format_version 3",
        ),
    ],
)
def test_bad_manifests_are_refused(doc: str, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        Manifest.from_json(doc)


def test_format_version_is_written() -> None:
    old_entry = PayloadEntry(name="a", size=1, digest="0" * 64, algorithm="sha256")
    m = Manifest(step=3, time=1.0, files=(old_entry,))
    assert b'"format_version": 1' in m.to_json()  # SHA-256 single-process checkpoints: format 1
    assert b'"sha256": "' in m.to_json()
    assert b'"layout"' not in m.to_json()
    entry = PayloadEntry(name="a", size=1, digest="0" * 64)  # what vastkit writes: BLAKE3
    assert entry.algorithm == "blake3"
    new = Manifest(step=3, time=1.0, files=(entry,))
    assert b'"format_version": %d' % FORMAT_VERSION in new.to_json()
    assert b'"blake3": "' in new.to_json()
    assert Manifest.from_json(new.to_json()) == new
    sharded = Manifest(step=3, time=1.0, files=(old_entry,), layout=LAYOUT_DCP)
    assert b'"format_version": 2' in sharded.to_json()
    assert Manifest.from_json(sharded.to_json()) == sharded
    older = sharded.to_json().replace(b'"format_version": 2', b'"format_version": 1')
    with pytest.raises(ManifestError, match="layout 'dcp' needs format_version 2"):
        Manifest.from_json(older)
    with pytest.raises(ManifestError, match="unknown layout"):
        Manifest.from_json(sharded.to_json().replace(b'"dcp"', b'"zip"'))


step_sets = st.sets(st.integers(min_value=0, max_value=10**6), max_size=30)


@given(
    step_sets,
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=0, max_value=5),
    st.sampled_from(["min", "max"]),
    st.data(),
)
def test_retention_keeps_newest_last_n_and_best_k(
    all_steps: set[int], keep_last: int, keep_best: int, mode: str, data: st.DataObject
) -> None:
    metrics = {
        s: data.draw(st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6)))
        for s in all_steps
    }
    kept = select_retained(
        all_steps,
        keep_last=keep_last,
        keep_best=keep_best,
        metrics=metrics,
        mode=mode,  # type: ignore[arg-type]
    )
    assert kept <= all_steps
    newest = sorted(all_steps, reverse=True)
    assert set(newest[:keep_last]) <= kept
    if all_steps:
        assert max(all_steps) in kept
    scored = [s for s in all_steps if metrics[s] is not None]
    best = sorted(scored, key=lambda s: (metrics[s] if mode == "min" else -metrics[s], -s))  # type: ignore[operator]
    assert set(best[:keep_best]) <= kept
    assert len(kept) <= keep_last + keep_best


@given(step_sets)
def test_keep_last_none_keeps_everything(all_steps: set[int]) -> None:
    assert select_retained(all_steps, keep_last=None) == all_steps


@given(
    st.floats(min_value=0, max_value=1e4),
    st.floats(min_value=1, max_value=1e7),
    st.floats(min_value=1e-3, max_value=100),
    st.floats(min_value=0, max_value=1e4),
)
def test_auto_interval_is_young_daly_bounded_by_upload(
    stall: float, mtbf: float, step_s: float, upload: float
) -> None:
    n = auto_interval_steps(
        step_seconds=step_s, stall_seconds=stall, upload_seconds=upload, mtbf_seconds=mtbf
    )
    assert n >= 1
    seconds = max(math.sqrt(2 * stall * mtbf), upload)
    # The interval covers at least the upload and Young's optimum, and no more than a step more.
    if n > 1:
        assert n * step_s >= seconds * (1 - 1e-9)
        assert (n - 1) * step_s < seconds * (1 + 1e-9)


def test_young_daly_known_value() -> None:
    # 10 s stall, 5 h MTBF: sqrt(2 * 10 * 18000) = 600 s.
    assert young_daly_seconds(10, 5 * 3600) == pytest.approx(600)
    with pytest.raises(ValueError):
        young_daly_seconds(1, 0)


@given(
    st.integers(min_value=0, max_value=10**6),
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    st.integers(min_value=1, max_value=1000),
)
def test_every_steps_due_on_multiples_or_after_a_gap(
    step: int, last: int | None, every: int
) -> None:
    due = is_due(
        step=step, now=0, last_step=last, last_time=0, every_steps=every, every_seconds=None
    )
    if last is not None and step <= last:
        assert not due
    elif step % every == 0 or (last is not None and step - last >= every):
        assert due
    else:
        assert not due


@given(st.floats(min_value=0, max_value=1e5), st.floats(min_value=1, max_value=1e4))
def test_every_seconds_due_after_the_period(elapsed: float, period: float) -> None:
    due = is_due(
        step=5, now=elapsed, last_step=4, last_time=0.0, every_steps=None, every_seconds=period
    )
    assert due == (elapsed >= period)


@given(
    st.integers(min_value=1, max_value=20),
    st.floats(min_value=0, max_value=10),
    st.floats(min_value=0, max_value=100),
    st.floats(min_value=1, max_value=4),
)
def test_retry_delays_grow_and_are_capped(
    attempts: int, initial: float, cap: float, mult: float
) -> None:
    policy = RetryPolicy(attempts=attempts, initial_delay=initial, max_delay=cap, multiplier=mult)
    delays = [policy.delay(i) for i in range(1, attempts)]
    assert len(delays) == attempts - 1
    assert all(0 <= d <= cap for d in delays)
    assert list(delays) == sorted(delays)


def test_retry_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)

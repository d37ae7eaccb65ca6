"""Checkpoint naming, manifests, retention and interval policy (pure: no I/O).

Everything here takes plain data and returns decisions, so it can be tested with hypothesis and
reused by any tool that reads a checkpoint folder:

* naming: payload objects live under ``checkpoints/step-<12-digit step>/``; :func:`step_dirname`
  and :func:`parse_step_dirname` convert both ways, and ordering is always numeric (a step with more
  than 12 digits still sorts after a shorter one); :func:`split_step_entries` sorts a listing of
  ``checkpoints/`` into step folders and strays (``step-4``, ``tmp``, ...), so a stray never hides
  a step folder;
* payload names: :func:`payload_name` picks the name of a new payload object, aside from the
  objects of the commit it replaces;
* :class:`Manifest`: the commit object (``manifest.json``) with the format version, step, time,
  user metrics and the size and BLAKE3 digest of every payload object;
* retention: :func:`select_retained` keeps the newest ``keep_last`` and the ``keep_best`` by a
  metric;
* intervals: :func:`young_daly_seconds` and :func:`auto_interval_steps` (Young/Daly, bounded
  below by the upload time), :func:`is_due` (every N steps and/or every T seconds).

Retries of store errors follow :class:`vastkit.retry.RetryPolicy`, like every retry in vastkit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeGuard

import attrs

from vastkit._digest import ALGORITHM, ALGORITHMS

__all__ = [
    "CHECKPOINTS_DIR",
    "FORMAT_VERSION",
    "LATEST_HINT",
    "LAYOUT_DCP",
    "LAYOUT_SINGLE",
    "MANIFEST_NAME",
    "PAYLOAD_NAME",
    "STEP_WIDTH",
    "Manifest",
    "ManifestError",
    "PayloadEntry",
    "auto_interval_steps",
    "is_due",
    "parse_step_dirname",
    "payload_name",
    "select_retained",
    "split_step_entries",
    "step_dirname",
    "young_daly_seconds",
]

FORMAT_VERSION = 3
"""The newest manifest format this version reads. Format 3 names BLAKE3 digests (what vastkit
writes; formats 1 and 2 named SHA-256 digests, still read); format 2 added sharded
checkpoints (``layout: "dcp"``). A manifest is written with the lowest format its layout and
digests need, so a reader that predates them refuses it instead of misreading it."""

LAYOUT_SINGLE = "single"
"""A manifest's layout: one ``torch.save`` payload object (format 1)."""

LAYOUT_DCP = "dcp"
"""A manifest's layout: the shards and metadata of a ``torch.distributed.checkpoint`` save by
every rank of a group (format 2)."""

_LAYOUT_VERSIONS = {LAYOUT_SINGLE: 1, LAYOUT_DCP: 2}
_DIGEST_VERSIONS = {"sha256": 1, "blake3": 3}

CHECKPOINTS_DIR = "checkpoints"
"""The folder under the manager's URL that holds one sub-folder per step."""

MANIFEST_NAME = "manifest.json"
"""The commit object: a step exists once this object exists in its folder."""

PAYLOAD_NAME = "state.pt"
"""The payload object of a step's first commit (a re-save writes ``state-<token>.pt``)."""

LATEST_HINT = "latest"
"""A small object naming the newest committed step: a hint for tools, never trusted alone."""

STEP_WIDTH = 12
"""Digits of zero-padding in step folder names (wider steps are still written and ordered)."""

_STEP_RE = re.compile(r"^step-(\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest could not be parsed or does not have the documented shape."""


def step_dirname(step: int) -> str:
    """Return the folder name of a step: ``step-000000000042``.

    Raises:
        ValueError: ``step`` is negative or not an int.
    """
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"a step must be an int, not {type(step).__name__}")
    if step < 0:
        raise ValueError(f"a step must be >= 0, not {step}")
    return f"step-{step:0{STEP_WIDTH}d}"


def parse_step_dirname(name: str) -> int | None:
    """Return the step a folder name stands for, or ``None`` if it is not a step folder.

    Accepts a bare name or a path (the last component is used) and any number of digits.
    """
    base = name.rstrip("/").rsplit("/", 1)[-1]
    match = _STEP_RE.match(base)
    return int(match.group(1)) if match else None


def split_step_entries(names: Iterable[str]) -> tuple[dict[int, str], tuple[str, ...]]:
    """Sort a listing of ``checkpoints/`` into step folders and strays.

    A step folder is named exactly as :func:`step_dirname` names its step. Every other entry is a
    stray (``step-4``, ``step-abc``, ``tmp``, a file) and is never taken for a step, so a stray
    ``step-4`` cannot hide ``step-000000000004``. The :data:`LATEST_HINT` object and hidden names
    (``.``-prefixed: the temporary files of whole local writes) are neither.

    Args:
        names: Bare names or paths (the last component is used).

    Returns:
        ``(steps, strays)``: step -> the entry as given, and the stray entries as given, sorted.
    """
    steps: dict[int, str] = {}
    strays: list[str] = []
    for name in names:
        base = name.rstrip("/").rsplit("/", 1)[-1]
        if base == LATEST_HINT or base.startswith("."):
            continue
        step = parse_step_dirname(base)
        if step is not None and base == step_dirname(step):
            steps[step] = name
        else:
            strays.append(name)
    return steps, tuple(sorted(strays))


def payload_name(replacing: Iterable[str], token: str) -> str:
    """The name of a new payload object in a step folder whose commit holds ``replacing``.

    The first commit of a step writes :data:`PAYLOAD_NAME`; a re-save writes aside, to
    ``state-<token>.pt``, so the commit it replaces stays whole until the new manifest is in.

    Raises:
        ValueError: ``token`` is not a few letters and digits.
    """
    if not re.fullmatch(r"[0-9a-z]{1,32}", token):
        raise ValueError(f"a payload token must be 1 to 32 lowercase letters or digits: {token!r}")
    if PAYLOAD_NAME not in set(replacing):
        return PAYLOAD_NAME
    return f"state-{token}.pt"


@attrs.frozen(kw_only=True)
class PayloadEntry:
    """One payload object of a checkpoint, as recorded in its manifest."""

    name: str
    """The object's name inside the step folder (``state.pt``)."""
    size: int
    """Its size in bytes."""
    digest: str
    """The lowercase hex digest of its bytes (64 digits)."""
    algorithm: str = attrs.field(default=ALGORITHM, validator=attrs.validators.in_(ALGORITHMS))
    """The digest's algorithm: ``blake3`` (what vastkit writes) or ``sha256`` (formats 1-2)."""


@attrs.frozen(kw_only=True)
class Manifest:
    """The commit object of one checkpoint (``manifest.json``)."""

    step: int
    """The training step the checkpoint holds."""
    time: float
    """When it was committed, in Unix seconds (informative only: never used for ordering)."""
    files: tuple[PayloadEntry, ...]
    """Every payload object with its size and checksum."""
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    """User metrics passed to ``save(metrics=...)`` (used by keep-best retention)."""
    layout: str = LAYOUT_SINGLE
    """How the payload objects make a state: :data:`LAYOUT_SINGLE` or :data:`LAYOUT_DCP`."""
    format_version: int = attrs.field()
    """The manifest format version (by default the one ``layout`` needs)."""

    @format_version.default
    def _format_for_layout(self) -> int:
        return max(
            _LAYOUT_VERSIONS.get(self.layout, FORMAT_VERSION),
            *(_DIGEST_VERSIONS.get(f.algorithm, FORMAT_VERSION) for f in self.files),
        )

    @property
    def total_size(self) -> int:
        """The sum of all payload sizes in bytes."""
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        """Serialise to UTF-8 JSON bytes (stable key order)."""
        doc: dict[str, Any] = {
            "format_version": self.format_version,
            "step": self.step,
            "time": self.time,
            "metrics": {str(k): float(v) for k, v in self.metrics.items()},
            "files": [{"name": f.name, "size": f.size, f.algorithm: f.digest} for f in self.files],
        }
        if self.layout != LAYOUT_SINGLE:
            doc["layout"] = self.layout
        return json.dumps(doc, sort_keys=True, indent=1, allow_nan=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse manifest bytes, checking every field.

        Raises:
            ManifestError: the bytes are not a manifest of a format this version can read.
        """
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ManifestError("the manifest is not a JSON object")
        version = doc.get("format_version")
        if not _is_int(version) or version < 1:
            raise ManifestError(f"bad format_version {version!r}")
        if version > FORMAT_VERSION:
            raise ManifestError(
                f"format_version {version} is newer than this vastkit reads ({FORMAT_VERSION})"
            )
        step = doc.get("step")
        if not _is_int(step) or step < 0:
            raise ManifestError(f"bad step {step!r}")
        when = doc.get("time")
        if not isinstance(when, int | float) or isinstance(when, bool):
            raise ManifestError(f"bad time {when!r}")
        metrics = doc.get("metrics", {})
        if not isinstance(metrics, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()
        ):
            raise ManifestError("metrics must map names to numbers")
        layout = doc.get("layout", LAYOUT_SINGLE)
        if layout not in _LAYOUT_VERSIONS:
            raise ManifestError(f"unknown layout {layout!r}")
        if _LAYOUT_VERSIONS[layout] > version:
            needed = _LAYOUT_VERSIONS[layout]
            raise ManifestError(f"layout {layout!r} needs format_version {needed}")
        files = doc.get("files")
        if not isinstance(files, list) or not files:
            raise ManifestError("files must be a non-empty list")
        entries = []
        for item in files:
            if not isinstance(item, dict):
                raise ManifestError("each file must be an object")
            name, size = item.get("name"), item.get("size")
            if not isinstance(name, str) or not _NAME_RE.match(name) or name == MANIFEST_NAME:
                raise ManifestError(f"bad file name {name!r}")
            if not _is_int(size) or size < 0:
                raise ManifestError(f"bad size {size!r} for {name}")
            named = [a for a in ALGORITHMS if a in item]
            if len(named) != 1:
                raise ManifestError(
                    f"{name} must have exactly one digest ({' or '.join(ALGORITHMS)})"
                )
            algorithm = named[0]
            digest = item[algorithm]
            if not isinstance(digest, str) or not _HEX64_RE.match(digest):
                raise ManifestError(f"bad {algorithm} for {name}")
            if _DIGEST_VERSIONS[algorithm] > version:
                needed = _DIGEST_VERSIONS[algorithm]
                raise ManifestError(f"{algorithm} digests need format_version {needed}")
            entries.append(PayloadEntry(name=name, size=size, digest=digest, algorithm=algorithm))
        if len({e.name for e in entries}) != len(entries):
            raise ManifestError("duplicate file names")
        return cls(
            step=step,
            time=float(when),
            files=tuple(entries),
            metrics={str(k): float(v) for k, v in metrics.items()},
            layout=layout,
            format_version=version,
        )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def select_retained(
    steps: Iterable[int],
    *,
    keep_last: int | None,
    keep_best: int | None = None,
    metrics: Mapping[int, float | None] | None = None,
    mode: Literal["min", "max"] = "min",
) -> frozenset[int]:
    """Return the committed steps to keep; the rest may be pruned.

    The newest step is always kept. ``keep_last=None`` keeps every step. ``keep_best`` keeps the
    best ``keep_best`` steps by ``metrics[step]`` (lowest for ``mode="min"``, highest for
    ``"max"``; ties go to the newer step); steps without the metric (or NaN) never count as best.

    Raises:
        ValueError: a count is negative.
    """
    ordered = sorted(set(steps), reverse=True)
    if keep_last is not None and keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, not {keep_last}")
    if keep_best is not None and keep_best < 0:
        raise ValueError(f"keep_best must be >= 0, not {keep_best}")
    if not ordered:
        return frozenset()
    if keep_last is None:
        return frozenset(ordered)
    keep = set(ordered[: max(keep_last, 1)])
    if keep_best:
        scored = [
            (value, step)
            for step in ordered
            if (value := (metrics or {}).get(step)) is not None and not math.isnan(value)
        ]
        sign = 1.0 if mode == "min" else -1.0
        scored.sort(key=lambda vs: (sign * vs[0], -vs[1]))
        keep.update(step for _, step in scored[:keep_best])
    return frozenset(keep)


def young_daly_seconds(stall_seconds: float, mtbf_seconds: float) -> float:
    """Young's optimal checkpoint interval, ``sqrt(2 x stall x MTBF)``, in seconds.

    Raises:
        ValueError: an argument is negative, or the MTBF is not positive.
    """
    if stall_seconds < 0:
        raise ValueError(f"stall_seconds must be >= 0, not {stall_seconds}")
    if not mtbf_seconds > 0:
        raise ValueError(f"mtbf_seconds must be > 0, not {mtbf_seconds}")
    return math.sqrt(2.0 * stall_seconds * mtbf_seconds)


def auto_interval_steps(
    *,
    step_seconds: float,
    stall_seconds: float,
    upload_seconds: float,
    mtbf_seconds: float,
    max_steps: int = 10**9,
) -> int:
    """The checkpoint interval in steps: Young/Daly, bounded below by the upload time.

    With an async save the stall is only the staging copy, but a new save cannot start before the
    previous upload ends, so the interval in seconds is
    ``max(sqrt(2 x stall x MTBF), upload_seconds)``, converted to steps by the measured time per
    step and clamped to ``[1, max_steps]``.

    Raises:
        ValueError: a duration is negative or the MTBF is not positive.
    """
    if step_seconds < 0 or upload_seconds < 0:
        raise ValueError("durations must be >= 0")
    seconds = max(young_daly_seconds(stall_seconds, mtbf_seconds), upload_seconds)
    if step_seconds <= 0:
        return max_steps if seconds > 0 else 1
    steps = math.ceil(seconds / step_seconds)
    return max(1, min(max_steps, steps))


def is_due(
    *,
    step: int,
    now: float,
    last_step: int | None,
    last_time: float,
    every_steps: int | None,
    every_seconds: float | None,
) -> bool:
    """Whether a save at ``step`` is due.

    With ``every_steps`` a save is due when ``step`` is a multiple of it, or when at least that many
    steps passed since ``last_step`` (so skipped steps never skip a save). With ``every_seconds`` a
    save is due when that long passed since ``last_time``. Either one suffices. With neither, every
    call is due. A step at or below ``last_step`` is never due.
    """
    if last_step is not None and step <= last_step:
        return False
    if every_steps is None and every_seconds is None:
        return True
    if every_steps is not None and (
        step % every_steps == 0 or (last_step is not None and step - last_step >= every_steps)
    ):
        return True
    return every_seconds is not None and now - last_time >= every_seconds

"""A :class:`~vastkit.jobs.Job` as the queue stores it: the document converter's JSON form."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from vastkit._documents import converter
from vastkit.jobs import Job
from vastkit.profiles import GpuProfile

__all__ = ["job_from_dict", "job_to_dict"]


def _profile(value: Any, _: Any) -> str | GpuProfile:
    """``Job.profile`` is a profile name or a whole profile."""
    if isinstance(value, str):
        return value
    return converter.structure(value, GpuProfile)


_structure_job = make_dict_structure_fn(Job, converter, profile=override(struct_hook=_profile))


def job_to_dict(job: Job) -> dict[str, Any]:
    """A JSON-compatible form of ``job`` (what the queue stores in the ledger).

    :func:`job_from_dict` rebuilds an equal :class:`~vastkit.jobs.Job`. A relative ``workdir``
    is stored as an absolute path, since the queue may run from another directory.

    Note that ``storage_options`` are stored as given: keep credentials in the environment or
    the fsspec configuration rather than in the job when the ledger is shared.

    Raises:
        TypeError: ``job`` is not a :class:`~vastkit.jobs.Job`.
    """
    if not isinstance(job, Job):
        raise TypeError(f"expected a vastkit.Job, not {type(job).__name__}")
    if job.workdir is not None:
        job = attrs.evolve(job, workdir=os.path.abspath(job.workdir))
    encoded: dict[str, Any] = converter.unstructure(job)
    return encoded


def job_from_dict(data: Mapping[str, Any]) -> Job:
    """Rebuild a :class:`~vastkit.jobs.Job` from :func:`job_to_dict`'s output.

    Raises:
        ValueError: ``data`` is not a serialised job; the message names the bad field
            (``$.timeouts.poll_interval``).
    """
    try:
        return _structure_job(_untag(data), Job)
    except cattrs.BaseValidationError as exc:
        detail = "; ".join(cattrs.transform_error(exc, path="$"))
        raise ValueError(f"not a serialised vastkit.Job: {detail}") from exc
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a serialised vastkit.Job: {exc}") from exc


def _untag(value: Any) -> Any:
    """Jobs queued by vastkit before 0.2 wrapped tuples as ``{"__tuple__": [...]}`` (and named
    classes in ``__class__`` keys, which the converter ignores): unwrap them."""
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if isinstance(value, Mapping):
        if set(value) == {"__tuple__"}:
            return [_untag(v) for v in value["__tuple__"]]
        return {k: _untag(v) for k, v in value.items()}
    return value

"""The onstart script that turns a fresh Vast container into a vastkit worker.

Vast runs the instance's ``onstart`` text when the container starts. Ours is short: it exports
the run's variables, installs vastkit only when the image does not already have the right
version (the ready image from ``docker/Dockerfile`` has it; otherwise the wheel the orchestrator
shipped, see :mod:`vastkit._shipping`), and execs
``python -m vastkit.worker``, so a SIGTERM sent to the onstart process reaches the worker.

Vast refuses an ``onstart`` (with ``args``) longer than 4,096 characters, and its docs warn at
4,048; :func:`build_onstart` keeps under :data:`ONSTART_LIMIT` or raises.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping
from typing import Any

from vastkit._version import __version__
from vastkit.errors import JobError

__all__ = ["ONSTART_LIMIT", "backstop_onstart", "build_onstart"]

ONSTART_LIMIT = 4048
"""The most characters an onstart script may have (Vast's documented limit, the stricter one)."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def build_onstart(
    *,
    run_url: str,
    attempt: int,
    env: Mapping[str, str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    version: str = __version__,
    requirement: str | None = None,
    python: str | None = None,
    workdir: str | None = None,
    limit: int = ONSTART_LIMIT,
) -> str:
    """Build the onstart script for one attempt.

    Args:
        run_url: The run directory URL.
        attempt: The attempt number.
        env: Variables to export before the worker starts (storage credentials, for instance).
        storage_options: fsspec options, passed as ``VASTKIT_STORAGE_OPTIONS`` JSON.
        version: The vastkit version the worker must run; an image with another installs it.
        requirement: What pip installs when the version is missing: ``run_job`` passes the
            signed URL of the wheel it shipped (:mod:`vastkit._shipping`) or the job's
            ``worker_requirement``; the default, ``vastkit[s3]==<version>``, needs the
            version on the host's package index.
        python: The interpreter (default: ``python3``, else ``python``, from ``PATH``).
        workdir: Where the worker runs the command (``--workdir``).
        limit: The most characters allowed.

    Returns:
        The script text.

    Raises:
        ValueError: An environment variable name is not a valid shell name, or ``attempt`` is
            negative.
        JobError: The script would be longer than ``limit`` (the message gives the length, never
            the values, which may be credentials).
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    if not run_url:
        raise ValueError("run_url is required")
    exports: dict[str, str] = {"VASTKIT_RUN_URL": run_url, "VASTKIT_ATTEMPT": str(attempt)}
    if storage_options:
        exports["VASTKIT_STORAGE_OPTIONS"] = json.dumps(
            dict(storage_options), separators=(",", ":")
        )
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        exports[name] = str(value)
    requirement = requirement or f"vastkit[s3]=={version}"
    # Exit 2 means "missing, or another version": install. Any other failure (a vastkit of
    # the right version that does not import) is reported, never "fixed" by a reinstall over
    # the image's (or, on the emulator, the orchestrator's own) installation.
    check = (
        'import sys,importlib.util as u;u.find_spec("vastkit") or sys.exit(2);'
        "import vastkit as v;v.__version__=="
        + json.dumps(version)
        + " or sys.exit(2);import vastkit.worker"
    )
    lines = ["#!/bin/bash", "# vastkit worker bootstrap"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
    if python:
        lines.append(f"PY={shlex.quote(python)}")
    else:
        lines.append("PY=$(command -v python3 || command -v python)")
    failed = shlex.quote(
        f"vastkit bootstrap: could not install vastkit {version}; use an image with it "
        "preinstalled (docker/Dockerfile) or set Job.worker_requirement"
    )
    broken = shlex.quote(
        f"vastkit bootstrap: vastkit {version} is installed but does not import; not replacing it"
    )
    lines.append(f'"$PY" -c {shlex.quote(check)} 2>/dev/null; rc=$?')
    lines.append(
        f'if [ $rc -eq 2 ]; then PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install -q '
        f"--no-cache-dir {shlex.quote(requirement)} || {{ echo {failed} >&2; exit 1; }}; "
        f"elif [ $rc -ne 0 ]; then echo {broken} >&2; fi"
    )
    worker = 'exec "$PY" -m vastkit.worker'
    if workdir:
        worker += f" --workdir {shlex.quote(workdir)}"
    lines.append(worker)
    script = "\n".join(lines) + "\n"
    if len(script) > limit:
        raise JobError(
            f"the onstart script would be {len(script)} characters; Vast accepts at most "
            f"{limit}. Pass long values (credentials, storage options) through the "
            "instance's environment instead"
        )
    return script


def backstop_onstart(
    *,
    api_url: str,
    until: float,
    keepalive_s: float | None = None,
    keepalive_source: str | None = None,
    tick: float = 5.0,
) -> str:
    """The onstart lines that start a rental's host-side backstop in the background.

    The backstop destroys its own instance with the per-instance key (``DELETE
    {api_url}/api/v0/instances/$CONTAINER_ID/`` with ``Bearer $CONTAINER_API_KEY``, the key
    Vast gives every container; never the account key) when the first of these happens:

    - the time passes ``until`` (Unix seconds: the profile's max duration from the create);
    - with ``keepalive_s``: what ``keepalive_source`` holds has not changed for ``keepalive_s``
      seconds of the container's own clock (the owner renews it while it lives; a change is a
      sign of life, so the two machines' clocks need not agree). ``keepalive_source`` is a local
      path (read with ``cat``) or an HTTPS URL (a presigned GET, read with ``curl``, else Python).
      A source that cannot be read counts as no change.

    It needs only ``bash``, ``date``, ``sleep`` and ``curl`` or ``python3``, so it runs on any
    image, with or without vastkit. It runs in the container's process group: a stop or a
    destroy ends it with the container, and a restart starts it again with the same ``until``.

    Args:
        api_url: Vast's API base URL.
        until: When the instance must be gone, in Unix seconds.
        keepalive_s: Seconds without a renewal after which the instance is destroyed (``None``:
            no keepalive).
        keepalive_source: Where the renewals are read; required with ``keepalive_s``.
        tick: Seconds between looks.

    Returns:
        Lines to put before the rental's own onstart.

    Raises:
        ValueError: ``keepalive_s`` without ``keepalive_source``, or a value not greater than 0.
    """
    if keepalive_s is not None and not keepalive_source:
        raise ValueError("keepalive_s needs a keepalive_source the backstop can read")
    for name, value in (("keepalive_s", keepalive_s), ("tick", tick)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be greater than 0, not {value!r}")
    source = keepalive_source or ""
    if source.startswith(("http://", "https://")):
        read = (
            'curl -fsS --max-time 20 "$S" 2>/dev/null || "$P" -c '
            + shlex.quote(
                "import sys,urllib.request as u;"
                "sys.stdout.write(u.urlopen(sys.argv[1],timeout=20).read().decode())"
            )
            + ' "$S" 2>/dev/null'
        )
    else:
        read = 'cat "$S" 2>/dev/null'
    delete = (
        'curl -fsS --max-time 30 -X DELETE -H "Authorization: Bearer $CONTAINER_API_KEY" '
        '"$A/api/v0/instances/$CONTAINER_ID/" >/dev/null 2>&1 || "$P" -c '
        + shlex.quote(
            "import os,sys,urllib.request as u;"
            "r=u.Request(sys.argv[1],method='DELETE',"
            "headers={'Authorization':'Bearer '+os.environ['CONTAINER_API_KEY']});"
            "u.urlopen(r,timeout=30)"
        )
        + ' "$A/api/v0/instances/$CONTAINER_ID/"'
    )
    body = "; ".join(
        [
            f"A={shlex.quote(api_url.rstrip('/'))}",
            f"E={int(until)}",
            f"K={math.ceil(keepalive_s) if keepalive_s is not None else 0}",
            f"S={shlex.quote(source)}",
            "P=$(command -v python3 || command -v python)",
            'L=""; W=$(date +%s)',
            "while :; do N=$(date +%s)",
            '[ "$N" -ge "$E" ] && { echo "vastkit backstop: max duration reached"; break; }',
            f'if [ "$K" -gt 0 ]; then C=$({read})',
            'if [ -n "$C" ] && [ "$C" != "$L" ]; then L=$C; W=$N; fi',
            '[ $((N-W)) -ge "$K" ] && { echo "vastkit backstop: no keepalive for ${K} s"; '
            "break; }; fi",
            f"sleep {tick:g}; done",
            "for i in 1 2 3 4 5; do " + delete + " && break; sleep $((i*2)); done",
        ]
    )
    return (
        "# vastkit backstop: destroy this instance at its deadline, with its own key\n"
        f'( {body} ) </dev/null >>"${{HOME:-/tmp}}/vastkit-backstop.log" 2>&1 &\n'
    )

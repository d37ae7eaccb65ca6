"""Run ids and instance labels: ``vastkit/<run_id>/<attempt>``.

Every instance vastkit rents carries such a label; it is how a restarted orchestrator, a second
driver or :func:`vastkit.reconcile` finds what belongs to a run. Pure functions, no I/O.
"""

from __future__ import annotations

import re
import secrets
import time

from vastkit.clock import Clock

__all__ = ["LABEL_PREFIX", "make_label", "new_run_id", "parse_label"]

LABEL_PREFIX = "vastkit/"
"""Every instance vastkit rents carries a label that starts with this."""

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LABEL = re.compile(r"vastkit/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/([1-9][0-9]{0,8})")


def new_run_id(clock: Clock | None = None) -> str:
    """A fresh, sortable run id: UTC time of creation plus 8 random hex digits.

    Args:
        clock: The clock that gives the time (default: the real time).

    Returns:
        A string such as ``"20260101-000000-3fa94c1b"``.
    """
    now = clock.now() if clock is not None else time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{secrets.token_hex(4)}"


def make_label(run_id: str, attempt: int) -> str:
    """The label of attempt ``attempt`` of run ``run_id``: ``vastkit/<run_id>/<attempt>``.

    Raises:
        ValueError: ``run_id`` has characters other than letters, digits, ``.``, ``_`` and ``-``
            (or is empty or too long), or ``attempt`` is not a positive integer.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be a positive integer (got {attempt!r})")
    return f"{LABEL_PREFIX}{run_id}/{attempt}"


def parse_label(label: str | None) -> tuple[str, int] | None:
    """Read ``(run_id, attempt)`` back from a vastkit label.

    Returns:
        The pair, or None when ``label`` is not a vastkit label (surrounding whitespace is
        ignored, since Vast may pad strings).
    """
    if not label:
        return None
    match = _LABEL.fullmatch(label.strip())
    if match is None:
        return None
    return match.group(1), int(match.group(2))

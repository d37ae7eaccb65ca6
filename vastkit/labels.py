"""Run ids and instance labels: ``vastkit/<ledger_id>/<run_id>/<attempt>``.

Every instance vastkit rents carries such a label; it is how a restarted orchestrator, a second
driver or :func:`vastkit.reconcile` finds what belongs to a run. The ledger's identity (8 hex
digits, :attr:`vastkit.ledger.Ledger.ledger_id`) scopes it: two ledgers on one Vast account (a
colleague's laptop, CI) each reconcile only their own instances. Labels without a ledger
(``vastkit/<run_id>/<attempt>``, written before ledgers had an identity) are still read. Pure
functions, no I/O.
"""

from __future__ import annotations

import re
import secrets
import time

from vastkit.clock import Clock

__all__ = ["LABEL_PREFIX", "label_ledger", "make_label", "new_run_id", "parse_label"]

LABEL_PREFIX = "vastkit/"
"""Every instance vastkit rents carries a label that starts with this."""

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LEDGER_ID = re.compile(r"[0-9a-f]{8}")
_LABEL = re.compile(
    r"vastkit/(?:([0-9a-f]{8})/)?([A-Za-z0-9][A-Za-z0-9._-]{0,127})/([1-9][0-9]{0,8})"
)


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


def make_label(run_id: str, attempt: int, *, ledger_id: str | None = None) -> str:
    """The label of attempt ``attempt`` of run ``run_id`` in the ledger ``ledger_id``.

    ``vastkit/<ledger_id>/<run_id>/<attempt>`` (at most 151 characters, well within Vast's
    256), or ``vastkit/<run_id>/<attempt>`` without a ledger (only to validate a run id).

    Raises:
        ValueError: ``run_id`` has characters other than letters, digits, ``.``, ``_`` and ``-``
            (or is empty or too long), ``attempt`` is not a positive integer, or ``ledger_id`` is
            not 8 lowercase hex digits.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be a positive integer (got {attempt!r})")
    if ledger_id is None:
        return f"{LABEL_PREFIX}{run_id}/{attempt}"
    if not isinstance(ledger_id, str) or not _LEDGER_ID.fullmatch(ledger_id):
        raise ValueError(f"ledger id {ledger_id!r} must be 8 lowercase hex digits")
    return f"{LABEL_PREFIX}{ledger_id}/{run_id}/{attempt}"


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
    return match.group(2), int(match.group(3))


def label_ledger(label: str | None) -> str | None:
    """The identity of the ledger a vastkit label belongs to.

    Returns:
        The 8-hex ledger id, or None for a label without one (or not a vastkit label).
    """
    if not label:
        return None
    match = _LABEL.fullmatch(label.strip())
    return match.group(1) if match is not None else None

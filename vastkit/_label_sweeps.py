"""Lists by label, shared by the creates of one account in this process.

A create that may have rented (answered 429, 5xx or garbled, or not answered at all) is sent
again only after a list of the account's instances, sent after its answer came, shows nothing
with its label (:meth:`vastkit._provision.Provisioner.create`). The reference (section 9.2) says
Vast enforces its minimum intervals per key and answers 429, not that a create answered 429
never reached the handler, so a 429 is checked too. Many creates answered 429 together (jobs
starting at once in one process, each with its own client) would make one list each; here
they share them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

__all__ = ["LabelSweeps", "Lister", "label_sweeps_for"]

Lister = Callable[[frozenset[str]], Iterable[tuple[int, str | None]]]
"""Lists the instances carrying one of the labels given: ``(id, label)`` pairs (others, and
labels that differ but for surrounding blanks, are sorted out here)."""


class _Sweep:
    """One list of the account's instances by label, and the labels it answers for."""

    def __init__(self) -> None:
        self.labels: set[str] = set()
        self.done = False
        self.found: dict[str, list[int]] | None = None
        """Ids per label, oldest first; None when the list failed."""


class LabelSweeps:
    """Lists by label, shared by the creates of one account in this process.

    A create that may have rented (answered 429, 5xx or garbled, or not answered) may be sent
    again only after a list of the account's instances sent *after* its answer came shows
    nothing with its label. Each such create asks here: its label joins the next sweep, the one
    not yet sent; the first caller to find no sweep in flight sends it for every label gathered
    so far (``label in [...]``) and the others wait for its answer. A sweep already in flight
    when a caller arrives was sent before that caller's answer came, so it never answers for
    it. So creates answered 429 together cost one or two lists, not one each.

    When the sender's list fails (it raised), every caller it was to answer asks again, so each
    becomes a sender in turn, with its own retries and deadline.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = _Sweep()
        self._sending: _Sweep | None = None
        self.sent = 0
        """Sweeps sent (lists made, each with its own retries)."""

    def waiting(self) -> int:
        """How many labels wait for the next sweep (the one not yet sent)."""
        with self._cond:
            return len(self._next.labels)

    def find(self, label: str, lister: Lister) -> list[int]:
        """The ids carrying ``label``, oldest first, in a list sent after this call began.

        Args:
            label: The label of the create that may have rented.
            lister: Lists the instances of the labels it is given, retrying as it sees fit;
                called in this thread when this caller sends the sweep.

        Raises:
            Exception: What ``lister`` raised, when this caller sent the sweep.
        """
        while True:
            sending = False
            found: dict[str, list[int]] | None = None  # None unless the list came back whole
            try:
                with self._cond:
                    sweep = self._next
                    sweep.labels.add(label)
                    while not sweep.done and not (self._sending is None and self._next is sweep):
                        self._cond.wait()
                    if not sweep.done:
                        sending = True
                        self._sending, self._next = sweep, _Sweep()
                        self.sent += 1
                if sending:
                    found = _ids_by_label(lister(frozenset(sweep.labels)), sweep.labels)
                    return list(found.get(label, ()))
            finally:
                if sending:  # also on an interrupt: never leave the others waiting on it
                    with self._cond:
                        sweep.found, sweep.done, self._sending = found, True, None
                        if self._next is sweep:
                            self._next = _Sweep()
                        self._cond.notify_all()
            if sweep.found is not None:
                return list(sweep.found.get(label, ()))
            # the sender's list failed: ask again (and maybe send the next sweep)


def _ids_by_label(
    listed: Iterable[tuple[int, str | None]], labels: set[str]
) -> dict[str, list[int]]:
    """The ids listed per label of ``labels`` (surrounding blanks ignored), oldest first."""
    found: dict[str, list[int]] = {}
    for instance_id, name in listed:
        name = (name or "").strip()
        if name in labels:
            found.setdefault(name, []).append(instance_id)
    return {name: sorted(ids) for name, ids in found.items()}


_SWEEPS_LOCK = threading.Lock()
_SWEEPS: dict[str, LabelSweeps] = {}


def label_sweeps_for(account: str) -> LabelSweeps:
    """The :class:`LabelSweeps` every :class:`~vastkit._provision.Provisioner` of this process
    on ``account`` (:attr:`vastkit.api.Client.account_id`: the server and a digest of the key)
    shares."""
    with _SWEEPS_LOCK:
        sweeps = _SWEEPS.get(account)
        if sweeps is None:
            sweeps = _SWEEPS[account] = LabelSweeps()
        return sweeps


def _forget_sweeps() -> None:
    """A forked child shares no sweep (nor a lock) with its parent."""
    global _SWEEPS_LOCK
    _SWEEPS_LOCK = threading.Lock()
    _SWEEPS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sweeps)

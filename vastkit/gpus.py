"""Vast's GPU names: the catalog a profile's ``gpu_name`` is checked against.

Vast names a GPU model with spaces (``"RTX 4090"``, ``"H100 SXM"``, ``"A100 SXM4"``); the
official CLI lets you write underscores for the spaces (``RTX_4090``), and so does vastkit. A
name is looked up in three steps:

1. Exactly, ignoring case and underscores-for-spaces: ``H100_SXM`` is ``H100 SXM``.
2. As a family: a name with a digit that is not a model itself but begins the names of several
   (``A100`` -> ``A100 PCIE``, ``A100 SXM4``, ``A100 SXM``, ``A100X``; ``H100`` -> ``H100 PCIE``,
   ``H100 SXM``, ``H100 NVL``). The profile then accepts every model of the family.
3. Otherwise the name is unknown, and the error suggests the nearest known name.

The catalog ships as ``vastkit/data/gpu_names.txt`` (from the official CLI's table, which Vast
builds from its ``gpulist.json``). Vast adds models; :func:`gpu_names_report` reads the
``gpu_name`` of every offer of a search and says which are not in the catalog
(``vastkit offers --gpu-names`` prints it), and :func:`register_gpu_names` adds names for this
process.

Pure policy (layer 2): reads one packaged data file, nothing else.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable
from importlib import resources

import attrs

__all__ = [
    "GpuCatalog",
    "GpuMatch",
    "GpuNamesReport",
    "UnknownGpuError",
    "gpu_catalog",
    "gpu_names_report",
    "normalize_gpu_name",
    "register_gpu_names",
]

_DIGIT = re.compile(r"\d")


class UnknownGpuError(ValueError):
    """A GPU name that is neither a Vast model nor a family of models.

    Attributes:
        name: The name as written.
        suggestion: The nearest known name or family, or None.
    """

    def __init__(self, message: str, *, name: str, suggestion: str | None) -> None:
        super().__init__(message)
        self.name = name
        self.suggestion = suggestion


def normalize_gpu_name(name: str) -> str:
    """``name`` with underscores as spaces, runs of spaces collapsed (``H100_SXM`` -> ``H100 SXM``).

    Args:
        name: A GPU name as a user wrote it.

    Returns:
        The name in Vast's spelling of spaces (case unchanged).
    """
    return " ".join(name.replace("_", " ").split())


@attrs.frozen(kw_only=True)
class GpuMatch:
    """What one written GPU name stands for.

    Attributes:
        written: The name as written (``"A100"``, ``"rtx_4090"``).
        names: The Vast models it accepts, in catalog order.
        family: True when ``written`` names a family of several models rather than one model.
    """

    written: str
    names: tuple[str, ...]
    family: bool

    @property
    def notice(self) -> str | None:
        """For a family, a sentence naming its models; None for a single model."""
        if not self.family:
            return None
        return (
            f"gpu_name {self.written!r} is not one Vast model; it matches {len(self.names)}: "
            f"{', '.join(self.names)} (name one of them to choose)"
        )


@attrs.frozen
class GpuCatalog:
    """A set of Vast GPU model names, with family lookup.

    Attributes:
        names: Every known model name, in Vast's spelling, without duplicates.
    """

    names: tuple[str, ...]

    def with_names(self, extra: Iterable[str]) -> GpuCatalog:
        """This catalog plus ``extra`` names (normalized; known ones are not repeated).

        Args:
            extra: More model names, e.g. from a live search.

        Returns:
            A new catalog.
        """
        names = list(self.names)
        for name in extra:
            clean = normalize_gpu_name(name)
            if clean and clean not in names:
                names.append(clean)
        return GpuCatalog(tuple(names))

    def family(self, key: str) -> tuple[str, ...]:
        """The models whose name begins with ``key`` followed by a space or a capital letter.

        Only a ``key`` with a digit is a family (``A100``, ``H100``), so ``RTX`` or ``Tesla`` is
        not; ``A10`` is not the family of ``A100 PCIE`` (a digit follows).

        Args:
            key: A normalized name.

        Returns:
            The members, in catalog order; empty when ``key`` is no family.
        """
        if not _DIGIT.search(key):
            return ()
        folded = key.casefold()
        members = []
        for name in self.names:
            rest = name[len(key) :]
            if (
                name.casefold().startswith(folded)
                and rest
                and (rest[0] == " " or rest[0].isupper())
            ):
                members.append(name)
        return tuple(members)

    def resolve(self, written: str) -> GpuMatch:
        """Look up one written GPU name.

        Args:
            written: ``"RTX_4090"``, ``"H100 SXM"``, ``"A100"``, ...

        Returns:
            The match.

        Raises:
            UnknownGpuError: The name is neither a model nor a family; the message suggests the
                nearest known name.
        """
        clean = normalize_gpu_name(written)
        by_fold = {name.casefold(): name for name in self.names}
        exact = by_fold.get(clean.casefold())
        if exact is not None:
            return GpuMatch(written=written, names=(exact,), family=False)
        members = self.family(clean)
        if members:
            return GpuMatch(written=written, names=members, family=len(members) > 1)
        close = difflib.get_close_matches(
            clean.casefold(), [*by_fold, *self._family_keys()], n=1, cutoff=0.6
        )
        suggestion = None
        if close:
            suggestion = by_fold.get(close[0], close[0].upper())
        hint = f"; did you mean '{suggestion.replace(' ', '_')}'?" if suggestion else ""
        raise UnknownGpuError(
            f"unknown GPU {written!r}: not a Vast GPU name{hint} (Vast's names use spaces or "
            "underscores, e.g. RTX_4090, H100_SXM, A100_SXM4; `vastkit offers --gpu-names` lists "
            "the names the market has now)",
            name=written,
            suggestion=suggestion,
        )

    def unknown(self, names: Iterable[str]) -> tuple[str, ...]:
        """The names that are not models of this catalog, sorted, without duplicates."""
        known = {name.casefold() for name in self.names}
        return tuple(sorted({n for n in names if normalize_gpu_name(n).casefold() not in known}))

    def _family_keys(self) -> list[str]:
        keys = set()
        for name in self.names:
            head = name.split(" ")[0]
            if head != name and _DIGIT.search(head) and head.casefold() not in keys:
                keys.add(head.casefold())
        return sorted(keys)


_builtin: GpuCatalog | None = None
_registered: list[str] = []


def _load_builtin() -> GpuCatalog:
    global _builtin
    if _builtin is None:
        text = resources.files("vastkit").joinpath("data/gpu_names.txt").read_text("utf-8")
        lines = (line.strip() for line in text.splitlines())
        _builtin = GpuCatalog(()).with_names(
            line for line in lines if line and not line.startswith("#")
        )
    return _builtin


def gpu_catalog() -> GpuCatalog:
    """The catalog profiles are checked against: the shipped names plus registered ones.

    Returns:
        The catalog.
    """
    return _load_builtin().with_names(_registered)


def register_gpu_names(names: Iterable[str]) -> None:
    """Accept more GPU names in this process (a model Vast added after this release).

    Args:
        names: Model names as Vast spells them (underscores are read as spaces).

    Raises:
        ValueError: A name is empty.
    """
    for name in names:
        clean = normalize_gpu_name(name) if isinstance(name, str) else ""
        if not clean:
            raise ValueError(f"a GPU name must be non-empty text (got {name!r})")
        if clean not in _registered:
            _registered.append(clean)


@attrs.frozen(kw_only=True)
class GpuNamesReport:
    """The GPU names seen in a search, checked against the catalog.

    Attributes:
        counts: Offers per GPU name, most common first.
        unknown: The names seen that the catalog does not have, sorted.
    """

    counts: dict[str, int]
    unknown: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"{n:6d}  {name}{'  (not in the catalog)' if name in self.unknown else ''}"
                 for name, n in self.counts.items()]  # fmt: skip
        tail = (
            f"{len(self.unknown)} name(s) not in vastkit's catalog: {', '.join(self.unknown)}"
            if self.unknown
            else f"all {len(self.counts)} name(s) are in vastkit's catalog"
        )
        return "\n".join([*lines, tail])


def gpu_names_report(
    gpu_names: Iterable[str], *, catalog: GpuCatalog | None = None
) -> GpuNamesReport:
    """Count the ``gpu_name`` values of a search and flag those the catalog lacks.

    Args:
        gpu_names: The ``gpu_name`` of each offer (``[o.gpu_name for o in offers]``).
        catalog: The catalog to check against (default: :func:`gpu_catalog`).

    Returns:
        The report; pass ``report.unknown`` to :func:`register_gpu_names` to accept them.
    """
    counter = Counter(gpu_names)
    counts = dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))
    return GpuNamesReport(counts=counts, unknown=(catalog or gpu_catalog()).unknown(counter))

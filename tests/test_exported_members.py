"""The public surface is exactly what ``vastkit.__all__`` lists, sorted (httpx's habit)."""

from __future__ import annotations

import vastkit


def test_all_is_sorted() -> None:
    assert list(vastkit.__all__) == sorted(vastkit.__all__)


def test_all_is_complete_and_importable() -> None:
    public = {
        name
        for name, value in vars(vastkit).items()
        if not name.startswith("_") and not getattr(value, "__name__", "").startswith("vastkit.")
    }
    assert public <= set(vastkit.__all__) | {"annotations"}
    for name in vastkit.__all__:
        assert hasattr(vastkit, name), name


def test_exported_classes_are_defined_in_vastkit() -> None:
    for name in vastkit.__all__:
        value = getattr(vastkit, name)
        module = getattr(value, "__module__", "vastkit")
        assert module is None or module.startswith("vastkit"), (name, module)

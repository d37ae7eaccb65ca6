"""The converter's fast path for long lists: the same answers as cattrs, and loud when not."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from vastkit.api import _converter
from vastkit.api._converter import FAST_PATH, FastPathMismatch, make_converter, structure_list
from vastkit.api.models import Charge, InstanceInfo, Offer
from vastkit.errors import ResponseValidationError


def _offer(offer_id: int, **overrides: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": offer_id,
        "machine_id": 5000 + offer_id,
        "num_gpus": 1,
        "gpu_name": "RTX 4090",
        "dph_base": 0.4,
        "dph_total": 0.45,
        "gpu_ram": 24564,
        "reliability2": 0.99,
    }
    wire.update(overrides)
    return wire


def test_long_lists_of_offers_and_instances_take_the_fast_path() -> None:
    assert frozenset({Offer, InstanceInfo}) == FAST_PATH
    assert Charge not in FAST_PATH


def test_fast_and_detailed_converters_agree() -> None:
    items = [_offer(i, num_gpus=str(1 + i % 4), dph_total=f"{0.1 * i:.2f}") for i in range(1, 50)]
    assert structure_list(items, Offer) == make_converter().structure(items, list[Offer])


def test_bad_data_is_explained_by_the_detailed_converter() -> None:
    items = [_offer(1), _offer(2, dph_total="cheap")]
    with pytest.raises(ResponseValidationError, match=r"\$\.offers\[1\]\.dph_total"):
        structure_list(items, Offer, path="$.offers")


def _patch_fast(monkeypatch: pytest.MonkeyPatch, build: Callable[[Mapping[str, Any]], Any]) -> None:
    _converter._fast.cache_clear()
    monkeypatch.setattr(_converter, "_compile_fast", lambda cls: build)
    monkeypatch.setattr(_converter, "_fast", _converter._fast.__wrapped__)


def test_a_refusal_cattrs_disagrees_with_is_loud(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuses(item: Mapping[str, Any]) -> Any:
        raise TypeError("the fast path is wrong here")

    _patch_fast(monkeypatch, refuses)
    with pytest.raises(FastPathMismatch, match="cattrs accepts") as info:
        structure_list([_offer(1)], Offer)
    assert isinstance(info.value.__cause__, TypeError)


def test_a_bug_in_the_fast_path_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(item: Mapping[str, Any]) -> Any:
        raise RuntimeError("generated code is broken")

    _patch_fast(monkeypatch, broken)
    with pytest.raises(RuntimeError, match="generated code is broken"):
        structure_list([_offer(1)], Offer)

"""Benchmark 3, offer selection: parsing and ranking N offers against a plain ``json.loads``.

The emulator's seeded catalog answers one ``POST /api/v0/bundles/`` with N offers (the bytes the
client would receive). On those exact bytes, each timed separately (median of a few runs):

* ``json.loads``: the floor any Python client pays;
* parse: what :meth:`vastkit.api.client.Client.search_offers` does with a response, ``json.loads``
  plus the converter (:func:`vastkit.api._converter.structure_list` into typed ``Offer`` models);
* rank: :func:`vastkit.selector.select_offers` for a built-in profile (every offer re-checked
  against every constraint, then ranked).

Target: parse plus rank at most 3x ``json.loads``.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from vastkit.api._converter import structure_list
from vastkit.api.models import Offer
from vastkit.emulator import Emulator
from vastkit.profiles import get_profile
from vastkit.selector import select_offers

TARGET = 3.0


def _median(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times = []
    out: Any = None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def response_bytes(count: int, seed: int = 0) -> bytes:
    """The bundles response with ``count`` offers, as the emulator sends it."""
    emu = Emulator(seed=seed, offers=count, rate_limits=False)
    try:
        with emu.client() as http:
            response = http.post("/api/v0/bundles/", json={"limit": count, "type": "on-demand"})
            response.raise_for_status()
            return response.content
    finally:
        emu.close()


def measure(count: int, *, profile_name: str, repeats: int, seed: int = 0) -> dict[str, Any]:
    data = response_bytes(count, seed)
    profile = get_profile(profile_name)
    loads_s, body = _median(lambda: json.loads(data), repeats)
    n = len(body["offers"])
    convert_s, offers = _median(
        lambda: structure_list(body["offers"], Offer, path="$.offers"), repeats
    )
    now = time.time()
    rank_s, ranked = _median(lambda: select_offers(profile, offers, now=now), repeats)
    parse_s = loads_s + convert_s
    total_s = parse_s + rank_s
    return {
        "offers": n,
        "response_mb": len(data) / 2**20,
        "profile": profile_name,
        "candidates": len(ranked),
        "json_loads_s": loads_s,
        "convert_s": convert_s,
        "parse_s": parse_s,
        "rank_s": rank_s,
        "parse_and_rank_s": total_s,
        "parse_vs_json": parse_s / loads_s,
        "rank_vs_json": rank_s / loads_s,
        "total_vs_json": total_s / loads_s,
        "target_met": total_s / loads_s <= TARGET,
    }


def run(*, quick: bool, profile_name: str = "training-standard") -> dict[str, Any]:
    """Measure 10,000 offers (quick) or 10,000 and 50,000 (full)."""
    sizes = [10_000] if quick else [10_000, 50_000]
    repeats = 3
    return {
        "target": f"parse + rank <= {TARGET:g}x json.loads",
        "sizes": [measure(n, profile_name=profile_name, repeats=repeats) for n in sizes],
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, target/verdict) rows for the runner's table."""
    out = []
    for r in result["sizes"]:
        n = f"{r['offers']:,} offers"
        total = r["total_vs_json"]
        verdict = "met" if total <= TARGET else f"MISSED by {total / TARGET:.2f}x"
        out += [
            (f"{n} ({r['response_mb']:.0f} MB): json.loads", f"{r['json_loads_s']:.3f} s", ""),
            (
                f"{n}: parse (loads+convert)",
                f"{r['parse_s']:.3f} s",
                f"{r['parse_vs_json']:.2f}x json",
            ),
            (
                f"{n}: rank ({r['candidates']} kept)",
                f"{r['rank_s']:.3f} s",
                f"{r['rank_vs_json']:.2f}x json",
            ),
            (
                f"{n}: parse + rank",
                f"{r['parse_and_rank_s']:.3f} s",
                f"{total:.2f}x json (<= {TARGET:g}x): {verdict}",
            ),
        ]
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))

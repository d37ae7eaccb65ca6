"""Every name of ``vastkit.__all__`` is exercised by the type-checked files in this folder."""

from __future__ import annotations

import re
from pathlib import Path

import vastkit

HERE = Path(__file__).parent


def test_every_exported_name_is_type_checked() -> None:
    used: set[str] = set()
    for path in HERE.glob("*.py"):
        if path.name.startswith("test_"):
            continue
        used |= set(re.findall(r"\bvastkit\.(\w+)", path.read_text(encoding="utf-8")))
    missing = sorted(set(vastkit.__all__) - used)
    assert missing == [], f"add these to tests/typing/facade.py: {missing}"

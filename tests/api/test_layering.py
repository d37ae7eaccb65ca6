"""vastkit.api knows the Vast REST API and nothing above it (DESIGN.md, layer 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import vastkit.api

ALLOWED = (
    "vastkit.api",
    "vastkit.errors",
    "vastkit.clock",
    "vastkit.retry",
    "vastkit._settings",
    "vastkit._version",
)
"""What the API layer may import from vastkit: itself, and the modules below every layer."""


def _vastkit_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "vastkit" or name.startswith("vastkit.")}


def test_the_api_layer_imports_nothing_above_it() -> None:
    package = Path(vastkit.api.__file__).parent
    bad = {
        f"{path.name}: {name}"
        for path in sorted(package.glob("*.py"))
        for name in _vastkit_imports(path)
        if not any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED)
    }
    assert bad == set()


def test_the_settings_reader_imports_only_errors_and_yaml() -> None:
    import vastkit._settings

    assert _vastkit_imports(Path(vastkit._settings.__file__)) == {"vastkit.errors", "vastkit._yaml"}

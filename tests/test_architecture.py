"""The shape rules of docs/architecture.md, checked on the source tree.

- the import graph of ``vastkit/`` has no cycle (imports inside functions included; imports under
  ``if TYPE_CHECKING:`` do not run and are left out);
- no module imports a private name (``_name``) from another module, and a private module
  (``vastkit.api._transport``) is imported only from inside the package that holds it;
- exactly one call of ``create_instance`` outside ``vastkit/api/`` and ``vastkit/emulator/``;
- no file over 900 lines and no class over 450;
- the facade exports at most 60 names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import vastkit

ROOT = Path(vastkit.__file__).parent
MAX_FILE_LINES = 900
MAX_CLASS_LINES = 450
MAX_EXPORTS = 60


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        out[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


SOURCES = _sources()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (TYPE_CHECKING blocks are skipped)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = _package(module, path).split(".")
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in SOURCES}
    for module, (path, tree) in SOURCES.items():
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                target = _resolve(module, path, node)
                targets = [
                    f"{target}.{a.name}" if f"{target}.{a.name}" in SOURCES else target
                    for a in node.names
                ]
            for target in targets:
                if target in SOURCES and target != module:
                    graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycles(_edges()) == []


def _private_module_violation(importer: str, path: Path, target: str) -> bool:
    package = _package(importer, path)
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            owner = ".".join(parts[:i])
            if not (package == owner or package.startswith(owner + ".")):
                return True
    return False


def test_no_private_name_crosses_a_module_or_package_boundary() -> None:
    bad = []
    for module, (path, tree) in SOURCES.items():
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _private_module_violation(module, path, alias.name):
                        bad.append(f"{module}: import {alias.name}")
                continue
            target = _resolve(module, path, node)
            if not target.startswith("vastkit"):
                continue
            if _private_module_violation(module, path, target):
                bad.append(f"{module}: from {target} import ...")
            for alias in node.names:
                name = alias.name
                sub = f"{target}.{name}"
                if sub in SOURCES:
                    if _private_module_violation(module, path, sub):
                        bad.append(f"{module}: from {target} import {name}")
                elif name.startswith("_") and not name.startswith("__"):
                    bad.append(f"{module}: from {target} import {name}")
    assert bad == []


def test_one_place_creates_instances() -> None:
    sites = []
    for module, (_path, tree) in SOURCES.items():
        if module.startswith(("vastkit.api", "vastkit.emulator")):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "create_instance"
            ):
                sites.append(f"{module}:{node.lineno}")
    assert len(sites) == 1, sites


def test_no_giant_files_or_classes() -> None:
    big = []
    for module, (path, tree) in SOURCES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_FILE_LINES:
            big.append(f"{module}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    big.append(f"{module}.{node.name}: {size} lines")
    assert big == []


def test_the_facade_is_small() -> None:
    assert len(vastkit.__all__) <= MAX_EXPORTS

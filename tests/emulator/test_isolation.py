"""The emulator is written from the reference: it imports no vastkit client code."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import vastkit.emulator
from tests._support.processes import ProcessGroups

PACKAGE = Path(vastkit.emulator.__file__).parent
ALLOWED_TOP = {"httpx", "yaml", "vastkit"}
ALLOWED_VASTKIT = ("vastkit.clock", "vastkit.emulator")


def test_emulator_modules_import_only_the_stdlib_httpx_and_the_clock() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in ALLOWED_TOP, (path.name, name)
                if top == "vastkit":
                    assert name.startswith(ALLOWED_VASTKIT), (path.name, name)


def test_importing_and_running_the_emulator_loads_no_vastkit_api(
    processes: ProcessGroups,
) -> None:
    # Load the emulator without running vastkit/__init__.py (which re-exports API models), then
    # exercise it, and check that nothing under vastkit.api was ever imported.
    code = textwrap.dedent(
        f"""
        import sys, types
        pkg = types.ModuleType("vastkit")
        pkg.__path__ = [{str(PACKAGE.parent)!r}]
        sys.modules["vastkit"] = pkg
        from vastkit.clock import ManualClock
        from vastkit.emulator import Emulator
        with Emulator(0, offers=20, clock=ManualClock(), rate_limits=False) as emu:
            with emu.client() as http:
                offer = http.post("/api/v0/bundles/", json={{"limit": 1}}).json()["offers"][0]
                http.put(f"/api/v0/asks/{{offer['id']}}/", json={{"image": "x"}})
                http.get("/api/v1/instances/")
        leaked = sorted(m for m in sys.modules if m.startswith("vastkit.api"))
        print("LEAKED", leaked)
        sys.exit(1 if leaked else 0)
        """
    )
    result = processes.run([sys.executable, "-c", code], text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LEAKED []" in result.stdout

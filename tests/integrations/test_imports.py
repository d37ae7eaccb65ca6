"""The adapters are optional: ``import vastkit`` never loads Lightning or transformers, and an
adapter whose library is missing says which extra installs it."""

from __future__ import annotations

import importlib
import sys

import pytest

from tests._support.processes import ProcessGroups
from vastkit.errors import VastkitError
from vastkit.integrations import MissingExtraError

HEAVY = ("lightning", "pytorch_lightning", "lightning_fabric", "transformers", "accelerate")


def test_import_vastkit_loads_no_training_framework(processes: ProcessGroups) -> None:
    """What ``python -X importtime -c 'import vastkit'`` lists: none of the frameworks (so
    the import time of vastkit is what it was before the adapters)."""
    done = processes.run(
        [sys.executable, "-X", "importtime", "-c", "import vastkit, vastkit.integrations"],
        text=True,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "vastkit.integrations" in imported
    assert {name for name in imported if name.split(".")[0] in HEAVY} == set()


@pytest.mark.parametrize(
    ("adapter", "blocked", "extra", "needs"),
    [
        (
            "lightning",
            ("lightning", "lightning.pytorch", "pytorch_lightning"),
            "lightning",
            "PyTorch Lightning (lightning or pytorch-lightning)",
        ),
        ("transformers", ("transformers",), "transformers", "transformers"),
    ],
)
def test_an_adapter_without_its_library_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, adapter: str, blocked: tuple[str, ...], extra: str, needs: str
) -> None:
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # "not installed": importing it fails
    module = f"vastkit.integrations.{adapter}"
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(MissingExtraError) as caught:
        importlib.import_module(module)
    err = caught.value
    assert str(err) == (
        f'{module} needs {needs}: pip install "vastkit[{extra}]" '
        f'(from a clone: pip install -e ".[{extra}]")'
    )
    assert err.extra == extra
    assert isinstance(err, ImportError)
    assert isinstance(err, VastkitError)
    assert err.name == module
    assert isinstance(err.__cause__, ImportError)

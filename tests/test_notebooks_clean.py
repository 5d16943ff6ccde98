"""Notebooks are committed without outputs (the tests execute them on small sweeps)."""

import json

import pytest

from notebook_runner import NOTEBOOKS

NBS = sorted(NOTEBOOKS.glob("*.ipynb")) + sorted((NOTEBOOKS.parent / "examples").rglob("*.ipynb"))


@pytest.mark.parametrize("path", NBS, ids=[p.name for p in NBS])
def test_notebook_has_no_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, \
                f"{path.name} cell {i} has outputs; clear them before committing"

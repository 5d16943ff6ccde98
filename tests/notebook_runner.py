"""Execute a notebook against a results root, as the tests do (nbclient, fresh kernel)."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def execute_notebook(name: str, results_root: Path, timeout: int = 600):
    """Run ``notebooks/<name>`` with ``JAXDYN_RESULTS=results_root``; raise on any error.

    Notebooks find their tables through ``os.environ.get("JAXDYN_RESULTS", "../results")``.
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = os.environ.get("JAXDYN_RESULTS")
    os.environ["JAXDYN_RESULTS"] = str(results_root)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        if old is None:
            os.environ.pop("JAXDYN_RESULTS", None)
        else:
            os.environ["JAXDYN_RESULTS"] = old
    return nb

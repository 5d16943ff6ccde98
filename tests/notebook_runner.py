"""Execute a notebook against a results root, as the tests do (nbclient, fresh kernel)."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def execute_notebook(name: str | Path, results_root: Path, timeout: int = 600):
    """Run ``notebooks/<name>`` (or the notebook at path ``name``) with
    ``JAXDYN_RESULTS=results_root``, in the notebook's own folder; raise on any error.

    Notebooks find their tables through ``os.environ.get("JAXDYN_RESULTS", "../results")``.
    """
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    old = os.environ.get("JAXDYN_RESULTS")
    os.environ["JAXDYN_RESULTS"] = str(results_root)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if old is None:
            os.environ.pop("JAXDYN_RESULTS", None)
        else:
            os.environ["JAXDYN_RESULTS"] = old
    return nb

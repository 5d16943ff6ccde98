"""``jaxdyn report``: one self-contained HTML explorer page of a sweep.

Owns: the page (``templates/explorer.html``), inlining the chart library (Plotly's
``plotly.min.js``, from the ``plotly`` package: ``pip install 'jaxdyn[explore]'``) and the
data of :func:`jaxdyn.explore._data.explorer_data` into it.

Must not: import JAX, or write anything but the page.
"""

from __future__ import annotations

import json
import os
import time
from importlib import resources
from pathlib import Path

from jaxdyn.explore._data import explorer_data
from jaxdyn.results.files import QueryError, read_manifest, resolve


def plotly_js() -> str:
    """The text of plotly.min.js shipped with the ``plotly`` package."""
    try:
        import plotly
    except ImportError:
        raise QueryError("the explorer needs Plotly's JavaScript from the 'plotly' package: "
                         "pip install 'jaxdyn[explore]' (or pip install plotly)") from None
    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(
        encoding="utf-8")


def _template() -> str:
    return (resources.files("jaxdyn.explore") / "templates" / "explorer.html").read_text(
        encoding="utf-8")


def _json_for_script(data: dict) -> str:
    # inside <script type="application/json">: no "</" may end the element early
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def render_page(data: dict, *, script: str, live: dict | None = None) -> str:
    """The explorer page for ``data``; ``script`` is the ``<script>`` element(s) that load
    Plotly (inline for a report, a URL for the served page); ``live`` (served pages only):
    ``{"data": url, "every_ms": ms}`` to refresh the data while the sweep runs."""
    title = str(data["meta"]["name"]).replace("&", "&amp;").replace("<", "&lt;")
    page = _template()
    # the data and the library last: their text may contain the other markers
    page = page.replace("__TITLE__", title).replace("__LIVE__", json.dumps(live))
    head, tail = page.split("__PLOTLY__")
    before, after = tail.split("__DATA__")
    return "".join([head, script, before, _json_for_script(data), after])


def report(name_or_dir: str | Path, output: str | Path, *, root: str | Path | None = None,
           **limits) -> dict:
    """Write one sweep's explorer as a single self-contained HTML file.

    The page has heatmaps, lines and parallel coordinates of the final metrics aggregated
    over seeds per grid point (by DuckDB, here), the curves of a bounded sample of runs per
    grid point, and a runs table; the chart library is inlined, so it opens offline.

    Args:
      name_or_dir: a sweep name under ``root`` (default ``results/``) or its folder.
      output: the HTML file to write.
      limits: ``max_table_runs``, ``max_curve_values``, ``curve_runs_per_point`` (see
        :func:`jaxdyn.explore._data.explorer_data`).

    Returns:
      ``{"path", "bytes", "runs", "points", "build_s"}``.
    """
    t0 = time.perf_counter()
    folder = resolve(name_or_dir, root)
    read_manifest(folder)
    out = Path(output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise QueryError(f"-o {out}: expected an .html file name")
    js = plotly_js()
    data = explorer_data(folder, **limits)
    page = render_page(data, script=f"<script>{js}</script>")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise QueryError(f"cannot write {out}: {e.strerror or e}") from None
    return {"path": str(out), "bytes": out.stat().st_size, "runs": data["meta"]["runs"],
            "points": len(data["points"]["n"]), "build_s": time.perf_counter() - t0}

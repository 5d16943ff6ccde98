"""The sweep explorer: ``jaxdyn report`` (one self-contained HTML page per sweep) and
``jaxdyn serve`` (a local, read-only web app over a results root).

Modules: ``_data`` (DuckDB aggregation of one committed snapshot into the page's data),
``_report`` (the HTML page: template, the inlined chart library), ``_serve`` (the HTTP
server, standard library only), ``_export`` (one MLflow / TensorBoard run per jaxdyn run). No JAX is imported.
"""

from jaxdyn.explore._export import export
from jaxdyn.explore._report import report
from jaxdyn.explore._serve import serve

__all__ = ["export", "report", "serve"]

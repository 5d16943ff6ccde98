"""Reading results: pandas/pyarrow for notebooks, DuckDB views ``runs`` and ``curves`` for SQL,
sweep status, quick plots.

Every reader works on a snapshot of *committed* parts: the runs parts present when it starts,
and the curves parts of those chunks only (a chunk's curves part is renamed into place before
its runs part, which is the chunk's commit record). Part files are written under hidden
temporary names and renamed, so a reader never sees a half-written file, and a run visible in
``runs`` always has all its curve rows, even while ``jaxdyn run`` is writing the sweep.

SQL is read-only: one SELECT (or EXPLAIN) statement, on a DuckDB connection that can open
only the part files of the named sweeps (external file access off, configuration locked).

Nothing here imports JAX: analysis notebooks start fast and never touch an accelerator.

Modules: ``files`` (names, manifest, committed parts), ``tables`` (:class:`Results`,
:func:`load`), ``sql`` (:func:`query`, :func:`connect`), ``status`` (:func:`sweep_status`),
``plot`` (:func:`plot`). Data flow one way: files ← sql, status ← tables ← plot.
"""

from jaxdyn.results.files import (DEFAULT_ROOT, QueryError, committed_parts, read_manifest,
                                  resolve, sweep_names)
from jaxdyn.results.plot import plot
from jaxdyn.results.sql import ReadOnlyConnection, connect, query
from jaxdyn.results.status import pid_alive, sweep_status
from jaxdyn.results.tables import Results, load

__all__ = ["DEFAULT_ROOT", "QueryError", "ReadOnlyConnection", "Results", "committed_parts",
           "connect", "load", "pid_alive", "plot", "query", "read_manifest", "resolve",
           "sweep_names", "sweep_status"]

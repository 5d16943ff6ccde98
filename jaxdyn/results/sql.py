"""SQL over sweeps: read-only DuckDB views ``runs`` and ``curves``.

Owns: the connection that can open only the named sweeps' committed part files (external
access off, configuration locked), the views, and the one-statement read-only rule.

Must not: write anything or open a file outside the named sweep folders.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa

from jaxdyn.results.files import (DEFAULT_ROOT, DamagedPartsWarning, QueryError, _moved, _sql_list, _sql_str,
                                  committed_parts, read_manifest, resolve, sweep_names)

_READ_ONLY = ("SELECT", "EXPLAIN")


def _folders(names, root) -> list[Path]:
    root = Path(root) if root is not None else DEFAULT_ROOT
    if isinstance(names, (str, Path)):
        names = [names]
    elif names is not None and not isinstance(names, (list, tuple)):
        raise QueryError(f"sweeps: expected a sweep name, a path or a list of them, got "
                         f"{type(names).__name__}")
    named = bool(names)
    names = list(names) if names else sweep_names(root)
    if not names:
        raise QueryError(f"no sweeps under {root}; run one with 'jaxdyn run SWEEP.toml'")
    for n in names:
        if not isinstance(n, (str, Path)):
            raise QueryError(f"sweeps: expected names or paths, got {n!r}")
    folders = [resolve(n, root) for n in names]
    if not named:  # all sweeps: one unreadable sweep does not hide the others
        ok, errors = [], []
        for f in folders:
            try:
                read_manifest(f)
                ok.append(f)
            except QueryError as e:
                errors.append(e)
        if errors and not ok:
            raise errors[0]
        for e in errors:
            warnings.warn(DamagedPartsWarning(f"a sweep left out: {e}"), stacklevel=3)
        folders = ok
    # a sweep named twice is read once (its rows are not doubled)
    return list(dict.fromkeys(f.resolve() for f in folders))


def connect(names: Sequence[str] | str | None = None,
            root: str | Path | None = None) -> "ReadOnlyConnection":
    """A read-only DuckDB connection with views ``runs`` and ``curves`` over the named sweeps
    (all sweeps under ``root`` when none is named), each with a ``sweep`` column; sweeps with
    different columns are combined by name (a column a sweep lacks is NULL there).

    The views are a snapshot of the parts committed when it is called (connect again to see
    newer ones). Only read-only statements run; DuckDB itself can open only those part files
    (external access off, configuration locked)."""
    return _connect_folders(_folders(names, root))


class ReadOnlyConnection:
    """A DuckDB connection that runs only read-only statements (SELECT, EXPLAIN)."""

    def __init__(self, con, empty: list[str]):
        self._con = con
        self.empty = empty  # sweeps without a committed part yet

    def _check(self, sql: str) -> None:
        import duckdb

        try:
            stmts = self._con.extract_statements(sql)
        except duckdb.Error as e:
            raise QueryError(f"bad query: {_first_lines(e)}") from None
        if not stmts:
            raise QueryError("empty query: give one SELECT statement")
        if len(stmts) != 1:
            raise QueryError(f"expected one SQL statement, got {len(stmts)}")
        kind = stmts[0].type.name
        if kind not in _READ_ONLY:
            raise QueryError(f"queries are read-only: only SELECT (WITH ... SELECT, FROM ..., "
                             f"DESCRIBE, SUMMARIZE) and EXPLAIN are allowed, not {kind}")

    def execute(self, sql: str):
        """Check and run one statement; returns DuckDB's result (``.df()``, ``.fetchall()``)."""
        self._check(sql)
        return self._con.execute(sql)

    def sql(self, sql: str):
        """Check one statement and return it as a lazy DuckDB relation."""
        self._check(sql)
        return self._con.sql(sql)

    def df(self, sql: str) -> pd.DataFrame:
        """Run one read-only statement → DataFrame; errors as :class:`QueryError`."""
        import duckdb

        try:
            return self.execute(sql).df()
        except duckdb.PermissionException:
            raise QueryError("queries can read only the runs and curves views of the named "
                             "sweeps (file access is disabled, so a query cannot read or "
                             "write other files)") from None
        except duckdb.Error as e:
            msg = f"bad query: {_first_lines(e)}"
            if self.empty:
                msg += f" (no finished chunks yet in: {', '.join(self.empty)})"
            raise QueryError(msg) from None

    def arrow(self, sql: str) -> pa.Table:
        """Run one read-only statement → Arrow table; errors as :class:`QueryError`."""
        import duckdb

        try:
            rel = self.sql(sql)
            if rel is None:
                return pa.table({})
            if hasattr(rel, "to_arrow_table"):
                return rel.to_arrow_table()
            return rel.arrow()
        except duckdb.Error as e:
            raise QueryError(f"bad query: {_first_lines(e)}") from None

    def register(self, name: str, df) -> None:
        """Make a DataFrame / Arrow table queryable as ``name`` (e.g. theory to join)."""
        self._con.register(name, df)

    def close(self) -> None:
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _connect_folders(folders: Sequence[Path]) -> ReadOnlyConnection:
    import duckdb

    folders = [Path(f) for f in folders]
    for f in folders:
        read_manifest(f)  # refuse an unknown layout before reading it
    snap = {f: committed_parts(f) for f in folders}
    con = duckdb.connect(":memory:")
    allowed: list[str] = []
    empty: list[str] = []
    try:
        for ti, table in enumerate(("runs", "curves")):
            selects = []
            for f in folders:
                files = [str(p.resolve()) for p in snap[f][ti]]
                if not files:
                    if ti == 0:
                        empty.append(f.name)
                    continue
                allowed += files
                selects.append(f"SELECT {_sql_str(f.name)} AS sweep, * FROM "
                               f"read_parquet({_sql_list(files)}, union_by_name = true)")
            if selects:
                con.execute(f"CREATE VIEW {table} AS " + " UNION ALL BY NAME ".join(selects))
            else:
                con.execute(f"CREATE VIEW {table} AS SELECT NULL::VARCHAR AS sweep, "
                            f"NULL::VARCHAR AS run_id WHERE false")
    except duckdb.IOException as e:
        con.close()
        if not all(f.exists() for f in allowed):
            raise _moved(folders[0]) from None
        raise QueryError(f"cannot read the tables: {_first_lines(e)}") from None
    except duckdb.Error as e:
        con.close()
        raise QueryError(f"cannot read the tables (a damaged part file?): "
                         f"{_first_lines(e).splitlines()[0]}") from None
    tmp = Path(tempfile.gettempdir()) / f"jaxdyn-duckdb-{os.getuid()}"
    try:  # DuckDB may open only the part files (and a spill folder); needs DuckDB >= 1.1
        con.execute(f"SET temp_directory = {_sql_str(tmp)}")
        con.execute(f"SET allowed_directories = {_sql_list([str(tmp) + os.sep])}")
        if allowed:
            con.execute(f"SET allowed_paths = {_sql_list(allowed)}")
        con.execute("SET enable_external_access = false")
    except duckdb.Error:
        pass  # an older DuckDB: the statement check alone keeps queries read-only
    con.execute("SET lock_configuration = true")
    return ReadOnlyConnection(con, empty)


def _first_lines(e: Exception) -> str:
    return str(e).strip()


def _run_readonly(con: ReadOnlyConnection, sql: str) -> pd.DataFrame:
    with con:
        return con.df(sql)


def _query_folders(folders, sql: str) -> pd.DataFrame:
    return _run_readonly(_connect_folders(folders), sql)


def query(sql: str, sweeps: Sequence[str] | str | None = None,
          root: str | Path | None = None) -> pd.DataFrame:
    """Run one read-only SQL query over the views ``runs`` and ``curves`` of ``sweeps`` (names
    under ``root`` or folders; all sweeps under ``root`` when None) → DataFrame."""
    if not isinstance(sql, str):
        raise QueryError(f"sql: expected one SQL statement as a string, got "
                         f"{type(sql).__name__}")
    return _run_readonly(_connect_folders(_folders(sweeps, root)), sql)

"""Reading results: pandas/pyarrow for notebooks, DuckDB views ``runs`` and ``curves`` for SQL.

Nothing here imports JAX: analysis notebooks start fast and never touch an accelerator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from jaxdyn.store import SCHEMA_VERSION

DEFAULT_ROOT = Path("results")


class QueryError(RuntimeError):
    """Unknown sweep, bad SQL, unreadable tables; ``str(err)`` is the user's message."""


def resolve(name_or_dir: str | Path, root: str | Path | None = None) -> Path:
    """A sweep folder from a name under ``root`` (default ``results/``) or a path."""
    p = Path(name_or_dir)
    if (p / "manifest.json").exists():
        return p
    root = Path(root) if root is not None else DEFAULT_ROOT
    q = root / str(name_or_dir)
    if (q / "manifest.json").exists():
        return q
    known = ", ".join(sweep_names(root)) or "none"
    raise QueryError(f"no sweep '{name_or_dir}' (looked for {p}/manifest.json and "
                     f"{q}/manifest.json); sweeps under {root}: {known}")


def sweep_names(root: str | Path | None = None) -> list[str]:
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file())


def _dataset(folder: Path) -> ds.Dataset | None:
    files = sorted(str(p) for p in folder.glob("part-*.parquet"))
    if not files:
        return None
    return ds.dataset(files, format="parquet")


@dataclass
class Results:
    """The tables of one sweep. ``runs``: one row per run; ``curves(...)``: logged steps."""

    path: Path

    @property
    def manifest(self) -> dict:
        m = json.loads((self.path / "manifest.json").read_text())
        v = m.get("schema_version")
        if v != SCHEMA_VERSION:
            raise QueryError(f"{self.path}: tables have schema version {v}; this jaxdyn reads "
                             f"version {SCHEMA_VERSION}. Use the jaxdyn that wrote them.")
        return m

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def runs(self) -> pd.DataFrame:
        self.manifest  # refuse an unknown layout before reading it
        d = _dataset(self.path / "runs")
        if d is None:
            return pd.DataFrame()
        return d.to_table().to_pandas().sort_values("run_id", ignore_index=True)

    def curves(self, columns: Sequence[str] | None = None, where=None,
               run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Curve rows, reading only the columns and rows asked for.

        Args:
          columns: metric columns to read (``run_id`` and ``step`` always come along).
          where: a ``pyarrow.dataset`` expression, e.g. ``pc.field("step") > 100``.
          run_ids: only these runs.
        """
        self.manifest
        d = _dataset(self.path / "curves")
        if d is None:
            return pd.DataFrame(columns=["run_id", "step", *(columns or [])])
        cols = None
        if columns is not None:
            cols = ["run_id", "step", *[c for c in columns if c not in ("run_id", "step")]]
        flt = where
        if run_ids is not None:
            f = ds.field("run_id").isin(pa.array(list(run_ids), pa.string()))
            flt = f if flt is None else (flt & f)
        t = d.to_table(columns=cols, filter=flt)
        return t.to_pandas().sort_values(["run_id", "step"], ignore_index=True)


def load(name_or_dir: str | Path, root: str | Path | None = None) -> Results:
    """The results of one sweep, by name (under ``results/``) or by folder."""
    return Results(resolve(name_or_dir, root))


def connect(names: Sequence[str] | None = None, root: str | Path | None = None):
    """A DuckDB connection with views ``runs`` and ``curves`` over the named sweeps (all sweeps
    under ``root`` when none is named), each with a ``sweep`` column."""
    import duckdb

    root = Path(root) if root is not None else DEFAULT_ROOT
    names = list(names) if names else sweep_names(root)
    if not names:
        raise QueryError(f"no sweeps under {root}; run one with 'jaxdyn run SWEEP.toml'")
    folders = [resolve(n, root) for n in names]
    con = duckdb.connect(":memory:")
    for table in ("runs", "curves"):
        parts = []
        for f in folders:
            if any((f / table).glob("part-*.parquet")):
                glob = str((f / table / "part-*.parquet").resolve()).replace("'", "''")
                sweep = f.name.replace("'", "''")
                parts.append(f"SELECT '{sweep}' AS sweep, * FROM "
                             f"read_parquet('{glob}', union_by_name = true)")
        if parts:
            con.execute(f"CREATE VIEW {table} AS " + " UNION ALL BY NAME ".join(parts))
        else:
            con.execute(f"CREATE VIEW {table} AS SELECT NULL::VARCHAR AS sweep, "
                        f"NULL::VARCHAR AS run_id WHERE false")
    return con


def query(sql: str, sweeps: Sequence[str] | None = None,
          root: str | Path | None = None) -> pd.DataFrame:
    """Run one read-only SQL query over the views ``runs`` and ``curves``."""
    import duckdb

    con = connect(sweeps, root)
    try:
        stmts = con.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"bad query: {e}") from None
    if len(stmts) != 1:
        raise QueryError(f"expected one SQL statement, got {len(stmts)}")
    if stmts[0].type != duckdb.StatementType.SELECT:
        raise QueryError(f"only read-only queries (SELECT, WITH ... SELECT) are allowed; got "
                         f"{stmts[0].type.name}")
    try:
        return con.execute(sql).df()
    except duckdb.Error as e:
        raise QueryError(f"bad query: {e}") from None
    finally:
        con.close()

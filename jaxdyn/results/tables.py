"""The Python API of one sweep's results: :class:`Results` and :func:`load`.

Owns: reading the runs, curves and params tables of one sweep into pandas, reading only what
is asked (columns, runs, a predicate).

Must not: import JAX (analysis notebooks never touch an accelerator; ``params(like=...)``
imports it only to rebuild a pytree type the caller already has).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from jaxdyn import store
from jaxdyn.results.files import (QueryError, _reading, _schema, _sql_ident, _sql_list,
                                  committed_parts, read_manifest, resolve)
from jaxdyn.results.sql import _connect_folders, _query_folders
from jaxdyn.results.status import sweep_status


@dataclass
class Results:
    """The tables of one sweep. ``runs``: one row per run; ``curves(...)``: logged steps.

    Each read is a fresh snapshot of the committed parts: while the sweep runs, read again to
    see more runs; a run in ``runs`` always has all its curve rows."""

    path: Path

    @property
    def manifest(self) -> dict:
        return read_manifest(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def columns(self) -> dict[str, list[str]]:
        """Column names of the ``runs`` and ``curves`` tables (empty before the first part)."""
        self.manifest
        runs, curves = committed_parts(self.path)
        with _reading(self.path):
            return {"runs": _schema(runs).names if runs else [],
                    "curves": _schema(curves).names if curves else []}

    @property
    def runs(self) -> pd.DataFrame:
        self.manifest  # refuse an unknown layout before reading it
        files, _ = committed_parts(self.path)
        if not files:
            return pd.DataFrame()
        with _reading(self.path):
            t = ds.dataset([str(f) for f in files], format="parquet",
                           schema=_schema(files)).to_table()
        return t.to_pandas().sort_values("run_id", ignore_index=True)

    def curves(self, columns: Sequence[str] | None = None, where=None,
               run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Curve rows, reading only the columns and rows asked for.

        Args:
          columns: metric columns to read (``run_id`` and ``step`` always come along).
          where: a ``pyarrow.dataset`` expression (``pc.field("step") > 100``), or a SQL
            predicate on the curves columns as a string (``"step > 100 AND loss < 0.1"``).
          run_ids: only these runs.
        """
        self.manifest
        if isinstance(run_ids, str):  # one id, not its characters
            run_ids = [run_ids]
        _, files = committed_parts(self.path)
        cols = None
        if columns is not None:
            if isinstance(columns, str):
                columns = [columns]
            cols = ["run_id", "step", *[c for c in columns if c not in ("run_id", "step")]]
        if not files:
            return pd.DataFrame(columns=cols or ["run_id", "step"])
        with _reading(self.path):
            schema = _schema(files)
        if cols is not None:
            unknown = [c for c in cols if c not in schema.names]
            if unknown:
                raise QueryError(f"{self.name}: no curves column {', '.join(unknown)}; "
                                 f"curves has {', '.join(schema.names)}")
        if isinstance(where, str) or (where is None and run_ids is not None):
            # DuckDB: prunes row groups on run_id statistics and decodes the other columns
            # only where the filter matches (pyarrow decodes whole row groups): a 20-run read
            # of a 1e7-row table takes a fraction of the time and memory (bench_query.py in
            # benchmarks/README.md)
            sel = ", ".join(_sql_ident(c) for c in cols) if cols else "* EXCLUDE (sweep)"
            sql = f"SELECT {sel} FROM curves WHERE ({where or 'true'})"
            if run_ids is not None:
                sql += f" AND run_id IN (SELECT unnest({_sql_list(map(str, run_ids))}))"
            with _connect_folders([self.path]) as con:
                t = con.arrow(sql)
            df = t.to_pandas()
        else:
            flt = where
            if run_ids is not None:
                f = ds.field("run_id").isin(pa.array([str(r) for r in run_ids], pa.string()))
                flt = f if flt is None else (flt & f)
            if flt is not None and not isinstance(flt, ds.Expression):
                raise QueryError(f"{self.name}: where: expected a pyarrow.dataset expression "
                                 f"or a SQL string, got {type(flt).__name__}")
            with _reading(self.path):
                t = ds.dataset([str(f) for f in files], format="parquet",
                               schema=schema).to_table(columns=cols, filter=flt)
            df = t.to_pandas()
        return df.sort_values(["run_id", "step"], ignore_index=True)

    def params(self, run_ids: Sequence[str] | str, step: int | None = None,
               like=None) -> dict:
        """Saved parameters (``save = { params = "final" | "log" }``) as pytrees.

        Args:
          run_ids: a run_id or a list of them.
          step: the logged step to read (``save.params = "log"``); None: the last one saved.
          like: a pytree of the same structure (e.g. an initial model) to fill; without it,
            each run's parameters come back as nested dicts keyed like the saved paths
            (``{"params": {"w": array}}``; sequence indices become int keys).

        Returns:
          ``{run_id: pytree of numpy arrays}`` (leaf shapes and dtypes as saved).
        """
        man = self.manifest
        layout = man.get("params_layout")
        if not layout:
            raise QueryError(f"{self.name}: no parameters were saved; add save = {{ params = "
                             f"\"final\" }} (or \"log\") to the sweep file")
        ids = [run_ids] if isinstance(run_ids, str) else [str(r) for r in run_ids]
        runs, _ = committed_parts(self.path)
        names = {p.name for p in runs}
        files = sorted(p for p in (self.path / store.PARAMS).glob(store.PART_GLOB) if p.name in names)
        if not files or not ids:
            return {}
        flt = ds.field("run_id").isin(pa.array(ids, pa.string()))
        if step is not None:
            flt = flt & (ds.field("step") == int(step))
        with _reading(self.path):
            t = ds.dataset([str(f) for f in files], format="parquet").to_table(filter=flt)
        df = t.to_pandas()
        if step is None and len(df):
            df = df[df["step"] == df.groupby("run_id")["step"].transform("max")]
        out = {}
        for _, row in df.iterrows():
            leaves = []
            for leaf in layout["groups"][row["group"]]:
                a = np.asarray(row[leaf["column"]], dtype=leaf["dtype"])
                leaves.append((leaf["path"], a.reshape(leaf["shape"])))
            if like is not None:
                import jax  # only to rebuild the user's own pytree type

                treedef = jax.tree.structure(like)
                out[row["run_id"]] = jax.tree.unflatten(treedef, [a for _, a in leaves])
            else:
                out[row["run_id"]] = _nested(leaves)
        missing = [r for r in ids if r not in out]
        if missing:
            raise QueryError(f"{self.name}: no saved parameters for run_id "
                             f"{', '.join(missing[:5])}" + (f" at step {step}" if step is not None
                                                            else ""))
        return out

    def boundaries(self) -> pd.DataFrame:
        """The brackets of a ``[refine]`` sweep: per seed and other hyperparameters, each
        pair of neighbouring values of the refined axis where its predicate differs. Columns:
        ``seed``, the other hyperparameters that vary, ``lo``, ``hi``, ``hit_lo``,
        ``hit_hi``, ``width``, ``rel_width``, ``mid`` (geometric on a log axis),
        ``run_id_lo``, ``run_id_hi``."""
        from jaxdyn.adaptive._brackets import boundaries

        return boundaries(self.path)

    def query(self, sql: str) -> pd.DataFrame:
        """A read-only SQL query over this sweep's ``runs`` and ``curves`` views."""
        return _query_folders([self.path], sql)

    def status(self) -> dict:
        """Progress of this sweep (see :func:`sweep_status`)."""
        return sweep_status(self.path)


def _nested(leaves: list[tuple[str, np.ndarray]]):
    """Nested dicts from ``jax.tree_util.keystr`` paths (``['a'][0].b``); a bare leaf for
    the empty path."""
    if len(leaves) == 1 and leaves[0][0] == "":
        return leaves[0][1]
    root: dict = {}
    for path, a in leaves:
        keys = [next(x for x in g if x) for g in re.findall(
            r"\['([^']*)'\]|\[(\d+)\]|\.(\w+)", path)]
        keys = [int(k) if k.isdigit() else k for k in keys]
        node = root
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1] if keys else ""] = a
    return root


def load(name_or_dir: str | Path, root: str | Path | None = None) -> Results:
    """The results of one sweep, by name (under ``root``, default ``results/``) or by folder.

    Args:
      name_or_dir: a sweep's name, or the path of its folder.
      root: the results root a name is looked up in.

    Returns:
      :class:`Results`; ``.runs`` (one row per run), ``.curves(...)``, ``.params(...)``,
      ``.query(sql)``. Nothing is read until asked; no JAX is imported.

    Example::

        res = jaxdyn.load("eos_mean_model")
        res.runs.groupby("lr").final_b.mean()
    """
    folder = resolve(name_or_dir, root)
    read_manifest(folder)
    return Results(folder)

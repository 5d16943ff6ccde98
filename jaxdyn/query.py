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
"""

from __future__ import annotations

import glob
import json
import math
import os
import platform
import re
import tempfile
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from jaxdyn.store import SCHEMA_VERSION

DEFAULT_ROOT = Path("results")
_PART = "part-*.parquet"
_GROUP_RE = re.compile(r"^part-(g\d+)-")
_READ_ONLY = ("SELECT", "EXPLAIN")


class QueryError(RuntimeError):
    """Unknown sweep, bad SQL, unreadable tables; ``str(err)`` is the user's message."""


# ---- sweeps and their files -------------------------------------------------------------
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


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a sweep folder; refuses a layout this jaxdyn does not read."""
    path = Path(folder) / "manifest.json"
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise QueryError(f"{folder}: no manifest.json (not a sweep folder, or it was moved)") \
            from None
    except (OSError, ValueError) as e:
        raise QueryError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(m, dict):
        raise QueryError(f"{path}: unreadable manifest (not a JSON object)")
    v = m.get("schema_version")
    if v != SCHEMA_VERSION:
        if isinstance(v, int) and v > SCHEMA_VERSION:
            hint = "a newer jaxdyn wrote them: upgrade jaxdyn to read them"
        else:
            hint = (f"an older jaxdyn wrote them (git rev {m.get('git_rev') or 'unknown'}, "
                    f"jaxdyn {m.get('jaxdyn_version', 'unknown')}): read them with that "
                    f"version, or re-run the sweep")
        raise QueryError(f"{folder}: tables have schema version {v}; this jaxdyn reads "
                         f"version {SCHEMA_VERSION} only; {hint}")
    return m


def committed_parts(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """A consistent snapshot of a sweep's part files: the runs parts present now, then the
    curves parts of those same chunks (never a curves part whose chunk is not committed)."""
    folder = Path(folder)
    runs = sorted((folder / "runs").glob(_PART))
    names = {p.name for p in runs}
    curves = sorted(p for p in (folder / "curves").glob(_PART) if p.name in names)
    return runs, curves


def _schema(files: Sequence[Path]) -> pa.Schema:
    """Union of the part schemas: one footer per static group (parts of a group share it)."""
    reps: dict[str, Path] = {}
    for f in files:
        m = _GROUP_RE.match(f.name)
        reps.setdefault(m.group(1) if m else f.name, f)
    return pa.unify_schemas([pq.read_schema(f) for f in reps.values()])


def _moved(folder: Path) -> QueryError:
    return QueryError(f"{folder}: part files disappeared while reading (was the folder moved "
                      f"aside by 'jaxdyn run --force'?); read it again")


@contextmanager
def _reading(folder: Path):
    """Arrow/OS errors while reading part files → one QueryError message."""
    try:
        yield
    except FileNotFoundError:
        raise _moved(folder) from None
    except (pa.ArrowInvalid, OSError) as e:
        raise QueryError(f"{folder}: cannot read the tables (a damaged part file?): "
                         f"{str(e).splitlines()[0]}") from None


def _sql_str(s: str | Path) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _sql_ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _sql_list(items) -> str:
    return "[" + ", ".join(_sql_str(i) for i in items) + "]"


# ---- the Python API -----------------------------------------------------------------------
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
            # of a 1e7-row table takes a fraction of the time and memory
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
        files = sorted(p for p in (self.path / "params").glob(_PART) if p.name in names)
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
    """The results of one sweep, by name (under ``results/``) or by folder."""
    folder = resolve(name_or_dir, root)
    read_manifest(folder)
    return Results(folder)


# ---- SQL ----------------------------------------------------------------------------------
def _folders(names, root) -> list[Path]:
    root = Path(root) if root is not None else DEFAULT_ROOT
    if isinstance(names, (str, Path)):
        names = [names]
    names = list(names) if names else sweep_names(root)
    if not names:
        raise QueryError(f"no sweeps under {root}; run one with 'jaxdyn run SWEEP.toml'")
    return [resolve(n, root) for n in names]


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
    return _run_readonly(_connect_folders(_folders(sweeps, root)), sql)


# ---- status -------------------------------------------------------------------------------
def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def pid_alive(pid: int, started: float | None = None) -> bool | None:
    """Whether process ``pid`` on this host is alive (and not a later process that reused the
    pid: on Linux its start time must precede ``started``); None if it cannot be told."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OSError, ValueError, TypeError, OverflowError):
        return None
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return True
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return False
    bt = _boot_time()
    if started is not None and bt is not None:
        start = bt + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if start > float(started) + 2.0:
            return False  # the pid now belongs to a process started after the run
    return True


def _flock_holders(path: Path) -> list[int] | None:
    """Pids holding a flock on ``path`` (Linux /proc/locks; None elsewhere). Looks only: it
    never takes the lock, so it cannot make a starting ``jaxdyn run`` fail."""
    try:
        st = path.stat()
    except OSError:
        return []
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in text.splitlines():
        f = line.split()
        if "->" in f:  # a waiter line
            continue
        if len(f) >= 6 and f[1] == "FLOCK":
            dev = f[5].split(":")
            if len(dev) == 3 and f"{int(dev[0], 16):02x}:{int(dev[1], 16):02x}:{dev[2]}" \
                    == want:
                pids.append(int(f[4]))
    return pids


def _fmt_toml(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_fmt_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_toml(x) for x in v) + "]"
    return repr(v)


def _overrides(man: dict) -> list[str]:
    """The ``--set`` options of the original run: recorded ones, or the simple ones that can
    be told from the difference between the sweep as run and its file text."""
    if isinstance(man.get("overrides"), list):
        return [str(o) for o in man["overrides"]]
    try:
        doc = tomllib.loads(man.get("source") or "")
    except tomllib.TOMLDecodeError:
        return []
    ran = man.get("sweep") or {}
    out = []
    for k in ("name", "steps", "precision"):
        if k in ran and doc.get(k, ran[k]) != ran[k]:
            out.append(f"{k}={_fmt_toml(ran[k])}")
    seeds = doc.get("seeds", 1)
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    if "seeds" in ran and seeds != ran["seeds"]:
        out.append(f"seeds={_fmt_toml(ran['seeds'])}")
    log = doc.get("log")
    if isinstance(ran.get("log"), dict) and isinstance(log, dict):
        for k, v in ran["log"].items():
            if log.get(k) != v:
                out.append(f"log.{k}={_fmt_toml(v)}")
    fixed = doc.get("fixed", {}) if isinstance(doc.get("fixed"), dict) else {}
    for k, v in (ran.get("fixed") or {}).items():
        if k not in fixed or fixed[k] != v:
            if k in fixed and isinstance(v, (int, float)) and fixed[k] == v:
                continue
            out.append(f"{k}={_fmt_toml(v)}")
    return out


def _file_state(man: dict, folder: Path) -> dict:
    src = man.get("source_file")
    if not src:
        return {"path": None, "state": "unknown", "text": "no sweep file recorded"}
    p = Path(src)
    cands = [p] if p.is_absolute() else [p, folder.resolve().parent.parent / p]
    for c in cands:
        try:
            text = c.read_text()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, UnicodeDecodeError) as e:
            return {"path": str(c), "state": "unreadable", "text": f"{c}: unreadable ({e})"}
        if text == man.get("source"):
            return {"path": str(c), "state": "unchanged", "text": f"{c}: unchanged"}
        try:
            same = tomllib.loads(text) == tomllib.loads(man.get("source") or "")
        except tomllib.TOMLDecodeError:
            same = False
        what = ("comments or formatting only" if same else
                "different settings: re-running it would be refused; give it a new name, "
                "or --force")
        return {"path": str(c), "state": "changed",
                "text": f"{c}: file changed since the run ({what})"}
    return {"path": src, "state": "missing",
            "text": f"{src}: file missing (looked in {', '.join(map(str, cands))})"}


def sweep_status(name_or_dir: str | Path, root: str | Path | None = None,
                 now: float | None = None) -> dict:
    """Progress of one sweep, from its committed parts, its manifest and the progress records
    of the processes running it; safe while the sweep is being written.

    Returns a dict: ``name``, ``experiment``, ``state`` ("complete", "running", "stopped",
    "stalled", "incomplete" or "not started"), ``runs_done``, ``runs_total``, ``diverged``,
    ``parts``, ``chunks_done``/``chunks_total`` (of the current launch), ``run_steps_per_s``
    and ``eta_s`` (while running), ``processes`` (one dict per progress record), ``file``
    (whether the sweep file changed since) and ``resume`` (the command that resumes it).
    """
    folder = resolve(name_or_dir, root)
    man = read_manifest(folder)
    now = time.time() if now is None else now
    runs_files, _ = committed_parts(folder)
    done = diverged = 0
    commits = []  # (mtime, runs) of each runs part: the sweep's commit timeline
    damaged: list[str] = []
    for p in runs_files:
        try:
            mtime = p.stat().st_mtime
            col = pq.read_table(p, columns=["status"]).column(0)
        except FileNotFoundError:
            continue
        except (pa.ArrowInvalid, OSError):
            damaged.append(p.name)
            continue
        done += len(col)
        diverged += len(col) - col.to_pylist().count("ok")
        commits.append((mtime, len(col)))
    total = int(man.get("runs_total") or 0)

    lock_pids: list[int] = []  # processes holding the sweep's write locks (this host)
    for lp in folder.parent.glob(glob.escape(f".{folder.name}.lock") + "*"):
        if lp.name == f".{folder.name}.lock" or lp.name.startswith(f".{folder.name}.lock."):
            lock_pids += _flock_holders(lp) or []
    procs = []
    for p in sorted(folder.glob("progress-*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        procs.append(_process_status(rec, man, now, lock_pids))
    running = [q for q in procs if q["state"] == "running"]
    if done >= total > 0:
        state = "complete"
    elif running or lock_pids:
        state = "running"
    elif any(q["state"] == "stopped" for q in procs):
        state = "stopped"
    elif any(q["state"] == "stalled" for q in procs):
        state = "stalled"
    elif done == 0 and not procs:
        state = "not started"
    else:
        state = "incomplete"
    root_dir = folder.parent
    cmd = f"jaxdyn run {man.get('source_file') or 'FILE'}"
    if root_dir.resolve() != DEFAULT_ROOT.resolve():
        cmd += f" --out {root_dir}"
    for o in _overrides(man):
        cmd += f" --set {o}" if " " not in o else f" --set '{o}'"
    live = running if state == "running" else []
    rate_steps = sum(q["run_steps_per_s"] or 0.0 for q in live) if live else None
    eta = max((q["eta_s"] for q in live if q["eta_s"] is not None), default=None)
    if state == "running":
        # recent throughput from the commit times of this launch's parts (compile excluded)
        since = min((q["started"] for q in live), default=0.0)
        recent = sorted(c for c in commits if c[0] >= since)[-64:]
        steps = int((man.get("sweep") or {}).get("steps") or 0)
        if len(recent) >= 3 and recent[-1][0] - recent[0][0] > 0.05:
            runs_rate = sum(n for _, n in recent[1:]) / (recent[-1][0] - recent[0][0])
            rate_steps = runs_rate * steps if steps else rate_steps
            eta = max((total - done) / runs_rate - max(now - recent[-1][0], 0.0), 0.0)
    return {
        "name": folder.name,
        "folder": str(folder),
        "experiment": man.get("experiment"),
        "state": state,
        "runs_done": done,
        "runs_total": total,
        "diverged": diverged,
        "parts": len(runs_files),
        "damaged_parts": damaged,
        "chunks_done": sum(q["chunks_done"] for q in procs),
        "chunks_total": sum(q["chunks_total"] for q in procs),
        "run_steps_per_s": rate_steps,
        "eta_s": eta,
        "writer_pids": lock_pids,
        "processes": procs,
        "file": _file_state(man, folder),
        "resume": cmd,
    }


def _process_status(rec: dict, man: dict, now: float, lock_pids: list[int]) -> dict:
    started = float(rec.get("started") or now)
    updated = float(rec.get("updated") or started)
    cd, ct = int(rec.get("chunks_done") or 0), int(rec.get("chunks_total") or 0)
    rd, rt = int(rec.get("runs_done") or 0), int(rec.get("runs_total") or 0)
    steps = int(rec.get("steps") or (man.get("sweep") or {}).get("steps") or 0)
    el = max(updated - started, 1e-9)
    rate = rd / el if rd else None  # runs/s of this launch, compile included
    host = rec.get("host") or (man.get("host") if int(man.get("process_count") or 1) == 1
                               else None)
    pid = rec.get("pid")
    age = max(now - updated, 0.0)
    stale_after = max(600.0, 5.0 * el / max(cd, 1))
    alive = None
    if pid is not None and host == platform.node():
        alive = pid_alive(pid, started)
        if pid in lock_pids:
            alive = True
    if rec.get("finished") is not None:
        state = "finished"
    elif alive is False:
        state = "stopped"
    elif alive is None and age > stale_after:
        state = "stalled"
    else:
        state = "running"
    eta = None
    if state == "running" and rate:
        eta = max((rt - rd) / rate - age, 0.0)
    return {"process_index": rec.get("process_index", 0), "pid": pid, "host": host,
            "state": state, "chunks_done": cd, "chunks_total": ct, "runs_done": rd,
            "runs_total": rt, "run_steps_per_s": rate * steps if rate else None,
            "eta_s": eta, "updated_ago_s": age, "started": started,
            "finished": rec.get("finished")}


# ---- plots --------------------------------------------------------------------------------
SPREADS = {"minmax": "min–max", "std": "±1 std", "none": None}
MAX_HUE_LINES = 64  # a numeric --hue with more values is binned
HUE_BINS = 8


def plot(name_or_dir: str | Path, x: str, y: str, out: str | Path, *, hue: str | None = None,
         where: str | None = None, logx: bool = False, logy: bool = False,
         spread: str = "minmax", root: str | Path | None = None,
         max_lines: int = 200) -> dict:
    """A quick figure of one sweep's tables, written to ``out`` (PNG, PDF, SVG by suffix).

    ``x``/``y`` are curves columns (``--x step --y loss``: mean over the runs of each ``hue``
    value at each step, with a shaded spread when a value groups several runs, e.g. seeds)
    or both runs columns (``--x lr --y final_b``: mean and spread over the runs sharing
    (hue, x)). ``x`` another curves metric (a phase portrait) draws one line per run.
    ``where`` is a SQL predicate on the runs table. Data are aggregated in DuckDB, reading
    only the columns used. Returns a summary dict.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise QueryError("plots need matplotlib: pip install matplotlib") from None

    if spread not in SPREADS:
        raise QueryError(f"spread: expected one of {list(SPREADS)}, got {spread!r}")
    res = load(name_or_dir, root)
    cols = res.columns()
    rcols, ccols = cols["runs"], cols["curves"]
    if not rcols:
        raise QueryError(f"{res.name}: no finished chunks yet; nothing to plot")
    with _connect_folders([res.path]) as con:  # one snapshot for every query of the plot
        return _plot(res, con, rcols, ccols, x, y, out, hue, where, logx, logy, spread,
                     max_lines, FigureCanvasAgg, Figure, Patch)


def _plot(res, con, rcols, ccols, x, y, out, hue, where, logx, logy, spread, max_lines,
          FigureCanvasAgg, Figure, Patch) -> dict:
    types = _column_types(con)

    def where_is(c):
        return [t for t, cs in (("curves", ccols), ("runs", rcols)) if c in cs]

    for opt, c in (("--x", x), ("--y", y)):
        if not where_is(c):
            raise QueryError(f"{opt} {c}: no such column in {res.name}; curves columns: "
                             f"{', '.join(ccols)}; runs columns: {', '.join(rcols)}")
        if "[" in types.get(c, ""):
            raise QueryError(f"{opt} {c}: an array metric ({types[c]}); plot one of its "
                             f"elements with 'jaxdyn query' or the Python API")
    if hue is not None and hue not in rcols:
        raise QueryError(f"--hue {hue}: no such runs column in {res.name}; runs columns: "
                         f"{', '.join(rcols)}")
    if x in ccols and y in ccols and x != "run_id":
        mode = "steps" if x == "step" else "trajectories"
    elif x in rcols and y in rcols:
        mode = "runs"
    elif x in rcols:
        raise QueryError(f"--x {x} is a runs column but --y {y} is a curves column; plot a "
                         f"runs column against it (final_{y}?), or use --x step")
    else:
        raise QueryError(f"--x {x} is a curves column but --y {y} is a runs column; use a "
                         f"curves metric for --y (one of {', '.join(ccols[2:])})")

    X, Y = _sql_ident(x), _sql_ident(y)
    H = _sql_ident(hue) if hue else "NULL"
    pred = f"({where})" if where else "true"
    sel = f"SELECT run_id, {H} AS hue FROM runs WHERE {pred}"
    try:
        counts = con.df(f"SELECT hue, count(*) AS n FROM ({sel}) GROUP BY hue ORDER BY hue")
    except QueryError as e:
        raise QueryError(f"--where {where!r}: {e}" if where else str(e)) from None
    n_runs = int(counts.n.sum())
    if n_runs == 0:
        raise QueryError(f"{res.name}: no runs match" + (f" --where {where!r}" if where else ""))
    bins: dict[int, str] = {}
    if hue and pd.api.types.is_numeric_dtype(counts.hue) and len(counts) > MAX_HUE_LINES:
        # too many values for one line each: HUE_BINS bins (log-spaced over a positive range
        # of more than a decade), each line the mean and spread over the runs of its bin
        v = counts.hue.dropna().astype("float64").to_numpy()
        lo, hi = float(v.min()), float(v.max())
        edges = (np.geomspace(lo, hi, HUE_BINS + 1) if lo > 0 and hi / lo > 10 else
                 np.linspace(lo, hi, HUE_BINS + 1))
        H = (f"CASE WHEN {H} IS NULL THEN NULL " +
             " ".join(f"WHEN {H} < {float(e)!r} THEN {i}" for i, e in enumerate(edges[1:-1]))
             + f" ELSE {HUE_BINS - 1} END")
        bins = {i: f"{hue} ∈ [{edges[i]:.3g}, {edges[i + 1]:.3g}" +
                   ("]" if i == HUE_BINS - 1 else ")") for i in range(HUE_BINS)}
        sel = f"SELECT run_id, {H} AS hue FROM runs WHERE {pred}"
        counts = con.df(f"SELECT hue, count(*) AS n FROM ({sel}) GROUP BY hue ORDER BY hue")

    def hue_label(hv):
        if bins:
            return bins.get(_key(hv), str(hv))
        return f"{hue}={_fmt_v(hv)}"

    per_run = False
    if mode == "trajectories":
        if n_runs > max_lines:
            raise QueryError(f"--x {x}: one line per run, but {n_runs} runs match; narrow them "
                             f"with --where (at most {max_lines})")
        per_run = True
    elif hue is None and mode == "steps" and n_runs <= 12:
        per_run = True  # a few runs: one line each

    fin = "isfinite(CAST(v.y AS DOUBLE))"
    if per_run:
        sql = (f"WITH sel AS ({sel}) SELECT sel.hue, c.run_id, c.{X} AS x, c.{Y} AS y "
               f"FROM curves c JOIN sel USING (run_id) ORDER BY c.run_id, c.step")
        data = con.df(sql)
        n_bad = int((~pd.Series(data["y"], dtype="float64").map(math.isfinite)).sum())
    else:
        if mode == "steps":
            src = (f"WITH sel AS ({sel}) SELECT sel.hue, c.{X} AS x, c.{Y} AS y FROM curves c "
                   f"JOIN sel USING (run_id)")
        else:
            src = f"SELECT {H} AS hue, {X} AS x, {Y} AS y FROM runs WHERE {pred}"
        sql = (f"SELECT hue, x, avg(y) AS mean, min(y) AS lo, max(y) AS hi, "
               f"stddev_samp(y) AS sd, count(*) AS n FROM ({src}) v WHERE {fin} "
               f"GROUP BY hue, x ORDER BY hue, x")
        data = con.df(sql)
        n_bad = int(con.df(f"SELECT count(*) AS n FROM ({src}) v WHERE NOT {fin} "
                              f"OR v.y IS NULL").n.iloc[0])

    n_xpos = 0
    if logx and pd.api.types.is_numeric_dtype(data["x"]):
        keep = data["x"] > 0  # e.g. step 0 has no place on a log axis
        n_xpos = int((~keep).sum())
        data = data[keep]

    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    hues = list(counts.hue)
    nh = len(hues)
    numeric_hue = hue is not None and not bins and pd.api.types.is_numeric_dtype(counts.hue)
    many = nh > 10
    colors = _hue_colors(fig, ax, counts.hue, hue, many, numeric_hue)
    band = SPREADS[spread] if not many and not per_run else None
    drew_band = False
    lines = 0
    if per_run:
        for (hv, rid), g in data.groupby(["hue", "run_id"], dropna=False, sort=True):
            lab = None
            if not many:
                lab = hue_label(hv) if hue else str(rid)
            ax.plot(g.x.to_numpy(), g.y.to_numpy(dtype=float), color=colors(hv), lw=1.0,
                    alpha=0.85, label=lab)
            lines += 1
        if hue and not many:  # one legend entry per hue value
            hs, ls = ax.get_legend_handles_labels()
            seen = dict(zip(ls, hs))
            ax.legend(seen.values(), seen.keys(), fontsize=8)
        elif not many:
            ax.legend(fontsize=7, title="run_id", title_fontsize=7)
    else:
        for hv, g in data.groupby("hue", dropna=False, sort=True):
            lab = None
            if not many:  # n: runs averaged at each point (seeds, and any other column)
                k0, k1 = int(g.n.min()), int(g.n.max())
                lab = ((hue_label(hv) if hue else "all runs") +
                       (f" (n={k1})" if k0 == k1 else f" (n={k0}–{k1})"))
            c = colors(hv)
            xs = g.x.to_numpy()
            ax.plot(xs, g["mean"].to_numpy(dtype=float), color=c, lw=1.4, label=lab,
                    marker="o" if mode == "runs" and len(g) <= 30 else None, ms=3)
            lines += 1
            if band and (g.n > 1).any():
                if spread == "minmax":
                    lo, hi = g.lo.to_numpy(dtype=float), g.hi.to_numpy(dtype=float)
                else:
                    m, s = g["mean"].to_numpy(dtype=float), g.sd.fillna(0).to_numpy(float)
                    lo, hi = m - s, m + s
                ax.fill_between(xs, lo, hi, color=c, alpha=0.2, lw=0)
                drew_band = True
        if not many:
            hs, ls = ax.get_legend_handles_labels()
            if drew_band:
                hs.append(Patch(color="0.5", alpha=0.3))
                ls.append(f"shaded: {band} over runs")
            ax.legend(hs, ls, fontsize=8)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    agg = "" if per_run else "mean "
    ax.set_ylabel(f"{agg}{y}")
    title = f"{res.name}: {y} vs {x}"
    if where:
        title += f"  [{where}]"
    sub = f"{n_runs} runs"
    if many and not per_run:
        sub += f", {nh} {hue} values (spread not drawn)"
    if n_bad:
        sub += f", {n_bad} non-finite values left out"
    if n_xpos:
        sub += f", {x} ≤ 0 not shown on the log axis"
    ax.set_title(f"{title}\n{sub}", fontsize=9)
    ax.grid(True, alpha=0.3, which="both" if (logx or logy) else "major")
    fig.tight_layout()
    out = Path(out)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. non-positive values on a log axis
            fig.savefig(out)
    except (OSError, ValueError) as e:
        raise QueryError(f"cannot write {out}: {e}") from None
    return {"path": str(out), "runs": n_runs, "lines": lines, "hue_values": nh, "mode": mode,
            "hue_bins": bins or None,
            "per_run": per_run, "spread": band if drew_band else None, "non_finite": n_bad,
            "data": data}


def _column_types(con: ReadOnlyConnection) -> dict[str, str]:
    out = {}
    for t in ("runs", "curves"):
        try:
            d = con.df(f"DESCRIBE {t}")
        except QueryError:
            continue
        out.update(zip(d.column_name, d.column_type))
    return out


def _fmt_v(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _hue_colors(fig, ax, values: pd.Series, hue, many: bool, numeric: bool):
    """hue value → color: tab10 for a few values, a colormap (with a colorbar) for many."""
    import matplotlib as mpl

    vals = list(values)
    if not many:
        cyc = mpl.colormaps["tab10"]
        idx = {(_key(v)): i for i, v in enumerate(vals)}
        return lambda v: cyc(idx.get(_key(v), 0) % 10)
    cmap = mpl.colormaps["viridis"]
    if numeric:
        arr = pd.Series(vals, dtype="float64")
        lo, hi = float(arr.min()), float(arr.max())
        if lo > 0 and hi / lo > 10:
            norm = mpl.colors.LogNorm(lo, hi)
        else:
            norm = mpl.colors.Normalize(lo, hi if hi > lo else lo + 1)
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=hue)
        return lambda v: cmap(norm(float(v)))
    idx = {(_key(v)): i for i, v in enumerate(vals)}
    return lambda v: cmap(idx.get(_key(v), 0) / max(len(vals) - 1, 1))


def _key(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v

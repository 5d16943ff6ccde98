"""The Parquet results store: one folder per sweep, atomic part files, manifest, resume.

    <out>/<name>/manifest.json          the sweep as run, its hash, versions, device, git rev
    <out>/<name>/runs/part-*.parquet    one row per run
    <out>/<name>/curves/part-*.parquet  one row per (run_id, logged step)

A chunk's two parts share one file name. Each is written under a hidden temporary name,
fsynced and renamed into place, curves first, runs last: a runs part is the commit record of
its chunk. On open, leftovers of a killed writer (temporary files, a curves part without its
runs part) are removed, and the runs already in ``runs/`` are skipped. Readers (pyarrow,
DuckDB) ignore hidden files, so they never see a partial part.

This module does not import JAX.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import platform
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxdyn.spec import JaxdynError

SCHEMA_VERSION = 1
#: the folder of parameter snapshots (``save = { params = ... }``), beside runs/ and curves/
PARAMS = "params"
#: zstd level 1: on mean-model curves it wrote noticeably faster than level 3, with files
#: slightly larger (figures in benchmarks/README.md, table of changes); the writer shares
#: the CPU with the compute.
PARQUET_OPTS = dict(compression="zstd", compression_level=1, write_statistics=True)
CURVES_ROW_GROUP = 1 << 20


class StoreError(JaxdynError, RuntimeError):
    """A problem with the output folder; ``str(err)`` is the message for the user."""


# ---- the on-disk layout (docs/format.md): every name is defined here, once -----------------
MANIFEST = "manifest.json"
RUNS, CURVES = "runs", "curves"   # PARAMS ("params") above: parameter snapshots
TABLES = (RUNS, CURVES, PARAMS)
PART_GLOB = "part-*.parquet"
#: the static group of a part, from its name (parts of one group share one schema)
PART_GROUP_RE = re.compile(r"^part-(g\d+)-")
PROGRESS_GLOB = "progress-*.json"
TMP_PREFIX = ".tmp-"


def part_name(group_index: int, process_index: int, first_run_id: str) -> str:
    """A chunk's part file name (the same in runs/, curves/ and params/): its group, the
    process that wrote it, its first run_id and a random suffix."""
    return (f"part-g{group_index:03d}-p{process_index}-{first_run_id}-"
            f"{uuid.uuid4().hex[:6]}.parquet")


def progress_name(process_index: int) -> str:
    return f"progress-{process_index}.json"


def lock_name(sweep_name: str, process_index: int = 0) -> str:
    """The write lock of a sweep, in the results root (beside, not inside, its folder: a
    folder moved aside by --force keeps no lock)."""
    return f".{sweep_name}.lock" + (f".{process_index}" if process_index else "")


def lock_files(root: Path, sweep_name: str) -> list[Path]:
    """Every write lock of a sweep (process 0's and the other processes')."""
    base = lock_name(sweep_name)
    return [p for p in Path(root).glob(glob.escape(base) + "*")
            if p.name == base or p.name.startswith(base + ".")]


def moved_aside_name(sweep_name: str) -> str:
    return f"{sweep_name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"


def is_sweep_folder(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def committed_parts(folder: str | Path, *tables: str) -> tuple[list[Path], ...]:
    """A consistent snapshot of a sweep's part files: the runs parts present now, then the
    parts of the other ``tables`` (default curves) of those same chunks only — never a part
    whose chunk is not committed (a chunk's runs part is renamed into place last)."""
    folder = Path(folder)
    runs = sorted((folder / RUNS).glob(PART_GLOB))
    names = {p.name for p in runs}
    others = [sorted(p for p in (folder / t).glob(PART_GLOB) if p.name in names)
              for t in (tables or (CURVES,))]
    return (runs, *others)


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a sweep folder; StoreError for a missing or unreadable one, or a
    schema version this jaxdyn does not read."""
    path = Path(folder) / MANIFEST
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{folder}: no {MANIFEST} (not a sweep folder, or it was moved)") \
            from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(m, dict):
        raise StoreError(f"{path}: unreadable manifest (not a JSON object)")
    v = m.get("schema_version")
    if v != SCHEMA_VERSION:
        if isinstance(v, int) and v > SCHEMA_VERSION:
            hint = "a newer jaxdyn wrote them: upgrade jaxdyn to read them"
        else:
            hint = (f"an older jaxdyn wrote them (git rev {m.get('git_rev') or 'unknown'}, "
                    f"jaxdyn {m.get('jaxdyn_version', 'unknown')}): read them with that "
                    f"version, or re-run the sweep")
        raise StoreError(f"{folder}: tables have schema version {v}; this jaxdyn reads "
                         f"version {SCHEMA_VERSION} only; {hint}")
    return m


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _write_parquet_tmp(table: pa.Table, final: Path, **kw) -> Path:
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}")
    with open(tmp, "wb") as f:
        # no Arrow schema in the file: readers see plain Parquet types (run_id a string).
        # Dictionary encoding only for the string columns: tried on float metric columns
        # it almost never pays and took half the writer's time (without it, writing curve
        # rows took half as long and the files were smaller; figures in
        # benchmarks/README.md, table of changes).
        dict_cols = [fld.name for fld in table.schema
                     if pa.types.is_string(fld.type) or pa.types.is_dictionary(fld.type)]
        pq.write_table(table, f, store_schema=False, use_dictionary=dict_cols,
                       **PARQUET_OPTS, **kw)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def git_rev() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class SweepStore:
    """The output folder of one sweep, opened for writing by one process at a time."""

    def __init__(self, out_root: str | Path, name: str):
        self.root = Path(out_root)
        self.name = name
        self.dir = self.root / name
        self._lock_fd: int | None = None
        self.process_index = 0
        self.moved_aside: Path | None = None

    # ---- opening ------------------------------------------------------------------------
    def open(self, sweep, manifest_extra: dict | None = None, *, force: bool = False) -> None:
        """Create or reopen the folder for ``sweep``: lock it, check the manifest, clean up.

        Raises StoreError if another process holds the sweep, the folder holds a different
        sweep (unless ``force``: then the old folder is moved aside, never deleted), or the
        folder cannot be written.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create output folder {self.root}: {e.strerror}") from None
        self._refuse_symlinks()
        self._lock()
        man_path = self.dir / MANIFEST
        if man_path.exists():
            old = self.manifest()
            src_old = (old.get("experiment_source") or {}).get("sha256")
            src_new = ((manifest_extra or {}).get("experiment_source") or {}).get("sha256")
            if old.get("hash") != sweep.hash or src_old != src_new:
                if not force:
                    self.close()
                    if old.get("hash") != sweep.hash:
                        raise StoreError(
                            f"{self.dir} holds results of a different sweep file (hash "
                            f"{old.get('hash')}, this one {sweep.hash}). Give the sweep a new "
                            f"'name', use --out, or pass --force to move the old results "
                            f"aside and start again.")
                    file = ((manifest_extra or {}).get("experiment_source") or {}).get("file")
                    raise StoreError(
                        f"{self.dir} holds results of this sweep made by another version of "
                        f"its experiment code ({file or 'the experiment'}: sha256 "
                        f"{str(src_old)[:12]} then, {str(src_new)[:12]} now). Resuming would "
                        f"mix the two; give the sweep a new 'name', use --out, or pass "
                        f"--force to move the old results aside and start again.")
                aside = self.root / moved_aside_name(self.name)
                n = 1
                while aside.exists():  # --force twice within a second
                    aside, n = self.root / f"{moved_aside_name(self.name)}-{n}", n + 1
                os.replace(self.dir, aside)
                self.moved_aside = aside
        try:
            (self.dir / RUNS).mkdir(parents=True, exist_ok=True)
            (self.dir / CURVES).mkdir(parents=True, exist_ok=True)
            if not man_path.exists():
                manifest = {
                    "schema_version": SCHEMA_VERSION,
                    "name": sweep.name,
                    "experiment": sweep.experiment,
                    "hash": sweep.hash,
                    "sweep": sweep.doc,
                    "source": sweep.source,
                    "source_file": sweep.file,
                    "runs_total": sweep.n_runs(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "host": platform.node(),
                    "git_rev": git_rev(),
                    **(manifest_extra or {}),
                }
                atomic_write_bytes(man_path, json.dumps(manifest, indent=2, default=str)
                                   .encode())
        except OSError as e:
            self.close()
            raise StoreError(f"cannot write to {self.dir}: {e.strerror}") from None
        self._cleanup()

    def join(self, sweep, process_index: int) -> None:
        """Open the folder as process ``process_index`` > 0 of a multi-process run, after
        process 0 has opened it (created or checked the manifest, cleaned up)."""
        self.process_index = process_index
        self._refuse_symlinks()
        self._lock(lock_name(self.name, process_index))
        try:
            man = self.manifest()
        except (OSError, ValueError):
            self.close()
            raise StoreError(f"{self.dir}: no manifest after process 0 opened the sweep") \
                from None
        if man.get("hash") != sweep.hash:
            self.close()
            raise StoreError(f"{self.dir} holds a different sweep (hash {man.get('hash')}, "
                             f"this process has {sweep.hash}); every process must run the "
                             f"same file with the same --set")

    def _refuse_symlinks(self) -> None:
        """Nothing is written through a symbolic link: not the sweep folder, nor its
        ``runs``, ``curves`` or ``manifest.json`` (a link there would send parts, or the
        manifest check, to another place)."""
        for p in (self.dir, self.dir / RUNS, self.dir / CURVES, self.dir / PARAMS,
                  self.dir / MANIFEST):
            if p.is_symlink():
                raise StoreError(f"{p} is a symbolic link; refusing to write through it")

    def _lock(self, lock: str | None = None) -> None:
        lock_path = self.root / (lock or lock_name(self.name))
        try:
            # O_NOFOLLOW: a planted link must not make us create or open a file elsewhere
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreError(f"{lock_path} is a symbolic link; refusing to write through "
                                 f"it") from None
            raise StoreError(f"cannot write to {self.root}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"sweep '{self.name}' in {self.root} is being run by another "
                             f"process; wait for it to finish (jaxdyn status {self.name}) "
                             f"or use another --out") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _cleanup(self) -> None:
        """Remove what a killed writer left: temporary files, curves (and params) parts
        without their runs part."""
        for sub in (*TABLES, "."):
            for p in (self.dir / sub).glob(TMP_PREFIX + "*"):
                p.unlink(missing_ok=True)
        committed = {p.name for p in (self.dir / RUNS).glob(PART_GLOB)}
        for sub in (CURVES, PARAMS):
            for p in (self.dir / sub).glob(PART_GLOB):
                if p.name not in committed:
                    p.unlink()

    # ---- reading ------------------------------------------------------------------------
    def manifest(self) -> dict:
        return json.loads((self.dir / MANIFEST).read_text())

    def done_run_ids(self) -> set[str]:
        done: set[str] = set()
        for p in sorted((self.dir / RUNS).glob(PART_GLOB)):
            done.update(pq.read_table(p, columns=["run_id"]).column(0).to_pylist())
        return done

    def progress(self) -> list[dict]:
        """Progress records of the processes that ran (or are running) this sweep."""
        out = []
        for p in sorted(self.dir.glob(PROGRESS_GLOB)):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                continue
        return out

    # ---- writing ------------------------------------------------------------------------
    def write_progress(self, state: dict, process_index: int = 0) -> None:
        """Progress of this process (chunks/runs done of its share, start time), for
        ``jaxdyn status``; written atomically."""
        try:
            atomic_write_bytes(self.dir / progress_name(process_index),
                               json.dumps({**state, "updated": time.time()}).encode())
        except OSError:
            pass  # progress is informational; a full disk shows up on the next part

    def write_chunk(self, sweep, exp, group, chunk, log_steps, curves: dict, final: dict,
                    alive: np.ndarray, diverged_step: np.ndarray, wall_s: float,
                    params: list | None = None, extra: dict | None = None) -> str:
        """Write one finished chunk as a runs part, a curves part and (with ``params``, a
        list of ``(path, leaf array)``) a params part, atomically: the runs part last.
        ``extra``: more runs columns, ``{name: int array per run}`` (masked: null)."""
        runs_tbl, curves_tbl = chunk_tables(sweep, exp, group, chunk, log_steps, curves, final,
                                            alive, diverged_step, wall_s, extra)
        name = part_name(group.index, self.process_index, chunk[0].run_id)
        runs_final = self.dir / RUNS / name
        others = [(curves_tbl, self.dir / CURVES / name)]
        if params is not None:
            (self.dir / PARAMS).mkdir(exist_ok=True)
            others.append((params_table(sweep, group, chunk, log_steps, params),
                           self.dir / PARAMS / name))
        tmps: list[Path] = []
        try:
            for tbl, final_path in others:
                tmps.append(_write_parquet_tmp(tbl, final_path,
                                               row_group_size=CURVES_ROW_GROUP))
            tmps.append(_write_parquet_tmp(runs_tbl, runs_final))
            for tmp, (_, final_path) in zip(tmps, others):
                os.replace(tmp, final_path)
                _fsync_dir(final_path.parent)
            os.replace(tmps[-1], runs_final)  # the commit point of this chunk
            _fsync_dir(runs_final.parent)
        except OSError as e:
            for t in tmps:
                t.unlink(missing_ok=True)
            if not runs_final.exists():
                for _, final_path in others:
                    final_path.unlink(missing_ok=True)
            hint = " (disk full)" if e.errno == errno.ENOSPC else ""
            raise StoreError(f"writing a part to {self.dir} failed{hint}: {e.strerror}; "
                             f"completed parts are intact, re-run to resume") from None
        return name


def param_column(path: str) -> str:
    """The params-table column of a pytree leaf path (``jax.tree_util.keystr``):
    ``['params']['w'][0]`` -> ``params.w.0``, ``.layers[1].weight`` -> ``layers.1.weight``."""
    import re

    bits = re.findall(r"\['([^']*)'\]|\[\"([^\"]*)\"\]|\[(\d+)\]|\.(\w+)", path)
    return ".".join(next(b for b in g if b) for g in bits) or "params"


def params_table(sweep, group, chunk, log_steps, params: list) -> pa.Table:
    """One row per run (``save.params = "final"``: at the last step) or per (run, logged
    step) (``"log"``); a list column per leaf, its values flattened in C order (shapes in
    the manifest's ``params_layout``)."""
    order = np.argsort([r.run_id for r in chunk], kind="stable")
    ids = [chunk[i].run_id for i in order]
    n = len(ids)
    per_log = sweep.save_params == "log"
    steps = np.asarray(log_steps, np.int64) if per_log else np.asarray([sweep.steps])
    k = len(steps)
    cols: dict[str, Any] = {
        "run_id": pa.array(np.repeat(ids, k).tolist(), pa.string()),
        "group": pa.array([group.label] * (n * k), pa.string()),
        "step": pa.array(np.tile(steps, n)),
    }
    for path, leaf in params:
        v = np.asarray(leaf)[order]
        flat = v.reshape(n * k, -1)
        width = flat.shape[1]
        cols[param_column(path)] = pa.ListArray.from_arrays(
            pa.array(np.arange(0, n * k * width + 1, width, dtype=np.int32)),
            pa.array(flat.reshape(-1)))
    return pa.table(cols)


def _hp_column(param, values: list) -> pa.Array:
    t = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}[param.type]
    return pa.array(values, type=t)


def _metric_column(values: np.ndarray) -> pa.Array:
    """A scalar metric as a float column; an array metric as a fixed-size list column."""
    if values.ndim == 1:
        return pa.array(values)
    width = int(np.prod(values.shape[1:]))
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def chunk_tables(sweep, exp, group, chunk, log_steps, curves, final, alive, diverged_step,
                 wall_s, extra: dict | None = None) -> tuple[pa.Table, pa.Table]:
    """Arrow tables of one chunk, rows sorted by run_id (and step) for fast lookups. The
    engine dispatches chunks in run_id order, so the reordering copy is usually skipped."""
    ids = [r.run_id for r in chunk]
    if all(a < b for a, b in zip(ids, ids[1:])):
        order, runs = slice(None), list(chunk)  # a slice: the arrays below are views
    else:
        order = np.argsort(ids, kind="stable")
        runs, ids = [chunk[i] for i in order], [ids[i] for i in order]
    alive = np.asarray(alive)[order]
    dstep = np.asarray(diverged_step)[order]
    n, n_log = len(runs), len(log_steps)
    cols: dict[str, Any] = {
        "run_id": pa.array(ids, pa.string()),
        "group": pa.array([group.label] * n, pa.string()),
        "seed": pa.array([r.seed for r in runs], pa.int64()),
    }
    for p in exp.params:
        cols[p.name] = _hp_column(p, [r.hp[p.name] for r in runs])
    cols["status"] = pa.array(np.where(alive, "ok", "diverged").tolist(), pa.string())
    cols["diverged_step"] = pa.array(np.where(alive, 0, dstep), pa.int64(), mask=alive)
    for k, v in final.items():
        v = np.asarray(v)[order]
        if v.ndim == 1:
            cols[f"final_{k}"] = pa.array(v)
    cols["wall_s"] = pa.array(np.full(n, wall_s), pa.float64())
    for k, v in (extra or {}).items():  # adaptive sweeps: round, stopped_step
        v = v[order]
        cols[k] = pa.array(np.ma.getdata(v), pa.int64(), mask=np.ma.getmaskarray(v))
    runs_tbl = pa.table(cols)

    # run_id repeats n_log times: build it as a dictionary column (cheap), stored as a plain
    # string column (Parquet dictionary-encodes it anyway; store_schema=False on write).
    ccols: dict[str, Any] = {
        "run_id": pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(n, dtype=np.int32), n_log)),
            pa.array(ids, pa.string())),
        "step": pa.array(np.tile(np.asarray(log_steps, np.int64), n)),
    }
    for k, v in curves.items():
        v = np.asarray(v)[order]  # (n, n_log, *shape)
        ccols[k] = _metric_column(v.reshape((n * n_log,) + v.shape[2:]))
    return runs_tbl, pa.table(ccols)

"""The Parquet results store: one folder per sweep, atomic part files, manifest, resume.

    <out>/<name>/manifest.json          the sweep as run, its hash, versions, device, git rev
    <out>/<name>/runs/part-*.parquet    one row per run
    <out>/<name>/curves/part-*.parquet  one row per (run_id, logged step)
    <out>/<name>/damaged/               parts found damaged on resume, moved aside

A chunk's two parts share one file name, which carries each part's row count (the per-part
record, written atomically with the part by its rename). Each is written under a hidden temporary name,
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
from dataclasses import dataclass, field
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
#: where resume moves parts that fail their check (``damaged/<table>/<part name>``)
DAMAGED = "damaged"
#: the row counts in a part name: ``-r<runs rows>c<curves rows>[p<params rows>].parquet``
PART_ROWS_RE = re.compile(r"-r(\d+)c(\d+)(?:p(\d+))?\.parquet$")


def part_name(group_index: int, process_index: int, first_run_id: str,
              rows: dict[str, int] | None = None) -> str:
    """A chunk's part file name (the same in runs/, curves/ and params/): its group, the
    process that wrote it, its first run_id, a random suffix and (``rows``: ``{table: row
    count}``) the row count of each of its parts, which resume checks against the files."""
    counts = ""
    if rows is not None:
        counts = f"-r{rows[RUNS]}c{rows[CURVES]}" + (f"p{rows[PARAMS]}" if PARAMS in rows
                                                      else "")
    return (f"part-g{group_index:03d}-p{process_index}-{first_run_id}-"
            f"{uuid.uuid4().hex[:6]}{counts}.parquet")


def part_rows(name: str) -> dict[str, int] | None:
    """The row counts a part name records (``None`` for names written before they did)."""
    m = PART_ROWS_RE.search(name)
    if not m:
        return None
    rows = {RUNS: int(m.group(1)), CURVES: int(m.group(2))}
    if m.group(3) is not None:
        rows[PARAMS] = int(m.group(3))
    return rows


@dataclass
class PartCheck:
    """What :func:`check_parts` found in a sweep folder.

    ``run_ids`` maps each sound runs part to its run_ids, ``statuses`` to its ``status``
    column; ``damaged`` maps a chunk's part name to why it failed (unreadable footer, a row
    count other than its name records, a missing sibling part, runs already in another
    part); ``orphans`` are curves/params parts whose runs part (the commit) is absent."""

    run_ids: dict[str, list] = field(default_factory=dict)
    statuses: dict[str, list] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)
    orphans: dict[str, list] = field(default_factory=dict)  # name -> [tables]

    @property
    def done(self) -> set:
        return {r for ids in self.run_ids.values() for r in ids}


def _footer_rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows


def check_parts(folder: str | Path, *, with_status: bool = False) -> PartCheck:
    """Open every part's footer (cheap: no data pages but the runs parts' ``run_id``) and
    check it against the row counts its name records; nothing is changed on disk."""
    folder = Path(folder)
    out = PartCheck()
    names = {t: {p.name for p in (folder / t).glob(PART_GLOB)} for t in TABLES}
    seen: dict[str, str] = {}
    for name in sorted(names[RUNS]):
        rows = part_rows(name)
        try:
            f = pq.ParquetFile(folder / RUNS / name)
            n = f.metadata.num_rows
            if rows is not None and n != rows[RUNS]:
                raise ValueError(f"runs part has {n} rows, its name records {rows[RUNS]}")
            cols = ["run_id", "status"] if with_status else ["run_id"]
            tbl = f.read(columns=cols)
            for t in (CURVES, PARAMS):
                want = None if rows is None else rows.get(t)
                if t == CURVES or want is not None:
                    if name not in names[t]:
                        raise ValueError(f"its {t} part is missing")
                if name in names[t]:
                    m = _footer_rows(folder / t / name)
                    if want is not None and m != want:
                        raise ValueError(f"{t} part has {m} rows, its name records {want}")
        except FileNotFoundError:
            continue  # moved away while we looked (a concurrent --force)
        except (pa.ArrowInvalid, OSError, ValueError) as e:
            out.damaged[name] = str(e).splitlines()[0]
            continue
        ids = tbl.column("run_id").to_pylist()
        dup = next((r for r in ids if r in seen), None)
        if dup is not None:
            out.damaged[name] = f"holds runs already in {seen[dup]} (run {dup})"
            continue
        for r in ids:
            seen[r] = name
        out.run_ids[name] = ids
        if with_status:
            out.statuses[name] = tbl.column("status").to_pylist()
    for t in (CURVES, PARAMS):
        for name in sorted(names[t] - names[RUNS]):
            out.orphans.setdefault(name, []).append(t)
    return out


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


def _looks_whole(path: Path) -> bool:
    """A Parquet file's magic bytes at both ends (one small read): a truncated part fails."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(-4, os.SEEK_END)
            return head == b"PAR1" and f.read(4) == b"PAR1"
    except FileNotFoundError:
        return True  # moved away meanwhile: the reader says so
    except OSError:
        return False


def committed_parts(folder: str | Path, *tables: str,
                    skipped: list | None = None) -> tuple[list[Path], ...]:
    """A consistent snapshot of a sweep's part files: the runs parts present now, then the
    parts of the other ``tables`` (default curves) of those same chunks only — never a part
    whose chunk is not committed (a chunk's runs part is renamed into place last). A chunk
    with a truncated part (or a missing curves part) is left out of every table; its name is
    appended to ``skipped`` (``jaxdyn run`` moves it aside and re-runs its runs)."""
    folder = Path(folder)
    tables = tables or (CURVES,)
    runs = sorted((folder / RUNS).glob(PART_GLOB))
    present = {t: {p.name for p in (folder / t).glob(PART_GLOB)} for t in tables}
    bad = set()
    for p in runs:
        if (not _looks_whole(p) or (CURVES in present and p.name not in present[CURVES])
                or any(p.name in present[t] and not _looks_whole(folder / t / p.name)
                       for t in tables)):
            bad.add(p.name)
    if skipped is not None:
        skipped.extend(sorted(bad))
    runs = [p for p in runs if p.name not in bad]
    names = {p.name for p in runs}
    others = [sorted(folder / t / n for n in present[t] & names) for t in tables]
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
        #: what :meth:`open` moved to ``damaged/``: ``{part name: why}``
        self.repaired: dict[str, str] = {}
        self._done: set[str] | None = None

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
        why_replace = None
        if man_path.exists() or man_path.is_symlink():
            try:
                old = read_manifest(self.dir)
            except StoreError as e:
                if not force:
                    self.close()
                    raise StoreError(f"{e}. Pass --force to move the folder aside (nothing "
                                     f"is deleted) and start again, or use another --out"
                                     ) from None
                old, why_replace = None, "unreadable manifest"
            if old is not None:
                src_old = (old.get("experiment_source") or {}).get("sha256")
                src_new = ((manifest_extra or {}).get("experiment_source") or {}).get("sha256")
                if old.get("hash") != sweep.hash or src_old != src_new:
                    if not force:
                        self.close()
                        if old.get("hash") != sweep.hash:
                            raise StoreError(
                                f"{self.dir} holds results of a different sweep file (hash "
                                f"{old.get('hash')}, this one {sweep.hash}). Give the sweep a "
                                f"new 'name', use --out, or pass --force to move the old "
                                f"results aside and start again.")
                        file = ((manifest_extra or {}).get("experiment_source") or {}
                                ).get("file")
                        raise StoreError(
                            f"{self.dir} holds results of this sweep made by another version "
                            f"of its experiment code ({file or 'the experiment'}: sha256 "
                            f"{str(src_old)[:12]} then, {str(src_new)[:12]} now). Resuming "
                            f"would mix the two; give the sweep a new 'name', use --out, or "
                            f"pass --force to move the old results aside and start again.")
                    why_replace = "different sweep"
        elif self.dir.is_dir() and any(self.dir.iterdir()):
            # parts without a manifest: whose they are is unknown, so they are never adopted
            n = sum(1 for t in TABLES for _ in (self.dir / t).glob(PART_GLOB))
            if not force:
                self.close()
                raise StoreError(
                    f"{self.dir} exists without its {MANIFEST} ({n} part files in it): it "
                    f"may hold another sweep's results, so they are not adopted. Pass "
                    f"--force to move the folder aside (nothing is deleted) and start "
                    f"again, or use another --out")
            why_replace = "no manifest"
        if why_replace is not None:
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
        self._repair()

    def join(self, sweep, process_index: int) -> None:
        """Open the folder as process ``process_index`` > 0 of a multi-process run, after
        process 0 has opened it (created or checked the manifest, cleaned up)."""
        self.process_index = process_index
        self._refuse_symlinks()
        self._lock(lock_name(self.name, process_index))
        try:
            man = self.manifest()
        except StoreError:
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
        """Remove what a killed writer left half-written: temporary files. (Complete parts
        whose chunk never committed are moved aside by :meth:`_repair`.)"""
        for sub in (*TABLES, "."):
            for p in (self.dir / sub).glob(TMP_PREFIX + "*"):
                p.unlink(missing_ok=True)

    def _repair(self) -> None:
        """Check every part (:func:`check_parts`); move a damaged chunk's parts and orphan
        parts to ``damaged/<table>/`` (never deleted), so that their runs are run again."""
        check = check_parts(self.dir)
        moves = {name: [t for t in TABLES if (self.dir / t / name).exists()]
                 for name in check.damaged}
        for name, tables in check.orphans.items():
            moves[name] = tables
            check.damaged[name] = (f"{' and '.join(tables)} part without its runs part (a "
                                   f"chunk killed while committing, or a deleted runs part)")
        try:
            for name, tables in moves.items():
                for t in tables:
                    dest = self.dir / DAMAGED / t
                    dest.mkdir(parents=True, exist_ok=True)
                    os.replace(self.dir / t / name, dest / name)
                _fsync_dir(self.dir / DAMAGED)
        except OSError as e:
            self.close()
            raise StoreError(f"cannot move damaged parts of {self.dir} aside: {e.strerror}") \
                from None
        self.repaired = dict(check.damaged)
        self._done = check.done

    # ---- reading ------------------------------------------------------------------------
    def manifest(self) -> dict:
        return read_manifest(self.dir)

    def done_run_ids(self) -> set[str]:
        """The runs of the sound parts (checked when the folder was opened)."""
        if self._done is not None:
            return set(self._done)
        return check_parts(self.dir).done

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
        tables = {RUNS: runs_tbl, CURVES: curves_tbl}
        if params is not None:
            (self.dir / PARAMS).mkdir(exist_ok=True)
            tables[PARAMS] = params_table(sweep, group, chunk, log_steps, params)
        name = part_name(group.index, self.process_index, chunk[0].run_id,
                         rows={t: tbl.num_rows for t, tbl in tables.items()})
        runs_final = self.dir / RUNS / name
        others = [(tables[t], self.dir / t / name) for t in (CURVES, PARAMS) if t in tables]
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
            if self._done is not None:
                self._done.update(r.run_id for r in chunk)
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

"""Finding and reading a sweep's files: names, manifest, committed parts, their schema.

Owns: resolving a sweep name to its folder, the manifest check (through the store, which
defines the layout), the snapshot of committed parts a reader works on, and turning read
errors into one :class:`QueryError`.

Must not: write anything, or know a file name the store does not define.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from jaxdyn import store
from jaxdyn.spec import JaxdynError

DEFAULT_ROOT = Path("results")


class QueryError(JaxdynError, RuntimeError):
    """Unknown sweep, bad SQL, unreadable tables; ``str(err)`` is the user's message."""


def resolve(name_or_dir: str | Path, root: str | Path | None = None) -> Path:
    """A sweep folder from a name under ``root`` (default ``results/``) or a path."""
    if not isinstance(name_or_dir, (str, Path)):
        raise QueryError(f"expected a sweep name or folder, got {name_or_dir!r}")
    p = Path(name_or_dir)
    if (p / store.MANIFEST).exists():
        return p
    root = Path(root) if root is not None else DEFAULT_ROOT
    q = root / str(name_or_dir)
    if (q / store.MANIFEST).exists():
        return q
    known = ", ".join(sweep_names(root)) or "none"
    raise QueryError(f"no sweep '{name_or_dir}' (looked for {p}/{store.MANIFEST} and "
                     f"{q}/{store.MANIFEST}); sweeps under {root}: {known}")


def sweep_names(root: str | Path | None = None) -> list[str]:
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if store.is_sweep_folder(p))


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a sweep folder; refuses a layout this jaxdyn does not read."""
    try:
        return store.read_manifest(folder)
    except store.StoreError as e:
        raise QueryError(str(e)) from None


class DamagedPartsWarning(UserWarning):
    """Some of a sweep's parts are damaged; they were left out of what was read."""


def committed_parts(folder: str | Path, *tables: str) -> tuple[list[Path], ...]:
    """The runs parts present now and the parts of ``tables`` (default curves) of those
    chunks only (:func:`jaxdyn.store.committed_parts`); damaged chunks are left out with a
    :class:`DamagedPartsWarning` that says how to repair them."""
    skipped: list[str] = []
    out = store.committed_parts(folder, *tables, skipped=skipped)
    if skipped:
        warnings.warn(DamagedPartsWarning(
            f"sweep {Path(folder).name}: {len(skipped)} damaged part(s) left out of what was "
            f"read ({skipped[0]}{', ...' if len(skipped) > 1 else ''}); 'jaxdyn status "
            f"{Path(folder).name}' shows them, 'jaxdyn run' of its sweep file repairs them"),
            stacklevel=3)
    return out


def _schema(files: Sequence[Path]) -> pa.Schema:
    """Union of the part schemas: one footer per static group (parts of a group share it)."""
    reps: dict[str, Path] = {}
    for f in files:
        m = store.PART_GROUP_RE.match(f.name)
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

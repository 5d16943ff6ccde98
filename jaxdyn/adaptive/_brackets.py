"""Brackets: neighbouring values of the refined axis (same seed, same other
hyperparameters) where the ``[refine]`` predicate differs. No JAX: read by the refine loop,
:meth:`jaxdyn.Results.boundaries` and ``jaxdyn status``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Hashable, Iterable

import numpy as np

#: runs-table columns that are not hyperparameters
RESERVED = {"sweep", "run_id", "group", "seed", "status", "diverged_step", "wall_s", "round",
            "stopped_step", "culled_step", "trial", "batch"}


def find(items: Iterable[tuple[Hashable, float, bool, Any]]) -> list[tuple]:
    """``items``: ``(group key, axis value, hit, payload)``. Returns ``(key, lo, hi, hit_lo,
    hit_hi, payload_lo, payload_hi)`` for every pair of neighbouring values of one key whose
    hits differ, in a fixed order (keys by repr, then by value)."""
    groups: dict = {}
    for key, x, hit, p in items:
        groups.setdefault(key, []).append((x, bool(hit), p))
    out = []
    for key in sorted(groups, key=repr):
        lst = sorted(groups[key], key=lambda t: t[0])
        for (x0, h0, p0), (x1, h1, p1) in zip(lst, lst[1:]):
            if h0 != h1:
                out.append((key, x0, x1, h0, h1, p0, p1))
    return out


def inner(lo, hi, points: int, spacing: str, integer: bool) -> list:
    """``points`` new values strictly inside (lo, hi), log- or linear-spaced; for an integer
    axis rounded and deduplicated (none left once lo and hi are neighbours)."""
    if spacing == "log":
        v = np.geomspace(lo, hi, points + 2)[1:-1]
    else:
        v = np.linspace(lo, hi, points + 2)[1:-1]
    if integer:
        vals = sorted({int(x) for x in np.round(v)})
        return [x for x in vals if lo < x < hi]
    return sorted({float(x) for x in v if lo < float(x) < hi})


def rel_width(lo: float, hi: float) -> float:
    """A bracket's width relative to its (geometric, if positive) middle."""
    mid = math.sqrt(lo * hi) if lo > 0 and hi > 0 else (lo + hi) / 2
    return (hi - lo) / abs(mid) if mid else math.inf


def boundaries(folder: str | Path, refine: dict | None = None):
    """Every bracket of a refined sweep's committed runs: a DataFrame with ``seed``, the
    other hyperparameters that vary, ``lo``, ``hi`` (the axis values either side),
    ``hit_lo``, ``hit_hi``, ``width``, ``rel_width``, ``mid`` (geometric for a log axis),
    ``run_id_lo``, ``run_id_hi``."""
    import pandas as pd

    from jaxdyn.adaptive._predicate import evaluate_where
    from jaxdyn.results.files import QueryError, read_manifest
    from jaxdyn.results.tables import Results

    folder = Path(folder)
    if refine is None:
        refine = (read_manifest(folder).get("sweep") or {}).get("refine")
    if not refine:
        raise QueryError(f"{folder.name}: the sweep has no [refine] table, so it has no "
                         f"brackets")
    axis = refine["axis"]
    runs = Results(folder).runs
    cols = ["seed", "lo", "hi", "hit_lo", "hit_hi", "width", "rel_width", "mid",
            "run_id_lo", "run_id_hi"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    hits = evaluate_where(folder, refine["where"])
    hp = [c for c in runs.columns if c not in RESERVED and c != axis
          and not c.startswith("final_")]
    varying = [c for c in hp if runs[c].nunique(dropna=False) > 1]
    keys = [tuple(repr(v) for v in row) for row in runs[["seed", *hp]].itertuples(index=False)]
    idx = {k: i for i, k in enumerate(keys)}  # a row of each key, for its values
    found = find((k, x, hits[r], r) for k, x, r in zip(keys, runs[axis].tolist(),
                                                       runs["run_id"].tolist()))
    rows = []
    for key, lo, hi, h0, h1, r0, r1 in found:
        first = runs.iloc[idx[key]]
        mid = math.sqrt(lo * hi) if refine.get("spacing") == "log" else (lo + hi) / 2
        rows.append({"seed": int(first["seed"]), **{c: first[c] for c in varying},
                     "lo": lo, "hi": hi, "hit_lo": h0, "hit_hi": h1, "width": hi - lo,
                     "rel_width": rel_width(lo, hi), "mid": mid, "run_id_lo": r0,
                     "run_id_hi": r1})
    return pd.DataFrame(rows, columns=["seed", *varying, *cols[1:]])


def summary(folder: str | Path, refine: dict) -> dict:
    """For status and the run summary: bracket count and widths, rounds found in the table."""
    import pyarrow.parquet as pq

    from jaxdyn.results.files import committed_parts

    b = boundaries(folder, refine)
    runs_files, _ = committed_parts(folder)
    rounds = []
    for p in runs_files:
        t = pq.read_table(p, columns=["round"]) if "round" in pq.read_schema(p).names else None
        if t is not None:
            rounds += t.column(0).to_pylist()
    per_round = {int(r): rounds.count(r) for r in sorted(set(rounds))}
    return {"brackets": int(len(b)),
            "rel_width_max": float(b["rel_width"].max()) if len(b) else None,
            "rel_width_median": float(b["rel_width"].median()) if len(b) else None,
            "width_max": float(b["width"].max()) if len(b) else None,
            "runs_per_round": per_round, "rounds": int(refine["rounds"])}

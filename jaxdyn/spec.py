"""Sweep files: parse and validate them into a :class:`~jaxdyn.sweep_types.Sweep`.

Owns: the sweep-file schema and every message about a file's keys (file, key, what was
expected, "did you mean"), ``--set`` overrides, range tables, the run-count limits checked
before anything is expanded, and the optimizer/schedule keys (through ``jaxdyn.optim``).
What a validated sweep *is* (and how it expands into runs) lives in ``jaxdyn.sweep_types``;
its names are re-exported here.

Pure Python (no JAX): a sweep file is data, never executed. Everything that can be
wrong with a file is found here, before anything is compiled or written, and reported as
one :class:`SpecError` naming the file, the key and what was expected.

A sweep file (TOML)::

    name = "eos_mean_model"            # output goes to <out>/<name>/
    experiment = "eos.mean_model"
    steps = 10000
    seeds = 4                           # a count (seeds 0..n-1) or a list of ints
    log = { every = 100 }               # or { points = 200, spacing = "log" }
    precision = "float32"               # or "float64"
    [fixed]                             # same value for every run
    init_scale = 0.01
    [grid]                              # cartesian product: a list, or a range table
    lr = { start = 1e-4, stop = 1e-1, num = 1024, spacing = "log" }
    d = [50, 100, 200]
    [zip]                               # equal-length lists that vary together
    [sample]                            # a seeded random subset of the grid points
    fraction = 0.025                    # or count = 5000
    seed = 0
"""

from __future__ import annotations

import difflib
import math
import tomllib
from fractions import Fraction
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxdyn.sweep_types import (MAX_LOG_POINTS, MAX_RUN_STEPS_UNCONFIRMED, MAX_RUNS,
                                MAX_RUNS_UNCONFIRMED, NAME_RE, PRECISIONS,
                                SAVE_PARAMS, SCHEMA_KEYS, JaxdynError, LogSchedule, Param,
                                Run, SpecError, Sweep, TooLarge, TooManyRuns,
                                _INT_RANGE_EXPAND,
                                run_id, run_key)

__all__ = ["MAX_RUNS", "MAX_RUNS_UNCONFIRMED", "PRECISIONS", "SCHEMA_KEYS", "JaxdynError",
           "LogSchedule", "Param", "Run", "SpecError", "Sweep", "TooLarge", "TooManyRuns",
           "load", "parse",
           "run_id", "run_key", "validate"]


# ---- parsing ------------------------------------------------------------------------------
def _closest(word: str, options: Sequence[str]) -> str:
    m = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _int(file, key, v, minimum=None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(file, key, f"expected an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise SpecError(file, key, f"expected an integer >= {minimum}, got {v}")
    return v


@dataclass(frozen=True)
class _Range:
    """A validated range table not expanded yet: ``length`` points (for an integer range an
    upper bound: rounding may merge points), expanded by :meth:`values` once the run count
    has been checked."""

    file: Any
    key: str
    start: float
    stop: float
    num: int
    spacing: str
    param: Param

    @property
    def length(self) -> int:
        return self.num

    @property
    def exact(self) -> bool:
        return self.param.type is not int

    def values(self) -> list:
        vals = (np.geomspace(self.start, self.stop, self.num) if self.spacing == "log"
                else np.linspace(self.start, self.stop, self.num))
        if self.param.type is int:
            vals = np.unique(np.round(vals).astype(np.int64))
        return _coerce_all(self.file, self.key, [v.item() for v in vals], self.param)


def _coerce_all(file, key: str, values: list, param: Param) -> list:
    if not values:
        raise SpecError(file, key, "empty list: a grid axis needs at least one value")
    return [param.coerce(v, file, f"{key}[{i}]") for i, v in enumerate(values)]


def _axis_values(file, key: str, spec, param: Param) -> list | _Range:
    """A grid axis: a non-empty list, or a range table {start, stop, num, spacing}.

    A range table is checked but returned unexpanded (a :class:`_Range`) unless it is an
    integer range of at most ``_INT_RANGE_EXPAND`` points: ``num`` may be huge, and the run
    count must be checked before anything of that size is allocated."""
    if isinstance(spec, dict):
        allowed = {"start", "stop", "num", "spacing"}
        for k in spec:
            if k not in allowed:
                raise SpecError(file, f"{key}.{k}", f"unknown range key; expected one of "
                                                      f"{sorted(allowed)}{_closest(k, allowed)}")
        for k in ("start", "stop", "num"):
            if k not in spec:
                raise SpecError(file, key, f"a range table needs 'start', 'stop' and 'num' "
                                           f"(missing '{k}')")
        num = _int(file, f"{key}.num", spec["num"], minimum=1)
        spacing = spec.get("spacing", "linear")
        if spacing not in ("linear", "log"):
            raise SpecError(file, f"{key}.spacing", f"expected 'linear' or 'log', got {spacing!r}")
        start, stop = spec["start"], spec["stop"]
        for k, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    abs(v) < 1e308 and math.isfinite(v)):
                raise SpecError(file, f"{key}.{k}", f"expected a finite number, got {v!r}")
            if param.type is int and not -2**63 <= v < 2**63:
                raise SpecError(file, f"{key}.{k}", f"'{param.name}' = {v} does not fit in "
                                                    f"a 64-bit integer (the tables' int64 "
                                                    f"column)")
        if spacing == "log" and (start <= 0 or stop <= 0):
            raise SpecError(file, key, "log spacing needs start > 0 and stop > 0")
        if param.type not in (int, float):
            raise SpecError(file, key, f"a range needs a numeric hyperparameter; "
                                       f"'{param.name}' is {param.type.__name__}")
        if param.type is float:  # an integer literal beyond int64 is a float here
            start, stop = float(start), float(stop)
        rng = _Range(file, key, start, stop, num, spacing, param)
        if param.type is int and num <= _INT_RANGE_EXPAND:
            return rng.values()
        return rng
    if isinstance(spec, list):
        return _coerce_all(file, key, spec, param)
    raise SpecError(file, key, f"expected a list of values or a range table "
                               f"{{start, stop, num, spacing}}, got {spec!r}")


def _check_run_count(file, n_seeds: int, axes: Sequence[list | _Range], sample: dict | None,
                     max_runs: int | None, steps: int = 1) -> None:
    """Refuse a sweep with too many runs, from the counts alone (nothing is expanded)."""
    exact = all(isinstance(a, list) or a.exact for a in axes)
    total = math.prod(len(a) if isinstance(a, list) else a.length for a in axes)
    n_points = total
    if sample is not None and "count" in sample:
        if exact and sample["count"] > total:
            raise SpecError(file, "sample.count", f"{sample['count']:,} points asked of a grid "
                                                  f"of {total:,}; drop [sample] to run every "
                                                  f"point, or ask for at most {total:,}")
        n_points = min(int(sample["count"]), total)
    elif sample is not None:  # as Sweep._sample_count, exactly where a float could overflow
        f = sample["fraction"]
        n_points = max(1, int(round(f * total)) if total < 2**53
                       else round(Fraction(f) * total))
    n = n_points * n_seeds
    if n > MAX_RUNS:
        raise TooManyRuns(file, n, exact, MAX_RUNS, confirmable=False)
    if max_runs is not None and n > max_runs:
        raise TooManyRuns(file, n, exact, max_runs, confirmable=True)
    if max_runs is not None and n * steps > MAX_RUN_STEPS_UNCONFIRMED:
        err = TooLarge(file, "steps", f"the sweep is {n:,} runs x {steps:,} steps = "
                                      f"{n * steps:.3g} run·steps (more than "
                                      f"{MAX_RUN_STEPS_UNCONFIRMED:.0e}); pass --yes to run "
                                      f"it anyway")
        err.confirmable = True
        raise err
    if total > MAX_RUNS:  # only with [sample]: every axis is expanded before sampling
        what = f"{total:,}" if exact else f"up to {total:,}"
        raise SpecError(file, "sample", f"the grid has {what} points before sampling, more "
                                        f"than the {MAX_RUNS:,} one sweep can expand; use "
                                        f"fewer grid points")


def _table(file, doc: dict, key: str) -> dict:
    v = doc.get(key, {})
    if not isinstance(v, dict):
        raise SpecError(file, key, f"expected a table, got {v!r}")
    return v


def parse(text: str, params_of, *, file: str | Path | None = None,
          overrides: Sequence[str] = (), max_runs: int | None = None) -> Sweep:
    """Parse and validate a sweep file.

    Args:
      text: the TOML text.
      params_of: ``experiment name -> tuple[Param, ...]``; raises KeyError for an unknown one.
      file: shown in messages.
      overrides: ``key=value`` strings (``--set``), applied before validation. ``key`` is a
        dotted path into the file (``steps``, ``fixed.init_scale``, ``log.every``), or a bare
        hyperparameter name, which fixes it for every run (replacing any grid/zip axis).
      max_runs: refuse (:class:`TooManyRuns`) a sweep with more runs than this, before
        expanding it; sweeps over :data:`MAX_RUNS` are always refused.
    """
    try:
        doc = tomllib.loads(text.removeprefix("\ufeff"))  # a byte-order mark is not content
    except tomllib.TOMLDecodeError as e:
        raise SpecError(file, None, f"not valid TOML: {e}") from None
    for ov in overrides:
        _apply_override(doc, ov, file, params_of)
    return validate(doc, params_of, file=file, source=text, max_runs=max_runs)


def _apply_override(doc: dict, ov: str, file, params_of) -> None:
    if "=" not in ov:
        raise SpecError(file, ov, "--set expects key=value")
    key, raw = ov.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    parts = key.split(".")
    if len(parts) == 1 and parts[0] not in SCHEMA_KEYS:
        # A bare hyperparameter name: fixed for every run.
        for t in ("grid", "zip"):
            if isinstance(doc.get(t), dict):
                doc[t].pop(key, None)
        doc.setdefault("fixed", {})
        if not isinstance(doc["fixed"], dict):
            raise SpecError(file, "fixed", "expected a table")
        doc["fixed"][key] = value
        return
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SpecError(file, key, f"--set cannot descend into non-table '{p}'")
    node[parts[-1]] = value


def validate(doc: dict, params_of, *, file=None, source: str = "",
             max_runs: int | None = None) -> Sweep:
    """Check a parsed sweep file and build its :class:`Sweep`.

    The run count is computed from the counts before anything is expanded: more than
    ``max_runs`` (when given) or than :data:`MAX_RUNS` raises :class:`TooManyRuns`."""
    doc = dict(doc)  # the optimizer keys rewrite top-level entries: never the caller's dict
    for k in doc:
        if k not in SCHEMA_KEYS:
            raise SpecError(file, k, f"unknown key; expected one of {list(SCHEMA_KEYS)}"
                                     f"{_closest(k, SCHEMA_KEYS)}")
    for k in ("name", "experiment", "steps"):
        if k not in doc:
            raise SpecError(file, k, "missing required key")
    name = doc["name"]
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise SpecError(file, "name", f"expected a plain folder name (letters, digits, '_', "
                                      f"'-', '.'; no '/' or '..'), got {name!r}")
    exp = doc["experiment"]
    if not isinstance(exp, str):
        raise SpecError(file, "experiment", f"expected a string, got {exp!r}")
    try:
        params = tuple(params_of(exp))
    except KeyError as e:
        if hasattr(e, "message"):  # the registry's own message (user code, did-you-mean)
            raise SpecError(file, "experiment", e.message) from None
        known = e.args[1] if len(e.args) > 1 else ()
        raise SpecError(file, "experiment", f"unknown experiment {exp!r}; known: "
                                            f"{sorted(known)}{_closest(exp, known)}") from None
    params, knob_names = _optimizer_params(file, doc, params)
    by_name = {p.name: p for p in params}
    steps = _int(file, "steps", doc["steps"])
    if steps <= 0:
        raise SpecError(file, "steps", f"expected a positive integer, got {steps}")
    if steps >= 2**53:  # step counters are int64 and logged steps float-exact
        raise SpecError(file, "steps", f"expected fewer than 2**53 steps, got {steps:,}")

    seeds_v = doc.get("seeds", 1)
    if isinstance(seeds_v, list):
        if not seeds_v:
            raise SpecError(file, "seeds", "empty list: give a count or a non-empty list")
        seeds = tuple(_int(file, f"seeds[{i}]", s, minimum=0) for i, s in enumerate(seeds_v))
        if len(set(seeds)) != len(seeds):
            raise SpecError(file, "seeds", "seeds must be distinct")
        if any(s >= 2**31 for s in seeds):
            raise SpecError(file, "seeds", "seeds must be < 2**31")
        n_seeds = len(seeds)
    else:
        n_seeds = _int(file, "seeds", seeds_v)
        if n_seeds <= 0:
            raise SpecError(file, "seeds", f"expected a positive count or a list of ints, "
                                           f"got {n_seeds}")
        seeds = None  # 0..n-1, built once the run count has been checked

    log_v = doc.get("log", {"points": 100, "spacing": "linear"})
    if not isinstance(log_v, dict):
        raise SpecError(file, "log", f"expected a table like {{ every = 100 }} or "
                                     f"{{ points = 200, spacing = \"log\" }}, got {log_v!r}")
    for k in log_v:
        if k not in ("every", "points", "spacing"):
            raise SpecError(file, f"log.{k}", "unknown key; expected 'every', or 'points' and "
                                              "'spacing'")
    if ("every" in log_v) == ("points" in log_v):
        raise SpecError(file, "log", "give exactly one of 'every' or 'points'")
    if "every" in log_v:
        every = _int(file, "log.every", log_v["every"], minimum=1)
        log = LogSchedule(every=every)
    else:
        pts = _int(file, "log.points", log_v["points"], minimum=1)
        spacing = log_v.get("spacing", "linear")
        if spacing not in ("linear", "log"):
            raise SpecError(file, "log.spacing", f"expected 'linear' or 'log', got {spacing!r}")
        log = LogSchedule(points=pts, spacing=spacing)
    if log.count(steps) > MAX_LOG_POINTS:
        raise SpecError(file, "log.every", f"{log.count(steps):,} logged steps per run (steps "
                                           f"= {steps:,}), more than the {MAX_LOG_POINTS:,} a "
                                           f"curves table holds per run; raise log.every to at "
                                           f"least {-(-steps // (MAX_LOG_POINTS - 2)):,}")

    precision = doc.get("precision", "float32")
    if precision not in PRECISIONS:
        raise SpecError(file, "precision", f"expected one of {list(PRECISIONS)}, got "
                                           f"{precision!r}")

    def check_name(section: str, k: str) -> Param:
        if k not in by_name:
            raise SpecError(file, f"{section}.{k}",
                            f"unknown hyperparameter for {exp}{_closest(k, by_name)}; "
                            f"known: {sorted(by_name)}{_knob_hint(k, doc)}")
        return by_name[k]

    fixed = {}
    for k, v in _table(file, doc, "fixed").items():
        fixed[k] = check_name("fixed", k).coerce(v, file, f"fixed.{k}")
    grid_v = doc.get("grid", {})
    if isinstance(grid_v, list):  # [[grid]] blocks: a union of cartesian products
        if not grid_v:
            raise SpecError(file, "grid", "no [[grid]] blocks")
        blocks_v = [(f"grid[{i}]", b) for i, b in enumerate(grid_v)]
        for key, b in blocks_v:
            if not isinstance(b, dict):
                raise SpecError(file, key, f"expected a table, got {b!r}")
    else:
        blocks_v = [("grid", _table(file, doc, "grid"))]
    grids = []
    for key, b in blocks_v:
        g = {}
        for k, v in b.items():
            g[k] = _axis_values(file, f"{key}.{k}", v, check_name(key, k))
        grids.append(g)
    grid = grids[0]
    zipped = {}
    for k, v in _table(file, doc, "zip").items():
        p = check_name("zip", k)
        if not isinstance(v, list):
            raise SpecError(file, f"zip.{k}", f"expected a list, got {v!r}")
        zipped[k] = _axis_values(file, f"zip.{k}", v, p)
    if zipped:
        lengths = {k: len(v) for k, v in zipped.items()}
        if len(set(lengths.values())) > 1:
            raise SpecError(file, "zip", f"zip lists must have equal lengths, got {lengths}")
    for (gkey, _), g in zip(blocks_v, grids):
        seen: dict[str, str] = {}
        for section, table in (("fixed", fixed), (gkey, g), ("zip", zipped)):
            for k in table:
                if k in seen:
                    raise SpecError(file, f"{section}.{k}", f"'{k}' is also set in "
                                    f"[{seen[k]}]; give each hyperparameter once")
                seen[k] = section
        if knob_names:
            _check_knobs(file, gkey, fixed, g, zipped, knob_names)

    sample = None
    if "sample" in doc:
        s = _table(file, doc, "sample")
        for k in s:
            if k not in ("fraction", "count", "seed"):
                raise SpecError(file, f"sample.{k}", "unknown key; expected 'fraction' or "
                                                     f"'count', and 'seed'{_closest(k, ['fraction', 'count', 'seed'])}")
        if ("fraction" in s) == ("count" in s):
            raise SpecError(file, "sample", "give exactly one of 'fraction' or 'count'")
        if "fraction" in s:
            f = s["fraction"]
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
                raise SpecError(file, "sample.fraction", f"expected a number in (0, 1], got {f!r}")
        else:
            _int(file, "sample.count", s["count"], minimum=1)
        _int(file, "sample.seed", s.get("seed", 0), minimum=0)
        sample = dict(s)

    probes = _table(file, doc, "probes")
    for pname, pspec in probes.items():
        if not isinstance(pspec, dict):
            raise SpecError(file, f"probes.{pname}", f"expected a table, got {pspec!r}")

    chunk_size = doc.get("chunk_size")
    if chunk_size is not None:
        chunk_size = _int(file, "chunk_size", chunk_size, minimum=1)
    diverge_above = doc.get("diverge_above")
    if diverge_above is not None:
        if (isinstance(diverge_above, bool) or not isinstance(diverge_above, (int, float))
                or not diverge_above > 0):
            raise SpecError(file, "diverge_above", f"expected a positive number, got "
                                                   f"{diverge_above!r}")
        diverge_above = float(diverge_above)
    save_params = None
    if "save" in doc:
        sv = _table(file, doc, "save")
        for k in sv:
            if k != "params":
                raise SpecError(file, f"save.{k}", f"unknown key; expected 'params'"
                                                   f"{_closest(k, ['params'])}")
        save_params = sv.get("params")
        if save_params not in SAVE_PARAMS:
            raise SpecError(file, "save.params", f"expected one of {list(SAVE_PARAMS)}, got "
                                                 f"{save_params!r}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise SpecError(file, "description", "expected a string")

    refine = _refine_key(file, doc, by_name, blocks_v, grids, zipped, fixed)
    stop = _stop_key(file, doc)
    halving = _halving_key(file, doc, by_name, steps, log, refine, stop)
    search = _search_key(file, doc, by_name, grids, zipped, refine, halving)

    # Everything is checked; count the runs before expanding seeds and ranges.
    _check_run_count(file, n_seeds, [_Union(file, grids, zipped)], sample, max_runs, steps)
    if seeds is None:
        if n_seeds > 2**31:
            raise SpecError(file, "seeds", "seeds must be < 2**31")
        seeds = tuple(range(n_seeds))
    grids = [{k: v.values() if isinstance(v, _Range) else v for k, v in g.items()}
             for g in grids]
    grid = grids[0]

    sweep = Sweep(name=name, experiment=exp, steps=steps, seeds=seeds, log=log,
                  precision=precision, fixed=fixed, grid=grid, zip=zipped, sample=sample,
                  probes=dict(probes), params=params, file=str(file) if file else None,
                  source=source, description=description, chunk_size=chunk_size,
                  diverge_above=diverge_above, grids=grids if len(grids) > 1 else [],
                  knob_names=knob_names, save_params=save_params, refine=refine, stop=stop,
                  halving=halving, search=search)
    sweep.doc = {"name": name, "experiment": exp, "steps": steps, "seeds": list(seeds),
                 "log": dict(log_v), "precision": precision, "fixed": fixed,
                 "grid": grids if len(grids) > 1 else grid,
                 "zip": zipped, "sample": sample, "probes": sweep.probes,
                 "diverge_above": diverge_above}
    # keys added after schema 1 enter the hash only when used: older sweeps keep theirs
    for k, v in (("optimizer", doc.get("optimizer")), ("schedule", doc.get("schedule")),
                 ("save", doc.get("save")), ("refine", refine), ("stop", stop),
                 ("halving", halving), ("search", search)):
        if v is not None:
            sweep.doc[k] = v
    if sweep.n_points() == 0:
        raise SpecError(file, "grid", "the grid is empty")
    return sweep


# ---- adaptive sweeps (jaxdyn.adaptive): [refine] and stop ---------------------------------
REFINE_KEYS = ("axis", "where", "rounds", "points", "spacing")


def _refine_key(file, doc: dict, by_name: dict, blocks_v, grids, zipped, fixed) -> dict | None:
    """``[refine]``: which grid axis to refine, the predicate whose flips are brackets, the
    rounds and the new points per bracket and round. The predicate's columns are checked
    once the experiment's metrics are known (``jaxdyn.adaptive.check``)."""
    if "refine" not in doc:
        return None
    r = _table(file, doc, "refine")
    for k in r:
        if k not in REFINE_KEYS:
            raise SpecError(file, f"refine.{k}", f"unknown key; expected one of "
                                                 f"{list(REFINE_KEYS)}{_closest(k, REFINE_KEYS)}")
    for k in ("axis", "where"):
        if k not in r:
            raise SpecError(file, f"refine.{k}", "missing required key")
    axis = r["axis"]
    axes = list(dict.fromkeys(k for g in grids for k in g))
    if not isinstance(axis, str) or axis not in axes:
        where = ""
        if isinstance(axis, str) and axis in zipped:
            where = f" ('{axis}' is in [zip]; refine needs it in [grid])"
        elif isinstance(axis, str) and axis in fixed:
            where = f" ('{axis}' is in [fixed]; refine needs it in [grid])"
        raise SpecError(file, "refine.axis", f"expected a [grid] axis, got {axis!r}{where}; "
                        f"grid axes: {axes}"
                        f"{_closest(axis, axes) if isinstance(axis, str) else ''}")
    param = by_name[axis]
    if param.type not in (int, float):
        raise SpecError(file, "refine.axis", f"expected a numeric axis; '{axis}' is "
                                             f"{param.type.__name__}")
    pred = r["where"]
    if not isinstance(pred, str) or not pred.strip():
        raise SpecError(file, "refine.where", f"expected a predicate on the runs table as a "
                                              f"string (\"final_b < -0.01\"), got {pred!r}")
    from jaxdyn.adaptive._predicate import PredicateError, check_where_syntax

    try:
        check_where_syntax(pred)
    except PredicateError as e:
        raise SpecError(file, "refine.where", str(e)) from None
    rounds = _int(file, "refine.rounds", r.get("rounds", 8), minimum=0)
    points = _int(file, "refine.points", r.get("points", 3), minimum=1)
    # the spacing of the axis's range table (a list: linear), unless given
    spacing = next((g[axis].get("spacing", "linear") for _, g in blocks_v
                    if isinstance(g.get(axis), dict)), "linear")
    if "spacing" in r:
        spacing = r["spacing"]
        if spacing not in ("linear", "log"):
            raise SpecError(file, "refine.spacing", f"expected 'linear' or 'log', got "
                                                    f"{spacing!r}")
    if spacing == "log":
        for g in grids:
            v = g.get(axis)
            bad = (v.start <= 0 or v.stop <= 0) if isinstance(v, _Range) else \
                any(x <= 0 for x in (v or []))
            if bad:
                raise SpecError(file, "refine.spacing", f"log spacing needs every '{axis}' "
                                                        f"value > 0")
    return {"axis": axis, "where": pred, "rounds": rounds, "points": points,
            "spacing": spacing}


def _stop_key(file, doc: dict) -> str | None:
    """``stop``: a predicate on a run's metrics (``"loss < 1e-8"``), evaluated at log points;
    the metric names are checked once the experiment's are known."""
    if "stop" not in doc:
        return None
    text = doc["stop"]
    if not isinstance(text, str) or not text.strip():
        raise SpecError(file, "stop", f"expected a predicate on metrics as a string "
                                      f"(\"loss < 1e-8\"), got {text!r}")
    from jaxdyn.adaptive._predicate import PredicateError, parse_stop

    try:
        parse_stop(text)
    except PredicateError as e:
        raise SpecError(file, "stop", str(e)) from None
    return text


class _Union:
    """The point count of ``[[grid]]`` blocks (each crossed with ``[zip]``), as one axis for
    :func:`_check_run_count`."""

    def __init__(self, file, grids, zipped):
        zn = len(next(iter(zipped.values()))) if zipped else 1
        self.length = sum(math.prod(len(v) if isinstance(v, list) else v.length
                                    for v in g.values()) for g in grids) * zn
        self.exact = all(isinstance(v, list) or v.exact for g in grids for v in g.values())


def _names_list(file, key, v) -> list[str]:
    vals = v if isinstance(v, list) else [v]
    if not vals or not all(isinstance(x, str) and x for x in vals):
        raise SpecError(file, key, f"expected a name or a non-empty list of names, got {v!r}")
    if len(set(vals)) != len(vals):
        raise SpecError(file, key, f"names must be distinct, got {v!r}")
    return vals


def _knob_hint(k: str, doc: dict) -> str:
    """Where ``k`` is an optimizer's or schedule's knob that the sweep does not name."""
    from jaxdyn import optim

    owners = [o for o in optim.COMMON if k in optim.knobs(o)]
    owners += [s for s, kn in optim.SCHEDULES.items() if k in kn]
    if not owners:
        return ""
    named = doc.get("optimizer", "sgd (the default)")
    return (f". '{k}' is a knob of {', '.join(owners)}; this sweep's optimizer is {named} "
            f"(set the top-level 'optimizer' or 'schedule')")


def _optimizer_params(file, doc: dict, params: tuple) -> tuple[tuple, tuple]:
    """The experiment's parameters plus those of the optimizers and schedules the sweep
    names (top-level ``optimizer``/``schedule``, which become a fixed value or a grid axis in
    every block); ``(params, knob names)``."""
    from_top = {}
    for key in ("optimizer", "schedule"):
        if key in doc:
            from_top[key] = _names_list(file, key, doc[key])
    if not from_top:
        return params, ()
    from jaxdyn import optim

    own = {p.name for p in params}
    for o in from_top.get("optimizer", []):
        try:
            optim.knobs(o)
        except optim.OptimizerError as e:
            raise SpecError(file, "optimizer", f"{e}{_closest(o, optim.COMMON)}") from None
    for sc in from_top.get("schedule", []):
        if sc not in optim.SCHEDULES:
            raise SpecError(file, "schedule", f"unknown schedule {sc!r}; expected one of "
                                              f"{sorted(optim.SCHEDULES)}"
                                              f"{_closest(sc, optim.SCHEDULES)}")
    try:
        extra = optim.params_for(from_top.get("optimizer", []), from_top.get("schedule", []))
    except optim.OptimizerError as e:
        raise SpecError(file, "schedule", str(e)) from None
    # The top-level key declares the choices. Where no section sets them itself, it is a
    # fixed value (one name) or an axis of every [[grid]] block that does not (several);
    # a block may instead set its own subset (Adam's b1 in one block, SGD's momentum in
    # another).
    for key, vals in from_top.items():
        if any(isinstance(doc.get(t), dict) and key in doc[t] for t in ("fixed", "zip")):
            continue
        g = doc.get("grid", {})
        blocks = g if isinstance(g, list) else [g]
        if len(vals) == 1 and not any(isinstance(b, dict) and key in b for b in blocks):
            if isinstance(doc.setdefault("fixed", {}), dict):
                doc["fixed"] = {**doc["fixed"], key: vals[0]}
            continue
        new = [b if not isinstance(b, dict) or key in b else {**b, key: vals} for b in blocks]
        doc["grid"] = new if isinstance(g, list) else new[0]
    extra = tuple(replace(p, choices=tuple(from_top[p.name])) if p.name in from_top else p
                  for p in extra if p.name not in own)
    knob_names = tuple(p.name for p in extra if p.name not in ("optimizer", "schedule"))
    return params + extra, knob_names


def _check_knobs(file, gkey, fixed, grid, zipped, knob_names) -> None:
    """Each knob set for a block's runs must be taken by every optimizer (and schedule)
    those runs use."""
    from jaxdyn import optim

    def values(k):
        for t in (grid, zipped):
            if k in t:
                return list(dict.fromkeys(t[k]))
        return [fixed[k]] if k in fixed else []

    opts, scheds = values("optimizer"), values("schedule")
    for section, table in (("fixed", fixed), (gkey, grid), ("zip", zipped)):
        for k in table:
            if k in knob_names:
                try:
                    optim.check_knobs(opts, scheds, [k])
                except optim.OptimizerError as e:
                    raise SpecError(file, f"{section}.{k}", str(e)) from None


def load(path: str | Path, params_of, overrides: Sequence[str] = (),
         max_runs: int | None = None) -> Sweep:
    """Read and validate a sweep file from disk."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(path, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(path, None, f"cannot read: {e}") from None
    return parse(text, params_of, file=path, overrides=overrides, max_runs=max_runs)


HALVING_KEYS = ("metric", "mode", "keep", "rungs", "by")


def _halving_key(file, doc: dict, by_name: dict, steps: int, log, refine, stop) -> dict | None:
    """``[halving]``: successive halving. At each rung (a logged step) the best ``keep``
    fraction of the runs by ``metric`` (``mode`` "min" or "max") continues, within groups
    of runs sharing the ``by`` hyperparameters (default: across the whole sweep). The
    metric's name is checked once the experiment's are known."""
    if "halving" not in doc:
        return None
    h = _table(file, doc, "halving")
    for k in h:
        if k not in HALVING_KEYS:
            raise SpecError(file, f"halving.{k}", f"unknown key; expected one of "
                                                  f"{list(HALVING_KEYS)}"
                                                  f"{_closest(k, HALVING_KEYS)}")
    for k in ("metric", "keep", "rungs"):
        if k not in h:
            raise SpecError(file, f"halving.{k}", "missing required key")
    if refine is not None or stop is not None or "save" in doc:
        other = "[refine]" if refine is not None else "stop" if stop is not None else "save"
        raise SpecError(file, "halving", f"[halving] cannot be combined with {other} yet")
    metric = h["metric"]
    if not isinstance(metric, str) or not metric:
        raise SpecError(file, "halving.metric", f"expected a metric name, got {metric!r}")
    mode = h.get("mode", "min")
    if mode not in ("min", "max"):
        raise SpecError(file, "halving.mode", f"expected 'min' or 'max', got {mode!r}")
    keep = h["keep"]
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 1:
        raise SpecError(file, "halving.keep", f"expected a fraction in (0, 1), got {keep!r}")
    rungs = h["rungs"]
    if not isinstance(rungs, list) or not rungs:
        raise SpecError(file, "halving.rungs", f"expected a non-empty list of steps, got "
                                               f"{rungs!r}")
    rungs = [_int(file, f"halving.rungs[{i}]", r, minimum=1) for i, r in enumerate(rungs)]
    if any(b <= a for a, b in zip(rungs, rungs[1:])):
        raise SpecError(file, "halving.rungs", f"expected strictly increasing steps, got "
                                               f"{rungs}")
    if rungs[-1] >= steps:
        raise SpecError(file, "halving.rungs", f"expected steps below the sweep's steps "
                                               f"({steps}), got {rungs[-1]}")
    logged = set(log.steps(steps).tolist())
    for i, r in enumerate(rungs):
        if r not in logged:
            near = sorted(logged, key=lambda s: abs(s - r))[:2]
            raise SpecError(file, f"halving.rungs[{i}]", f"{r} is not a logged step (the "
                                                         f"metric is read there); nearest "
                                                         f"logged steps: {sorted(near)}")
    by = h.get("by", [])
    if not isinstance(by, list) or not all(isinstance(b, str) for b in by):
        raise SpecError(file, "halving.by", f"expected a list of hyperparameter names (runs "
                                            f"compete within groups sharing them; [] for "
                                            f"the whole sweep), got {by!r}")
    names = ["seed", *by_name]
    for b in by:
        if b not in names:
            raise SpecError(file, "halving.by", f"unknown hyperparameter {b!r}"
                                                f"{_closest(b, names)}; known: {sorted(names)}")
    return {"metric": metric, "mode": mode, "keep": float(keep), "rungs": rungs, "by": by}


SEARCH_KEYS = ("method", "trials", "batch", "metric", "mode", "seed", "space")
SEARCH_METHODS = ("tpe", "cmaes", "random")


def _search_key(file, doc: dict, by_name: dict, grids, zipped, refine, halving) -> dict | None:
    """``[search]``: batched ask/tell search (Optuna). ``space`` holds one range table
    ``{start, stop, spacing}`` per searched hyperparameter (like a grid range, without
    ``num``). The metric column is checked once the experiment's metrics are known."""
    if "search" not in doc:
        return None
    t = _table(file, doc, "search")
    for k in t:
        if k not in SEARCH_KEYS:
            raise SpecError(file, f"search.{k}", f"unknown key; expected one of "
                                                 f"{list(SEARCH_KEYS)}{_closest(k, SEARCH_KEYS)}")
    for k in ("trials", "metric", "space"):
        if k not in t:
            raise SpecError(file, f"search.{k}", "missing required key")
    if refine is not None or halving is not None:
        raise SpecError(file, "search", f"[search] cannot be combined with "
                                        f"{'[refine]' if refine is not None else '[halving]'} yet")
    if any(g for g in grids) or zipped or "sample" in doc:
        raise SpecError(file, "search", "[search] proposes the points itself: put the searched "
                                        "hyperparameters in [search.space] and leave [grid], "
                                        "[zip] and [sample] out ([fixed] is fine)")
    method = t.get("method", "tpe")
    if method not in SEARCH_METHODS:
        raise SpecError(file, "search.method", f"expected one of {list(SEARCH_METHODS)}, got "
                                               f"{method!r}{_closest(str(method), SEARCH_METHODS)}")
    trials = _int(file, "search.trials", t["trials"], minimum=1)
    batch = _int(file, "search.batch", t.get("batch", 64), minimum=1)
    seed = _int(file, "search.seed", t.get("seed", 0), minimum=0)
    metric = t["metric"]
    if not isinstance(metric, str) or not metric:
        raise SpecError(file, "search.metric", f"expected a runs-table column such as "
                                               f"\"final_loss\", got {metric!r}")
    mode = t.get("mode", "min")
    if mode not in ("min", "max"):
        raise SpecError(file, "search.mode", f"expected 'min' or 'max', got {mode!r}")
    space_v = t["space"]
    if not isinstance(space_v, dict) or not space_v:
        raise SpecError(file, "search.space", "expected a table of ranges, one per searched "
                                              "hyperparameter: lr = { start = 1e-4, stop = "
                                              "1e-1, spacing = \"log\" }")
    space = {}
    for name, r in space_v.items():
        key = f"search.space.{name}"
        if name not in by_name:
            raise SpecError(file, key, f"unknown hyperparameter{_closest(name, by_name)}; "
                                       f"known: {sorted(by_name)}")
        if name in doc.get("fixed", {}):
            raise SpecError(file, key, f"'{name}' is also set in [fixed]; give it once")
        param = by_name[name]
        if param.static or param.type not in (int, float):
            raise SpecError(file, key, f"expected a dynamic numeric hyperparameter; '{name}' "
                                       f"is {'static' if param.static else param.type.__name__}")
        if not isinstance(r, dict):
            raise SpecError(file, key, f"expected a range table {{start, stop, spacing}}, got "
                                       f"{r!r}")
        for k in r:
            if k not in ("start", "stop", "spacing"):
                raise SpecError(file, f"{key}.{k}", f"unknown range key; expected 'start', "
                                                    f"'stop' or 'spacing'"
                                                    f"{_closest(k, ['start', 'stop', 'spacing'])}")
        for k in ("start", "stop"):
            v = r.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SpecError(file, f"{key}.{k}", f"expected a finite number, got {v!r}")
        spacing = r.get("spacing", "linear")
        if spacing not in ("linear", "log"):
            raise SpecError(file, f"{key}.spacing", f"expected 'linear' or 'log', got "
                                                    f"{spacing!r}")
        if not r["start"] < r["stop"]:
            raise SpecError(file, key, f"expected start < stop, got {r['start']} and "
                                       f"{r['stop']}")
        if spacing == "log" and r["start"] <= 0:
            raise SpecError(file, key, "log spacing needs start > 0")
        space[name] = {"start": r["start"], "stop": r["stop"], "spacing": spacing,
                       "type": param.type.__name__}
    return {"method": method, "trials": trials, "batch": min(batch, trials), "metric": metric,
            "mode": mode, "seed": seed, "space": space}

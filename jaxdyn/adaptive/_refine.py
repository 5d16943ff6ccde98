"""``[refine]``: locate where a predicate on the runs table flips along one grid axis.

An outer loop around the sweep loop. Round 0 is the sweep's grid. After each round, every
pair of neighbouring values of the axis (same seed, same other hyperparameters) where the
predicate differs is a bracket, and the next round runs ``points`` new values inside every
bracket (log- or linear-spaced), as ordinary runs: their run_ids are those a grid holding
the value would give, and their results are bitwise what a plain run of that point gives.

Round r's runs are a function of the runs of rounds 0..r-1 and their rows in the table
only, so a sweep killed in any round recomputes the same runs when run again, and skips the
ones already committed. Every runs row records its ``round``.
"""

from __future__ import annotations

import time

from jaxdyn.adaptive._brackets import find, inner
from jaxdyn.adaptive._loop import add_summary, finish_progress
from jaxdyn.adaptive._predicate import PredicateError, check_where, evaluate_where, stop_names
from jaxdyn.sweep_types import JaxdynError, Run, SpecError, run_id

_DUCK = {int: "BIGINT", float: "DOUBLE", str: "VARCHAR", bool: "BOOLEAN"}


def runs_columns(sweep, exp) -> dict[str, str]:
    """The runs table's columns and their DuckDB types, as the store writes them."""
    cols = {"run_id": "VARCHAR", "group": "VARCHAR", "seed": "BIGINT"}
    cols.update({p.name: _DUCK[p.type] for p in sweep.params})
    cols.update({"status": "VARCHAR", "diverged_step": "BIGINT"})
    cols.update({f"final_{m.name}": "DOUBLE" for m in exp.metrics if tuple(m.shape) == ()})
    cols["wall_s"] = "DOUBLE"
    if sweep.refine is not None:
        cols["round"] = "BIGINT"
    if sweep.stop is not None:
        cols["stopped_step"] = "BIGINT"
    if sweep.halving is not None:
        cols["culled_step"] = "BIGINT"
    if sweep.search is not None:
        cols.update({"trial": "BIGINT", "batch": "BIGINT"})
    return cols


def check(sweep, exp) -> None:
    """Refuse a ``stop`` naming an unknown (or non-scalar) metric and a ``[refine] where``
    that does not bind to the runs table, before anything is compiled or written."""
    import difflib

    if sweep.stop is not None:
        scalars = [m.name for m in exp.metrics if tuple(m.shape) == ()]
        for n in stop_names(sweep.stop):
            if n not in scalars:
                m = difflib.get_close_matches(n, scalars, n=1, cutoff=0.5)
                hint = f" (did you mean '{m[0]}'?)" if m else ""
                raise SpecError(sweep.file, "stop", f"no scalar metric {n!r} in {exp.name}"
                                                    f"{hint}; its scalar metrics: {scalars}")
    if sweep.halving is not None:
        scalars = [m.name for m in exp.metrics if tuple(m.shape) == ()]
        n = sweep.halving["metric"]
        if n not in scalars:
            m = difflib.get_close_matches(n, scalars, n=1, cutoff=0.5)
            hint = f" (did you mean '{m[0]}'?)" if m else ""
            raise SpecError(sweep.file, "halving.metric", f"no scalar metric {n!r} in "
                                                          f"{exp.name}{hint}; its scalar "
                                                          f"metrics: {scalars}")
    if sweep.search is not None:
        from jaxdyn.adaptive import _search

        cols = runs_columns(sweep, exp)
        n = sweep.search["metric"]
        if n not in cols or cols[n] != "DOUBLE":
            numeric = [c for c, t in cols.items() if t == "DOUBLE"]
            m = difflib.get_close_matches(n, numeric, n=1, cutoff=0.5)
            hint = f" (did you mean '{m[0]}'?)" if m else ""
            raise SpecError(sweep.file, "search.metric", f"no numeric runs-table column "
                                                         f"{n!r}{hint}; the columns: {numeric}")
        _search.check(sweep)
    if sweep.refine is not None:
        try:
            check_where(sweep.refine["where"], runs_columns(sweep, exp))
        except PredicateError as e:
            raise SpecError(sweep.file, "refine.where", str(e)) from None


def _key(run: Run, axis: str) -> tuple:
    """What a bracket is per: the seed and every other hyperparameter."""
    return (run.seed, tuple(sorted((k, repr(v)) for k, v in run.hp.items() if k != axis)))


def next_runs(sweep, known: dict, hits: dict) -> list[Run]:
    """The runs of the next round: ``points`` values inside every bracket of the ``known``
    runs ({run_id: Run}) under ``hits`` ({run_id: bool}); none already known."""
    cfg = sweep.refine
    axis = cfg["axis"]
    integer = {p.name: p for p in sweep.params}[axis].type is int
    missing = [r for r in known if r not in hits]
    if missing:
        raise JaxdynError(f"refine: {len(missing)} runs of earlier rounds are not in the "
                          f"runs table (first: {missing[0]}); run the sweep again")
    new: dict[str, Run] = {}
    for key, lo, hi, *_, r0, _r1 in find((_key(r, axis), r.hp[axis], hits[i], r)
                                         for i, r in known.items()):
        for v in inner(lo, hi, cfg["points"], cfg["spacing"], integer):
            k, hp = sweep.point_hp({**r0.hp, axis: v})
            rid = run_id("", hp, r0.seed, 0, "", key=k)
            if rid not in known and rid not in new:
                new[rid] = Run(rid, r0.seed, hp)
    return list(new.values())


def run_refine(sweep, exp, store, run_sweep, **kw) -> dict:
    """Round 0 (the grid), then up to ``rounds`` refinement rounds, each one call of the
    sweep loop ``run_sweep`` (kw: its options) that keeps the compiled programs. Returns the
    summed summary, with ``refine``: rounds run, runs per round, brackets and widths."""
    from jaxdyn.adaptive._brackets import summary as bracket_summary

    cfg = sweep.refine
    t0 = time.perf_counter()
    runners: dict = {}
    total: dict = {}
    runs_by_round: list[int] = []

    def one(rnd: int, runs: list[Run]) -> None:
        s = run_sweep(sweep, exp, store, runs=runs, extra_columns={"round": rnd},
                      runners=runners,
                      progress_extra={"refine": {"round": rnd, "rounds": cfg["rounds"],
                                                 "finished": False}}, **kw)
        runs_by_round.append(len(runs))
        add_summary(total, s)

    known = {r.run_id: r for r in sweep.runs()}
    one(0, list(known.values()))
    rounds_run = 0
    for rnd in range(1, cfg["rounds"] + 1):
        new = next_runs(sweep, known, evaluate_where(store.dir, cfg["where"]))
        if not new:  # no bracket can be split further: later rounds would be empty too
            break
        known.update({r.run_id: r for r in new})
        one(rnd, new)
        rounds_run = rnd
    runners_used = total.get("runners", [])
    total["compiled_programs"] = sum(len(r._compiled) for r in runners_used)
    total["compile_s"] = sum(r.compile_s for r in runners_used)  # cumulative per runner
    total["tune_s"] = sum(r.tune_s for r in runners_used)
    total["wall_s"] = time.perf_counter() - t0
    total["run_steps_per_s"] = total["runs_run"] * sweep.steps / max(total["wall_s"], 1e-9)
    info = bracket_summary(store.dir, cfg)
    total["refine"] = {**info, "rounds_run": rounds_run, "runs_by_round": runs_by_round,
                       "runs_total": len(known)}
    total["runs_total"] = len(known)
    finish_progress(store, "refine", {"round": rounds_run, "rounds": cfg["rounds"]})
    return total

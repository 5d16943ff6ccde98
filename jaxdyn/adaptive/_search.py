"""``[search]``: batched ask/tell search with Optuna (an optional dependency:
``pip install 'jaxdyn[search]'``).

Each batch asks the study for ``batch`` proposals (TPE with the constant liar for the
pending ones, CMA-ES or random; seeded by ``seed``), runs them (every seed of the sweep) as
one call of the sweep loop, reads ``metric`` of their rows from the runs table (the mean
over seeds; NaN: a failed trial) and tells the study. Trials are ordinary runs (the run_id a
grid holding their point would give) with ``trial`` and ``batch`` columns.

Resume replays the study: the proposals of batch b are a function of the sampler's seed and
the values told for batches < b, which are read from the table, so a re-run asks the same
points, skips the runs already committed and continues.
"""

from __future__ import annotations

import math
import time

import numpy as np

from jaxdyn.adaptive._loop import add_summary, finish_progress
from jaxdyn.sweep_types import JaxdynError, Run, run_id


def _optuna():
    try:
        import optuna
    except ImportError:
        raise JaxdynError("[search] needs Optuna, an optional dependency: pip install "
                          "'jaxdyn[search]' (or pip install optuna)") from None
    return optuna


def check(sweep) -> None:
    """Optuna (and, for CMA-ES, its ``cmaes`` package) importable, before compute."""
    _optuna()
    if sweep.search["method"] == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise JaxdynError("[search] method = \"cmaes\" needs the cmaes package: pip "
                              "install 'jaxdyn[search]' (or pip install cmaes)") from None


def sampler(cfg: dict):
    optuna = _optuna()
    s = optuna.samplers
    if cfg["method"] == "tpe":
        return s.TPESampler(seed=cfg["seed"], constant_liar=True)
    if cfg["method"] == "cmaes":
        return s.CmaEsSampler(seed=cfg["seed"])
    return s.RandomSampler(seed=cfg["seed"])


def distributions(cfg: dict) -> dict:
    optuna = _optuna()
    d = optuna.distributions
    out = {}
    for name, r in cfg["space"].items():
        log = r["spacing"] == "log"
        if r["type"] == "int":
            out[name] = d.IntDistribution(int(r["start"]), int(r["stop"]), log=log)
        else:
            out[name] = d.FloatDistribution(float(r["start"]), float(r["stop"]), log=log)
    return out


def run_search(sweep, exp, store, run_sweep, **kw) -> dict:
    """All batches of the study; returns the summed summary with ``search``: trials,
    batches, the best value, its trial and parameters."""
    import warnings

    from jaxdyn.results.tables import Results

    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = sweep.search
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # constant_liar is marked experimental
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="minimize" if cfg["mode"] == "min"
                                    else "maximize", sampler=sampler(cfg))
    dists = distributions(cfg)
    types = {k: r["type"] for k, r in cfg["space"].items()}
    runners: dict = {}
    total: dict = {}
    n_batches = math.ceil(cfg["trials"] / cfg["batch"])
    for b in range(n_batches):
        m = min(cfg["batch"], cfg["trials"] - b * cfg["batch"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            asked = [study.ask(dists) for _ in range(m)]
        runs: dict[str, Run] = {}
        trial_of: dict[str, int] = {}
        ids_of: dict[int, list[str]] = {}
        for t in asked:
            point = {k: int(v) if types[k] == "int" else float(v) for k, v in t.params.items()}
            key, hp = sweep.point_hp(point)
            for seed in sweep.seeds:
                rid = run_id("", hp, seed, 0, "", key=key)
                ids_of.setdefault(t.number, []).append(rid)
                if rid not in runs:
                    runs[rid] = Run(rid, seed, hp)
                    trial_of[rid] = t.number
        s = run_sweep(sweep, exp, store, runs=list(runs.values()),
                      extra_columns={"trial": trial_of, "batch": b}, runners=runners,
                      progress_extra={"search": {"batch": b, "batches": n_batches,
                                                 "finished": False}}, **kw)
        add_summary(total, s)
        table = Results(store.dir).runs.set_index("run_id")
        missing = [r for r in runs if r not in table.index]
        if missing:
            raise JaxdynError(f"search: {len(missing)} runs of batch {b} are not in the runs "
                              f"table (first: {missing[0]}); run the sweep again")
        for t in asked:
            v = float(np.mean(table.loc[ids_of[t.number], cfg["metric"]].to_numpy(float)))
            if math.isfinite(v):
                study.tell(t, v)
            else:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
    used = total.get("runners", [])
    total["compiled_programs"] = sum(len(r._compiled) for r in used)
    total["compile_s"] = sum(r.compile_s for r in used)
    total["tune_s"] = sum(r.tune_s for r in used)
    total["wall_s"] = time.perf_counter() - t0
    total["run_steps_per_s"] = total["runs_run"] * sweep.steps / max(total["wall_s"], 1e-9)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if done else None
    total["search"] = {"trials": len(study.trials), "batches": n_batches,
                       "failed": len(study.trials) - len(done),
                       "best_value": best.value if best else None,
                       "best_trial": best.number if best else None,
                       "best_params": best.params if best else None}
    total["runs_total"] = total.get("runs_total", 0)
    finish_progress(store, "search", {"batch": n_batches - 1, "batches": n_batches})
    return total

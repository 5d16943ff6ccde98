"""Benchmark: adaptive sweeps (issue 18) against the dense grids they replace.

Refinement (``[refine]``): runs and wall of a refined sweep against a dense grid of the
same precision, on

1. the mean model (``eos.mean_model``): per d in {50, 100, 200, 400} a log lr axis over
   [0.25, 4] x 8π/d² (1 seed, 2,000 steps, float64), predicate ``final_b < -0.01``: a
   32-point grid refined R rounds with 3 points per bracket, against the dense grid of the
   same resolution, 31 x 4^R + 1 points per d (R = 3 and 5 are run; R = 8, which the tests
   use, would need 2,031,617 points per d and is only counted);
2. the bottleneck network (``bottleneck.three_layer``, reduced budget of
   docs/science/bottleneck.md: d = 10, width 100, n_train 1,000, batch 32, lr 0.016,
   2,000 steps, float32), 2 seeds x 4 initialisations, a linear ν axis over [0.3, 1.5]:
   success (``final_cos_sim > 0.99``) flips along ν per initialisation, often more than once;
   13 points refined 3 rounds (3 points per bracket) against the dense grid of step
   0.1 / 4^3 (769 points).

For each pair: the runs, the wall time (compile included; both cold on one compilation
cache, the dense one first), and whether the brackets agree (every refined bracket inside
a dense bracket with the same predicate values at its ends, and the count of dense brackets
that no refined bracket lies in: flips the coarse grid stepped over).

    .venv/bin/python benchmarks/bench_adaptive.py            # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_adaptive.py --quick    # smoke version, ~1 min

Halving (``[halving]``): the user-style MLP of bench_own_model.py (32-128-128-1, adamw,
minibatch 64 of 4,096 samples, float32) over an lr x weight_decay grid x 4 seeds (256 runs,
2,000 steps, log every 250): the full grid against [halving] (metric train_loss, keep 0.25,
rungs [250, 1000]) across the whole sweep and per seed: run-steps computed (counted on the
device), wall, and the best final train_loss each finds.

Writes ``<out>/adaptive.md`` and ``<out>/adaptive.json`` (default out: benchmarks/results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxdyn  # noqa: E402


def mean_model_doc(name, num, rounds=None, ds=(50, 100, 200, 400), steps=2000):
    eta = {d: 8 * math.pi / d**2 for d in ds}
    doc = {"name": name, "experiment": "eos.mean_model", "steps": steps, "seeds": 1,
           "log": {"every": 500}, "precision": "float64", "fixed": {"init_scale": 0.01},
           "grid": [{"d": [d], "lr": {"start": 0.25 * eta[d], "stop": 4 * eta[d],
                                      "num": num, "spacing": "log"}} for d in ds]}
    if rounds is not None:
        doc["refine"] = {"axis": "lr", "where": "final_b < -0.01", "rounds": rounds,
                         "points": 3}
    return doc


def bottleneck_doc(name, num, rounds=None, steps=2000, replicates=4, seeds=2):
    doc = {"name": name, "experiment": "bottleneck.three_layer", "steps": steps,
           "seeds": seeds, "log": {"every": 500}, "precision": "float32",
           "fixed": {"d": 10, "width": 100, "n_train": 1000, "batch": 32, "lr": 0.016,
                     "n_val": 256, "n_eval": 256},
           "grid": {"replicate": list(range(replicates)),
                    "nu": {"start": 0.3, "stop": 1.5, "num": num}}}
    if rounds is not None:
        doc["refine"] = {"axis": "nu", "where": "final_cos_sim > 0.99", "rounds": rounds,
                         "points": 3}
    return doc


def dense_brackets(res, axis, hit_fn, keys):
    runs = res.runs
    out = []
    for k, g in runs.groupby(keys):
        g = g.sort_values(axis)
        h, x = hit_fn(g).to_numpy(), g[axis].to_numpy()
        k = k if isinstance(k, tuple) else (k,)
        out += [(k, x[i], x[i + 1], bool(h[i])) for i in range(len(x) - 1) if h[i] != h[i + 1]]
    return out


def compare(refined, dense, keys):
    """Each refined bracket inside a dense bracket of the same key and direction?"""
    b = refined.boundaries()
    inside, missed = 0, 0
    found = set()
    for row in b.itertuples():
        k = tuple(getattr(row, c) for c in keys)
        hits = [i for i, (kk, lo, hi, h0) in enumerate(dense)
                if kk == k and lo * (1 - 1e-9) <= row.lo and row.hi <= hi * (1 + 1e-9)
                and h0 == row.hit_lo]
        inside += bool(hits)
        found.update(hits)
    missed = len(dense) - len(found)
    return {"refined_brackets": int(len(b)), "inside_a_dense_bracket": inside,
            "dense_brackets": len(dense), "dense_brackets_not_found": missed,
            "rel_width_max": float(b.rel_width.max()) if len(b) else None}


def timed(doc, out):
    t = time.perf_counter()
    s = jaxdyn.run(doc, out=out, quiet=True)
    return s, time.perf_counter() - t


def bench_refine(out, quick):
    rows = []
    ds = (50, 100) if quick else (50, 100, 200, 400)
    for R in ((2,) if quick else (3, 5)):
        n_dense = 31 * 4**R + 1
        sd, wd = timed(mean_model_doc(f"mm_dense_R{R}", n_dense, ds=ds), out)
        sr, wr = timed(mean_model_doc(f"mm_refine_R{R}", 32, R, ds=ds), out)
        cmp_ = compare(sr.load(), dense_brackets(sd.load(), "lr",
                                                 lambda g: g.final_b < -0.01, ["d"]), ["d"])
        rows.append({"case": f"mean model, {len(ds)} d, R = {R}", "dense_runs": sd.runs_total,
                     "dense_wall_s": wd, "dense_compile_s": sd.compile_s,
                     "refine_runs": sr.runs_total, "refine_wall_s": wr,
                     "refine_compile_s": sr.compile_s,
                     "runs_per_round": sr.stats["refine"]["runs_by_round"], **cmp_})
    if not quick:
        sr, wr = timed(mean_model_doc("mm_refine_R8", 32, 8, ds=ds), out)
        rows.append({"case": f"mean model, {len(ds)} d, R = 8 (dense not run)",
                     "dense_runs": (31 * 4**8 + 1) * len(ds), "dense_wall_s": None,
                     "refine_runs": sr.runs_total, "refine_wall_s": wr,
                     "refine_compile_s": sr.compile_s,
                     "runs_per_round": sr.stats["refine"]["runs_by_round"],
                     "refined_brackets": sr.stats["refine"]["brackets"],
                     "rel_width_max": sr.stats["refine"]["rel_width_max"]})
    R = 1 if quick else 3
    kw = dict(steps=300, replicates=2, seeds=1) if quick else {}
    sd, wd = timed(bottleneck_doc("bn_dense", 12 * 4**R + 1, **kw), out)
    sr, wr = timed(bottleneck_doc("bn_refine", 13, R, **kw), out)
    cmp_ = compare(sr.load(), dense_brackets(sd.load(), "nu", lambda g: g.final_cos_sim > 0.99,
                                             ["seed", "replicate"]), ["seed", "replicate"])
    rows.append({"case": f"bottleneck nu, R = {R}", "dense_runs": sd.runs_total,
                 "dense_wall_s": wd, "dense_compile_s": sd.compile_s,
                 "refine_runs": sr.runs_total, "refine_wall_s": wr,
                 "refine_compile_s": sr.compile_s,
                 "runs_per_round": sr.stats["refine"]["runs_by_round"], **cmp_})
    return rows


def bench_halving(out, quick):
    """The user-style MLP of bench_own_model.py (32-128-128-1, adamw, minibatch 64, float32)
    over lr x weight_decay x 4 seeds: the full grid against [halving] on train_loss."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_own_model as om

    x, y = om.make_data()
    exp = jaxdyn.supervised("own_mlp", init=lambda key, hp: om.mlp_init(key),
                            loss=lambda params, batch, hp: om.mse(params, *batch), data=(x, y),
                            batch_size=om.BATCH, lr=1e-3, doc="bench_adaptive: MLP")
    runs, steps, every = (32, 400, 50) if quick else (256, 2000, 250)
    rungs = [every, 4 * every]
    lrs, wds = om.grid(runs)
    doc = {"name": "mlp_full", "experiment": "own_mlp", "steps": steps, "seeds": om.SEEDS,
           "log": {"every": every}, "precision": "float32", "optimizer": "adamw",
           "grid": {"lr": lrs, "weight_decay": wds}}
    rows = []
    for name, halv in (("full grid", None),
                       ("halving, whole sweep", {"metric": "train_loss", "mode": "min",
                                                  "keep": 0.25, "rungs": rungs}),
                       ("halving, per seed", {"metric": "train_loss", "mode": "min",
                                              "keep": 0.25, "rungs": rungs, "by": ["seed"]})):
        d = dict(doc, name="mlp_" + name.replace(" ", "_").replace(",", ""))
        if halv:
            d["halving"] = halv
        t = time.perf_counter()
        s = jaxdyn.run(d, experiment=exp, out=out, quiet=True)
        wall = time.perf_counter() - t
        r = s.load().runs
        best = r.sort_values("final_train_loss").iloc[0]
        h = s.stats.get("halving", {})
        rows.append({"case": name, "runs": s.runs_total, "steps": steps, "rungs": rungs,
                     "wall_s": wall, "compile_s": s.compile_s,
                     "run_steps": h.get("run_steps", s.stats.get("run_steps_full")),
                     "run_steps_schedule": h.get("run_steps_schedule", runs * steps),
                     "runs_per_stage": h.get("runs_per_stage", [runs]),
                     "best_final_train_loss": float(best.final_train_loss),
                     "best_lr": float(best.lr), "best_weight_decay": float(best.weight_decay),
                     "best_run_id": best.run_id})
    return rows


def halving_md(rows):
    full = rows[0]
    lines = ["", "## [halving] against the full grid (user-style MLP, lr x weight_decay x 4 "
             "seeds, adamw)", "",
             f"{full['runs']} runs x {full['steps']} steps, rungs {full['rungs']}, keep 0.25, "
             f"metric train_loss (min). Run-steps are counted on the device (padded batches "
             f"included); 'schedule' is runs per stage x steps per stage.", "",
             "| case | runs per stage | run-steps computed | schedule | vs full grid | wall s "
             "| compile s | wall vs full | best final train_loss | its lr, wd |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['case']} | {', '.join(map(str, r['runs_per_stage']))} | "
            f"{r['run_steps']:,} | {r['run_steps_schedule']:,} | "
            f"{r['run_steps'] / full['run_steps']:.3f} | {r['wall_s']:.1f} | "
            f"{r['compile_s']:.1f} | {r['wall_s'] / full['wall_s']:.2f} | "
            f"{r['best_final_train_loss']:.4g} | {r['best_lr']:.3g}, "
            f"{r['best_weight_decay']:.3g} |")
    return "\n".join(lines) + "\n"


def fmt(v, spec=".3g"):
    return "—" if v is None else format(v, spec)


def report(meta, refine_rows, extra_md=""):
    lines = [f"# adaptive sweeps benchmark ({meta['date']}, jax {meta['jax']}, "
             f"{meta['devices']}, git {meta['git']})", "",
             f"Host load average before/after: {meta['load_before']} / {meta['load_after']} "
             f"(shared machine: walls are noisy).", "", "## [refine] against the dense grid "
             "of the same precision", "",
             "| case | dense runs | dense wall s | refine runs | refine wall s | runs ratio | "
             "wall ratio | runs per round | refined brackets in a dense one | dense "
             "brackets not found |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in refine_rows:
        ratio_w = (r["refine_wall_s"] / r["dense_wall_s"]) if r.get("dense_wall_s") else None
        lines.append(
            f"| {r['case']} | {r['dense_runs']:,} | {fmt(r.get('dense_wall_s'))} | "
            f"{r['refine_runs']:,} | {fmt(r['refine_wall_s'])} | "
            f"{r['refine_runs'] / r['dense_runs']:.4f} | {fmt(ratio_w)} | "
            f"{', '.join(map(str, r['runs_per_round']))} | "
            f"{r.get('inside_a_dense_bracket', '—')} of {r.get('refined_brackets', '—')} | "
            f"{r.get('dense_brackets_not_found', '—')} of {r.get('dense_brackets', '—')} |")
    return "\n".join(lines) + "\n" + extra_md


def meta():
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        git = "?"
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "git": git, "load_before": os.getloadavg()[0]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--parts", default="refine,halving")
    args = ap.parse_args(argv)
    os.environ["JAXDYN_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxdyn-bench-adaptive-")
    m = meta()
    res: dict = {"meta": m}
    with tempfile.TemporaryDirectory() as tmp:
        if "refine" in args.parts:
            res["refine"] = bench_refine(Path(tmp), args.quick)
        extra = ""
        if "halving" in args.parts:
            res["halving"] = bench_halving(Path(tmp), args.quick)
            extra = halving_md(res["halving"])
    import jax  # after the first jaxdyn.run: it gives JAX one CPU device per core

    m["jax"] = jax.__version__
    m["devices"] = ", ".join(str(d) for d in jax.devices())
    m["load_after"] = os.getloadavg()[0]
    md = report(m, res.get("refine", []), extra)
    print(md)
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "adaptive.md").write_text(md)
        (out / "adaptive.json").write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()

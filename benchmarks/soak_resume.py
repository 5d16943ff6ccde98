"""Soak test of crash-safe resume: a sweep of 1,000,000 mean-model runs killed with SIGKILL
at random moments N times, then resumed to the end, against an uninterrupted run.

    python benchmarks/soak_resume.py [--runs-per-seed 250000] [--kills 10] [--out DIR]

Checks: exactly the run_ids of the uninterrupted run, none duplicated, identical final
metrics (bitwise) and identical curve row counts. Writes benchmarks/results/soak_resume.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

SWEEP = """
name = "soak"
experiment = "eos.mean_model"
steps = {steps}
seeds = 4
log = {{ every = 100 }}
[fixed]
d = 100
[grid]
lr = {{ start = 1e-4, stop = 1e-1, num = {n}, spacing = "log" }}
"""


def jaxdyn(*args, **kw):
    return [sys.executable, "-m", "jaxdyn", *map(str, args)]


def count_parts(folder: Path) -> int:
    return len(list((folder / "runs").glob("part-*"))) if (folder / "runs").exists() else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs-per-seed", type=int, default=250_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=8192)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="jaxdyn-soak-"))
    sweep = work / "soak.toml"
    sweep.write_text(SWEEP.format(n=args.runs_per_seed, steps=args.steps))
    env = {**os.environ, "JAXDYN_CACHE_DIR": str(work / "cache")}

    t = time.perf_counter()
    subprocess.run(jaxdyn("run", sweep, "--out", work / "ref", "--quiet", "--chunk-size",
                          args.chunk_size), env=env, check=True)
    ref_wall = time.perf_counter() - t

    killed = work / "killed" / "soak"
    log = []
    for i in range(args.kills):
        # kill at a random moment: after a random number (0-5) of new committed chunks plus
        # a random fraction of a chunk's time, so kills land before the first chunk, between
        # chunks and while a part is being written
        target = count_parts(killed) + rng.randint(0, 5)
        extra = rng.uniform(0.0, 1.5)
        p = subprocess.Popen(jaxdyn("run", sweep, "--out", work / "killed", "--quiet",
                                    "--chunk-size", args.chunk_size), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        while p.poll() is None and count_parts(killed) < target:
            time.sleep(0.02)
        time.sleep(extra)
        finished = p.poll() is not None
        if not finished:
            p.send_signal(signal.SIGKILL)
        p.wait()
        log.append({"kill": i + 1, "after_s": round(time.perf_counter() - t0, 2),
                    "finished_before_kill": finished, "runs_parts": count_parts(killed)})
        print(log[-1], flush=True)
    t = time.perf_counter()
    subprocess.run(jaxdyn("run", sweep, "--out", work / "killed", "--quiet", "--chunk-size",
                          args.chunk_size), env=env, check=True)
    final_wall = time.perf_counter() - t

    cols = None
    ref = ds.dataset(str(work / "ref" / "soak" / "runs")).to_table().to_pandas()
    got = ds.dataset(str(killed / "runs")).to_table().to_pandas()
    cols = [c for c in ref.columns if c.startswith("final_")]
    ref = ref.set_index("run_id").sort_index()
    got_ids = got.run_id
    got = got.set_index("run_id").sort_index()
    same_ids = set(ref.index) == set(got.index)
    dupes = int(got_ids.duplicated().sum())
    identical = same_ids and all(np.array_equal(ref[c].to_numpy(), got[c].to_numpy(),
                                                equal_nan=True) for c in cols)
    n_curves_ref = ds.dataset(str(work / "ref" / "soak" / "curves")).count_rows()
    n_curves_got = ds.dataset(str(killed / "curves")).count_rows()
    leftovers = [str(p) for p in killed.rglob(".tmp-*")]
    ok = same_ids and dupes == 0 and identical and n_curves_ref == n_curves_got and not leftovers
    res = {"runs": len(ref), "kills": log, "ref_wall_s": round(ref_wall, 1),
           "final_resume_wall_s": round(final_wall, 1), "same_run_ids": same_ids,
           "duplicate_run_ids": dupes, "final_metrics_identical": identical,
           "curve_rows_ref": n_curves_ref, "curve_rows_resumed": n_curves_got,
           "tmp_leftovers": leftovers, "passed": ok,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak_resume.json").write_text(json.dumps(res, indent=2))
    lines = [f"# Soak: {len(ref):,} runs killed {args.kills} times, then resumed", "",
             f"- date {res['date']}; uninterrupted run {ref_wall:.1f} s; final resume "
             f"{final_wall:.1f} s; {args.chunk_size} runs per chunk "
             f"({-(-len(ref) // args.chunk_size)} chunks)", "", "| kill | after (s) | finished first | runs parts |",
             "|---|---|---|---|"]
    lines += [f"| {k['kill']} | {k['after_s']} | {k['finished_before_kill']} | "
              f"{k['runs_parts']} |" for k in log]
    lines += ["", f"- same run_ids as the uninterrupted run: {same_ids}",
              f"- duplicate run_ids: {dupes}",
              f"- final metrics identical (bitwise, {len(cols)} columns): {identical}",
              f"- curve rows: {n_curves_got:,} (uninterrupted {n_curves_ref:,})",
              f"- temporary files left: {len(leftovers)}", f"- **{'PASS' if ok else 'FAIL'}**"]
    (out / "soak_resume.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

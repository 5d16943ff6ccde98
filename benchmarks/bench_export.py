"""`jaxdyn export` throughput: a 256-run mean-model sweep (101 logged steps, 7 metrics) to
MLflow (file store) and TensorBoard; runs/s and metric values/s, and the re-export (all
skipped). Writes benchmarks/results/export.{md,json}.

    python benchmarks/bench_export.py
"""

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    import jaxdyn

    tmp = Path(tempfile.mkdtemp(prefix="jaxdyn-bench-export-"))
    f = tmp / "ex.toml"
    f.write_text('name = "ex"\nexperiment = "eos.mean_model"\nsteps = 1000\nseeds = 4\n'
                 'log = { every = 10 }\n[grid]\n'
                 'lr = { start = 1e-3, stop = 0.1, num = 64, spacing = "log" }\n')
    jaxdyn.run(f, out=tmp / "res", quiet=True)
    res = {}
    for to in ("mlflow", "tensorboard"):
        t = time.perf_counter()
        a = jaxdyn.export("ex", to, tmp / to, root=tmp / "res")
        wall = time.perf_counter() - t
        t = time.perf_counter()
        b = jaxdyn.export("ex", to, tmp / to, root=tmp / "res")
        res[to] = {"runs": a["runs"], "metrics": a["metrics"], "wall_s": wall,
                   "again_skipped": b["skipped"], "again_s": time.perf_counter() - t}
    out = ROOT / "benchmarks" / "results"
    (out / "export.json").write_text(json.dumps(res, indent=1))
    lines = ["# jaxdyn export (issue 17, item 3)", "",
             f"`python benchmarks/bench_export.py` on {time.strftime('%Y-%m-%d')} (2 shared "
             f"CPUs): a 256-run mean-model sweep, 101 logged steps.", "",
             "| to | runs | metric values | wall | runs/s | values/s | again (all skipped) |",
             "|---|---|---|---|---|---|---|"]
    for to, r in res.items():
        lines.append(f"| {to} | {r['runs']} | {r['metrics']:,} | {r['wall_s']:.1f} s | "
                     f"{r['runs'] / r['wall_s']:.0f} | {r['metrics'] / r['wall_s']:,.0f} | "
                     f"{r['again_s']:.1f} s ({r['again_skipped']} skipped) |")
    (out / "export.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

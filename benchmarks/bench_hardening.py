"""Issue 16's performance targets, measured in one process:

1. validation of the largest shipped sweep (dc_paper, 359,370 runs) before compute: every
   check `jaxdyn run` makes (spec, family check on every grid point, tracing each group,
   memory estimate) through `jaxdyn.check`, against the target of <= 1 s;
2. checking a folder of 1,000 parts on resume (`store.check_parts`: every footer and row
   count, the runs parts' run_ids), and the whole `SweepStore.open` (lock, manifest, clean-up,
   check), against the target of <= 2 s;
3. the repair of a 100,000-run sweep with 5 parts truncated and 1 deleted.

    python benchmarks/bench_hardening.py
"""

import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def best(fn, n=5):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), sorted(ts)[len(ts) // 2]


def main() -> int:
    import os

    os.environ.setdefault("JAXDYN_CPU_DEVICES", "2")
    import jaxdyn
    from jaxdyn import spec, store
    from jaxdyn.launch import prepare

    res = {}
    dc = ROOT / "sweeps" / "dc_paper.toml"
    jaxdyn.check(dc)  # warm: imports, the experiment module
    res["dc_paper_parse_s"] = best(lambda: prepare(dc)[0].runs())
    res["dc_paper_check_s"] = best(lambda: jaxdyn.check(dc))
    # what validation adds before compute: the checks, beyond parsing the file and listing
    # its runs (which the engine needs anyway, and now shares with the checks: Sweep.runs)
    res["dc_paper_added_s"] = [c - p for c, p in zip(res["dc_paper_check_s"],
                                                     res["dc_paper_parse_s"])]
    res["dc_paper_runs"] = jaxdyn.check(dc)["runs"]

    tmp = Path(tempfile.mkdtemp(prefix="jaxdyn-bench-hard-"))
    sweep = tmp / "parts.toml"
    sweep.write_text('name = "parts"\nexperiment = "eos.mean_model"\nsteps = 20\nseeds = 20\n'
                     'log = { every = 10 }\n[grid]\n'
                     'lr = { start = 1e-4, stop = 0.2, num = 1000, spacing = "log" }\n')
    t = time.perf_counter()
    s = jaxdyn.run(sweep, out=tmp / "res", chunk_size=20, quiet=True)
    res["parts_sweep_write_s"] = time.perf_counter() - t
    folder = tmp / "res" / "parts"
    res["parts"] = len(list((folder / "runs").glob("part-*.parquet")))
    res["check_parts_s"] = best(lambda: store.check_parts(folder))
    parsed, _, _ = prepare(sweep)

    def reopen():
        st = store.SweepStore(tmp / "res", "parts")
        st.open(parsed, {"jaxdyn_version": "x"})
        st.close()

    res["store_open_s"] = best(reopen)
    t = time.perf_counter()
    s2 = jaxdyn.run(sweep, out=tmp / "res", chunk_size=20, quiet=True)
    res["resume_nothing_to_do_s"] = time.perf_counter() - t
    assert s2.runs_run == 0 and s.runs_total == 20_000

    big = tmp / "big.toml"
    big.write_text('name = "big"\nexperiment = "eos.mean_model"\nsteps = 20\nseeds = 100\n'
                   'log = { every = 10 }\n[grid]\n'
                   'lr = { start = 1e-4, stop = 0.2, num = 1000, spacing = "log" }\n')
    t = time.perf_counter()
    jaxdyn.run(big, out=tmp / "big", chunk_size=2000, quiet=True)
    res["big_first_run_s"] = time.perf_counter() - t
    bf = tmp / "big" / "big"
    rng = random.Random(16)
    names = sorted(p.name for p in (bf / "runs").glob("part-*.parquet"))
    victims = rng.sample(names, 6)
    for n in victims[:5]:
        p = bf / rng.choice(["runs", "curves"]) / n
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    (bf / rng.choice(["runs", "curves"]) / victims[5]).unlink()
    t = time.perf_counter()
    s3 = jaxdyn.run(big, out=tmp / "big", chunk_size=2000, quiet=True)
    res["big_repair_run_s"] = time.perf_counter() - t
    res["big_repaired_parts"] = len(s3.repaired)
    res["big_rerun_runs"] = s3.runs_run
    shutil.rmtree(tmp, ignore_errors=True)

    out = ROOT / "benchmarks" / "results"
    (out / "hardening.json").write_text(json.dumps(res, indent=1))
    lines = [
        "# Issue 16: validation and folder-check cost", "",
        f"`python benchmarks/bench_hardening.py` on {time.strftime('%Y-%m-%d')} (2-core "
        f"CPU machine, shared; best and median of 5).", "",
        "| what | best | median | target |", "|---|---|---|---|",
        f"| dc_paper ({res['dc_paper_runs']:,} runs): parse and validate the file, list its "
        f"runs (run_ids; the engine needs them anyway) | "
        f"{res['dc_paper_parse_s'][0]:.3f} s | {res['dc_paper_parse_s'][1]:.3f} s | |",
        f"| dc_paper: all of `jaxdyn.check` (the above, the family check on every grid "
        f"point, tracing, memory) | {res['dc_paper_check_s'][0]:.3f} s | "
        f"{res['dc_paper_check_s'][1]:.3f} s | |",
        f"| dc_paper: **added by validation** (difference) | "
        f"{res['dc_paper_added_s'][0]:.3f} s | {res['dc_paper_added_s'][1]:.3f} s | ≤ 1 s |",
        f"| `store.check_parts` on {res['parts']:,} parts (20,000 runs) | "
        f"{res['check_parts_s'][0]:.3f} s | {res['check_parts_s'][1]:.3f} s | ≤ 2 s |",
        f"| `SweepStore.open` of that folder (lock, manifest, clean-up, check) | "
        f"{res['store_open_s'][0]:.3f} s | {res['store_open_s'][1]:.3f} s | ≤ 2 s |",
        "", f"A whole `jaxdyn.run` with nothing left to do on the 1,000-part folder: "
        f"{res['resume_nothing_to_do_s']:.2f} s.", "",
        f"100,000-run sweep (mean model, 20 steps, 50 parts): first run "
        f"{res['big_first_run_s']:.1f} s; after truncating 5 parts and deleting 1, one "
        f"`jaxdyn run` moved {res['big_repaired_parts']} damaged chunks to damaged/ and re-ran "
        f"{res['big_rerun_runs']:,} runs in {res['big_repair_run_s']:.1f} s "
        f"(bitwise identity with the undamaged tables: tests/test_repair.py).", "",
    ]
    (out / "hardening.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

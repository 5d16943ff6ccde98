"""The outputs of ``jaxdyn bench``: ``bench.parquet``, ``bench.md`` and ``bench.json``.

Owns: the table's columns (``COLUMNS``), the Markdown report (``report``, with issue 8's
targets checked by ``_targets`` and the number formats ``_fmt``, ``_bytes``) and writing the
three files (``write``, ``_json_default``).

Must not: measure or run anything; it formats the rows and meta it is given.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _fmt(x, spec=".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec)


def _bytes(x) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    for unit, k in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if x >= k:
            return f"{x / k:.3g} {unit}"
    return f"{x:.0f} B"


def _targets(meta: dict, rows: list[dict]) -> list[str]:
    """Issue 8's targets, checked against this run's figures."""
    eng = {(r["experiment"], r["case"]): r for r in rows if r["kind"] == "engine"}
    base = [r for r in rows if r["kind"] == "baseline" and r["experiment"] == "eos.mean_model"]
    out = []
    mm = eng.get(("eos.mean_model", "large"))
    kern = [r for r in base if r["impl"].startswith("hand-written")]
    loop = [r for r in base if r["impl"].startswith("per-run Python loop")]
    if mm and kern:
        best = max(kern, key=lambda r: r["run_steps_per_s"])
        e2e = mm["run_steps_per_s"] / best["run_steps_per_s"]
        st = mm["steady_run_steps_per_s"] / best["run_steps_per_s"]
        # like for like: the kernel end to end too (its compile + its timed run)
        best_e2e = max(r["runs"] * r["steps"] / (r["wall_s"] + r["compile_s"]) for r in kern)
        like = mm["run_steps_per_s"] / best_e2e
        out.append(f"- engine ≥ 80 % of the best hand-written kernel (mean model, large): "
                   f"end to end {100 * like:.0f} % of the kernel end to end "
                   f"({'met' if like >= 0.8 else 'NOT met'}); {100 * e2e:.0f} % of its "
                   f"steady rate (compile excluded for the kernel only); steady "
                   f"{100 * st:.0f} % ({'met' if st >= 0.8 else 'NOT met'}). This suite's "
                   f"runs are short, so compiles dominate end to end; "
                   f"benchmarks/bench_engine.py measures the sweep sizes of sweeps/")
    if mm and loop:
        x = mm["run_steps_per_s"] / loop[0]["run_steps_per_s"]
        out.append(f"- engine ≥ 3,000× the per-run Python loop: {x:.3g}× end to end "
                   f"({'met' if x >= 3000 else 'NOT met'}); steady "
                   f"{mm['steady_run_steps_per_s'] / loop[0]['run_steps_per_s']:.3g}×")
    bn = [r for r in eng.values() if r["experiment"] == "bottleneck.three_layer"]
    if bn:
        best = max(bn, key=lambda r: r["flop_frac"])
        out.append(f"- bottleneck network ≥ 40 % of the matmul ceiling: best case "
                   f"({best['case']}) {100 * best['flop_frac']:.0f} % "
                   f"({'met' if best['flop_frac'] >= 0.4 else 'NOT met'})")
    if meta.get("suite") == "quick":
        out.append(f"- quick suite under 5 minutes: {meta['total_s']:.0f} s "
                   f"({'met' if meta['total_s'] < 300 else 'NOT met'})")
    return (["", "## Issue 8 targets on this run", ""] + out) if out else []


def report(meta: dict, rows: list[dict]) -> str:
    c = meta["ceilings"]
    L = [f"# jaxdyn bench — suite `{meta['suite']}`", "",
         f"- {meta['date']}; jaxdyn {meta['jaxdyn_version']}, jax {meta['jax_version']}; "
         f"device: {meta['device']}",
         f"- host: {meta['host']}; load average (1/5/15 min) at start {meta['load_start']}, "
         f"at end {meta['load_end']} (other processes on the host skew every timing)",
         f"- total time of the command: {meta['total_s']:.1f} s ("
         + ", ".join(f"{k} {v:.1f} s" for k, v in meta.get("phase_s", {}).items()) + ")", "",
         "## Device ceilings (measured by this command, float32, all devices at once)", "",
         f"- matmul: **{c['flop_per_s'] / 1e9:.3g} GFLOP/s** (n = {c['matmul_n']}); "
         f"copy: **{c['bytes_per_s'] / 1e9:.3g} GB/s** "
         f"({c['copy_array_bytes'] / 2 ** 20:.0f} MiB array, read + write)", "",
         "## Engine, end to end", "",
         "| experiment | case | runs × steps | chunks × batch | wall (s) | compile (s) | "
         "run·steps/s end to end | steady s / chunk step | steady run·steps/s | "
         "FLOP/run·step | GFLOP/s (% ceiling) | GB/s (% ceiling) | XLA chunk memory | "
         "host peak RSS |",
         "|" + "---|" * 14]
    for r in rows:
        if r["kind"] != "engine":
            continue
        lb = " ≥" if r["cost_lower_bound"] else ""
        L.append(
            f"| {r['experiment']} | {r['case']} | {r['runs']} × {r['steps']} | "
            f"{r['chunks']} × {r['batch']} | {r['wall_s']:.2f} | {r['compile_s']:.2f} | "
            f"{_fmt(r['run_steps_per_s'])} | {_fmt(r['steady_s_per_step'])} | "
            f"{_fmt(r['steady_run_steps_per_s'])} | {_fmt(r['flops_per_run_step'])} | "
            f"{lb}{_fmt(r['flop_per_s'] / 1e9)} ({_fmt(100 * r['flop_frac'], '.2g')} %) | "
            f"{lb}{_fmt(r['bytes_per_s'] / 1e9)} ({_fmt(100 * r['bytes_frac'], '.2g')} %) | "
            f"{_bytes(r['xla_peak_bytes'])} | {_bytes(r['host_peak_rss_bytes'])} |")
    for fam, why in meta["skipped"].items():
        L.append(f"\n- skipped {fam}: {why}")
    base = [r for r in rows if r["kind"] == "baseline"]
    if base:
        L += ["", "## Baselines in the same process (same math, same steps)", "",
              "| experiment | implementation | runs × steps | wall (s) | compile (s) | "
              "run·steps/s | engine end to end / this | engine steady / this |",
              "|---|---|---|---|---|---|---|---|"]
        for r in base:
            L.append(f"| {r['experiment']} | {r['impl']} | {r['runs']} × {r['steps']} | "
                     f"{r['wall_s']:.3g} | {_fmt(r['compile_s'])} | "
                     f"{_fmt(r['run_steps_per_s'])} | "
                     f"**{_fmt(r.get('engine_over_this'))}** | "
                     f"{_fmt(r.get('engine_steady_over_this'))} |")
        L.append("")
        L.append("The engine figures in the ratios are those of the large case of the same "
                 "experiment; 'end to end' includes its compile and Parquet writing, "
                 "'steady' is the compiled chunk program re-run alone.")
    for n in meta.get("notes", []):
        L.append(f"- {n}")
    L += _targets(meta, rows)
    lc = meta["loop_check"]
    L += ["", "## How the figures are derived", "",
          "- run·steps/s end to end = runs × steps / wall seconds of `engine.run_sweep` "
          "(compile, compute and Parquet writing, on a temporary folder).",
          "- steady state = the compiled chunk program re-executed once (twice more if under "
          "1 s, fastest kept) on the group's first chunk after the sweep; seconds per chunk "
          "step = that time / steps.",
          f"- XLA's cost analysis counts a while loop's body "
          f"{'once' if lc['while_body_counted_once'] else 'NOT once (check the numbers)'}: "
          f"a fori_loop of a 64×64 "
          f"matmul reports {lc['fori_loop_any_trip_count_flops']:.4g} FLOP for any trip "
          f"count (one matmul is {lc['matmul_flops']:.4g}; unrolled ×4 in Python: "
          f"{lc['unrolled_4_flops']:.4g}). The chunk program's own figure "
          f"(`xla_raw_flops` in the table) therefore misses almost all steps. FLOPs and bytes "
          "per chunk are instead once + steps × step + (log points + 1) × measure, each the "
          "cost analysis of a loop-free program at the chunk's batch (once = make_data and "
          "init, unoptimised estimate; step = the "
          "experiment's step, the engine's finiteness check and freeze, vmapped). Achieved "
          "= that / steady seconds per chunk. '≥' marks a lower bound (a piece still had a "
          "loop inside).",
          "- bytes are XLA's 'bytes accessed' (operands + results of each fused kernel): a "
          "working set that stays in cache can exceed the copy ceiling, which is measured "
          "on arrays larger than any cache.",
          "- memory: 'XLA chunk memory' = arguments + outputs + temporaries of the compiled "
          "chunk program (XLA's memory analysis); host peak RSS = VmHWM during the case "
          "(reset per case where /proc/self/clear_refs allows; else the process peak so far).",
          f"- ceilings: {c['how']}."]
    return "\n".join(L) + "\n"


COLUMNS = ["suite", "kind", "experiment", "case", "impl", "runs", "steps", "log_points",
           "chunks", "batch", "wall_s", "compile_s", "run_steps_per_s", "chunk_compute_s",
           "steady_chunk_s", "steady_s_per_step", "steady_run_steps_per_s",
           "flops_per_chunk", "bytes_per_chunk", "transcendentals_per_chunk",
           "flops_per_run_step", "bytes_per_run_step", "flop_per_s", "bytes_per_s",
           "flop_ceiling", "bytes_ceiling", "flop_frac", "bytes_frac", "cost_lower_bound",
           "cost_note", "xla_raw_flops", "xla_arg_bytes", "xla_out_bytes", "xla_temp_bytes",
           "xla_peak_bytes", "device_peak_bytes", "host_peak_rss_bytes", "diverged",
           "engine_over_this", "engine_steady_over_this", "device", "backend", "n_devices",
           "jax_version", "date"]


def write(out: Path, meta: dict, rows: list[dict]) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in COLUMNS]
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    df = df[COLUMNS + extra]
    df.to_parquet(out / "bench.parquet", index=False)
    (out / "bench.md").write_text(report(meta, rows))
    (out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2,
                                               default=_json_default) + "\n")


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return str(x)

"""``jaxdyn bench``: how fast the engine runs each experiment family on this device, against
the device's own measured limits and against hand-written baselines, all in one process.

For every available family the suite runs a small and a large sweep end to end through the
real engine (a sweep file parsed by ``jaxdyn.spec``, a ``SweepStore`` in a temporary folder,
``engine.run_sweep``: compile, compute and Parquet writing) and reports

- run·steps/s end to end (runs × steps / wall seconds of ``run_sweep``) and compile time;
- steady state: one more execution of the compiled chunk program after the sweep (compile
  excluded), as seconds per chunk step and run·steps/s;
- achieved FLOP/s and bytes/s: XLA's cost analysis counts a while loop's body ONCE, whatever
  its trip count (checked by the command itself on a fori_loop of 1 and 64 steps; see
  ``loop_accounting_check``), so the chunk program's own figure is meaningless for a loop of
  thousands of steps. The per-chunk cost is therefore built from loop-free programs compiled
  at the chunk's batch, exactly the pieces the engine's loop runs:
  ``once (make_data + init) + steps × step (the step, the finiteness check and the freeze)
  + (log points + 1) × measure``, each from ``compiled.cost_analysis()``;
- device ceilings measured in the same process: a large float32 matmul (FLOP/s) and a
  large float32 array copy ``x + 1`` (bytes/s, read + write), both at default precision;
- memory: XLA's memory analysis of the compiled chunk program, the device's peak bytes in use
  where the backend reports it, and the host's peak RSS during the case (VmHWM, reset per
  case through /proc/self/clear_refs where Linux allows).

Baselines for the mean model, same math and steps: a per-run Python loop around a jitted
step, a per-run jitted ``lax.scan``, a hand-written ``jit(vmap)`` kernel (each parameter its
own ``(runs,)`` leaf, no freezing, no Parquet). Optional, when ``import torch`` works: PyTorch
per-run loops and ``torch.func.vmap`` ensembles of the mean model, the DC neuron and the
bottleneck network.

No device-specific code path: it runs unchanged on CPU, GPU or TPU.

Modules, each owning one concern (its docstring says which, and what it must not do):
:mod:`~jaxdyn.bench.suites` (families, sizes, the cases' sweep files),
:mod:`~jaxdyn.bench.timing` (the measuring helpers), :mod:`~jaxdyn.bench.ceilings` (the
device's limits, the loop-accounting check), :mod:`~jaxdyn.bench.cost` (the per-chunk cost
model), :mod:`~jaxdyn.bench.cases` (one engine case), :mod:`~jaxdyn.bench.baselines` (the
JAX mean-model baselines, also run by ``benchmarks/bench_engine.py``),
:mod:`~jaxdyn.bench.torch_baselines` (the optional PyTorch ones) and
:mod:`~jaxdyn.bench.report` (``bench.parquet``, ``bench.md``, ``bench.json``). Imports go one
way: timing ← ceilings, cost ← cases (with suites); timing ← baselines ← torch_baselines;
report alone. This package holds the command itself (``run``, ``main_from_args``, the
baseline and PyTorch sizes per suite) and re-exports what other code uses as ``bench.X``.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from jaxdyn.bench.baselines import (LR_START, LR_STOP, _lrs, _mm_pieces, baseline_hand_kernel,
                                    baseline_python_loop, baseline_scan_per_run)
from jaxdyn.bench.cases import run_engine_case
from jaxdyn.bench.ceilings import (every_device_sharding, loop_accounting_check,
                                   measure_ceilings, on_every_device)
from jaxdyn.bench.cost import chunk_cost
from jaxdyn.bench.report import COLUMNS, report, write
from jaxdyn.bench.suites import (_SIZES, _SUITE_INDEX, FAMILIES, SUITE_NAMES, Case,
                                 make_cases, sweep_toml)
from jaxdyn.bench.timing import _cost, _load
from jaxdyn.bench.torch_baselines import _torch, torch_baselines
from jaxdyn.launch import version

# What other code reaches as ``bench.X`` (the CLI, tests/test_bench.py, benchmarks/*.py),
# private names included: they were one module's names before the split.
__all__ = ["COLUMNS", "Case", "FAMILIES", "LR_START", "LR_STOP", "SUITE_NAMES", "_SIZES",
           "_SUITE_INDEX", "_cost", "_lrs", "_mm_pieces", "baseline_hand_kernel",
           "baseline_python_loop", "baseline_scan_per_run", "chunk_cost",
           "every_device_sharding", "loop_accounting_check", "main_from_args", "make_cases",
           "measure_ceilings", "on_every_device", "report", "run", "run_engine_case",
           "sweep_toml", "torch_baselines", "write"]

_BASELINE_SIZES = {  # (python-loop runs, per-run scan runs)
    "tiny": (2, 4), "quick": (4, 64), "full": (8, 256),
}
_TORCH_CAP = {"tiny": 1.0, "quick": 6.0, "full": 60.0}  # seconds per PyTorch baseline
_TORCH_SIZES = {  # family -> (steps, per-run loop runs, vmap runs[, width, n_train])
    "tiny": {"eos.mean_model": (40, 2, 64)},
    "quick": {"eos.mean_model": (2000, 2, 32768), "dc.neuron": (1100, 2, 4096),
              "bottleneck.three_layer": (200, 2, 128, 1000, 2048)},
    "full": {"eos.mean_model": (10000, 2, 65536), "dc.neuron": (16500, 2, 8192),
             "bottleneck.three_layer": (2000, 2, 512, 1000, 10000)},
}


def run(suite: str = "quick", out: str | Path | None = None, only: list[str] | None = None,
        torch: bool = True, echo: Callable[[str], None] = print) -> tuple[Path, list[dict]]:
    """Run the suite; write ``bench.parquet``, ``bench.md`` and ``bench.json`` to ``out``."""
    t_start = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc)
    if out is None:
        out = Path("benchmarks") / "results" / f"bench-{date.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix="jaxdyn-bench-"))
    # a fresh, empty persistent compilation cache: compile times are cold and honest
    os.environ["JAXDYN_CACHE_DIR"] = str(tmp / "xla-cache")

    import jax

    from jaxdyn import engine

    load_start = _load()
    meta = {"suite": suite, "date": date.isoformat(timespec="seconds"),
            "jax_version": jax.__version__, "jaxdyn_version": version(),
            "device": engine.device_description(), "backend": jax.default_backend(),
            "n_devices": len(jax.local_devices()),
            "host": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
                    f"python {platform.python_version()})",
            "load_start": load_start, "notes": []}
    rows: list[dict] = []
    try:
        echo(f"[bench] device: {meta['device']}; measuring ceilings ...")
        t = time.perf_counter()
        ceil = (measure_ceilings(max_n=512, min_copy_bytes=2.0 ** 24, min_total=0.02)
                if suite == "tiny" else measure_ceilings())
        meta["ceilings"] = ceil
        phases = meta["phase_s"] = {"ceilings": time.perf_counter() - t}
        echo(f"[bench] matmul {ceil['flop_per_s'] / 1e9:.3g} GFLOP/s, copy "
             f"{ceil['bytes_per_s'] / 1e9:.3g} GB/s")
        meta["loop_check"] = loop_accounting_check()
        t = time.perf_counter()
        cases, skipped = make_cases(suite, only)
        meta["skipped"] = skipped
        for fam, why in skipped.items():
            echo(f"[bench] skip {fam}: {why}")
        for case in cases:
            echo(f"[bench] {case.family} {case.size}: {case.runs} runs × {case.steps} steps")
            r = run_engine_case(case, tmp / "results", ceil)
            echo(f"[bench]   {r['wall_s']:.2f} s (compile {r['compile_s']:.2f} s), "
                 f"{r['run_steps_per_s']:.3g} run·steps/s end to end, steady "
                 f"{r['steady_run_steps_per_s']:.3g}; {r['flop_per_s'] / 1e9:.3g} GFLOP/s")
            rows.append(r)

        phases["engine_cases"] = time.perf_counter() - t
        t = time.perf_counter()
        large = {r["experiment"]: r for r in rows if r["case"] == "large"}
        mm = large.get("eos.mean_model")
        if mm is not None:
            a_runs, b_runs = _BASELINE_SIZES[suite]
            steps, every = mm["steps"], _SIZES["eos.mean_model"][_SUITE_INDEX[suite]][1]
            echo(f"[bench] mean-model baselines: {steps} steps ...")
            kernels = [baseline_hand_kernel(mm["runs"], steps, every)]
            if mm["batch"] < mm["runs"]:
                kernels.append(baseline_hand_kernel(mm["runs"], steps, every,
                                                    chunk=int(mm["batch"])))
            for b in (baseline_python_loop(a_runs, steps, every),
                      baseline_scan_per_run(b_runs, steps, every), *kernels):
                rows.append({"kind": "baseline", "experiment": "eos.mean_model",
                             "case": "baseline", **b})
                echo(f"[bench]   {b['impl']}: {b['run_steps_per_s']:.3g} run·steps/s")
        else:
            meta["notes"].append("mean-model baselines skipped: no eos.mean_model case")
        phases["baselines"] = time.perf_counter() - t
        t = time.perf_counter()
        if torch:
            tm, why = _torch()
            if tm is None:
                meta["notes"].append(f"PyTorch baselines skipped: import torch failed ({why})")
                echo(f"[bench] PyTorch baselines skipped: {why}")
            else:
                sizes = {k: v for k, v in _TORCH_SIZES[suite].items()
                         if k in large or suite == "tiny"}
                echo(f"[bench] PyTorch {tm.__version__} baselines: {sorted(sizes)} ...")
                trows, tnotes = torch_baselines(tm, sizes, time_cap=_TORCH_CAP[suite])
                rows += trows
                meta["notes"] += tnotes
                meta["torch_version"] = tm.__version__
        else:
            meta["notes"].append("PyTorch baselines not run (--no-torch)")
        phases["torch"] = time.perf_counter() - t
        for r in rows:
            if r["kind"] != "baseline":
                continue
            e = large.get(r["experiment"])
            if e is not None:
                r["engine_over_this"] = e["run_steps_per_s"] / r["run_steps_per_s"]
                r["engine_steady_over_this"] = (e["steady_run_steps_per_s"]
                                                / r["run_steps_per_s"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta["load_end"] = _load()
    meta["total_s"] = time.perf_counter() - t_start
    for r in rows:
        r.update({"suite": suite, "device": meta["device"], "backend": meta["backend"],
                  "n_devices": meta["n_devices"], "jax_version": meta["jax_version"],
                  "date": meta["date"]})
    write(out, meta, rows)
    return out, rows


def main_from_args(args) -> int:
    """``jaxdyn bench`` (called by the CLI)."""
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    echo = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr,
                                                                 flush=True))
    import jax

    with jax.enable_x64(True):  # as jaxdyn.run: float64 cases need it, float32 ones keep it
        out, rows = run(args.suite, args.out, only, torch=not args.no_torch, echo=echo)
    print((out / "bench.md").read_text())
    print(f"[bench] wrote {out / 'bench.parquet'}, {out / 'bench.md'}, {out / 'bench.json'}")
    return 0

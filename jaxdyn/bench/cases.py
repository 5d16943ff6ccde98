"""One engine case of the suite: a sweep run end to end, then its steady state and costs.

Owns: ``run_engine_case`` (``engine.run_sweep`` on a ``SweepStore`` in a temporary folder,
the compiled chunk program re-run for the steady state, its cost from ``chunk_cost``, XLA's
memory analysis, device and host peaks) and the layout of an engine row of the table.

Must not: measure ceilings, run baselines or write the report; one case in, one row out.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from jaxdyn.bench.cost import _cost_note, chunk_cost
from jaxdyn.bench.suites import Case
from jaxdyn.bench.timing import (_best_time, _block, _cost, _device_peak_bytes,
                                 _proc_status_kb, _reset_peak_rss)


def run_engine_case(case: Case, root: Path, ceil: dict) -> dict:
    from jaxdyn import engine, experiments, spec
    from jaxdyn.store import SweepStore

    sw = spec.parse(case.toml, experiments.params_of)
    exp = experiments.get(sw.experiment)
    store = SweepStore(root, sw.name)
    store.open(sw)
    walls = []

    def progress(event, **kw):
        if event == "chunk":
            walls.append(kw["wall"])

    _reset_peak_rss()
    try:
        t0 = time.perf_counter()
        summary = engine.run_sweep(sw, exp, store, progress=progress)
        wall = time.perf_counter() - t0
        runners = summary["runners"]  # to reach their compiled programs
    finally:
        store.close()
    rss_peak = _proc_status_kb("VmHWM")
    used = [r for r in runners if getattr(r, "batch", None)] or runners
    if len(used) != 1:
        raise RuntimeError(f"bench case {case.family}/{case.size}: expected one compiled "
                           f"group, got {len(used)}")
    runner = used[0]
    batch = int(runner.batch or runner.padded(len(runner.group.runs)))
    compiled = runner.compiled(batch)  # already compiled by the sweep: no new compile

    # steady state: the compiled chunk program once more, on the group's first chunk (more
    # times if short), or the fastest chunk of the sweep after its first, if faster (every
    # chunk runs the same program at the same padded batch)
    chunk = runner.group.runs[:batch]
    first = time.perf_counter()
    _block(runner(chunk))
    first = time.perf_counter() - first
    steady = first if first > 1.0 else min(first, _best_time(lambda: _block(runner(chunk)), 2))
    steady = min([steady] + walls[1:])
    n_chunk = len(chunk)  # real runs of a full chunk (padding runs are wasted work)

    n_logs = len(runner.log_steps)
    cost = chunk_cost(exp, runner.static, batch, n_logs + 1, sw.steps, sw.diverge_above)
    raw = _cost(compiled)
    ma = None
    with contextlib.suppress(Exception):
        ma = compiled.memory_analysis()

    def mget(name):
        return float(getattr(ma, name, float("nan"))) if ma is not None else float("nan")

    xla_peak = getattr(ma, "peak_memory_in_bytes", None) if ma is not None else None
    if not xla_peak:
        xla_peak = (mget("argument_size_in_bytes") + mget("output_size_in_bytes")
                    + mget("temp_size_in_bytes") - mget("alias_size_in_bytes"))
    flops_s = cost["flops_chunk"] / steady
    bytes_s = cost["bytes_chunk"] / steady
    runs = summary["runs_run"]
    return {
        "kind": "engine", "experiment": case.family, "case": case.size, "impl": "jaxdyn engine",
        "runs": runs, "steps": sw.steps, "log_points": n_logs, "chunks": summary["chunks"],
        "batch": batch, "wall_s": wall, "compile_s": float(summary["compile_s"]),
        "run_steps_per_s": runs * sw.steps / wall,
        "chunk_compute_s": float(sum(walls)),
        "steady_chunk_s": steady, "steady_s_per_step": steady / sw.steps,
        "steady_run_steps_per_s": n_chunk * sw.steps / steady,
        "flops_per_chunk": cost["flops_chunk"], "bytes_per_chunk": cost["bytes_chunk"],
        "transcendentals_per_chunk": cost["transcendentals_chunk"],
        "flops_per_run_step": cost["flops_step"] / batch,
        "bytes_per_run_step": cost["bytes_step"] / batch,
        "flop_per_s": flops_s, "bytes_per_s": bytes_s,
        "flop_ceiling": ceil["flop_per_s"], "bytes_ceiling": ceil["bytes_per_s"],
        "flop_frac": flops_s / ceil["flop_per_s"],
        "bytes_frac": bytes_s / ceil["bytes_per_s"],
        "cost_lower_bound": bool({"step", "measure"} & set(cost["loops"])),
        "cost_note": _cost_note(cost),
        "xla_raw_flops": float(raw.get("flops", float("nan"))),
        "xla_arg_bytes": mget("argument_size_in_bytes"),
        "xla_out_bytes": mget("output_size_in_bytes"),
        "xla_temp_bytes": mget("temp_size_in_bytes"),
        "xla_peak_bytes": float(xla_peak),
        "device_peak_bytes": _device_peak_bytes(),
        "host_peak_rss_bytes": rss_peak,
        "diverged": int(summary.get("diverged", 0)),
    }

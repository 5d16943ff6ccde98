"""The sweep explorer: ``jaxdyn report`` build time and file size, and headless Chromium's time
to first chart, for sweeps of 1e3, 1e5 and 1e6 runs; ``jaxdyn serve`` latency for the sweep
list and one explorer while a sweep writes.

The 1e3-run sweep is computed by ``jaxdyn run`` (eos.mean_model). The 1e5- and 1e6-run sweeps
are SYNTHETIC: their runs and curves tables are written through ``jaxdyn.store`` (the same
``SweepStore.open`` / ``write_chunk`` the engine uses: same folder layout, manifest, part
names and Parquet schema) with values from a closed-form stand-in for the mean model (no JAX
compute), so that the explorer reads exactly the format of a real sweep of that size.

    python benchmarks/bench_report.py [--out DIR] [--sizes 1e3,1e5,1e6]

Writes benchmarks/results/report.{md,json}. Needs chromium and chromedriver (Debian:
apt-get install chromium chromium-driver) and selenium for the browser timings.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

# lr x d grid of the 1e5/1e6 synthetic sweeps: 2500 log-spaced lr x 4 d = 10000 grid points
SYNTH = """
name = "{name}"
experiment = "eos.mean_model"
description = "SYNTHETIC tables (bench_report.py): closed-form values, written via jaxdyn.store"
steps = 10000
seeds = {seeds}
log = {{ every = 500 }}
precision = "float32"
[fixed]
init_scale = 0.01
[grid]
d = [50, 100, 200, 400]
lr = {{ start = 1.5e-5, stop = 0.11, num = {n_lr}, spacing = "log" }}
"""
REAL = """
name = "real_1e3"
experiment = "eos.mean_model"
steps = 2000
seeds = 5
log = { every = 100 }
precision = "float32"
diverge_above = 1000.0
[fixed]
init_scale = 0.01
[grid]
d = [50, 100, 200, 400]
lr = { start = 1.5e-5, stop = 0.11, num = 50, spacing = "log" }
"""
WRITER = """
name = "writing"
experiment = "eos.mean_model"
steps = 20000
seeds = 2
log = { every = 300 }
[fixed]
d = 100
[grid]
lr = { start = 1e-3, stop = 3e-2, num = 4000, spacing = "log" }
"""


def write_synthetic(root: Path, name: str, seeds: int, n_lr: int, chunk: int = 20000) -> dict:
    """A sweep folder of ``seeds * n_lr * 4`` runs with closed-form values, written through
    jaxdyn.store exactly as the engine writes (manifest, committed parts, progress)."""
    from jaxdyn import experiments, spec, store
    from jaxdyn.engine.plan import plan_groups

    t0 = time.perf_counter()
    text = SYNTH.format(name=name, seeds=seeds, n_lr=n_lr)
    f = root.parent / f"{name}.toml"
    f.write_text(text)
    sweep = spec.parse(text, experiments.params_of, file=f, max_runs=10**7)
    exp = experiments.get(sweep.experiment)
    runs = sweep.runs()
    groups = plan_groups(sweep, exp, runs)
    log_steps = np.asarray(sweep.log.steps(sweep.steps))
    st = store.SweepStore(root, name)
    st.open(sweep, {"jaxdyn_version": "0.1.0", "jax_version": "synthetic",
                    "device": "none (synthetic tables)", "process_count": 1})
    scalar = [m.name for m in exp.metrics if not m.shape]
    started = time.time()
    done = 0
    rng = np.random.default_rng(0)
    try:
        for g in groups:
            for i in range(0, len(g.runs), chunk):
                ch = g.runs[i:i + chunk]
                lr = np.array([r.hp["lr"] for r in ch])
                d = np.array([r.hp["d"] for r in ch], dtype=float)
                x = lr / (8 * np.pi / d ** 2)  # eta / eta*
                n = len(ch)
                t = log_steps[None, :] / log_steps[-1]
                noise = rng.normal(0, 0.05, n)
                b_final = np.where(x < 1, 0.0, np.sqrt(np.maximum(x - 1, 0))) + noise
                curves = {}
                for k, m in enumerate(scalar):
                    curves[m] = ((b_final[:, None] * (1 - np.exp(-5 * t)) + 0.01 * k)
                                 * (1 + 0.1 * np.sin(7 * t * (k + 1)))).astype(np.float32)
                alive = x < 6
                dstep = np.where(alive, 0, sweep.steps // 2)
                final = {m: v[:, -1] for m, v in curves.items()}
                st.write_chunk(sweep, exp, g, ch, log_steps, curves, final, alive, dstep, 0.0)
                done += n
        st.write_progress({"pid": os.getpid(), "host": platform.node(), "process_index": 0,
                           "started": started, "chunks_total": 1, "chunks_done": 1,
                           "runs_total": done, "runs_done": done, "steps": sweep.steps,
                           "finished": time.time()})
    finally:
        st.close()
    return {"runs": done, "write_s": time.perf_counter() - t0}


def folder_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def make_driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1300,1000"):
        o.add_argument(a)
    o.binary_location = shutil.which("chromium")
    return webdriver.Chrome(options=o, service=Service(shutil.which("chromedriver")))


def first_chart_s(driver, url: str, repeats: int = 3) -> list[dict]:
    """Chromium's times from navigation start (fresh load each time): to the first chart
    (the heatmap, drawn first: the page's ``firstChartMs``) and to every view drawn
    (``readyMs``), and the page's own split (decode, each view)."""
    out = []
    for _ in range(repeats):
        driver.get("about:blank")
        driver.get(url)
        t0 = time.time()
        while driver.execute_script("return document.body && document.body.dataset.ready") \
                != "1":
            if time.time() - t0 > 120:
                raise RuntimeError(f"{url}: no chart after 120 s")
            time.sleep(0.02)
        ds = driver.execute_script("return Object.assign({}, document.body.dataset)")
        out.append({"first_chart_s": float(ds["firstChartMs"]) / 1e3,
                    "all_views_s": float(ds["readyMs"]) / 1e3,
                    "decode_ms": float(ds["decodeMs"]), "draw_ms": json.loads(ds["drawMs"])})
    return out


def get(base: str, path: str) -> tuple[int, float, int]:
    host, port = base.removeprefix("http://").split(":")
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(host, int(port), timeout=120)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, time.perf_counter() - t0, len(body)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--sizes", default="1e3,1e5,1e6")
    args = ap.parse_args()
    from jaxdyn.explore import report
    from jaxdyn.explore._report import plotly_js
    from jaxdyn.explore._serve import make_server

    work = Path(args.out or tempfile.mkdtemp(prefix="bench-report-"))
    root = work / "res"
    root.mkdir(parents=True, exist_ok=True)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rows = []
    driver = make_driver()
    try:
        for size in sizes:
            if size == 1000:
                name = "real_1e3"
                if not (root / name).exists():
                    f = work / "real_1e3.toml"
                    f.write_text(REAL)
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "jaxdyn", "run", str(f), "--out",
                                    str(root), "--quiet"], check=True, cwd=REPO)
                    made = {"runs": 1000, "write_s": time.perf_counter() - t0}
                else:
                    made = {"runs": 1000, "write_s": None}
                kind = "real (jaxdyn run, eos.mean_model, 2000 steps)"
            else:
                seeds = size // 10000
                name = f"synthetic_{size:.0e}".replace("+", "")
                if not (root / name).exists():
                    made = write_synthetic(root, name, seeds=seeds, n_lr=2500)
                else:
                    made = {"runs": size, "write_s": None}
                kind = "synthetic tables via jaxdyn.store (2500 lr x 4 d x %d seeds)" % seeds
            page = work / f"{name}.html"
            builds = []
            for _ in range(2):
                info = report(name, page, root=root)
                builds.append(info["build_s"])
            fc = first_chart_s(driver, page.as_uri())
            row = {"sweep": name, "kind": kind, "runs": info["runs"], "points": info["points"],
                   "tables_mb": folder_bytes(root / name) / 1e6,
                   "report_build_s": min(builds), "report_build_s_all": builds,
                   "report_mb": info["bytes"] / 1e6,
                   "first_chart_s": statistics.median(x["first_chart_s"] for x in fc),
                   "all_views_s": statistics.median(x["all_views_s"] for x in fc),
                   "browser": fc, "tables_write_s": made["write_s"]}
            print(json.dumps(row), flush=True)
            rows.append(row)

        # ---- serve while a sweep writes -----------------------------------------------
        srv = make_server(root, port=0)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        wf = work / "writing.toml"
        wf.write_text(WRITER)
        shutil.rmtree(root / "writing", ignore_errors=True)
        proc = subprocess.Popen([sys.executable, "-m", "jaxdyn", "run", str(wf), "--out",
                                 str(root), "--chunk-size", "8", "--quiet", "--force"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        lat = {"list": [], "api_sweeps": [], "explorer_writing": [], "data_writing": [],
               "explorer_largest": []}
        t_start = time.time()
        while not (root / "writing" / "manifest.json").exists():
            time.sleep(0.05)
        largest = rows[-1]["sweep"] if rows else None
        while proc.poll() is None and time.time() - t_start < 300:
            for key, path in (("list", "/"), ("api_sweeps", "/api/sweeps"),
                              ("explorer_writing", "/sweeps/writing/"),
                              ("data_writing", "/sweeps/writing/data.json")):
                st, dt, _ = get(base, path)
                if st == 200:
                    lat[key].append(dt)
            time.sleep(0.2)
        proc.wait()
        if largest:  # the largest sweep's explorer (first: built; then: cached snapshot)
            for _ in range(3):
                st, dt, n = get(base, f"/sweeps/{largest}/")
                lat["explorer_largest"].append(dt)
        srv.shutdown()
        srv.server_close()
        # the serve command's start-up: process start to the first answered request
        t0 = time.perf_counter()
        sp = subprocess.Popen([sys.executable, "-m", "jaxdyn", "serve", "--out", str(root),
                               "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = sp.stdout.readline()
        st, _, _ = get("http://" + line.split("http://")[1].split("/")[0], "/api/sweeps")
        startup = time.perf_counter() - t0
        sp.send_signal(2)
        sp.wait(timeout=10)
    finally:
        driver.quit()

    def q(v):
        if not v:
            return None
        v = sorted(v)
        return {"n": len(v), "median_ms": 1e3 * statistics.median(v),
                "p95_ms": 1e3 * v[min(len(v) - 1, int(0.95 * len(v)))], "max_ms": 1e3 * v[-1]}

    serve = {k: q(v) for k, v in lat.items()}
    serve["startup_s"] = startup
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(),
           "cpus": os.cpu_count(), "chromium": subprocess.run(
               ["chromium", "--version"], capture_output=True, text=True).stdout.strip(),
           "plotly_js_mb": len(plotly_js().encode()) / 1e6, "reports": rows, "serve": serve}
    res = HERE / "results"
    (res / "report.json").write_text(json.dumps(out, indent=2))
    md = [f"# Explorer benchmark ({out['date']}, {out['cpus']} CPUs, {out['chromium']})", "",
          "`python benchmarks/bench_report.py`. The 1e3-run sweep is computed by `jaxdyn run`; "
          "the 1e5- and 1e6-run sweeps are **synthetic** tables written through "
          "`jaxdyn.store` (same layout and schema as a real sweep, closed-form values). "
          f"Every page inlines Plotly ({out['plotly_js_mb']:.2f} MB of it).", "",
          "Chromium is headless with software WebGL (SwiftShader: the parallel coordinates "
          "are WebGL); times from navigation start, median of 3 fresh loads.", "",
          "| sweep | runs | grid points | tables | report build | report size | "
          "Chromium: first chart | all views drawn |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['sweep']} ({r['kind']}) | {r['runs']:,} | {r['points']:,} | "
                  f"{r['tables_mb']:.1f} MB | {r['report_build_s']:.2f} s | "
                  f"{r['report_mb']:.2f} MB | {r['first_chart_s']:.2f} s | "
                  f"{r['all_views_s']:.2f} s |")
    md += ["", "`jaxdyn serve` over this root while `jaxdyn run` writes another 8,000-run "
           "sweep (`writing`) in chunks of 8, requests one at a time every 0.2 s: `list` is "
           "the sweep list page, `api_sweeps` its data (progress of every sweep: the running "
           "one is re-read each time), `explorer_writing`/`data_writing` the running sweep's "
           "explorer page and data (rebuilt whenever a chunk landed since the last request), "
           "`explorer_largest` the 1e6-run sweep's explorer (first request builds it, the "
           "next ones reuse the build of the same snapshot):", "",
           "| request | n | median | p95 | max |", "|---|---:|---:|---:|---:|"]
    for k, v in serve.items():
        if isinstance(v, dict):
            md.append(f"| {k} | {v['n']} | {v['median_ms']:.0f} ms | {v['p95_ms']:.0f} ms | "
                      f"{v['max_ms']:.0f} ms |")
    md += ["", f"`jaxdyn serve` start-up (process start to the first answered request): "
           f"{startup:.2f} s."]
    (res / "report.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

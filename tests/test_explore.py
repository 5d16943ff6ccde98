"""The sweep explorer: ``jaxdyn report`` (one HTML file) and ``jaxdyn serve``, driven in a real
headless Chromium (Debian's ``chromium`` and ``chromium-driver`` through Selenium).

Expected values come from the sweep's part files read with pyarrow and aggregated with pandas,
not from the page's own data. In CI (``CI=true``) a missing browser fails these tests; locally
they are skipped."""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import ROOT

SWEEP = """
name = "eos"
experiment = "eos.mean_model"
steps = 200
seeds = 2
log = { every = 20 }
diverge_above = 0.6
[fixed]
init_scale = 0.01
[grid]
d = [50, 100, 200]
lr = { start = 1e-3, stop = 0.1, num = 4, spacing = "log" }
"""
N_LR, N_D, N_SEEDS = 4, 3, 2


def _browser_paths():
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return chrome, driver


def _no_browser(why: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs a headless browser for the explorer tests: {why} "
                    f"(.ci/run installs chromium and chromium-driver with apt-get)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from jaxdyn.cli import main

    base = tmp_path_factory.mktemp("explore")
    f = base / "eos.toml"
    f.write_text(SWEEP)
    res = base / "res"
    assert main(["run", str(f), "--out", str(res), "--quiet"]) == 0
    return res


@pytest.fixture(scope="module")
def runs(root):
    """The reference: the runs parts read with pyarrow, in float64."""
    files = sorted((root / "eos" / "runs").glob("part-*.parquet"))
    df = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    f32 = {c: df[c].dtype == "float32" for c in df.columns}
    df = df.astype({c: "float64" for c in df.columns if f32[c]})
    df.attrs["f32"] = f32
    return df


@pytest.fixture(scope="module")
def curves(root):
    files = sorted((root / "eos" / "curves").glob("part-*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


@pytest.fixture(scope="module")
def report_file(root, tmp_path_factory):
    from jaxdyn.cli import main

    out = tmp_path_factory.mktemp("page") / "eos.html"
    assert main(["report", "eos", "--out", str(root), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def server(root):
    from jaxdyn.explore._serve import make_server

    srv = make_server(root, port=0, refresh_ms=300)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _no_browser("selenium is not installed (pip install -e '.[dev]')")
    chrome, drv = _browser_paths()
    if not (chrome and drv):
        _no_browser("no chromium/chromedriver on PATH (apt-get install chromium "
                    "chromium-driver)")
    o = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1300,1000"):
        o.add_argument(a)
    o.binary_location = chrome
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=o, service=Service(drv))
    d.set_script_timeout(30)
    yield d
    d.quit()


def _open(driver, url):
    driver.get("about:blank")  # stop the previous page (a served one polls its server)
    driver.get_log("browser")  # and drop its messages
    driver.get(url)
    _wait(driver, "return document.body && document.body.dataset.ready === '1'")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def _wait(driver, js, timeout=20.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = driver.execute_script(js)
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {js}")


@pytest.fixture(params=["report", "served"])
def page(request, driver, report_file, server):
    """The explorer opened from the report file, or from ``jaxdyn serve``."""
    url = (report_file.as_uri() if request.param == "report" else f"{server}/sweeps/eos/")
    _open(driver, url)
    return driver


def _heatmap_cells(driver):
    """{(lr, d): value} of the drawn heatmap (its x/y values, not the page's data)."""
    tr = driver.execute_script(
        "const t = document.getElementById('heat-0').data[0]; "
        "return {x: t.meta.x, y: t.meta.y, z: t.z};")
    cells = {}
    for yi, d in enumerate(tr["y"]):
        for xi, lr in enumerate(tr["x"]):
            if tr["z"][yi][xi] is not None:
                cells[(lr, d)] = tr["z"][yi][xi]
    return cells


def _expected(runs, metric, agg="median"):
    """Per (lr, d): the aggregate over seeds, computed in float64 by pandas; the page holds
    a float32 metric's aggregates in float32 (the metric has no more digits), so the value
    expected is that float64 one rounded to float32."""
    got = runs.groupby(["lr", "d"])[metric].agg(agg)
    if runs.attrs["f32"].get(metric):
        got = got.astype(np.float32).astype(np.float64)
    return got.to_dict()


def _assert_cells(cells, expected):
    assert len(cells) == N_LR * N_D == len(expected)
    for key, want in expected.items():
        match = [v for (lr, d), v in cells.items()
                 if d == key[1] and lr == pytest.approx(key[0], rel=1e-12)]
        assert len(match) == 1, key
        assert match[0] == want, key


def test_heatmap_has_one_cell_per_point_with_the_runs_table_value(page, runs):
    # x = lr, y = d by default; value: median over seeds of final_* from the runs table
    metric = page.execute_script("return document.getElementById('metric').value")
    assert page.execute_script("return document.getElementById('hx').value") == "lr"
    assert page.execute_script("return document.getElementById('hy').value") == "d"
    _assert_cells(_heatmap_cells(page), _expected(runs, metric))
    # lr is log-spaced: a log axis
    assert page.execute_script(
        "return document.getElementById('heat-0').layout.xaxis.type") == "log"
    # diverged grid points are marked, and only those
    marks = page.execute_script(
        "const t = document.getElementById('heat-0').data[1]; return [t.x, t.y];")
    div = runs[runs.status != "ok"].groupby(["lr", "d"]).size()
    assert len(div) > 0, "the fixture sweep should have diverged runs"
    got = sorted((round(x, 12), y) for x, y in zip(*marks))
    assert got == sorted((round(lr, 12), d) for lr, d in div.index)


def test_header_counts_and_times(page, runs, root):
    text = page.find_element("id", "header").text
    n_div = int((runs.status != "ok").sum())
    assert f"{len(runs)} of {N_LR * N_D * N_SEEDS} done, {n_div} diverged (complete)" in text
    assert "eos.mean_model" in text and "eos.toml" in text
    rec = json.loads((root / "eos" / "progress-0.json").read_text())
    assert rec["compile_s"] > 0  # the launch records its compile time when it finishes
    assert "compile " in text and "not recorded" not in text
    assert json.loads((root / "eos" / "manifest.json").read_text())["jax_version"] in text


def test_choosing_another_metric_and_aggregate_redraws(page, runs):
    from selenium.webdriver.support.ui import Select

    first = page.execute_script("return document.getElementById('metric').value")
    Select(page.find_element("id", "metric")).select_by_value("final_sharpness")
    assert first != "final_sharpness"
    _assert_cells(_heatmap_cells(page), _expected(runs, "final_sharpness"))
    Select(page.find_element("id", "agg")).select_by_value("max")
    _assert_cells(_heatmap_cells(page), _expected(runs, "final_sharpness", "max"))
    # the lines follow: one line per d, the max over seeds at each lr
    lines = page.execute_script(
        "return document.getElementById('lines').data.filter(t => t.customdata)"
        ".map(t => [t.name, t.x, t.y]);")
    assert len(lines) == N_D
    want = _expected(runs, "final_sharpness", "max")
    for name, xs, ys in lines:
        d = int(name.split("=")[1])
        assert len(xs) == N_LR
        for lr, y in zip(xs, ys):
            w = [v for (l2, d2), v in want.items() if d2 == d and l2 == pytest.approx(lr)]
            assert y == w[0]


def test_facets_and_spread_bands(page, runs):
    """Heatmaps of lr alone, one per d (facet); the lines' shaded band is the seeds' min-max."""
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "metric")).select_by_value("final_b")
    Select(page.find_element("id", "hy")).select_by_value("(none)")
    Select(page.find_element("id", "facet")).select_by_value("d")
    want = _expected(runs, "final_b")
    ds = sorted(runs.d.unique())
    assert page.execute_script("return document.getElementById('heatmaps').children.length") \
        == len(ds)
    for fi, d in enumerate(ds):
        tr = page.execute_script(f"const t = document.getElementById('heat-{fi}').data[0]; "
                                 f"return [t.meta.x, t.z, document.getElementById('heat-{fi}')"
                                 f".layout.title.text];")
        xs, z, title = tr
        assert title.startswith(f"d = {d}:")
        assert len(z) == 1 and len(xs) == N_LR
        for lr, v in zip(xs, z[0]):
            assert v == [w for (l2, d2), w in want.items() if d2 == d and
                         l2 == pytest.approx(lr)][0]
    bands = page.execute_script(
        "const t = document.getElementById('lines').data;"
        "return t.filter(q => q.customdata).map(q => {"
        "  const k = t.indexOf(q); return [q.name, q.x, t[k - 2].y, t[k - 1].y]; });")
    f32 = runs.attrs["f32"]["final_b"]
    for name, xs, hi, lo in bands:
        d = int(name.split("=")[1])
        for lr, h, l in zip(xs, hi, lo):
            sel = runs[(runs.d == d) & np.isclose(runs.lr, lr, rtol=1e-12)].final_b
            mx, mn = (np.float32(sel.max()), np.float32(sel.min())) if f32 else (sel.max(),
                                                                                sel.min())
            assert (h, l) == (float(mx), float(mn))


def _click_cell(driver, lr, d):
    from selenium.webdriver.common.action_chains import ActionChains

    el = driver.find_element("id", "heat-0")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
    dx, dy = driver.execute_script(
        "const gd = arguments[0], L = gd._fullLayout, r = gd.getBoundingClientRect();"
        "const x = L.xaxis._offset + L.xaxis.d2p(arguments[1]);"
        "const y = L.yaxis._offset + L.yaxis.d2p(arguments[2]);"
        "return [x - r.width / 2, y - r.height / 2];", el, lr, d)
    ActionChains(driver).move_to_element_with_offset(el, int(dx), int(dy)).click().perform()


def test_clicking_a_cell_shows_that_points_curves(page, runs, curves):
    lr = sorted(runs.lr.unique())[2]
    d = 100
    _click_cell(page, lr, d)
    traces = _wait(page, "const t = document.getElementById('curves').data; "
                         "return t && t.length ? t.map(q => [q.meta, q.x, q.y]) : null;")
    want = runs[(runs.d == d) & np.isclose(runs.lr, lr, rtol=1e-12)]
    assert sorted(t[0] for t in traces) == sorted(want.run_id)
    metric = page.execute_script("return document.getElementById('cmetric').value")
    for rid, xs, ys in traces:
        c = curves[curves.run_id == rid].sort_values("step")
        assert xs == c.step.tolist()
        np.testing.assert_allclose(np.array(ys, dtype=float), c[metric].to_numpy(np.float32),
                                   rtol=1e-6, equal_nan=True)
    # another curves metric, on log axes
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "cmetric")).select_by_value("loss")
    page.find_element("id", "clogy").click()
    ys = page.execute_script("return document.getElementById('curves').data[0].y")
    rid = page.execute_script("return document.getElementById('curves').data[0].meta")
    c = curves[curves.run_id == rid].sort_values("step")
    np.testing.assert_allclose(np.array(ys, dtype=float), c.loss.to_numpy(np.float32),
                               rtol=1e-6, equal_nan=True)
    assert page.execute_script(
        "return document.getElementById('curves').layout.yaxis.type") == "log"


def test_clicking_a_line_point_shows_that_points_curves(page, runs):
    from selenium.webdriver.common.action_chains import ActionChains

    el = page.find_element("id", "lines")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
    # the point of the d = 200 line at the largest lr (where the lines are far apart)
    name, lr, y, dx, dy = page.execute_script(
        "const gd = arguments[0], L = gd._fullLayout, r = gd.getBoundingClientRect();"
        "const t = gd.data.find(q => q.customdata && q.name === 'd=200');"
        "const x = t.x[t.x.length - 1], y = t.y[t.y.length - 1];"
        "return [t.name, x, y, L.xaxis._offset + L.xaxis.d2p(x) - r.width / 2,"
        "        L.yaxis._offset + L.yaxis.d2p(y) - r.height / 2];", el)
    ActionChains(page).move_to_element_with_offset(el, int(dx), int(dy)).click().perform()
    traces = _wait(page, "const t = document.getElementById('curves').data; "
                         "return t && t.length ? t.map(q => q.meta) : null;")
    want = runs[(runs.d == 200) & np.isclose(runs.lr, lr, rtol=1e-12)]
    assert sorted(traces) == sorted(want.run_id)


def test_brushing_a_parallel_axis_filters_the_table(page, runs):
    from selenium.webdriver.common.action_chains import ActionChains

    assert int(page.find_element("id", "runs-table").get_attribute("data-matching")) == len(runs)
    # the brush handle of the second axis (lr, as log10): drag over its upper half
    rects = page.find_elements("css selector", "#parcoords .axis-brush rect.background")
    names = page.execute_script(
        "return document.getElementById('parcoords').data[0].dimensions.map(d => d.label)")
    j = names.index("lr (log10)")
    rect = rects[j]
    page.execute_script("arguments[0].scrollIntoView({block: 'center'});", rect)
    h = rect.size["height"]
    (ActionChains(page).move_to_element_with_offset(rect, 0, int(-h / 2) + 2).click_and_hold()
     .move_by_offset(0, int(h * 0.3)).move_by_offset(0, int(h * 0.1)).release().perform())
    rng = _wait(page, "const d = document.getElementById('parcoords').data[0].dimensions["
                      f"{j}]; return d.constraintrange || null;")
    lo, hi = rng if not isinstance(rng[0], list) else rng[0]
    want = runs[(np.log10(runs.lr) >= lo) & (np.log10(runs.lr) <= hi)]
    assert 0 < len(want) < len(runs)
    _wait(page, f"return document.getElementById('runs-table').dataset.matching == "
                f"'{len(want)}'")
    shown = page.execute_script(
        "return [...document.querySelectorAll('#runs-table tbody tr')]"
        ".map(r => r.cells[0].textContent)")
    assert sorted(shown) == sorted(want.run_id)
    # the heatmap shows only the brushed points too
    assert len(_heatmap_cells(page)) == want.groupby(["lr", "d"]).ngroups


def test_table_sorts_and_filters(page, runs):
    page.execute_script("const f = document.getElementById('filter'); f.value = 'd=200 "
                        "status=ok'; f.dispatchEvent(new Event('input'));")
    want = runs[(runs.d == 200) & (runs.status == "ok")]
    assert int(page.find_element("id", "runs-table").get_attribute("data-matching")) == len(want)
    page.find_element("css selector", "#runs-table th[data-col='final_b']").click()
    col = page.execute_script(
        "const ths = [...document.querySelectorAll('#runs-table th')];"
        "const j = ths.findIndex(t => t.dataset.col === 'run_id');"
        "return [...document.querySelectorAll('#runs-table tbody tr')]"
        ".map(r => r.cells[j].textContent)")
    assert col == want.sort_values("final_b").run_id.tolist()


def test_report_opens_with_the_network_disabled(driver, report_file):
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0,
                                  upload_throughput=0)
    try:
        _open(driver, report_file.as_uri())
        assert driver.execute_script("return typeof Plotly") == "object"
        assert driver.execute_script(
            "return document.querySelectorAll('#heat-0 .hm, #heat-0 image').length") > 0
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert not [u for u in fetched if not u.startswith(("file:", "data:", "blob:"))]
    finally:
        driver.delete_network_conditions()


def test_a_sweep_with_no_finished_chunk_yet_renders(driver, root, tmp_path):
    """As `jaxdyn serve` shows a sweep that has just started: a manifest, no parts."""
    from jaxdyn.explore import report

    res = tmp_path / "res"
    (res / "eos" / "runs").mkdir(parents=True)
    shutil.copy(root / "eos" / "manifest.json", res / "eos" / "manifest.json")
    out = tmp_path / "empty.html"
    report("eos", out, root=res)
    _open(driver, out.as_uri())
    assert "0 of 24 done" in driver.find_element("id", "header").text
    assert "No grid axes or final metrics yet" in driver.find_element("id", "heatmaps").text


# ---- jaxdyn serve ------------------------------------------------------------------------
LIVE = """
name = "live"
experiment = "eos.mean_model"
steps = 3000
seeds = 2
log = { every = 300 }
[fixed]
d = 100
[grid]
lr = { start = 1e-3, stop = 3e-2, num = 1000, spacing = "log" }
"""
# 250 chunks of 8 runs: a few seconds of writing here, several polls of the list at 200 ms


def test_served_list_updates_progress_while_a_sweep_runs(driver, tmp_path):
    from jaxdyn.explore._serve import make_server

    root = tmp_path / "res"
    root.mkdir()
    f = tmp_path / "live.toml"
    f.write_text(LIVE)
    srv = make_server(root, port=0, refresh_ms=200)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    env = {**os.environ, "JAXDYN_CACHE_DIR": str(tmp_path.parent / "jaxdyn-test-cache")}
    proc = subprocess.Popen([sys.executable, "-m", "jaxdyn", "run", str(f), "--out", str(root),
                             "--chunk-size", "8", "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        driver.get(base + "/")
        seen = []
        t0 = time.time()
        while time.time() - t0 < 240:
            row = driver.execute_script(
                "const r = document.querySelector('#sweeps tr[data-name=live]');"
                "return r ? [Number(r.dataset.done), r.dataset.state] : null;")
            if row and (not seen or row != seen[-1]):
                seen.append(row)
            if row and row[1] == "complete":
                break
            time.sleep(0.1)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
        total = 2000
        assert seen[-1] == [total, "complete"], seen
        partial = [n for n, state in seen if 0 < n < total and state == "running"]
        assert partial, f"the list never showed a running sweep part-way: {seen}"
        dones = [n for n, _ in seen]
        assert dones == sorted(dones), seen
        # the explorer of the finished sweep shows every run
        _open(driver, base + "/sweeps/live/")
        n = driver.execute_script("return window.jaxdyn.data.meta.runs_done")
        assert n == total
    finally:
        driver.get("about:blank")  # before the server stops: the page polls it
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.shutdown()
        srv.server_close()


def test_served_explorer_refreshes_while_the_sweep_grows(driver, root, tmp_path):
    """A running sweep's explorer polls its data: new chunks appear without a reload."""
    from jaxdyn.explore._serve import make_server

    live = tmp_path / "res"
    live.mkdir()
    shutil.copytree(root / "eos", live / "eos", ignore=shutil.ignore_patterns("part-*"))
    parts = sorted((root / "eos" / "runs").glob("part-*.parquet"))
    srv = make_server(live, port=0, refresh_ms=200)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    try:
        _open(driver, f"http://127.0.0.1:{srv.server_address[1]}/sweeps/eos/")
        assert driver.execute_script("return window.jaxdyn.data.meta.runs_done") == 0
        for p in parts:  # commit the chunks as the writer does: whole files renamed into
            for table in ("curves", "runs"):  # place, curves first, runs last
                tmp = live / "eos" / table / f".tmp-{p.name}"
                shutil.copy(root / "eos" / table / p.name, tmp)
                os.replace(tmp, live / "eos" / table / p.name)
        _wait(driver, f"return window.jaxdyn.data.meta.runs_done === {N_LR * N_D * N_SEEDS}")
        _wait(driver, "return document.getElementById('heat-0') && "
                      "document.getElementById('heat-0').data[0].z.flat()"
                      ".filter(v => v !== null).length === 12")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.get("about:blank")
        srv.shutdown()
        srv.server_close()


# ---- the server's paths ------------------------------------------------------------------
def _get(base: str, path: str, method: str = "GET"):
    host, port = base.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.putrequest(method, path, skip_accept_encoding=True)  # the path as written: no cleanup
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


@pytest.fixture(scope="module")
def traversal_root(root, tmp_path_factory):
    """A results root with: the sweep; a link to a sweep folder outside the root; a sweep
    whose runs folder links outside; a secret file beside the root."""
    base = tmp_path_factory.mktemp("trav")
    outside = base / "outside"
    shutil.copytree(root / "eos", outside / "eos")
    (base / "secret.txt").write_text("SECRET-TOKEN")
    (outside / "eos" / "runs" / "secret.txt").write_text("SECRET-TOKEN")
    r = base / "res"
    shutil.copytree(root / "eos", r / "eos")
    (r / "linked").symlink_to(outside / "eos", target_is_directory=True)
    shutil.copytree(root / "eos", r / "inner", ignore=shutil.ignore_patterns("runs"))
    (r / "inner" / "runs").symlink_to(outside / "eos" / "runs", target_is_directory=True)
    (r / "eos" / "leak").symlink_to(base / "secret.txt")
    return r


@pytest.fixture(scope="module")
def trav_server(traversal_root):
    from jaxdyn.explore._serve import make_server

    srv = make_server(traversal_root, port=0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/sweeps/../../secret.txt", "/sweeps/eos/../../../secret.txt",
    "/sweeps/..%2f..%2fsecret.txt/", "/sweeps/%2e%2e/", "/sweeps/%2e%2e/data.json",
    "/%2e%2e/%2e%2e/secret.txt", "/sweeps/eos/%2e%2e/%2e%2e/secret.txt",
    "/sweeps/eos%2fleak/", "/sweeps/eos/leak", "/sweeps/eos/manifest.json",
    "/sweeps/eos/runs/", "/static/..%2fsecret.txt", "/static/%2e%2e/%2e%2e/secret.txt",
    "/sweeps/eos%00/", "/sweeps/%ff%fe/", "/sweeps//etc/passwd", "//etc/passwd",
    "/sweeps/%252e%252e/", "/etc/passwd", "/sweeps/nosuch/"])
def test_traversal_is_refused(trav_server, path):
    status, body = _get(trav_server, path)
    assert status == 404, (path, status)
    assert b"SECRET" not in body and b"root:" not in body


@pytest.mark.parametrize("name", ["linked", "inner"])
def test_links_out_of_the_root_are_forbidden(trav_server, name):
    for path in (f"/sweeps/{name}/", f"/sweeps/{name}/data.json"):
        status, body = _get(trav_server, path)
        assert status == 403, (path, status)
        assert b"SECRET" not in body and b"run_id" not in body
    status, body = _get(trav_server, "/api/sweeps")
    assert status == 200 and [s["name"] for s in json.loads(body)] == ["eos"]


def test_server_is_read_only_and_local_by_default(trav_server, traversal_root):
    from jaxdyn.explore._serve import make_server

    for method in ("POST", "PUT", "DELETE"):
        status, _ = _get(trav_server, "/sweeps/eos/", method)
        assert status == 501, method
    assert _get(trav_server, "/sweeps/eos/data.json")[0] == 200
    srv = make_server(traversal_root, port=0)
    try:
        assert srv.server_address[0] == "127.0.0.1"
    finally:
        srv.server_close()


def test_serve_command_starts_and_stops_on_ctrl_c(root):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxdyn", "serve", "--out", str(root),
                             "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        base = line.split("http://")[1].split("/")[0]
        status, body = _get("http://" + base, "/api/sweeps")
        assert status == 200 and json.loads(body)[0]["runs_done"] == N_LR * N_D * N_SEEDS
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("args, words", [
    (["report", "nosuch", "-o", "x.html"], ["no sweep 'nosuch'"]),
    (["report", "eos", "-o", "x.png"], ["-o", "expected an .html file name"]),
    (["serve", "--port", "70000"], ["--port", "0..65535"]),
])
def test_explorer_command_errors(root, cli, tmp_path, args, words):
    code, _, err = cli(*args, "--out", root)
    assert code == 2 and err.startswith("jaxdyn: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_serve_refuses_a_missing_root(cli, tmp_path):
    code, _, err = cli("serve", "--out", tmp_path / "nothere", "--port", "0")
    assert code == 2 and "nothere" in err and "no such folder" in err, err

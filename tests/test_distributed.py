"""Multi-process runs on JAX's own multi-controller runtime, two processes on one folder,
and the results of a distributed sweep against a single-process one."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import jaxdyn

from conftest import ROOT, run_subprocess

SWEEP = """
name = "dist"
experiment = "eos.mean_model"
steps = 1500
seeds = [0, 3]
log = {{ every = 500 }}
[grid]
d = [50, 100]
lr = {{ start = 1e-3, stop = 5e-2, num = {num}, spacing = "log" }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tables(folder):
    res = jaxdyn.load(folder)
    return (res.runs.set_index("run_id").sort_index(),
            res.curves().set_index(["run_id", "step"]).sort_index())


@pytest.mark.parametrize("n_proc", [2, 3])
def test_multi_process_union_equals_single_process(n_proc, write_sweep, tmp_path):
    path = write_sweep(SWEEP.format(num=60))
    env = {"JAXDYN_CACHE_DIR": str(tmp_path / "cache")}
    single = run_subprocess(["run", path, "--out", tmp_path / "one", "--chunk-size", 16,
                             "--quiet"], env)
    assert single.returncode == 0, single.stderr
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "jaxdyn", "run", str(path), "--out", str(tmp_path / "many"),
         "--chunk-size", "16", "--quiet", "--distributed", "--coordinator",
         f"127.0.0.1:{port}", "--num-processes", str(n_proc), "--process-id", str(i)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(n_proc)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    parts = list((tmp_path / "many" / "dist" / "runs").glob("part-*"))
    writers = {p.name.split("-")[2] for p in parts}
    assert writers == {f"p{i}" for i in range(n_proc)}  # every process wrote its own parts
    r1, c1 = tables(tmp_path / "one" / "dist")
    rn, cn = tables(tmp_path / "many" / "dist")
    assert rn.index.is_unique and len(rn) == len(r1) == 240
    assert list(rn.index) == list(r1.index)
    assert cn.index.equals(c1.index)
    for m in ("loss", "b", "a_sum"):
        np.testing.assert_array_equal(cn[m].to_numpy(), c1[m].to_numpy())


def test_second_run_on_same_folder_is_refused(write_sweep, tmp_path):
    """A second `jaxdyn run` of the same sweep and folder is refused while the first runs;
    the first completes untouched."""
    # long enough (a few seconds alone, more under a parallel suite) that the first still
    # holds the lock when the second, which traces and checks its experiment first, asks
    path = write_sweep(SWEEP.format(num=400).replace("steps = 1500", "steps = 400000"))
    env = {**os.environ, "JAXDYN_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.Popen([sys.executable, "-m", "jaxdyn", "run", str(path), "--out",
                              str(tmp_path), "--chunk-size", "32", "--quiet"], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    deadline = time.time() + 120
    while not (tmp_path / "dist" / "manifest.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = run_subprocess(["run", path, "--out", tmp_path, "--quiet"],
                            {"JAXDYN_CACHE_DIR": str(tmp_path / "cache")})
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "being run by another process" in second.stderr
    runs = jaxdyn.load(tmp_path / "dist").runs
    assert len(runs) == 1600 and runs.run_id.is_unique

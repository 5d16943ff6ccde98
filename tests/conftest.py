import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every in-process test sees the same backend: 2 CPU devices, whatever the machine's core
# count and whichever test touches JAX first. (Before, a test file that started JAX ahead of
# the first in-process `jaxdyn run` left 1 device for the rest of the session, and
# test_micro_batch.py then compared 48-run shares, whose batched products round the
# bottleneck's train_loss differently in the last bit, instead of 24-run ones.)
jax.config.update("jax_num_cpu_devices", 2)
# Tests that call the engine's or a family's functions directly compare float64 results
# against NumPy: they need x64, which jaxdyn.run turns on only while it runs (importing
# jaxdyn changes no JAX setting; test_api checks that in a fresh process).
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def write_sweep(tmp_path):
    """Write a sweep file from TOML text; returns its path."""

    def _write(text: str, name: str = "sweep.toml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return _write


@pytest.fixture
def cli(capsys):
    """Run ``jaxdyn ARGS`` in-process; returns (exit status, stdout, stderr)."""
    from jaxdyn.cli import main

    def _run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


def run_subprocess(args, env_extra=None, **kw):
    """``python -m jaxdyn ARGS`` in a fresh process (for multi-device and kill tests)."""
    env = {**os.environ, **(env_extra or {})}
    env.setdefault("JAXDYN_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) /
                                           "jaxdyn-test-cache"))
    return subprocess.run([sys.executable, "-m", "jaxdyn", *map(str, args)], env=env,
                          capture_output=True, text=True, cwd=ROOT, **kw)

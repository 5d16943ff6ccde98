"""Sweep files generated from the schema, for the validation fuzz suite (issue 16).

:func:`sweep_files` is a Hypothesis strategy of ``(experiment, TOML text)``: a sweep of one
built-in experiment whose every key — and every hyperparameter of that experiment, in
``[fixed]``, ``[grid]`` (lists and range tables) and ``[zip]`` — is drawn from a mix of
valid values (around the declared defaults, the choices of a string parameter) and invalid
ones (wrong types, zero, negatives, NaN/inf, huge numbers, unknown names, broken tables).
:func:`outcome` runs one through ``jaxdyn run`` with compute replaced by a sentinel, so
exactly the checks a real run makes run, and nothing is computed.

Used by ``tests/test_fuzz.py`` (a sample, in CI) and ``benchmarks/fuzz_validation.py`` (the
recorded run of >= 10,000 files).
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import traceback
from pathlib import Path

from hypothesis import strategies as st

from jaxdyn import experiments, optim

EXPERIMENTS = experiments.names()
HUGE = [2**31, 2**53, 2**63, 10**20, 10**12]
ODD_FLOATS = [0.0, -0.0, -1.0, 1e-300, 1e300, math.inf, -math.inf, math.nan]
JUNK = st.sampled_from(["", "x", "nan", "1e3", "true", "[1]", "\n", "é", "../etc"])


def _toml_str(s: str) -> str:
    """A TOML basic string: backslash, quote and control characters escaped."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:  # a lone surrogate cannot be written in UTF-8
            out.append("?")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v) -> str:
    """A TOML inline value (nested tables inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_str(str(k))} = {toml_value(x)}"
                                for k, x in v.items()) + " }"
    raise TypeError(type(v))


def to_toml(doc: dict) -> str:
    """Top-level scalars first, then one ``[table]`` per dict value."""
    lines, tables = [], []
    for k, v in doc.items():
        (tables if isinstance(v, dict) else lines).append(k)
    out = [f"{_toml_str(k)} = {toml_value(doc[k])}" for k in lines]
    for k in tables:
        out.append(f"[{_toml_str(k)}]")
        out += [f"{_toml_str(str(kk))} = {toml_value(vv)}" for kk, vv in doc[k].items()]
    return "\n".join(out) + "\n"


def any_value():
    return st.one_of(st.integers(-10, 10), st.sampled_from(HUGE), st.sampled_from(ODD_FLOATS),
                     st.floats(allow_nan=True), st.booleans(), JUNK,
                     st.lists(st.integers(-3, 3), max_size=3), st.just({}))


def mostly(good, bad, odds: int = 12):
    """``good`` most of the time, ``bad`` one time in ``odds``: a file has a few faults, so
    that every check is reached (an all-hostile file stops at its first key)."""
    # the middle value: Hypothesis favours the ends of a range, so they stay "good"
    return st.integers(0, odds - 1).flatmap(lambda i: bad if i == odds // 2 else good)


def param_value(p):
    """A value for hyperparameter ``p``: mostly near its default (or one of its choices),
    sometimes anything."""
    d = p.default
    if p.type is bool:
        good = st.booleans()
    elif p.type is str:
        good = st.sampled_from(list(p.choices)) if p.choices else st.just(d)
    elif p.type is int:
        good = st.integers(max(0, d // 2), max(1, d * 2)) if d > 0 else st.integers(0, 3)
    else:
        good = st.floats(d / 4, d * 4) if d > 0 else st.floats(-1.0, 1.0)
    bad = st.one_of(st.integers(-5, 2), st.sampled_from(HUGE),
                    st.sampled_from(ODD_FLOATS), JUNK, st.booleans(), any_value())
    return mostly(good, bad, 6)


def range_table(p):
    good = st.fixed_dictionaries({"start": param_value(p), "stop": param_value(p),
                                  "num": st.integers(1, 4)},
                                 optional={"spacing": st.sampled_from(["linear", "log"])})
    bad = st.fixed_dictionaries({}, optional={
        "start": param_value(p), "stop": param_value(p),
        "num": st.one_of(st.integers(-2, 0), st.sampled_from(HUGE), any_value()),
        "spacing": st.sampled_from(["linear", "log", "geometric", 3]), "step": any_value()})
    return mostly(good, bad, 4)


def axis(p):
    return mostly(st.one_of(st.lists(param_value(p), min_size=1, max_size=4), range_table(p)),
                  st.one_of(st.just([]), param_value(p), any_value()), 8)


@st.composite
def sweep_docs(draw):
    exp_name = draw(mostly(st.sampled_from(EXPERIMENTS),
                           st.sampled_from(["eos.nope", "nope", "file.py:X", "eos.mean"])))
    try:
        params = experiments.get(exp_name).params
    except Exception:  # noqa: BLE001 - an unknown experiment: validation must say so
        params = ()
    names = [p.name for p in params]
    doc: dict = {
        "name": draw(mostly(st.sampled_from(["fz", "a.b", "ok_1", "Sweep-2"]), st.one_of(
            st.sampled_from(["evil\n", "..", "", "x" * 200, "a/b", "-x", "a b"]),
            any_value()))),
        "experiment": exp_name,
        "steps": draw(mostly(st.integers(1, 30), st.one_of(
            st.integers(-2, 0), st.sampled_from(HUGE), any_value()))),
    }
    optional = {
        "seeds": mostly(st.one_of(st.integers(1, 3), st.lists(st.integers(0, 4), min_size=1,
                                                               max_size=3, unique=True)),
                        st.one_of(st.lists(st.integers(-1, 4), max_size=3), any_value())),
        "log": mostly(st.one_of(
            st.fixed_dictionaries({"every": st.integers(1, 10)}),
            st.fixed_dictionaries({"points": st.integers(1, 10)},
                                  optional={"spacing": st.sampled_from(["log", "linear"])})),
            st.one_of(st.dictionaries(st.sampled_from(["every", "points", "spacing", "often"]),
                                      any_value(), max_size=3), any_value())),
        "precision": mostly(st.sampled_from(["float32", "float64"]),
                            st.sampled_from(["float16", 32, ""])),
        "description": mostly(st.text(max_size=20), any_value()),
        "chunk_size": mostly(st.integers(1, 64), any_value()),
        "diverge_above": mostly(st.floats(1.0, 1e12), any_value()),
        "optimizer": mostly(st.one_of(st.sampled_from(["sgd", "adam", "adamw", "lion",
                                                       "rmsprop"]),
                                      st.lists(st.sampled_from(["sgd", "adamw", "rmsprop"]),
                                               min_size=1, max_size=3, unique=True)),
                            st.one_of(st.sampled_from(["nope", "adamw2"]), any_value())),
        "schedule": mostly(st.sampled_from(sorted(optim.SCHEDULES)),
                           st.one_of(st.just("nope"), any_value())),
        "save": mostly(st.fixed_dictionaries({"params": st.sampled_from(["final", "log"])}),
                       st.one_of(st.fixed_dictionaries({"params": st.sampled_from(
                           ["all", 1])}), any_value())),
        "probes": mostly(
            st.fixed_dictionaries({"sharpness": st.fixed_dictionaries({}, optional={
                "every": mostly(st.integers(1, 10), any_value()),
                "k": mostly(st.integers(1, 2), st.one_of(st.integers(0, 6), any_value())),
                "method": mostly(st.sampled_from(["auto", "dense", "lanczos"]),
                                 st.just("qr")),
                "iters": mostly(st.integers(1, 30), st.one_of(st.just(0), any_value()))})}),
            st.one_of(st.dictionaries(st.sampled_from(["ntk", "g_grid", "nope"]),
                                      st.dictionaries(st.sampled_from(
                                          ["every", "n_eig", "n_change", "n_grid", "z_max",
                                           "x"]), any_value(), max_size=3), max_size=2),
                      any_value()), 3),
        "sample": mostly(
            st.one_of(st.fixed_dictionaries({"count": st.integers(1, 20)},
                                            optional={"seed": st.integers(0, 9)}),
                      st.fixed_dictionaries({"fraction": st.floats(0.01, 1.0)})),
            st.fixed_dictionaries({}, optional={"count": any_value(), "fraction": any_value(),
                                                "seed": any_value()})),
    }
    # the adaptive keys (jaxdyn.adaptive), over this experiment's hyperparameters and metrics
    metrics = []
    try:
        metrics = [m.name for m in experiments.get(exp_name).metrics]
    except Exception:  # noqa: BLE001
        pass
    col = st.sampled_from(names + ["final_" + m for m in metrics] + ["nope", "seed"])
    pred = st.builds(lambda c, op, v: f"{c} {op} {v}", col,
                     st.sampled_from(["<", ">", "=", ">=", "<>", "LIKE", ";"]),
                     st.sampled_from(["0", "1e-3", "-0.01", "'a'", "nan", "(SELECT 1)",
                                      "read_csv('x')"]))
    optional.update({
        "refine": mostly(st.fixed_dictionaries(
            {"axis": st.sampled_from(names or ["lr"]), "where": pred},
            optional={"rounds": st.integers(0, 3), "points": st.integers(1, 3),
                      "spacing": st.sampled_from(["log", "linear"])}),
            st.dictionaries(st.sampled_from(["axis", "where", "rounds", "points", "spacing",
                                             "x"]), any_value(), max_size=4), 3),
        "stop": mostly(st.builds(lambda m, v: f"{m} < {v}", st.sampled_from(metrics or ["x"]),
                                 st.sampled_from(["1e-8", "0", "-1"])),
                       st.one_of(pred, any_value()), 3),
        "halving": mostly(st.fixed_dictionaries(
            {"metric": st.sampled_from(metrics or ["loss"]), "keep": st.floats(0.05, 0.95),
             "rungs": st.lists(st.integers(1, 30), min_size=1, max_size=3)},
            optional={"mode": st.sampled_from(["min", "max"]),
                      "by": st.lists(st.sampled_from(names or ["lr"]), max_size=2)}),
            st.dictionaries(st.sampled_from(["metric", "mode", "keep", "rungs", "by", "x"]),
                            any_value(), max_size=4), 3),
        "search": mostly(st.fixed_dictionaries(
            {"method": st.sampled_from(["random", "tpe", "cmaes"]),
             "trials": st.integers(1, 16), "batch": st.integers(1, 8),
             "metric": st.sampled_from(["final_" + m for m in metrics] or ["final_loss"]),
             "space": st.dictionaries(st.sampled_from(names or ["lr"]), st.fixed_dictionaries(
                 {"start": st.floats(1e-4, 1.0), "stop": st.floats(1e-4, 1.0)},
                 optional={"spacing": st.sampled_from(["log", "linear"])}), max_size=2)},
            optional={"mode": st.sampled_from(["min", "max"])}),
            st.dictionaries(st.sampled_from(["method", "trials", "batch", "metric", "space"]),
                            any_value(), max_size=4), 3),
    })
    for k, strat in optional.items():
        if draw(st.integers(0, 5 if k in ("refine", "stop", "halving", "search") else 1)) == 1:
            doc[k] = draw(strat)
    if params:
        fixed, grid, zipped = {}, {}, {}
        n_zip = draw(st.integers(1, 3))
        for p in params:
            where = draw(st.integers(0, 5))
            if where == 0:
                fixed[p.name] = draw(param_value(p))
            elif where == 1:
                grid[p.name] = draw(axis(p))
            elif where == 2:
                zipped[p.name] = draw(mostly(
                    st.lists(param_value(p), min_size=n_zip, max_size=n_zip),
                    st.lists(param_value(p), max_size=4)))
        if draw(st.integers(0, 19)) == 10:  # an unknown (or misspelt) hyperparameter
            bad = draw(st.sampled_from(["nope", "learning_rate"] +
                                       [n + "x" for n in names]))
            [fixed, grid][draw(st.integers(0, 1))][bad] = draw(any_value())
        for key, table in (("fixed", fixed), ("grid", grid), ("zip", zipped)):
            if table:
                doc[key] = table
    if draw(st.integers(0, 39)) == 20:  # an unknown top-level key
        doc[draw(st.sampled_from(["stpes", "grids", "seed", "x"]))] = draw(any_value())
    if draw(st.integers(0, 39)) == 20:  # a table where a scalar belongs, or the reverse
        k = draw(st.sampled_from(["steps", "grid", "fixed", "log", "name"]))
        doc[k] = draw(st.one_of(any_value(), st.just({"a": 1})))
    return doc


def sweep_files():
    """Hypothesis strategy of sweep-file texts (see the module docstring)."""
    return mostly(sweep_docs().map(to_toml), st.text(max_size=120), 20)


class _NoCompute(Exception):
    """Raised in place of the engine: validation passed, nothing is computed."""


def outcome(text: str, tmp: Path) -> tuple[int, str, bool]:
    """Run ``jaxdyn run`` on ``text`` with compute replaced by a sentinel.

    Returns ``(status, stderr, wrote)``: status 0 when every check passed (the run reached
    the engine), 2 for a refusal, 1 with the traceback in stderr for anything else;
    ``wrote`` is whether the refusal left anything under the output root."""
    from jaxdyn import cli, engine

    path = tmp / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    out_root = tmp / "out"
    shutil.rmtree(out_root, ignore_errors=True)

    def sentinel(*a, **kw):
        raise _NoCompute

    from jaxdyn.adaptive import _halving, _refine, _search

    computing = [(engine, "run_sweep"), (_refine, "run_refine"), (_search, "run_search"),
                 (_halving, "run_halving")]
    real = [getattr(m, n) for m, n in computing]
    for m, n in computing:
        setattr(m, n, sentinel)
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = cli.main(["run", str(path), "--out", str(out_root), "--quiet"])
    except _NoCompute:
        code = 0
    except BaseException:  # noqa: BLE001 - a traceback is what the fuzz suite looks for
        code, err = 1, io.StringIO(traceback.format_exc())
    finally:
        for (m, n), fn in zip(computing, real):
            setattr(m, n, fn)
    wrote = out_root.exists() and any(out_root.iterdir())
    return code, err.getvalue(), wrote

"""The experiment contract, checked before anything is compiled or written.

Owns: tracing each static group's ``make_data``, ``init``, ``step`` and ``measure`` once on
abstract values (``jax.eval_shape``: nothing runs, no device memory), and turning what goes
wrong into one :class:`ExperimentError` naming the function, the file and line, and the fix:

- an exception inside user code (``step raised TypeError at mymlp.py:31: ...``);
- a dynamic hyperparameter used as a shape or in Python control flow (found by re-tracing
  with each dynamic value made concrete in turn), or read from ``static`` (a KeyError);
- ``step`` returning a state of another structure, shape or dtype than ``init``'s;
- ``measure`` returning other metrics than declared, or of other shapes;
- a probe the sweep asks for writing a column that a metric (or another probe) already
  writes (it would silently overwrite it);
- a value refused by the experiment's ``check(static, hp)`` hook.

It does not compile, run or write anything; the engine builds the programs.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdyn.spec import JaxdynError

class ExperimentError(JaxdynError):
    """The experiment's code broke its contract; ``str(err)`` is the message for the user."""


def _where(fn) -> str:
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else repr(fn)


def _located(exc: BaseException, fn) -> str:
    """``file:line`` of the innermost traceback frame in the user's own code (outside
    jaxdyn and installed packages), else in ``fn``'s file, else the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    file = getattr(getattr(fn, "__code__", None), "co_filename", None)
    here = Path(__file__).resolve().parent

    def users(f):
        p = Path(f.filename)
        return (p.is_file() and "site-packages" not in p.parts and "dist-packages" not in p.parts
                and not p.resolve().is_relative_to(here))

    mine = [f for f in frames if users(f)] or [f for f in frames if file and
                                                f.filename == file]
    f = (mine or frames)[-1] if (mine or frames) else None
    return f"{f.filename}:{f.lineno}" if f else _where(fn)


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


class _Checker:
    def __init__(self, exp, static: dict, dyn_names, label: str):
        self.exp, self.static, self.dyn_names, self.label = exp, static, tuple(dyn_names), label
        dt = static["dtype"]
        self.hp = {k: jax.ShapeDtypeStruct((), dt) for k in self.dyn_names}

    def fail(self, what: str) -> ExperimentError:
        return ExperimentError(f"experiment {self.exp.name!r} ({self.label}): {what}")

    def call(self, name: str, fn, *args, user=None, concrete: dict | None = None):
        """``jax.eval_shape`` of ``fn(hp, *args)`` with ``hp`` abstract (but for the
        ``concrete`` values); errors in ``user`` (the user's function that ``fn`` calls)
        become ExperimentError."""
        def wrapped(hp_abstract, *rest):
            return fn({**hp_abstract, **(concrete or {})}, *rest)

        try:
            return jax.eval_shape(wrapped, {k: v for k, v in self.hp.items()
                                            if k not in (concrete or {})}, *args)
        except ExperimentError:
            raise
        except Exception as e:  # noqa: BLE001 - any bug in user code is one message
            if concrete is not None:
                raise
            where = _located(e, user)
            key = e.args[0] if isinstance(e, KeyError) and e.args else None
            if key is not None and key in self.dyn_names:
                raise self.fail(
                    f"{name} reads {key!r} from static at {where}, but {key!r} is a dynamic "
                    f"hyperparameter (in hp, traced). Declare it Param({key!r}, ..., "
                    f"static=True) to use it as a shape or in Python control flow, or read "
                    f"hp[{key!r}]") from None
            if key is not None and key in self.static:
                raise self.fail(f"{name} reads {key!r} from hp at {where}, but {key!r} is "
                                f"static: read static[{key!r}]") from None
            culprits = self._culprits(name, fn, args)
            if culprits:
                names = ", ".join(repr(c) for c in culprits)
                raise self.fail(
                    f"{name} uses the dynamic hyperparameter {names} as a shape or in Python "
                    f"control flow at {where}; dynamic values are traced (vmapped over runs). "
                    f"Declare it Param({culprits[0]!r}, ..., static=True) (each value then "
                    f"compiles its own group) and read it from static[{culprits[0]!r}], or "
                    f"use jnp/lax operations on it") from None
            if key is not None:
                raise self.fail(f"{name} raised KeyError({key!r}) at {where}; the "
                                f"hyperparameters are static {sorted(self.static)}, dynamic "
                                f"{sorted(self.dyn_names)}") from None
            raise self.fail(f"{name} raised {type(e).__name__} at {where}: "
                            f"{_first_line(e)}") from None

    def _culprits(self, name, fn, args) -> list[str]:
        """The dynamic hyperparameters that, made concrete alone, let ``fn`` trace."""
        out = []
        for k in self.dyn_names:
            try:
                self.call(name, fn, *args, concrete={k: 1})
                out.append(k)
            except Exception:  # noqa: BLE001
                continue
        return out


def _describe(tree) -> dict:
    return {jax.tree_util.keystr(p): (tuple(v.shape), str(v.dtype))
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(tree) if hasattr(x, "shape"))


def check_group(exp, static: dict, label: str, probes=(), file=None) -> dict:
    """Trace one static group's functions (and the sweep's ``(Probe, opts)`` pairs) on
    abstract values; ExperimentError on a breach.

    Returns the group's footprint in bytes, from the traced shapes: ``state`` (one run's
    state), ``data`` (one ``make_data`` result) and ``row`` (one logged row of metrics and
    probe columns)."""
    c = _Checker(exp, static, exp.dynamic_names, label)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    data = None
    if exp.make_data is not None:
        data = c.call("make_data", lambda hp, k: exp.make_data(k, static), key,
                      user=exp.make_data)
    state = c.call("init", lambda hp, k, d: exp.init(k, static, hp, d), key, data,
                   user=exp.init)
    new = c.call("step", lambda hp, s, k, d: exp.step(s, k, static, hp, d), state, key, data,
                 user=exp.step)
    a, b = _describe(state), _describe(new)
    if jax.tree.structure(state) != jax.tree.structure(new) or a != b:
        diff = sorted(set(a.items()) ^ set(b.items()))[:4]
        raise c.fail(f"step must return a state like init's (same keys, shapes and dtypes); "
                     f"they differ at {diff} (defined at {_where(exp.step)})")
    m = c.call("measure", lambda hp, s, d: exp.measure(s, static, hp, d), state, data,
               user=exp.measure)
    if not isinstance(m, dict):
        raise c.fail(f"measure must return a dict of metrics, got {type(m).__name__} "
                     f"(defined at {_where(exp.measure)})")
    declared = {mt.name: tuple(mt.shape) for mt in exp.metrics}
    got = {k: tuple(getattr(v, "shape", ())) for k, v in m.items()}
    missing, extra = sorted(set(declared) - set(got)), sorted(set(got) - set(declared))
    if missing or extra:
        bits = ([f"declared but not returned: {missing}"] if missing else []) + \
               ([f"returned but not declared: {extra} (add Metric(...) for each)"]
                if extra else [])
        raise c.fail(f"measure's metrics differ from the declared ones: {'; '.join(bits)} "
                     f"(measure at {_where(exp.measure)})")
    for k, shape in declared.items():
        if got[k] != shape:
            raise c.fail(f"metric {k!r} is declared with shape {shape} but measure returns "
                         f"shape {got[k]}; declare Metric({k!r}, shape={got[k]})")
    taken = {k: "a metric" for k in got}
    row = _nbytes(m)
    for probe, opts in probes:
        if probe.check is not None:
            try:
                probe.check(exp, state, static, opts)
            except ValueError as e:  # the option value is refused
                opt = str(e).split(" ", 1)[0]  # "k must be ...": the option it names
                key = f"probes.{probe.name}" + (f".{opt}" if opt in opts else "")
                raise JaxdynError(f"{file or '<sweep>'}: key '{key}': {e}"
                                  + (f" (group {label})" if label else "")) from None
            except Exception as e:  # noqa: BLE001 - a bug in the probe's check
                raise ExperimentError(f"probe {probe.name!r}: its check raised "
                                      f"{type(e).__name__} at {_located(e, probe.check)}: "
                                      f"{_first_line(e)}") from None
        out = c.call(f"probe {probe.name!r}",
                     lambda hp, s, d, probe=probe, opts=opts: probe.fn(exp, s, static, hp, d,
                                                                       opts),
                     state, data, user=probe.fn)
        clash = sorted(k for k in out if k in taken)
        if clash:
            raise c.fail(f"probe {probe.name!r} writes the column(s) {clash}, which "
                         f"{taken[clash[0]]} of the experiment already writes; drop the probe "
                         f"from the sweep's probes table (the column would be overwritten)")
        taken.update({k: f"probe {probe.name!r}" for k in out})
        row += _nbytes(out)
    return {"state": _nbytes(state), "data": _nbytes(data), "row": row}


def check_values(exp, sweep) -> None:
    """The experiment's ``check(static, hp)`` hook on every distinct grid point."""
    if exp.check is None:
        return
    static_names = set(exp.static_names)
    # the distinct grid points: the runs of a point share its hp dict (Sweep.runs)
    points = {id(r.hp): r.hp for r in sweep.runs()}
    for hp_all in points.values():
        st = {k: v for k, v in hp_all.items() if k in static_names}
        hp = {k: v for k, v in hp_all.items() if k not in static_names}
        try:
            exp.check({**st, "steps": sweep.steps, "precision": sweep.precision}, hp)
        except ValueError as e:  # the value is refused
            point = ", ".join(f"{k}={v!r}" for k, v in hp_all.items()
                              if k in {**sweep.fixed, **_axes(sweep)})
            raise JaxdynError(f"{sweep.file or '<sweep>'}: {e} (at {point or 'the defaults'})"
                              ) from None
        except Exception as e:  # noqa: BLE001 - a bug in the check itself, not in the sweep
            raise ExperimentError(f"experiment {exp.name!r}: its check raised "
                                  f"{type(e).__name__} at {_located(e, exp.check)}: "
                                  f"{_first_line(e)} (a bug in check, not a refused value; "
                                  f"raise ValueError to refuse one)") from None


def _axes(sweep) -> dict:
    out = dict(sweep.zip)
    for g in (sweep.grids or [sweep.grid]):
        out.update(g)
    return out

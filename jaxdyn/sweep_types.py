"""What a validated sweep is: :class:`Sweep`, :class:`Param`, :class:`Run`, run ids.

Owns: the data types the rest of jaxdyn reads (a sweep's keys, its hyperparameters, its grid
expanded into runs in a fixed order, deduplicated by ``run_id``), the errors a user sees
(:class:`JaxdynError`, :class:`SpecError`), and the limits on a sweep's size.

Must not: parse or validate files (``jaxdyn.spec`` does, and builds these), or import JAX.
Pure Python: a sweep is data, never executed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

SCHEMA_KEYS = ("name", "experiment", "steps", "seeds", "log", "precision", "fixed", "grid",
               "zip", "sample", "probes", "description", "chunk_size", "diverge_above",
               "optimizer", "schedule", "save", "refine", "stop",
               "halving", "search")
#: ``save = { params = ... }``: which parameter snapshots are written (params/ table)
SAVE_PARAMS = ("final", "log")
PRECISIONS = ("float32", "float64")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
#: Grids larger than this are refused unless the user confirms (``--yes``, or a yes at the
#: terminal's prompt).
MAX_RUNS_UNCONFIRMED = 5_000_000
#: Sweeps of more run·steps (runs × steps) than this are refused unless the user confirms:
#: 17x the largest shipped sweep (dc_paper, 5.9e9), hours of compute on most devices.
MAX_RUN_STEPS_UNCONFIRMED = 100_000_000_000
#: Logged steps per run, at most: each is a row of the curves table per run.
MAX_LOG_POINTS = 1_000_000
#: No sweep may have more runs than this, nor more grid points before ``[sample]``: far
#: beyond what one sweep can hold in memory (each run is a Python object before it is run).
MAX_RUNS = 1_000_000_000
#: An integer range with at most this many points is expanded while the file is validated
#: (rounding to integers may merge points, so its length is known only after expanding);
#: a longer one counts as ``num`` points until the run count has been checked.
_INT_RANGE_EXPAND = 1_000_000


class JaxdynError(Exception):
    """Base of every error jaxdyn reports to a user: ``str(err)`` is the whole message (the
    CLI prints it and exits with status 2)."""


class SpecError(JaxdynError, ValueError):
    """A sweep file is invalid. ``str(err)`` is the one message a user sees."""

    def __init__(self, file: str | Path | None, key: str | None, message: str):
        self.file, self.key, self.message = file, key, message
        where = str(file) if file else "<sweep>"
        if key:
            where += f": key '{key}'"
        super().__init__(f"{where}: {message}")


class TooLarge(SpecError):
    """The sweep is larger than allowed; raised before anything is expanded or written.
    ``confirmable``: the user may run it anyway (``--yes``, or yes at a terminal prompt)."""

    confirmable: bool = False


class TooManyRuns(TooLarge):
    """The sweep has more runs than allowed; raised before anything is expanded.

    ``n_runs`` is the run count computed from the counts alone (seeds × grid axis lengths ×
    zip length, after ``[sample]``); ``exact`` is False when an integer range longer than
    ``_INT_RANGE_EXPAND`` makes it an upper bound (rounding may merge its points)."""

    def __init__(self, file, n_runs: int, exact: bool, limit: int, confirmable: bool):
        self.n_runs, self.exact, self.limit = n_runs, exact, limit
        self.confirmable = confirmable
        count = f"{n_runs:,} runs" if exact else f"up to {n_runs:,} runs"
        if confirmable:
            msg = (f"the sweep has {count} (more than {limit:,}); pass --yes to run it "
                   f"anyway")
        else:
            msg = (f"the sweep has {count}, more than the {limit:,} one sweep can hold (even "
                   f"with --yes); use fewer seeds or grid points, or [sample] a subset")
        super().__init__(file, None, msg)


@dataclass(frozen=True)
class Param:
    """One hyperparameter of an experiment.

    ``static`` hyperparameters change shapes or control flow: each distinct value is its own
    compiled group. Dynamic ones are vmapped floats that never recompile.
    """

    name: str
    default: Any
    type: type  # int, float, str or bool
    static: bool = False
    choices: tuple | None = None
    doc: str = ""

    def coerce(self, value: Any, file, key: str) -> Any:
        """Check and convert one value from a sweep file to this parameter's type."""
        t = self.type
        if t is bool:
            ok = isinstance(value, bool)
        elif t is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok and isinstance(value, float) and value.is_integer():
                value, ok = int(value), True
            if ok and not -2**63 <= value < 2**63:
                raise SpecError(file, key, f"'{self.name}' = {value} does not fit in a 64-bit "
                                           f"integer (the tables' int64 column)")
        elif t is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                value = float(value)
                ok = math.isfinite(value)
        elif t is str:
            ok = isinstance(value, str)
        else:  # pragma: no cover - declaration bug
            raise TypeError(t)
        if not ok:
            raise SpecError(file, key, f"expected {t.__name__} for '{self.name}', got {value!r}"
                            f" ({type(value).__name__})")
        if self.choices is not None and value not in self.choices:
            raise SpecError(file, key, f"'{self.name}' must be one of {list(self.choices)}, "
                                       f"got {value!r}")
        return value


@dataclass(frozen=True)
class LogSchedule:
    """Which steps are logged: every ``every`` steps, or ``points`` log/linear-spaced steps.

    Step 0 (the initial state) and the last step are always logged.
    """

    every: int | None = None
    points: int | None = None
    spacing: str = "linear"

    def count(self, total: int) -> int:
        """How many steps are logged (an upper bound for ``points``), without listing them."""
        if self.every is not None:
            return total // self.every + 1 + (total % self.every != 0)
        return min(self.points + 2, total + 1)

    def steps(self, total: int) -> np.ndarray:
        if self.every is not None:
            s = np.arange(0, total + 1, self.every, dtype=np.int64)
        elif self.spacing == "log":
            s = np.round(np.geomspace(1, total, self.points)).astype(np.int64)
        else:
            s = np.round(np.linspace(0, total, self.points)).astype(np.int64)
        return np.unique(np.concatenate([[0], s, [total]]))


class Run(NamedTuple):
    """One training run: its stable id, its seed and every hyperparameter value."""

    run_id: str
    seed: int
    hp: Mapping[str, Any]


@dataclass
class Sweep:
    name: str
    experiment: str
    steps: int
    seeds: tuple[int, ...]
    log: LogSchedule
    precision: str
    fixed: dict[str, Any]
    grid: dict[str, list]
    zip: dict[str, list]
    sample: dict[str, Any] | None
    probes: dict[str, dict]
    params: tuple[Param, ...]
    file: str | None = None
    source: str = ""
    description: str = ""
    chunk_size: int | None = None
    #: a run whose state has any |value| ≥ this (or NaN/inf) is frozen as diverged
    diverge_above: float | None = None
    doc: dict = field(default_factory=dict)
    #: ``[[grid]]`` blocks, each its own cartesian product (``grid`` is the first); the
    #: union of their points is deduplicated by run_id
    grids: list = field(default_factory=list)
    #: names of optimizer/schedule knobs among ``params`` (see jaxdyn.optim)
    knob_names: tuple = ()
    #: ``save.params``: None, "final" or "log"
    save_params: str | None = None
    #: runs dropped by :meth:`runs` because an earlier grid point had the same run_id
    duplicates: int = 0
    #: ``[refine]``: {axis, where, rounds, points, spacing} (jaxdyn.adaptive), or None
    refine: dict | None = None
    #: ``stop``: a predicate on metrics that freezes a run at its goal (jaxdyn.adaptive)
    stop: str | None = None
    #: ``[halving]``: {metric, mode, keep, rungs, by} (jaxdyn.adaptive), or None
    halving: dict | None = None
    #: ``[search]``: {method, trials, batch, metric, mode, seed, space} (jaxdyn.adaptive)
    search: dict | None = None
    #: :meth:`runs`, once computed (a sweep is not changed after validation)
    _runs: list | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def hash(self) -> str:
        """Hash of the sweep's meaning (not its formatting): a changed file changes it."""
        return hashlib.sha256(json.dumps(self.doc, sort_keys=True, default=str)
                              .encode()).hexdigest()[:16]

    # ---- grid expansion ---------------------------------------------------------------
    def _blocks(self) -> list[dict]:
        return self.grids or [self.grid]

    def n_points(self) -> int:
        """Grid points before deduplication (after ``[sample]``)."""
        zn = len(next(iter(self.zip.values()))) if self.zip else 1
        n = sum(math.prod(len(v) for v in b.values()) for b in self._blocks()) * zn
        if self.sample is not None:
            n = self._sample_count(n)
        return n

    def n_runs(self) -> int:
        return self.n_points() * len(self.seeds)

    def _sample_count(self, n: int) -> int:
        if "count" in self.sample:
            return min(int(self.sample["count"]), n)
        return max(1, int(round(self.sample["fraction"] * n)))

    def points(self) -> Iterator[dict[str, Any]]:
        """Grid points in a fixed order: block by block (``[[grid]]``), grid axes in file
        order (first slowest), then zip."""
        blocks = []
        for grid in self._blocks():
            axes = [[(k, v) for v in vals] for k, vals in grid.items()]
            if self.zip:
                keys = list(self.zip)
                m = len(self.zip[keys[0]])
                axes.append([tuple((k, self.zip[k][i]) for k in keys) for i in range(m)])
            blocks.append(axes)
        sizes = [math.prod(len(a) for a in axes) for axes in blocks]
        if self.sample is None:
            combos: Iterator[tuple] = itertools.chain.from_iterable(
                itertools.product(*axes) for axes in blocks)
        else:
            # the kept indices into the product (C order, as itertools.product), ascending:
            # the same points in the same order as filtering the product, without walking it
            # (with several blocks: indices into their concatenation)
            total = sum(sizes)
            rng = np.random.default_rng(int(self.sample.get("seed", 0)))
            keep = np.sort(rng.choice(total, size=self._sample_count(total), replace=False))
            combos = self._sampled(blocks, sizes, keep)
        for combo in combos:
            pt = {}
            for item in combo:
                if item and isinstance(item[0], tuple):
                    pt.update(dict(item))
                else:
                    pt[item[0]] = item[1]
            yield pt

    @staticmethod
    def _sampled(blocks, sizes, keep) -> Iterator[tuple]:
        offsets = np.cumsum([0] + sizes)
        for b, axes in enumerate(blocks):
            mine = keep[(keep >= offsets[b]) & (keep < offsets[b + 1])] - offsets[b]
            if not len(mine):
                continue
            if axes:
                idx = np.unravel_index(mine, [len(a) for a in axes])
                yield from (tuple(a[int(j[n])] for a, j in zip(axes, idx))
                            for n in range(len(mine)))
            else:
                yield from iter([()] * len(mine))

    def runs(self) -> list[Run]:
        """Every run, in grid order then seed order; a point whose run_id an earlier point
        already has (a repeated value, ``100`` and ``100.0``, overlapping ``[[grid]]``
        blocks) is dropped and counted in :attr:`duplicates`. Computed once; the runs of a
        grid point share one ``hp`` dict."""
        if self._runs is not None:
            return list(self._runs)
        out = []
        dropped = 0
        for key, hp in self.point_hps(with_duplicates=True):
            if key is None:
                dropped += len(self.seeds)
                continue
            for s in self.seeds:
                out.append(Run(run_id("", hp, s, 0, "", key=key), s, hp))
        self.duplicates = dropped
        self._runs = out
        return list(out)

    def point_hps(self, with_duplicates: bool = False) -> Iterator[tuple[str | None, dict]]:
        """``(run_key, hyperparameters)`` of every distinct grid point, in grid order: the
        defaults, ``[fixed]`` and the point, with each optimizer knob completed
        (:func:`jaxdyn.optim.complete`). A point whose key an earlier one has is skipped, or
        yielded with key None if ``with_duplicates``."""
        seen = set()
        for pt in self.points():
            key, hp = self.point_hp(pt)
            if key in seen:
                if with_duplicates:
                    yield None, hp
                continue
            seen.add(key)
            yield key, hp


    def point_hp(self, point: Mapping[str, Any]) -> tuple[str, dict]:
        """``(run_key, hyperparameters)`` of one grid point (a dict of axis values): the
        defaults, ``[fixed]`` and the point, each optimizer knob completed. A point made
        outside the grid (a refined value, :mod:`jaxdyn.adaptive`) gets the run_id a grid
        holding it would give."""
        hp = {**{p.name: p.default for p in self.params}, **self.fixed, **point}
        ident = hp
        if self.knob_names:
            from jaxdyn import optim

            hp = optim.complete(hp, self.knob_names, self.steps)
            # a knob the run's optimizer does not take is not part of its identity
            ident = {k: v for k, v in hp.items() if not (k in self.knob_names and v is None)}
        return run_key(self.experiment, ident, self.steps, self.precision,
                       self.diverge_above), hp


def run_key(experiment: str, hp: Mapping[str, Any], steps: int, precision: str,
            diverge_above: float | None = None) -> str:
    """Canonical text of everything that defines a run except its seed."""
    # repr() of Python ints, floats (shortest round-trip), bools and strs is unambiguous
    items = ",".join(f"{k}={v!r}" for k, v in sorted(hp.items()))
    key = f"{experiment}|{items}|steps={int(steps)}|{precision}"
    if diverge_above is not None:
        key += f"|diverge_above={float(diverge_above)!r}"
    return key


def run_id(experiment: str, hp: Mapping[str, Any], seed: int, steps: int, precision: str,
           diverge_above: float | None = None, *, key: str | None = None) -> str:
    """Stable id of a run: the same experiment, values, seed, steps and precision (and
    divergence bound, when one is set) give the same id in every sweep, whatever else is in
    the grid. ``key``: a precomputed :func:`run_key`."""
    if key is None:
        key = run_key(experiment, hp, steps, precision, diverge_above)
    return hashlib.sha256(f"{key}|seed={int(seed)}".encode()).hexdigest()[:16]

"""Planning: which runs compile together, and how they are cut into chunks.

Owns: the static groups of a sweep (``static_signatures``, ``plan_groups``: one compiled
program per distinct value of the static hyperparameters), the chunks of a group
(``chunks_of``: a pure function of the sweep and the chunk size, so every process of a
multi-host run agrees on it), and the padding rule of compiled batches.

Must not: compile, run or touch devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from jaxdyn.engine.program import shares_data
from jaxdyn.experiments.base import Experiment
from jaxdyn.spec import Run, Sweep

#: Compiled chunks hold a multiple of this many runs per device. XLA compiles a batch of one
#: differently (the run axis vanishes), and a different program may round differently, which
#: chaotic edge-of-stability dynamics amplify; padding keeps every chunk on one code path.
RUNS_PER_DEVICE_MULTIPLE = 8


@dataclass
class Group:
    """Runs sharing their static hyperparameters: one compiled program."""

    index: int
    label: str
    static: dict
    runs: list[Run]


def group_label(signature: dict) -> str:
    """A group's label (the runs table's ``group`` column): ``k=v,...``, or ``all``."""
    return ",".join(f"{k}={v}" for k, v in signature.items()) or "all"


def plan_groups(sweep: Sweep, exp: Experiment, runs: Sequence[Run]) -> list[Group]:
    names = exp.static_names
    by_sig: dict[tuple, list[Run]] = {}
    for r in runs:
        by_sig.setdefault(tuple(r.hp[n] for n in names), []).append(r)
    groups = []
    for i, (sig, rs) in enumerate(sorted(by_sig.items(), key=lambda kv: repr(kv[0]))):
        if shares_data(exp, dict(zip(names, sig))):  # chunks never span seeds
            rs = sorted(rs, key=lambda r: r.seed)
        label = group_label(dict(zip(names, sig)))
        groups.append(Group(i, label, dict(zip(names, sig)), rs))
    return groups


def chunks_of(group: Group, size: int, per_seed: bool) -> list[list[Run]]:
    out: list[list[Run]] = []
    if per_seed:
        runs_by_seed: dict[int, list[Run]] = {}
        for r in group.runs:
            runs_by_seed.setdefault(r.seed, []).append(r)
        for rs in runs_by_seed.values():
            out += [rs[i:i + size] for i in range(0, len(rs), size)]
    else:
        out = [group.runs[i:i + size] for i in range(0, len(group.runs), size)]
    return out


def static_signatures(sweep: Sweep, exp: Experiment) -> list[dict]:
    """The distinct static hyperparameter values of the sweep's groups, without planning its
    runs (which costs seconds for a million of them)."""
    names = exp.static_names
    if not any(n in g for g in (sweep.grids or [sweep.grid]) + [sweep.zip or {}]
               for n in names):
        _, hp = next(sweep.point_hps())
        return [{n: hp[n] for n in names}]
    sigs = {tuple(hp[n] for n in names) for _, hp in sweep.point_hps()}
    return [dict(zip(names, sig)) for sig in sorted(sigs, key=repr)]


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k

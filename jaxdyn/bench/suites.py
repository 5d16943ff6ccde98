"""The suites: which families ``jaxdyn bench`` runs, at which sizes, as which sweep files.

Owns: the family list (``FAMILIES``), the suite names and their per-family sizes (``_SIZES``,
``_SUITE_INDEX``; ``tiny`` is the tests' hidden suite), each family's fixed hyperparameters and
dynamic axis, the sweep-file text of a case (``sweep_toml``) and the validated list of cases of
a suite (``make_cases``, which skips a family whose module does not import, with the reason).

Must not: run, time or compile anything; it only writes and parses sweep text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: Families benchmarked, in this order (each when its module imports and defines it).
FAMILIES = ("eos.mean_model", "eos.single_neuron", "eos.threshold_relu", "dc.neuron",
            "relu.teacher_student", "bottleneck.three_layer")
SUITE_NAMES = ("quick", "full")  # "tiny" exists too, for the tests (hidden from --help)

# Per family and suite: steps, log interval, (small runs, large runs) and the fixed
# hyperparameters. Runs vary along one dynamic axis (lr, or replicate for the bottleneck) times
# seeds; every case is one static group (one compiled program).
_SIZES = {  # family: (tiny, quick, full), each (steps, log every, small runs, large runs)
    "eos.mean_model": ((40, 10, 8, 64), (2000, 100, 1024, 32768),
                       (10000, 100, 4096, 65536)),
    "eos.single_neuron": ((40, 10, 8, 64), (2000, 100, 1024, 32768),
                          (10000, 100, 4096, 65536)),
    "eos.threshold_relu": ((20, 10, 8, 16), (200, 20, 32, 256), (1000, 50, 64, 1024)),
    "dc.neuron": ((22, 11, 8, 16), (1100, 110, 256, 4096), (16500, 1100, 1024, 8192)),
    "relu.teacher_student": ((40, 10, 8, 16), (2000, 100, 1024, 16384),
                             (10000, 500, 4096, 65536)),
    "bottleneck.three_layer": ((20, 10, 8, 16), (200, 50, 16, 128), (2000, 200, 64, 512)),
}
_SUITE_INDEX = {"tiny": 0, "quick": 1, "full": 2}


def _fixed(family: str, suite: str) -> dict:
    """Fixed hyperparameters of a family's cases (small, laptop-sized versions of the sweeps)."""
    big = suite == "full"
    if family == "eos.mean_model":
        return {"d": 100, "init_scale": 0.01}
    if family == "eos.single_neuron":
        return {"x0": 0.3, "y0": 3.0, "perturb": 0.01, "link": "logcosh"}
    if family == "eos.threshold_relu":
        n = 1000 if big else (50 if suite == "tiny" else 200)
        return {"d": 200 if suite != "tiny" else 20, "n_train": n, "n_test": n, "lam": 5.0,
                "init_scale": 0.01}
    if family == "dc.neuron":
        return {"loss": "nll", "m": 1000 if suite != "tiny" else 100, "batch": 75 if
                suite != "tiny" else 10, "p_d": 0.5, "d": 0.0, "sep": 2.0}
    if family == "relu.teacher_student":
        return {"n": 2, "d": 10, "mode": "population", "init_scale": 0.01}
    if family == "bottleneck.three_layer":
        # width 1000 as in the thesis; n_val = n_eval = 64 = one evaluation block (so the
        # measure program is loop-free and its cost analysis exact)
        return {"width": 1000 if suite != "tiny" else 64, "d": 10, "k": 1,
                "n_train": 10000 if big else (256 if suite == "tiny" else 2048),
                "n_val": 64, "n_eval": 64, "batch": 32, "nu": 0.5}
    raise KeyError(family)


def _axis(family: str, runs: int, seeds: int) -> dict:
    """The grid of a case: one dynamic axis with runs // seeds points."""
    num = max(1, runs // seeds)
    if family == "eos.mean_model":
        return {"lr": {"start": 2.5e-4, "stop": 2.5e-2, "num": num, "spacing": "log"}}
    if family == "eos.single_neuron":
        return {"lr": {"start": 0.02, "stop": 0.25, "num": num, "spacing": "log"}}
    if family == "eos.threshold_relu":
        return {"lr": {"start": 1e-5, "stop": 1e-2, "num": num, "spacing": "log"}}
    if family == "dc.neuron":
        return {"r": {"start": 0.5, "stop": 8.0, "num": num}}
    if family == "relu.teacher_student":
        return {"lr": {"start": 0.05, "stop": 1.0, "num": num, "spacing": "log"}}
    if family == "bottleneck.three_layer":
        return {"replicate": list(range(num))}
    raise KeyError(family)


def _seeds(exp) -> int:
    # families with make_data: one seed, so that chunks (which never span seeds there) are
    # as large as the run count allows and share their data (the intended layout)
    return 1 if exp.make_data is not None else 4


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


@dataclass


class Case:
    family: str
    size: str
    runs: int
    steps: int
    log_every: int
    toml: str


def sweep_toml(name: str, family: str, steps: int, log_every: int, seeds: int, fixed: dict,
               grid: dict, description: str = "jaxdyn bench case") -> str:
    lines = [f'name = "{name}"', f'experiment = "{family}"',
             f"description = {json.dumps(description)}", f"steps = {steps}", f"seeds = {seeds}",
             f"log = {{ every = {log_every} }}", 'precision = "float32"', "", "[fixed]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in fixed.items()]
    lines += ["", "[grid]"] + [f"{k} = {_toml_value(v)}" for k, v in grid.items()]
    return "\n".join(lines) + "\n"


def make_cases(suite: str, only: list[str] | None = None) -> tuple[list[Case], dict]:
    """The suite's cases for the families that import; ``skipped``: family -> why not."""
    from jaxdyn import experiments, spec

    idx = _SUITE_INDEX[suite]
    cases, skipped = [], {}
    families = FAMILIES if suite != "tiny" else ("eos.mean_model",)
    for fam in families:
        if only and fam not in only:
            continue
        try:
            exp = experiments.get(fam)  # imports the module; fails while it is being written
        except KeyError:
            skipped[fam] = "not in the experiment registry (module absent)"
            continue
        except Exception as e:  # noqa: BLE001 - a broken module is skipped, with its error
            skipped[fam] = f"module does not import: {type(e).__name__}: {e}"
            continue
        steps, every, small, large = _SIZES[fam][idx]
        seeds = _seeds(exp)
        mine = []
        for size, runs in (("small", small), ("large", large)):
            runs = max(seeds, runs // seeds * seeds)
            name = f"bench_{fam.replace('.', '_')}_{size}"
            text = sweep_toml(name, fam, steps, every, seeds, _fixed(fam, suite),
                              _axis(fam, runs, seeds))
            try:
                spec.parse(text, experiments.params_of)
            except Exception as e:  # noqa: BLE001 - e.g. a hyperparameter renamed by its author
                skipped[fam] = f"its bench sweep does not validate: {e}"
                mine = []
                break
            mine.append(Case(fam, size, runs, steps, every, text))
        cases += mine
    return cases, skipped

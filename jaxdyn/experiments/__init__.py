"""The experiment registry: names in sweep files -> :class:`Experiment`.

A sweep file's ``experiment`` is one of

- a built-in or registered name, ``"family.name"`` (``jaxdyn list`` shows them);
- ``"path/to/file.py:NAME"``: the variable ``NAME`` of a Python file, the path relative to
  the sweep file (or absolute);
- ``"package.module:NAME"``: the variable ``NAME`` of an importable module;
- a name registered by an installed package through the entry-point group
  ``jaxdyn.experiments`` (``name = "package.module:NAME"`` in its ``pyproject.toml``).

Built-in modules are imported lazily, so that ``jaxdyn list`` or a spec error does not pay
for every family's imports. Whatever is loaded from user code is described by
:class:`Source` (module, file, SHA-256 of the file), which the manifest records: resuming
after the file changed is refused unless ``--force``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from jaxdyn.experiments.base import Experiment, Metric, Probe

#: experiment name -> module that defines it (as a module-level ``EXPERIMENTS`` dict).
_MODULES = {
    "eos.mean_model": "jaxdyn.experiments.eos",
    "eos.single_neuron": "jaxdyn.experiments.eos",
    "eos.threshold_relu": "jaxdyn.experiments.eos",
    "dc.neuron": "jaxdyn.experiments.dc",
    "relu.teacher_student": "jaxdyn.experiments.relu",
    "bottleneck.three_layer": "jaxdyn.experiments.bottleneck",
    "bottleneck.one_d": "jaxdyn.experiments.bottleneck",
    "toy.ring": "jaxdyn.experiments.toy",
}

#: the entry-point group through which installed packages register experiments
ENTRY_POINT_GROUP = "jaxdyn.experiments"

#: experiments registered at run time (your own, or the tests')
_REGISTERED: dict[str, Experiment] = {}
#: experiments loaded from user code in this process: reference -> (Experiment, Source)
_LOADED: dict[str, tuple[Experiment, "Source"]] = {}


class ExperimentLoadError(KeyError):
    """An experiment reference that cannot be loaded; ``args[0]`` is the message."""

    @property
    def message(self) -> str:
        return self.args[0]

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Source:
    """Where an experiment came from: recorded in the manifest, checked on resume."""

    ref: str             # as the sweep file wrote it
    module: str          # module name, or "<file>" for a file loaded by path
    file: str | None     # absolute path of the defining file, if any
    sha256: str | None   # of that file's bytes

    def as_dict(self) -> dict:
        return {"ref": self.ref, "module": self.module, "file": self.file,
                "sha256": self.sha256}


def register(exp: Experiment) -> Experiment:
    """Make ``exp`` available by name to sweep files run in this process."""
    _REGISTERED[exp.name] = exp
    return exp


def _entry_points() -> dict:
    try:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # noqa: BLE001 - a broken distribution must not break the registry
        return {}


def names() -> list[str]:
    """Built-in, registered and entry-point experiment names."""
    present = {n for n, m in _MODULES.items() if importlib.util.find_spec(m) is not None}
    return sorted(present | set(_REGISTERED) | set(_entry_points()))


def is_reference(name: str) -> bool:
    """Whether ``name`` points into user code (``file.py:NAME`` or ``module:NAME``)."""
    return ":" in name


def get(name: str, base: str | Path | None = None) -> Experiment:
    """The experiment called ``name``; ``base`` is the folder a relative ``file.py:NAME``
    is read from (the sweep file's). Raises :class:`ExperimentLoadError` (a KeyError whose
    ``args`` are ``(message, known names)``) when there is none."""
    return resolve(name, base)[0]


def resolve(name: str, base: str | Path | None = None) -> tuple[Experiment, Source | None]:
    """``(experiment, source)``; source is None for a built-in or registered one."""
    if name in _REGISTERED:
        return _REGISTERED[name], None
    if is_reference(name):
        return _load_reference(name, base)
    if name in _MODULES and importlib.util.find_spec(_MODULES[name]) is not None:
        return importlib.import_module(_MODULES[name]).EXPERIMENTS[name], None
    eps = _entry_points()
    if name in eps:
        ref = eps[name].value
        exp, src = _load_reference(ref, None)
        return exp, src
    import difflib

    m = difflib.get_close_matches(name, names(), n=1, cutoff=0.5)
    hint = f" (did you mean '{m[0]}'?)" if m else ""
    raise ExperimentLoadError(
        f"unknown experiment {name!r}{hint}; known: {names()}. Your own experiment: "
        f"\"path/to/file.py:NAME\" (relative to the sweep file) or \"package.module:NAME\"",
        names())


def params_of(name: str, base: str | Path | None = None):
    return get(name, base).params


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _user_frame(exc: BaseException, file: str | None) -> str:
    """``file:line`` of the innermost frame of ``exc`` in ``file`` (else the innermost)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if file and Path(f.filename).resolve() == Path(file).resolve()]
    f = (mine or frames or [None])[-1]
    return f"{f.filename}:{f.lineno}" if f is not None else "?"


def _load_reference(ref: str, base) -> tuple[Experiment, Source]:
    target, _, attr = ref.rpartition(":")
    if not target or not attr.isidentifier():
        raise ExperimentLoadError(f"experiment {ref!r}: expected \"path/to/file.py:NAME\" or "
                                  f"\"package.module:NAME\"", names())
    key = f"{ref}|{base}"
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_absolute():
            path = Path(base or ".") / path
        path = path.resolve()
        if not path.is_file():
            raise ExperimentLoadError(f"experiment {ref!r}: no such file {path}", names())
        digest = _sha256(path)
        cached = _LOADED.get(key)
        if cached and cached[1].sha256 == digest:
            return cached
        modname = f"jaxdyn_user_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(spec)
        # the file's folder is importable while it runs (helpers beside it), as for a script
        sys.path.insert(0, str(path.parent))
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - any error in user code becomes one message
            sys.modules.pop(modname, None)
            raise ExperimentLoadError(
                f"experiment {ref!r}: importing {path} raised {type(e).__name__} at "
                f"{_user_frame(e, str(path))}: {e}", names()) from None
        finally:
            try:
                sys.path.remove(str(path.parent))
            except ValueError:
                pass
        source = Source(ref, "<file>", str(path), digest)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise ExperimentLoadError(
                f"experiment {ref!r}: no module named {e.name!r} (is it installed, or on "
                f"PYTHONPATH? a file is written \"path/to/file.py:NAME\")", names()) from None
        except Exception as e:  # noqa: BLE001
            raise ExperimentLoadError(
                f"experiment {ref!r}: importing {target} raised {type(e).__name__} at "
                f"{_user_frame(e, getattr(e, 'filename', None))}: {e}", names()) from None
        file = getattr(module, "__file__", None)
        source = Source(ref, target, str(Path(file).resolve()) if file else None,
                        _sha256(Path(file)) if file and Path(file).is_file() else None)
    if not hasattr(module, attr):
        import difflib

        found = [n for n, v in vars(module).items() if isinstance(v, Experiment)]
        m = difflib.get_close_matches(attr, found, n=1, cutoff=0.5) or \
            [f for f in found if attr.lower() in f.lower()] or (found if len(found) == 1 else [])
        hint = f" (did you mean '{m[0]}'?)" if m else ""
        raise ExperimentLoadError(f"experiment {ref!r}: {source.file or target} has no "
                                  f"{attr!r}{hint}; its experiments: {found}", names())
    exp = getattr(module, attr)
    if not isinstance(exp, Experiment):
        raise ExperimentLoadError(f"experiment {ref!r}: {attr} is a {type(exp).__name__}, "
                                  f"not a jaxdyn.Experiment", names())
    _LOADED[key] = (exp, source)
    return exp, source


__all__ = ["Experiment", "Metric", "Probe", "Source", "get", "names", "params_of", "register",
           "resolve", "ENTRY_POINT_GROUP"]

"""The API reference (docs/README.md: ``pdoc jaxdyn -o docs/api``) is generated from
docstrings: every public name has one, and pdoc renders the package."""

import inspect

import pytest

import jaxdyn

PUBLIC = ["Experiment", "Param", "Metric", "Probe", "optimizer", "run", "load", "query",
          "Results", "RunSummary", "JaxdynError", "supervised", "report", "serve", "export", "check"]


def test_every_public_name_is_exported_and_documented():
    assert set(PUBLIC) <= set(jaxdyn.__all__)
    for name in PUBLIC:
        obj = getattr(jaxdyn, name)
        doc = inspect.getdoc(obj)
        assert doc and len(doc) > 80, f"jaxdyn.{name} needs a docstring"
    # the fields a user meets first are documented where they are declared
    doc = inspect.getdoc(jaxdyn.Experiment)
    for field in ("name", "doc", "params", "metrics", "init", "step", "measure", "make_data",
                  "loss", "params_of_state", "probes", "check", "shares_data"):
        assert f"{field}:" in doc, field


def test_pdoc_renders_the_public_api(tmp_path):
    pdoc = pytest.importorskip("pdoc")
    import pdoc.render

    out = tmp_path / "api"
    pdoc.pdoc("jaxdyn", output_directory=out)
    html = (out / "jaxdyn.html").read_text()
    for name in PUBLIC:
        assert f'id="{name}"' in html or f"jaxdyn.{name}" in html, name

"""The validation fuzz suite (issue 16): sweep files generated from the schema — valid and
invalid values for every key and every hyperparameter of every built-in experiment — each
through exactly the checks of ``jaxdyn run`` (compute replaced by a sentinel). Every one ends
in status 0 or in one ``jaxdyn: error:`` line with status 2 and nothing written; never a
traceback. CI runs ``JAXDYN_FUZZ_EXAMPLES`` (default 300) files, the same ones each time
(derandomized: CI does not fail by chance on a new draw); the recorded run of 10,000 random
is ``benchmarks/fuzz_validation.py`` (results in benchmarks/results/fuzz_validation.md).
"""

import os

from hypothesis import HealthCheck, given, settings

from sweepgen import outcome, sweep_files

EXAMPLES = int(os.environ.get("JAXDYN_FUZZ_EXAMPLES", "300"))


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(text=sweep_files())
def test_generated_sweep_files_end_in_0_or_one_refusal(text, tmp_path):
    code, err, wrote = outcome(text, tmp_path)
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("jaxdyn: error: ") and err.count("\n") == 1, err
        assert not wrote, "a refused sweep left files behind"

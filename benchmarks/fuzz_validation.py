"""The recorded run of the validation fuzz suite (issue 16): N generated sweep files
(tests/sweepgen.py) through every check of ``jaxdyn run`` with compute replaced by a sentinel.
Counts outcomes (0: passed every check; 2: refused with one message; anything else is a
failure) and which key the refusals named, and writes benchmarks/results/fuzz_validation.md.

    python benchmarks/fuzz_validation.py [N]        # default 10000
"""

import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)

from hypothesis import HealthCheck, given, settings  # noqa: E402

from sweepgen import outcome, sweep_files  # noqa: E402


def main(n: int) -> int:
    counts = collections.Counter()
    keys = collections.Counter()
    failures = []
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="jaxdyn-fuzz-"))

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=sweep_files())
    def one(text):
        code, err, wrote = outcome(text, tmp)
        ok = code == 0 or (code == 2 and err.startswith("jaxdyn: error: ")
                           and err.count("\n") == 1 and not wrote)
        counts["files"] += 1
        counts[f"status {code}"] += 1
        if code == 2:
            m = re.search(r"key '([^']+)'", err)
            keys[(m.group(1).split(".")[0] if m else "(no key: " +
                  err.removeprefix("jaxdyn: error: ")[:40].split(":")[0] + ")")] += 1
        if not ok:
            counts["failures"] += 1
            failures.append({"text": text, "status": code, "stderr": err[-2000:],
                             "wrote": wrote})

    one()
    wall = time.perf_counter() - t0
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Validation fuzz run (issue 16)", "",
        f"`python benchmarks/fuzz_validation.py {n}` on {time.strftime('%Y-%m-%d')}: "
        f"{counts['files']:,} generated sweep files in {wall:.0f} s "
        f"({1e3 * wall / max(counts['files'], 1):.1f} ms each), through every check of "
        f"`jaxdyn run` (compute replaced by a sentinel).", "",
        "| outcome | files |", "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in sorted(counts.items())],
        "", "Refusals by the key they name (top level):", "", "| key | refusals |", "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in keys.most_common()],
        "", f"**Tracebacks or malformed refusals: {counts['failures']}.**", "",
    ]
    (out / "fuzz_validation.md").write_text("\n".join(lines))
    (out / "fuzz_validation.json").write_text(json.dumps(
        {"files": counts["files"], "counts": dict(counts), "keys": dict(keys),
         "wall_s": wall, "failures": failures[:20]}, indent=1))
    print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000))
